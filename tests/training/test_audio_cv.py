"""examples/audio_cv.py: the folds of the audio recipe's actor-level cross-validation are the twin's
recipe with four other actors held out, and together hold every actor out once."""

from __future__ import annotations

import pytest

from mmsa.training.config import load_config
from tests.conftest import load_example


@pytest.fixture(scope="module")
def audio_cv():
    return load_example("audio_cv")


def test_folds_are_the_twin_recipe_with_four_other_actors_held_out(audio_cv, tmp_path):
    twin_text = audio_cv.TWIN.read_text()
    twin, _ = load_config(audio_cv.TWIN)
    held_out: list[int] = []
    for k, held in enumerate(audio_cv.FOLDS, 1):
        for weight in (0.0, 1.0):
            path = tmp_path / f"fold{k}_{weight:g}.toml"
            path.write_text(audio_cv.fold_config(twin_text, held, weight, "/stage2/model.safetensors", seed=k))
            cfg, _ = load_config(path)  # validates too: no actor both trains and is reported
            # every source (the files and the monitor's windows of them) trains on / reports the same actors
            assert len(cfg.data.train) == len(cfg.data.valid) == 2
            for valid in cfg.data.valid:
                assert sorted(valid.actors) == held and valid.reader == "ravdess"
            for train in cfg.data.train:
                assert sorted(train.actors) == [a for a in range(1, 21) if a not in held]
            assert cfg.loss.audio == weight and cfg.train.init_from == "/stage2/model.safetensors" and cfg.train.seed == k
            # everything else is the twin's recipe
            assert (cfg.model, cfg.train.epochs, cfg.train.lr, cfg.select) == (
                twin.model, twin.train.epochs, twin.train.lr, twin.select)
        held_out += held
    assert sorted(held_out) == list(range(1, 21))


def test_a_missing_stage_2_checkpoint_is_one_line_and_exit_2(audio_cv, tmp_path, capsys):
    assert audio_cv.main(["--init", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "cv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.safetensors: no such checkpoint" in err and len(err.splitlines()) == 1
