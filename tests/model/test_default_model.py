"""The embedded default model (model/default/, docs/default-model.md): it ships in the repo, loads
offline, scores sentiment the right way round, records how it was built, and ``mmsa-eval``
reproduces the figures its model card quotes."""

import json
import re
from pathlib import Path

import pytest
import torch

from mmsa.model import MODALITIES, Sample, collate, load_checkpoint, read_info
from mmsa.model.resources import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = REPO / "model" / "default" / "eval"
CARD = REPO / "docs" / "default-model.md"
# (eval file stem, mmsa-eval arguments relative to ../shared/data, name in the card's table)
SETS = {
    "mosi_valid": (["--dataset", "mosi", "--labels", "mosi/label.csv", "--split", "valid"], "MOSI valid"),
    "mosei_valid_heldout": (["--dataset", "mosei", "--labels", "mosei/label_valid.csv", "--split", "valid",
                             "--videos", "heldout"], "MOSEI valid, held-out videos"),
    "fer2013_valid": (["--dataset", "fer2013", "--labels", "fer2013/labels.csv", "--split", "valid"], "FER2013 valid"),
    "fer2013_test": (["--dataset", "fer2013", "--labels", "fer2013/labels.csv", "--split", "test"], "FER2013 test"),
}
# scored by the held-out audio twin (actors 01-16; the shipped audio branch trained on every actor)
TWIN_SETS = {"ravdess_test_heldout": "RAVDESS actors 17-20, audio", "ravdess_asr_test_heldout": "RAVDESS actors 17-20, Whisper text + audio",
             "ravdess_windows_test_heldout": "RAVDESS actors 17-20 as the monitor cuts them, audio"}
# the headline figures the card quotes per kind of set, and how it prints them
REGRESSION = {"mae": "{:.3f}", "corr": "{:.3f}", "acc2_non0": "{:.1f}", "acc7": "{:.1f}"}
EMOTION = {"valence_uar3": "{:.3f}", "valence_acc2": "{:.1f}"}
PERCENT = {"acc2_non0", "acc7", "valence_acc2"}


def card_figures(stem: str, metrics: dict) -> list[str]:
    keys = REGRESSION if stem.startswith("mos") else EMOTION
    return [fmt.format(metrics[k] * (100 if k in PERCENT else 1)) for k, fmt in keys.items()]


def test_default_checkpoint_ships_within_32_mb():
    assert DEFAULT_CHECKPOINT.is_file(), "model/default/default.safetensors is missing: run `make default-model`"
    assert DEFAULT_CHECKPOINT.stat().st_size <= 32 * 2**20


def test_default_loads_offline_and_records_its_stages(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    loaded = load_checkpoint("default")
    info = loaded.info
    assert info.name == "default" and loaded.model.cfg.fusion == "calibrated"
    stages = info.training["stages"]
    assert [s["name"] for s in stages] == ["default-1-text-vader", "default-2-text", "default-3-audio", "default",
                                           "default-fusion"]
    assert [[d["reader"] for d in s["data"]] for s in stages[:4]] == [["vader"], ["mosi", "mosei"],
                                                                     ["ravdess", "ravdess"], ["fer2013"]]
    assert [s["trainable"] for s in stages] == [["text"], ["text"], ["audio"], ["vision"], ["fusion"]]
    # trained on train splits only (VADER: every sentence, never evaluated on; MOSEI valid: its training videos)
    assert [(d["split"], d.get("videos", "")) for s in stages[:4] for d in s["data"]] == [
        ("all", ""), ("train", ""), ("valid", "train"), ("train", ""), ("train", ""), ("train", "")]
    audio = stages[2]  # the files and the monitor's windows of them (examples/ravdess_windows.py)
    assert [d["actors"] for d in audio["data"]] == [list(range(1, 21))] * 2 and audio["select"] == "last"
    assert audio["data"][1]["labels"].endswith("ravdess_windows/labels.csv")
    # the fusion: temperatures fitted on held-out data, the audio head's scored by its twin (actors 01-16)
    calibration = json.loads((EVAL_DIR / "calibration.json").read_text())
    assert loaded.model.cfg.calibration == pytest.approx(tuple(calibration["calibration"][m] for m in MODALITIES))
    assert stages[-1]["twins"]["audio"].endswith("3_audio_actors_1-16/model.safetensors")
    assert read_info("default").tag == info.tag
    # the face branch: the packaged face mesh and expression network (not stored, their digests recorded),
    # the CNN on the mesh's map
    from mmsa.model import expression, facemesh

    cfg = loaded.model.cfg
    assert (cfg.face_mesh, cfg.face_cnn, cfg.face_expression, cfg.vision_head, cfg.audio_head) == (
        "packaged", "mesh", "packaged", "valence3", "valence3")
    # the face branch: an ensemble of stage 4's three seeds (each run's branch kept, the frozen networks shared)
    assert cfg.vision_members == 3 and [r["seed"] for r in stages[3]["ensemble"]] == [1, 2, 3]
    # the audio branch reads Whisper's encoder statistics, and the features it loads with say so
    assert cfg.audio_input == "whisper" and loaded.features.audio_input == "whisper"
    assert info.face_mesh == {"file": facemesh.ASSET.name, "digest": facemesh.ASSET_SHA256[:12],
                              "expression_file": expression.ASSET.name, "expression_digest": expression.ASSET_SHA256[:12]}


def test_default_scores_the_right_way_round():
    loaded = load_checkpoint("default")
    tok = loaded.tokenizer
    texts = ["i absolutely loved it , it was a wonderful , moving film and i would see it again",
             "it was okay i guess",
             "this was a terrible boring waste of time and i hated every minute of it"]
    with torch.no_grad():
        out = loaded.model.eval()(collate([Sample(text=t) for t in texts], tok))
    pos, mid, neg = out.score.tolist()
    assert pos > 1.0 and neg < -1.0 and neg < mid < pos
    # late fusion with only text present: the fused score is the text head's
    assert torch.allclose(out.score, out.unimodal["text"], atol=1e-4)


def test_card_quotes_the_recorded_evaluations():
    card = CARD.read_text()
    assert "CC BY-NC-SA" in card and "never trained on trimodal" in card.lower()
    tag = read_info("default").tag
    opening = card.split("\n\n", 2)[1]  # the paragraph under the title names the shipped file and checkpoint
    assert f"`{tag}`" in opening, f"the card's opening does not name the shipped checkpoint {tag}"
    size = f"({DEFAULT_CHECKPOINT.stat().st_size / 2**20:.1f} MiB)"
    assert size in opening, f"the card's opening does not give the shipped file's size {size}"
    for stem, name in [*((k, v[1]) for k, v in SETS.items()), *TWIN_SETS.items()]:
        path = EVAL_DIR / f"{stem}.json"
        assert path.is_file(), f"{path} is missing: run `make default-model-eval`"
        metrics = json.loads(path.read_text())
        if stem in TWIN_SETS:
            assert metrics["model"].startswith("default-3-audio-actors-1-16@"), f"{path}: not the twin's"
        else:
            assert metrics["model"] == tag, f"{path} was made with another checkpoint"
        row = next((line for line in card.splitlines() if line.startswith(f"| {name} ")), None)
        assert row is not None, f"no row for {name} in the card's table"
        for figure in card_figures(stem, metrics):
            assert re.search(rf"\b{re.escape(figure)}\b", row), f"{name}: {figure} not in {row!r}"


def test_text_probes():
    """Issue #15's probe set (tests/model/text_probes.py): clear cases, negations, neutral facts."""
    from tests.model.text_probes import probe_scores

    got = probe_scores(load_checkpoint("default"))
    assert all(s > 0.5 for s in got["positive"]) and all(s < -0.5 for s in got["negative"])
    assert all(s < 0.0 for s in got["negated_positive"])
    assert got["negated_negative"][0] > 0.5  # "not bad at all"
    assert got["negated_negative"][1] > -0.5  # "i do not hate it": not negative
    assert all(abs(s) < 1.0 for s in got["neutral"]) and sum(abs(s) for s in got["neutral"]) / 5 < 0.5


@pytest.mark.data
@pytest.mark.parametrize("stem", ["mosi_valid", "mosei_valid_heldout", "fer2013_test"])
def test_mmsa_eval_reproduces_the_card(stem, data_dir, tmp_path):
    from mmsa.training.cli import eval_main

    args, _ = SETS[stem]
    args = [a if not a.endswith(".csv") else str(data_dir / a) for a in args]
    out = tmp_path / "m.json"
    assert eval_main(["--model", "default", *args, "--out", str(out), "--predictions", str(tmp_path / "p.csv"),
                      "--cache", str(tmp_path / "cache")]) == 0
    got = json.loads(out.read_text())
    want = json.loads((EVAL_DIR / f"{stem}.json").read_text())
    assert got["n"] == want["n"]
    keys = REGRESSION if stem.startswith("mos") else EMOTION
    for k in keys:
        assert got[k] == pytest.approx(want[k], abs=1e-3), k
