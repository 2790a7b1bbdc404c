"""``[train] ensemble``: one face-branch run per seed, kept together as one model whose face score averages
their class probabilities (``[model] vision_members``); the frozen face networks run once for all members."""

import json

import pytest
import torch

from mmsa.model import MMSAModel, collate, load_checkpoint, read_info
from mmsa.training.cli import eval_main, train_main
from mmsa.training.config import load_config
from mmsa.training.data import read_source
from mmsa.training.soup import make_ensemble
from tests.model.helpers import tiny_config
from tests.training.conftest import write_config
from tests.training.test_cli_errors import one_error_line

FACE_LOSS = {"task": "mse", "fused": 0.0, "unimodal": 1.0, "label_smoothing": 0.1, "text": 0.0, "audio": 0.0, "vision": 0.0}


def face_config(tmp_path, fer_like, tiny_bert, model=None, **train):
    return write_config(
        tmp_path / "face.toml", tiny_bert, cache=tmp_path / "cache", loss=FACE_LOSS,
        model={"fusion": "late", "face_mesh": "packaged", "face_cnn": "mesh", "vision_head": "valence3", **(model or {})},
        sources=[{"name": "f", "reader": "fer2013", "labels": str(fer_like), "split": "train", "balance": True}],
        valid=[{"name": "fv", "reader": "fer2013", "labels": str(fer_like), "split": "valid"}],
        train={"epochs": 1, "batch_size": 4, "bert_lr": 0.0, "trainable": ["vision"], "select": "last", **train},
        checkpoint={"bert_delta": True},
    )


def test_an_ensemble_keeps_each_seeds_face_branch_and_averages_their_probabilities(fer_like, tiny_bert, tmp_path):
    cfg = face_config(tmp_path, fer_like, tiny_bert, ensemble=[1, 2])
    out = tmp_path / "run"
    assert train_main([str(cfg), "--out", str(out)]) == 0
    seeds = [load_checkpoint(str(out / f"seed{s}" / "model.safetensors")) for s in (1, 2)]
    ens = load_checkpoint(str(out / "model.safetensors"))
    assert ens.model.cfg.vision_members == 2 and len(ens.model.vision_members) == 1
    state, first, second = ens.model.state_dict(), seeds[0].model.state_dict(), seeds[1].model.state_dict()
    assert all(torch.equal(state[k], first[k]) for k in first)  # member 1 and everything else: seed 1's
    member = {k.removeprefix("vision_members.0.encoder."): v for k, v in state.items() if k.startswith("vision_members.0.encoder.")}
    assert member and all(torch.equal(v, second[f"vision.{k}"]) for k, v in member.items())
    assert not any(".mesh." in k or ".expression." in k for k in state)  # the frozen networks: packaged, run once
    assert any(not torch.equal(first[k], second[k]) for k in first if k.startswith("heads.vision."))

    # the face score: the class margin of the mean of the two runs' class probabilities, on real face crops
    cfg_loaded, _ = load_config(cfg)
    data = read_source(cfg_loaded.data.valid[0])
    from mmsa.training.cache import featurize

    store = featurize(data, cfg_loaded.cache, ens.features)
    x = collate([store[i] for i in range(len(store))], ens.tokenizer)
    with torch.no_grad():
        z = ens.model.eval()(x).logits["vision"]
        probs = [m.model.eval()(x).logits["vision"].softmax(-1) for m in seeds]
    assert torch.allclose(z.exp(), (probs[0] + probs[1]) / 2, atol=1e-6)

    info = read_info(out / "model.safetensors")
    assert [r["seed"] for r in info.training["ensemble"]] == [1, 2] and info.training["stages"][-1]["seed"] == [1, 2]
    report = json.loads((out / "ensemble.json").read_text())
    assert report["ensemble"] == [1, 2] and report["runs"]["n_runs"] == 2
    # mmsa-eval of the saved ensemble gives the figure it was saved with
    ev = tmp_path / "ev.json"
    assert eval_main(["--model", str(out / "model.safetensors"), "--dataset", "fer2013", "--labels", str(fer_like),
                      "--split", "valid", "--out", str(ev), "--predictions", str(tmp_path / "p.csv")]) == 0
    assert json.loads(ev.read_text())["valence_uar3"] == pytest.approx(report["valid"]["fv"]["valence_uar3"], abs=1e-6)


@pytest.mark.parametrize("train, model, message", [
    ({"ensemble": [1]}, {}, "ensemble: needs two different seeds or more"),
    ({"ensemble": [1, 2], "soup": [1, 2]}, {}, "soup and ensemble: use one"),
    ({"ensemble": [1, 2], "trainable": ["vision", "text"]}, {}, 'ensemble: only of face branches'),
    ({"ensemble": [1, 2]}, {"vision_head": "score"}, 'train.ensemble: averages class probabilities'),
    ({}, {"vision_members": 0}, "vision_members: 1, or more with"),
])
def test_bad_ensembles_are_one_line(fer_like, tiny_bert, tmp_path, capsys, train, model, message):
    cfg = face_config(tmp_path, fer_like, tiny_bert, model=model, **train)
    assert train_main([str(cfg), "--out", str(tmp_path / "run")]) != 0
    assert message in one_error_line(capsys)


def test_runs_of_other_models_make_no_ensemble(tiny_bert, tmp_path):
    from mmsa.model import save_checkpoint

    paths = []
    for k, extra in enumerate([{"vision_head": "valence3"}, {"vision_head": "valence3", "inception_width": 3}]):
        model = MMSAModel.build(tiny_config(tiny_bert, fusion="late", **extra), tiny_bert)
        paths.append(save_checkpoint(tmp_path / f"{k}.safetensors", model, name="m"))
    with pytest.raises(Exception, match="ensemble: the runs have different"):
        make_ensemble(paths, ["test"])
    with pytest.raises(Exception, match="ensemble: needs two runs or more"):
        make_ensemble(paths[:1], ["test"])
