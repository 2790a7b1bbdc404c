"""The trimodal path learns: on generated speech + face clips (MMSA raw layout) every InfoNCE term of
Eq. 12 is computed and the joint loss falls, and the paper's preset (configs/train/mosi.toml) trains."""

import json
from pathlib import Path

from mmsa.model import load_checkpoint
from mmsa.training.cli import train_main
from tests.training.conftest import write_config

REPO = Path(__file__).resolve().parents[2]
NCE = ("nce_text", "nce_audio", "nce_vision")


def test_every_infonce_term_is_trained_and_the_loss_falls(mmsa_raw, tiny_bert, tmp_path):
    cfg = write_config(
        tmp_path / "tri.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"name": "clips", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "train"}],
        valid=[{"name": "clips_valid", "reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid"}],
        train={"epochs": 20, "batch_size": 4, "lr": 3e-3, "bert_lr": 1e-3},
        loss={"task": "l1", "unimodal": 1.0, "text": 1.0, "audio": 1.0, "vision": 1.0},
    )
    run = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert all(set(NCE) <= set(h["train_loss"]) for h in history)  # L_text, L_audio, L_img every epoch
    assert all(h["train_loss"][k] > 0 for h in history for k in NCE)
    for part, factor in (("total", 0.85), ("task", 0.95)):  # means of the first and the last three epochs
        first, last = (sum(h["train_loss"][part] for h in hs) / 3 for hs in (history[:3], history[-3:]))
        assert last < factor * first, part
    assert all(h["grad_norm"][m] > 0 for h in history for m in ("text", "audio", "vision"))


def test_the_papers_mosi_preset_trains(mmsa_raw, tiny_bert, tmp_path):
    """configs/train/mosi.toml as shipped (attention fusion, 5 layers, Adam 1e-5, batch 48, every
    InfoNCE weight 1), on the generated clips with the tiny BERT, for two steps."""
    run = tmp_path / "run"
    assert train_main([str(REPO / "configs" / "train" / "mosi.toml"), "--out", str(run),
                       "--set", f"data.train.0.labels={mmsa_raw}", "--set", f"data.valid.0.labels={mmsa_raw}",
                       "--set", f"model.bert={tiny_bert}", "--set", f"cache.dir={tmp_path / 'cache'}",
                       "--set", "cache.workers=2", "--set", "train.max_steps=2", "--set", "train.batch_size=2"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and set(NCE) <= set(metrics["history"][0]["train_loss"])
    cfg = load_checkpoint(run / "model.safetensors").model.cfg
    assert cfg.fusion == "attention" and cfg.fusion_layers == 5


def test_training_on_a_csv_with_aspects_uses_the_span_views(tiny_bert, tmp_path):
    """Rows with an aspect: [CLS] text [SEP] aspect [SEP], and L_text contrasts the aspect's spans (Eq. 3-4, 6)."""
    import csv

    rows = [("the food was great but the service was slow", "service", -1.0), ("the food was great", "food", 2.0),
            ("awful parking but a lovely garden", "garden", 1.5), ("the screen is dim", "screen", -1.5),
            ("battery lasts for days", "battery", 2.5), ("the staff were rude", "staff", -2.5)]
    path = tmp_path / "aspects.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "aspect", "label", "mode"])
        for i, (text, aspect, y) in enumerate(rows):
            w.writerow([f"r{i}", 1, text, aspect, y, "train" if i < 4 else "valid"])
    cfg = write_config(
        tmp_path / "aspects.toml", tiny_bert, cache=tmp_path / "cache",
        sources=[{"name": "a", "reader": "mmsa-raw", "labels": str(path), "split": "train", "modalities": ["text"]}],
        valid=[{"name": "av", "reader": "mmsa-raw", "labels": str(path), "split": "valid", "modalities": ["text"]}],
        train={"epochs": 2, "batch_size": 4}, loss={"text": 1.0, "audio": 0.0, "vision": 0.0},
    )
    assert train_main([str(cfg), "--out", str(tmp_path / "run")]) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert all(h["train_loss"]["nce_text"] > 0 for h in history)
