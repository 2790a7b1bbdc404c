"""examples/face_cv.py: the folds of the face recipe's cross-validation are stage 4's recipe with one
fold of FER2013 train held out as the only validation set, and together hold every face out once."""

from __future__ import annotations

import pytest

from mmsa.training.config import load_config
from mmsa.training.data import read_source
from tests.conftest import load_example


@pytest.fixture(scope="module")
def face_cv():
    return load_example("face_cv")


def test_folds_are_stage_4_with_one_fold_held_out(face_cv, tmp_path, data_dir):
    stage4, _ = load_config(face_cv.STAGE4)
    train_rows = {r.id for r in read_source(stage4.data.train[0]).records}
    held_out: list[str] = []
    for k in range(1, 4):
        path = tmp_path / f"fold{k}.toml"
        path.write_text(face_cv.fold_config(face_cv.STAGE4, k, 3, "/stage3/model.safetensors", seed=k,
                                            sets=["train.ema=0.99"]))
        cfg, _ = load_config(path)  # validates too: the held-out fold shares no row with the training faces
        (train,), (held,) = cfg.data.train, cfg.data.valid
        assert (train.split, train.exclude_fold, train.balance) == ("train", f"{k}/3", True)
        assert (held.key, held.split, held.fold, held.balance) == (f"fer_fold{k}", "train", f"{k}/3", False)
        assert (cfg.select, cfg.train.seed, cfg.train.ema, cfg.train.init_from) == ("last", k, 0.99, "/stage3/model.safetensors")
        assert (cfg.model, cfg.train.epochs, cfg.train.lr, cfg.train.trainable) == (
            stage4.model, stage4.train.epochs, stage4.train.lr, stage4.train.trainable)  # else stage 4's recipe
        held_ids = {r.id for r in read_source(held).records}
        assert held_ids and not held_ids & {r.id for r in read_source(train).records}
        held_out += held_ids
    assert sorted(held_out) == sorted(train_rows)  # FER2013 valid and test never appear


def test_a_missing_stage_3_checkpoint_is_one_line_and_exit_2(face_cv, tmp_path, capsys):
    assert face_cv.main(["--init", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "cv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.safetensors: no such checkpoint" in err and len(err.splitlines()) == 1


def test_an_ensemble_recipe_is_cross_validated_whole(face_cv, fer_like, tiny_bert, tmp_path, capsys):
    """Stage 4 trains an ensemble of seeds: every fold trains each seed and scores their ensemble on the held fold."""
    import json

    from mmsa.model import MMSAModel, save_checkpoint
    from tests.model.helpers import tiny_config
    from tests.training.test_ensemble import face_config

    recipe = face_config(tmp_path, fer_like, tiny_bert, ensemble=[1, 2])
    init = save_checkpoint(tmp_path / "stage3.safetensors", MMSAModel.build(
        tiny_config(tiny_bert, fusion="late", face_mesh="packaged", face_cnn="mesh", vision_head="valence3"), tiny_bert),
        name="stage3")
    summary = tmp_path / "cv.json"
    assert face_cv.main(["--init", str(init), "--config", str(recipe), "--out", str(tmp_path / "cv"), "--folds", "2",
                         "--threads", "1", "--json", str(summary)]) == 0
    out = capsys.readouterr().out
    report = json.loads(summary.read_text())
    for k in (1, 2):
        fold = tmp_path / "cv" / f"fold{k}"
        assert (fold / "seed1" / "model.safetensors").is_file() and (fold / "seed2" / "model.safetensors").is_file()
        assert report["ensemble"][k - 1] == round(json.loads((fold / "ensemble.json").read_text())[
            "valid"][f"fer_fold{k}"]["valence_uar3"], 4)
        seeds = [face_cv.curve(fold / f"seed{s}", f"fer_fold{k}")[-1] for s in (1, 2)]
        assert report["curves"][k - 1][-1] == round(sum(seeds) / 2, 4)  # the curve: the mean of the seeds'
    assert report["seed"] == [1, 2] and "the ensemble: fold1" in out and "over its seeds' mean" in out
