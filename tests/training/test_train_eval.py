"""mmsa-train and mmsa-eval end to end on generated media, with a tiny model and a few steps."""

import csv
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from mmsa.common.settings import from_dict, tomllib
from mmsa.model import load_checkpoint, read_info
from mmsa.training.cli import eval_main, train_main
from mmsa.training.config import TrainConfig, load_config
from mmsa.training.metrics import REGRESSION_METRICS, VALENCE_METRICS
from tests.training.conftest import write_config

PNG = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_mmsa_raw_trains_and_evaluates_end_to_end(mmsa_raw, tiny_bert, tmp_path):
    cfg = write_config(
        tmp_path / "mmsa.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"name": "clips", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "train"}],
        valid=[{"name": "clips_valid", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid"}],
        train={"epochs": 2, "batch_size": 2, "max_steps": 3},
    )
    run = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    for name in ("model.safetensors", "metrics.json", "config.toml", "train.log", "valid_clips_valid.csv"):
        assert (run / name).is_file(), name
    for name in ("curves.png", "grad_norms.png", "valid_clips_valid.png"):
        assert (run / name).read_bytes().startswith(PNG), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["select"] == "clips_valid.mae" and metrics["steps"] == 3 and metrics["epochs_run"] == 2
    assert metrics["valid"]["clips_valid"]["n"] == 2
    assert set(metrics["valid"]["clips_valid"]["unimodal"]) == {"text", "audio", "vision"}  # Table 5 heads
    # Figure 5: a gradient norm per modality and epoch
    assert all(h["grad_norm"][m] > 0 for h in metrics["history"] for m in ("text", "audio", "vision"))
    best = metrics["best_epoch"]
    assert metrics["best_value"] == min(h["select_value"] for h in metrics["history"])
    assert metrics["history"][best - 1]["best"]
    # the resolved config reproduces the run's settings
    resolved = from_dict(TrainConfig, tomllib.loads((run / "config.toml").read_text()))
    assert resolved == load_config(cfg)[0]
    info = read_info(run / "model.safetensors")
    assert info.name == "mmsa" and info.metrics["clips_valid"]["mae"] == pytest.approx(metrics["best_value"])
    assert info.training["select"] == "clips_valid.mae" and "mmsa-train" in info.training["command"]

    out, pred = tmp_path / "eval" / "m.json", tmp_path / "eval" / "p.csv"
    assert eval_main(["--model", str(run / "model.safetensors"), "--dataset", "mmsa-raw", "--labels", str(mmsa_raw),
                      "--out", str(out), "--predictions", str(pred), "--cache", str(tmp_path / "cache")]) == 0
    result = json.loads(out.read_text())
    assert set(REGRESSION_METRICS) <= set(result) and result["n"] == 2 and result["split"] == "test"
    assert result["model"] == info.tag
    rows = read_csv(pred)
    assert list(rows[0]) == ["id", "label", "pred", "pred_text", "pred_audio", "pred_vision"]
    assert [r["id"] for r in rows] == ["vid3_1", "vid3_2"] and [float(r["label"]) for r in rows] == [2.0, -1.0]
    assert all(-3 <= float(r["pred"]) <= 3 and r["pred_vision"] for r in rows)
    assert out.with_suffix(".png").read_bytes().startswith(PNG)


def test_mixed_sources_emotion_selection_and_small_bert_delta(mmsa_raw, ravdess_like, fer_like, tiny_bert, tmp_path):
    """The default-model recipe in miniature: text from one source, audio and faces from emotion data."""
    cfg = write_config(
        tmp_path / "mixed.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[
            {"name": "text", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "train", "modalities": ["text"],
             "weight": 2.0},
            {"name": "speech", "reader": "ravdess", "labels": str(ravdess_like), "split": "train"},
            {"name": "faces", "reader": "fer2013", "labels": str(fer_like), "split": "all"},
        ],
        valid=[
            {"name": "speech_valid", "reader": "ravdess", "labels": str(ravdess_like), "split": "valid"},
            {"name": "text_valid", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid", "modalities": ["text"]},
        ],
        train={"epochs": 1, "batch_size": 8, "max_steps": 3, "freeze_bert_layers": 1,
               "select": "speech_valid.valence_uar3"},
        checkpoint={"name": "mixed", "bert_delta": True, "half": True},
    )
    cfg.write_text(cfg.read_text().replace("[model]", '[model]\nfusion = "late"', 1))
    run = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["train"]["speech"]["skipped"] == {"no_valence": 2}  # surprise left out of training
    speech = metrics["valid"]["speech_valid"]
    assert set(VALENCE_METRICS) <= set(speech) and speech["n"] == 3 and speech["n_no_valence"] == 1
    assert set(metrics["valid"]["text_valid"]["unimodal"]) == {"text"}
    # only the unfrozen top BERT layer is stored, in float16
    with safe_open(str(run / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
        assert fh.get_tensor("text.bert.encoder.layer.1.output.dense.weight").dtype.is_floating_point
    assert any(k.startswith("text.bert.encoder.layer.1.") for k in keys)
    assert not any(k.startswith(("text.bert.embeddings.", "text.bert.encoder.layer.0.")) for k in keys)
    assert load_checkpoint(run / "model.safetensors").model.cfg.fusion == "late"

    out, pred = tmp_path / "ev.json", tmp_path / "ev.csv"
    assert eval_main(["--model", str(run / "model.safetensors"), "--dataset", "ravdess", "--labels", str(ravdess_like),
                      "--split", "valid", "--out", str(out), "--predictions", str(pred),
                      "--cache", str(tmp_path / "cache")]) == 0
    rows = read_csv(pred)
    assert list(rows[0]) == ["path", "emotion", "valence", "pred"] and len(rows) == 4
    assert {r["emotion"]: r["valence"] for r in rows} == {"happy": "positive", "sad": "negative",
                                                          "neutral": "neutral", "surprised": ""}
    result = json.loads(out.read_text())
    assert result["n"] == 3 and set(VALENCE_METRICS) <= set(result)


def test_seeds_reproduce_and_aggregate(mmsa_raw, tiny_bert, tmp_path, capsys):
    cfg = write_config(
        tmp_path / "text.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "train", "modalities": ["text"]}],
        valid=[{"name": "v", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid", "modalities": ["text"]}],
        train={"epochs": 2, "batch_size": 2},
    )
    runs = tmp_path / "runs"
    assert train_main([str(cfg), "--out", str(runs), "--seeds", "1", "2"]) == 0
    agg = json.loads((runs / "aggregate.json").read_text())
    assert agg["seeds"] == [1, 2] and agg["n_runs"] == 2
    maes = [json.loads((runs / f"seed{s}" / "metrics.json").read_text())["valid"]["v"]["mae"] for s in (1, 2)]
    assert maes[0] != maes[1]
    assert agg["mean"]["v"]["mae"] == pytest.approx(sum(maes) / 2)
    assert agg["std"]["v"]["mae"] == pytest.approx(abs(maes[0] - maes[1]) / 2)
    # the same seed again gives the same numbers
    assert train_main([str(cfg), "--out", str(tmp_path / "again"), "--set", "train.seed=1"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["valid"]["v"]["mae"] == maes[0]

    # mmsa-eval aggregates several checkpoints given as a glob
    capsys.readouterr()
    out, pred = tmp_path / "ev" / "m.json", tmp_path / "ev" / "p.csv"
    assert eval_main(["--model", str(runs / "seed*" / "model.safetensors"), "--dataset", "mmsa-raw",
                      "--labels", str(mmsa_raw), "--split", "valid", "--modalities", "text",
                      "--out", str(out), "--predictions", str(pred)]) == 0
    result = json.loads(out.read_text())
    assert result["n_runs"] == 2 and len(result["models"]) == 2
    assert result["mean"]["mae"] == pytest.approx(sum(maes) / 2)  # same rows, same numbers as in training
    assert (tmp_path / "ev" / "p.1.csv").is_file() and (tmp_path / "ev" / "m.2.json").is_file()
    assert "+-" in capsys.readouterr().out
