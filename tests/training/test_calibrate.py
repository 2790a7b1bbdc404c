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


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_fit_fusion_of_a_concat_or_attention_model_writes_a_checkpoint_that_loads(fusion, tmp_path, tiny_bert, tokenizer):
    """The calibrated fusion has no layers of its own: the source fusion's tensors (concat: ``fusion.*``;
    attention: ``tokens.*``, ``cls``, ``fusion_encoder.*``, ``fusion.*``) are left out of the written
    checkpoint, which loads and scores with the calibrated product of its heads."""
    import torch
    from safetensors import safe_open

    from mmsa.model import MODALITIES
    from mmsa.model.network import product_of_experts, valence_score
    from tests.model.helpers import batch, random_sample, seeded

    torch.manual_seed(0)
    model = MMSAModel.build(tiny_config(tiny_bert, fusion=fusion), tiny_bert).eval()
    src = save_checkpoint(tmp_path / "in.safetensors", model, name="tiny")
    out = tmp_path / "out.safetensors"
    assert fit_fusion_main(["--model", str(src), "--out", str(out), "--report", str(tmp_path / "r.json"),
                            "--cache", str(tmp_path / "cache"),
                            "--heldout", "text", "mosi", str(_text_labels(tmp_path)), "valid"]) == 0
    with safe_open(str(out), framework="pt") as fh:
        keys = set(fh.keys())
    assert not {k for k in keys if k == "cls" or k.startswith(("fusion.", "fusion_encoder.", "tokens."))}
    loaded = load_checkpoint(out)  # refused before: "tensor fusion.0.weight does not belong to this model"
    assert loaded.model.cfg.fusion == "calibrated" and loaded.model.cfg.calibration[1:] == (1.0, 1.0)
    before = load_checkpoint(src).model
    own = before.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in loaded.model.state_dict().items())  # encoders, heads untouched
    rng = seeded(0)
    x = batch(tokenizer, [random_sample(rng), random_sample(rng, text="terrible", n_faces=0),
                          random_sample(rng, text="fine", seconds=0, n_faces=0)])
    with torch.no_grad():
        got, was = loaded.model(x), before(x)
    for m in MODALITIES:
        assert torch.allclose(got.unimodal[m], was.unimodal[m], equal_nan=True)
    probs = loaded.model.polarity_probs(got.unimodal, got.logits)
    product = valence_score(product_of_experts(probs, got.presence.float()), 3.0)
    assert torch.allclose(got.score[:2], product[:2], atol=1e-5)  # two or three heads: their calibrated product
    assert torch.allclose(got.score[2], got.unimodal["text"][2])  # text alone: the text head's own score
    assert not torch.allclose(got.score, was.score)  # not the source fusion's scores


def test_fit_fusion_refuses_a_twin_without_heldout_data_and_two_sources_for_one_head(tmp_path, tiny_bert, capsys):
    from tests.training.test_cli_errors import one_error_line

    model = MMSAModel.build(tiny_config(tiny_bert, fusion="late"), tiny_bert)
    src = save_checkpoint(tmp_path / "in.safetensors", model.eval(), name="tiny")
    out, labels = tmp_path / "o.safetensors", str(_text_labels(tmp_path))
    base = ["--model", str(src), "--out", str(out), "--report", str(tmp_path / "r.json"), "--cache", str(tmp_path / "c"),
            "--heldout", "text", "mosi", labels, "valid"]
    assert fit_fusion_main([*base, "--heldout-model", "audio", str(src)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: --heldout-model audio {src}: no --heldout audio") and "twin" in line
    assert fit_fusion_main([*base, "--heldout", "text", "mosi", labels, "all"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: --heldout text mosi {labels} all: a second held-out source for the text head")
    assert f"(the first: --heldout text mosi {labels} valid)" in line
    assert not out.exists()


def test_fit_fusion_says_which_fusion_measured_the_kept_metrics(tmp_path, tiny_bert):
    """The checkpoint contract keeps the validation figures in the metadata; they were measured with the fusion
    that the calibrated one replaces, and the fusion stage says which."""
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="concat"), tiny_bert)
    measured = {"mosi_valid": {"mae": 0.9, "n": 12}}
    src = save_checkpoint(tmp_path / "in.safetensors", model.eval(), name="tiny", metrics=measured)
    out = tmp_path / "o.safetensors"
    assert fit_fusion_main(["--model", str(src), "--out", str(out), "--report", str(tmp_path / "r.json"),
                            "--cache", str(tmp_path / "c"), "--heldout", "text", "mosi", str(_text_labels(tmp_path)),
                            "valid"]) == 0
    info = read_info(out)
    assert info.metrics == measured and info.model_config.fusion == "calibrated"
    stage = info.training["stages"][-1]
    assert stage["name"] == "tiny-fusion" and stage["metrics_fusion"] == stage["replaced_fusion"] == "concat"
    assert info.training["fusion"]["metrics_fusion"] == "concat"


@pytest.mark.parametrize("heldout, message", [
    (["text", "mosi", "", "valid"], "--heldout text mosi '' valid: labels: the label file is required"),
    (["text", "mosi", "LABELS", ""], "--heldout text mosi LABELS '': split: required"),
    (["text", "foo", "LABELS", "valid"], "--heldout text foo LABELS valid: unknown dataset 'foo' (mosi, mosei, "
                                         "mmsa-raw, ravdess, fer2013)"),
    (["text", "vader", "LABELS", "valid"], "unknown dataset 'vader'"),  # training data only, as in mmsa-eval
])
def test_fit_fusion_bad_heldout_sources_are_one_line(heldout, message, tmp_path, tiny_bert, capsys):
    from tests.training.test_cli_errors import one_error_line

    model = MMSAModel.build(tiny_config(tiny_bert, fusion="late"), tiny_bert)
    src = save_checkpoint(tmp_path / "in.safetensors", model.eval(), name="tiny")
    labels = str(_text_labels(tmp_path))
    heldout = [labels if h == "LABELS" else h for h in heldout]
    rc = fit_fusion_main(["--model", str(src), "--out", str(tmp_path / "o.safetensors"), "--report",
                          str(tmp_path / "r.json"), "--cache", str(tmp_path / "c"), "--heldout", *heldout])
    assert rc == 2
    assert message.replace("LABELS", labels) in one_error_line(capsys)
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("flag", ["--out", "--report"])
def test_fit_fusion_outputs_are_checked_before_the_work(flag, tmp_path, capsys):
    from tests.training.test_cli_errors import one_error_line

    args = {"--out": str(tmp_path / "o.safetensors"), "--report": str(tmp_path / "r.json"), flag: str(tmp_path)}
    # the checkpoint does not exist: the output is refused before it would be loaded
    rc = fit_fusion_main(["--model", str(tmp_path / "missing.safetensors"), *(x for kv in args.items() for x in kv),
                          "--heldout", "text", "mosi", "x.csv", "valid"])
    assert rc == 2 and one_error_line(capsys) == f"error: {flag} {tmp_path}: is a folder; give the path of the file to write"
