"""Tests on the real data of ../shared/data (skipped where it is absent, as on a user's machine)."""

import csv
import json
import shutil

import pytest
import torch

from mmsa.model import MMSAModel, save_checkpoint
from mmsa.training.cli import eval_main, train_main
from mmsa.training.config import SourceConfig
from mmsa.training.data import RAVDESS_ACTORS, read_source
from mmsa.training.metrics import REGRESSION_METRICS
from tests.model.helpers import tiny_config
from tests.training.conftest import write_config

pytestmark = pytest.mark.data


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_short_text_only_mosi_run_on_train_evaluated_on_valid(data_dir, tiny_bert, tmp_path):
    labels = str(data_dir / "mosi" / "label.csv")
    cfg = write_config(
        tmp_path / "mosi_text.toml", tiny_bert, tmp_path / "cache",
        [{"name": "mosi_train", "reader": "mosi", "labels": labels, "split": "train"}],
        [{"name": "mosi_valid", "reader": "mosi", "labels": labels, "split": "valid"}],
        train={"epochs": 1, "max_steps": 3, "batch_size": 16},
    )
    run = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["train"]["mosi_train"] == {"n": 1281, "skipped": {"no_text": 3}, "modalities": ["text"]}
    assert metrics["valid"]["mosi_valid"]["n"] == 229

    out, pred = tmp_path / "valid.json", tmp_path / "valid.csv"
    assert eval_main(["--model", str(run / "model.safetensors"), "--dataset", "mosi", "--labels", labels,
                      "--split", "valid", "--out", str(out), "--predictions", str(pred)]) == 0
    result = json.loads(out.read_text())
    assert set(REGRESSION_METRICS) <= set(result) and result["n"] == 229 and result["n_skipped"] == 0
    assert result["mae"] == pytest.approx(metrics["valid"]["mosi_valid"]["mae"])  # same numbers as in training
    assert all(0.0 <= result[k] <= 1.0 for k in REGRESSION_METRICS if k.startswith(("acc", "f1")))
    rows = read_csv(pred)
    assert len(rows) == 229 and rows[0]["id"] == "WKA5OygbEKI_1"


def test_mmsa_layout_on_the_real_clips(data_dir, tiny_bert, tmp_path):
    """The real MOSI clips through the MMSA raw layout: audio and the face of the video are found."""
    mosi = {f"{r['video_id']}_{r['clip_id']}": r for r in read_csv(data_dir / "mosi" / "label.csv")}
    clips = data_dir / "mosi" / "clips"
    rows = [["video_id", "clip_id", "text", "label", "annotation", "mode"]]
    for src in (clips / "Oz06ZWiO20M_6.mp4", clips / "03bSnISJMiM_1.wav"):
        vid, clip = src.stem.rsplit("_", 1)
        (tmp_path / "Raw" / vid).mkdir(parents=True)
        shutil.copy(src, tmp_path / "Raw" / vid / f"{clip}{src.suffix}")
        r = mosi[src.stem]
        rows.append([vid, clip, r["text"], r["label"], r["annotation"], "test"])
    with (tmp_path / "label.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", MMSAModel.build(tiny_config(tiny_bert), tiny_bert).eval(),
                           name="tiny")
    out, pred = tmp_path / "m.json", tmp_path / "p.csv"
    assert eval_main(["--model", str(ckpt), "--dataset", "mmsa-raw", "--labels", str(tmp_path / "label.csv"),
                      "--out", str(out), "--predictions", str(pred), "--cache", str(tmp_path / "cache")]) == 0
    got = {r["id"]: r for r in read_csv(pred)}
    assert float(got["Oz06ZWiO20M_6"]["label"]) == -0.8 and float(got["03bSnISJMiM_1"]["label"]) == 2.4
    assert got["Oz06ZWiO20M_6"]["pred_vision"] and got["Oz06ZWiO20M_6"]["pred_audio"]  # a face and speech
    assert got["03bSnISJMiM_1"]["pred_audio"] and not got["03bSnISJMiM_1"]["pred_vision"]  # audio only
    assert json.loads(out.read_text())["unimodal"]["vision"]["n"] == 1


def test_real_readers_and_splits(data_dir):
    ravdess = str(data_dir / "ravdess" / "labels.csv")
    parts = {s: read_source(SourceConfig(reader="ravdess", labels=ravdess, split=s), keep_unrated=True)
             for s in ("train", "valid", "test")}
    assert [len(p.records) for p in parts.values()] == [720, 240, 240]
    for s, p in parts.items():  # actor-independent
        assert {int(r.id.split("/")[0][-2:]) for r in p.records} == set(RAVDESS_ACTORS[s])
    train = read_source(SourceConfig(reader="ravdess", labels=ravdess, split="train"))
    assert len(train.records) == 624 and train.skipped == {"no_valence": 96}  # surprised left out

    fer = str(data_dir / "fer2013" / "labels.csv")
    every = read_source(SourceConfig(reader="fer2013", labels=fer, split="all"))
    assert len(every.records) == 2871 - 338 and every.skipped == {"no_valence": 338}
    split_ids = [{r.id for r in read_source(SourceConfig(reader="fer2013", labels=fer, split=s), keep_unrated=True).records}
                 for s in ("train", "valid", "test")]
    assert sum(map(len, split_ids)) == 2871 and not (split_ids[0] & split_ids[1]) and not (split_ids[0] & split_ids[2])

    vader = read_source(SourceConfig(reader="vader", labels=str(data_dir / "vader"), split="all"))
    assert len(vader.records) == 23703 and all(-3 <= r.label <= 3 for r in vader.records)
    mosei = read_source(SourceConfig(reader="mosei", labels=str(data_dir / "mosei" / "label_valid.csv"), split="valid"))
    assert len(mosei.records) == 1861 and mosei.modalities == ("text",)
