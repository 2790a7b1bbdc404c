"""mmsa-fit-fusion: temperatures fitted on each head's held-out data, the checkpoint they go into,
and the figures (NLL, ECE) of the report."""

import json
from pathlib import Path

import numpy as np
import pytest

from mmsa.model import MMSAModel, load_checkpoint, read_info, save_checkpoint
from mmsa.training.calibrate import ece, fit_temperature, head_probs, nll
from mmsa.training.cli import fit_fusion_main
from tests.model.helpers import tiny_config


def test_temperature_recovers_an_overconfident_head():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 3)) * 6
    p = np.exp(z / 3)
    p /= p.sum(1, keepdims=True)
    classes = np.array([rng.choice(3, p=row) for row in p])  # the truth follows logits / 3
    t = fit_temperature(z, classes)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(head_probs(z, t), classes) < nll(head_probs(z, 1.0), classes)
    assert ece(head_probs(z, t), classes) < 0.03 < ece(head_probs(z, 1.0), classes)
    # regressing heads: scores through the ordinal model
    s = np.array([-2.0, -1.0, 0.0, 1.0, 2.0] * 20)
    assert np.allclose(head_probs(s, 0.7).sum(1), 1.0)


def test_ece_of_perfect_and_of_constant_predictions():
    classes = np.array([0, 1, 2, 2])
    assert ece(np.eye(3)[classes], classes) == 0.0
    flat = np.full((4, 3), 1 / 3)  # confidence 1/3, accuracy 1/4 (arg-max: class 0)
    assert ece(flat, classes) == pytest.approx(abs(1 / 4 - 1 / 3))


def _text_labels(folder) -> Path:
    """A MOSI-format label file, text only, with six positive, four negative and two neutral rows."""
    rows = [("great fun", 2.0), ("loved it", 1.6), ("so good", 2.4), ("nice work", 1.0), ("fine indeed", 0.8),
            ("brilliant", 3.0), ("awful", -2.0), ("hated it", -1.4), ("boring", -0.8), ("so bad", -2.6),
            ("it is tuesday", 0.0), ("the room has chairs", 0.2)]
    path = folder / "label.csv"
    path.write_text("video_id,clip_id,text,label,annotation,mode\n" + "".join(
        f"v{i},1,{text},{label},x,valid\n" for i, (text, label) in enumerate(rows)))
    return path


def test_fit_fusion_writes_a_calibrated_checkpoint(tmp_path, tiny_bert, ravdess_like, fer_like, capsys):
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="late", audio_head="valence3", vision_head="valence3"),
                            tiny_bert)
    src = save_checkpoint(tmp_path / "in.safetensors", model.eval(), name="tiny", training={"stages": [{"name": "s1"}]})
    out, report = tmp_path / "out.safetensors", tmp_path / "fusion.json"
    args = ["--model", str(src), "--out", str(out), "--report", str(report), "--cache", str(tmp_path / "cache"),
            "--heldout", "text", "mosi", str(_text_labels(tmp_path)), "valid",
            "--heldout", "audio", "ravdess", str(ravdess_like), "all",
            "--heldout", "vision", "fer2013", str(fer_like), "all",
            "--heldout-model", "vision", str(src), "--gate", "text", "--divide-text-prior"]
    assert fit_fusion_main(args) == 0
    printed = capsys.readouterr().out
    assert all(f"{m}: T = " in printed for m in ("text", "audio", "vision"))
    rep = json.loads(report.read_text())
    assert set(rep["heads"]) == {"text", "audio", "vision"}
    for m, n in (("text", 12), ("audio", 9), ("vision", 24)):
        h = rep["heads"][m]
        assert h["n"] == n and h["nll_after"] <= h["nll_before"] + 1e-9 and 0 <= h["ece_after"] <= 1
    loaded = load_checkpoint(out)
    cfg = loaded.model.cfg
    assert cfg.fusion == "calibrated"
    assert cfg.calibration == pytest.approx(tuple(rep["heads"][m]["temperature"] for m in ("text", "audio", "vision")))
    counts = rep["heads"]["text"]["class_counts"]  # the text head's held-out classes become its prior
    assert cfg.fusion_gate == rep["fusion_gate"] == "text"
    assert counts == [4, 2, 6] and cfg.text_prior == pytest.approx((4 / 12, 2 / 12, 6 / 12))
    assert cfg.text_prior == tuple(rep["text_prior"])
    stages = read_info(out).training["stages"]
    assert [s["name"] for s in stages] == ["s1", "tiny-fusion"] and stages[-1]["twins"] == {"vision": str(src)}
    a, b = load_checkpoint(src).model.state_dict(), loaded.model.state_dict()
    assert all((a[k] == b[k]).all() for k in a)  # the weights are untouched


def test_fit_fusion_errors_are_one_line(tmp_path, tiny_bert, ravdess_like, capsys):
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="late"), tiny_bert)
    src = save_checkpoint(tmp_path / "in.safetensors", model.eval(), name="tiny")
    base = ["--model", str(src), "--out", str(tmp_path / "o.safetensors"), "--report", str(tmp_path / "r.json"),
            "--cache", str(tmp_path / "cache")]
    assert fit_fusion_main([*base, "--heldout", "smell", "ravdess", str(ravdess_like), "all"]) == 2
    assert "unknown modality 'smell'" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
    assert fit_fusion_main([*base, "--heldout", "audio", "ravdess", str(ravdess_like), "valid"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "calibrating needs 8 or more" in errors[0]
    assert fit_fusion_main([*base, "--heldout", "audio", "ravdess", str(ravdess_like), "all", "--divide-text-prior"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "add --heldout text" in errors[0]
    assert not (tmp_path / "o.safetensors").exists()
    positive_only = tmp_path / "positive.csv"
    positive_only.write_text("video_id,clip_id,text,label,annotation,mode\n" + "".join(
        f"v{i},1,great fun {i},2.0,x,valid\n" for i in range(10)))
    assert fit_fusion_main([*base, "--heldout", "text", "mosi", str(positive_only), "valid", "--divide-text-prior"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "miss a class (counts [0, 0, 10])" in errors[0]
    assert not (tmp_path / "o.safetensors").exists()
