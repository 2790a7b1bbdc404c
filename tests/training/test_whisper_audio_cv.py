"""examples/whisper_audio_cv.py: a classifier on Whisper's encoder statistics of real RAVDESS speech tells
the valence of actors it never heard (the measurement behind the model card's "The audio branch:
Whisper's encoder"; the statistics themselves: tests/model/test_speech.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_example


@pytest.fixture(scope="module")
def wcv():
    return load_example("whisper_audio_cv")


@pytest.fixture(scope="module")
def ravdess(data_dir):
    path = data_dir / "ravdess"
    if not (path / "labels.csv").is_file():
        pytest.skip("needs ../shared/data/ravdess")
    return path


def test_a_linear_probe_tells_the_valence_of_unseen_actors(wcv, ravdess, tmp_path, capsys):
    # four actors, each held out in turn (the full run: five folds of four of all twenty)
    assert wcv.main(["--data", str(ravdess), "--out", str(tmp_path), "--actors", "1", "2", "3", "4",
                     "--heads", "linear", "--seeds", "1", "--epochs", "100"]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "results-1_2_3_4.json").read_text())
    linear = res["heads"]["linear"]
    assert res["clips"] == 4 * 52 and [r["held_out"] for r in linear["runs"]] == [[1], [2], [3], [4]]
    assert linear["mean"] > 0.5, out  # chance: 1/3
    assert f"linear valence_uar3 {linear['mean']:.3f}" in out
    # the input ablation reads half the features, cached from the run above
    assert wcv.main(["--data", str(ravdess), "--out", str(tmp_path), "--actors", "1", "2", "3", "4",
                     "--heads", "linear", "--seeds", "1", "--epochs", "100", "--stats", "mean"]) == 0
    assert "the classifier reads mean (384 numbers)" in capsys.readouterr().out
    mean_only = json.loads((tmp_path / "results-1_2_3_4-mean.json").read_text())
    assert mean_only["stats"] == "mean" and mean_only["heads"]["linear"]["mean"] > 0.5


def test_missing_labels_are_one_line_and_exit_2(wcv, tmp_path, capsys):
    assert wcv.main(["--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "labels.csv: no such file" in err and len(err.splitlines()) == 1
