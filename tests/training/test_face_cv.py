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
