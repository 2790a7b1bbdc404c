"""examples/ravdess_windows.py: real RAVDESS clips cut by the monitor's own segmenter, the windows the live
monitor would score (docs/performance.md measures the audio branch and Whisper on them)."""

from __future__ import annotations

import csv

import pytest

from mmsa.media import load_audio
from tests.conftest import load_example


@pytest.fixture(scope="module")
def rw():
    return load_example("ravdess_windows")


def frames(path) -> int:
    return load_audio(path).size


def read(folder) -> dict[str, dict]:
    with (folder / "labels.csv").open(newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


@pytest.fixture()
def cut(rw, data_dir, tmp_path):
    """cut(name, *options) -> labels.csv's rows of the windows written to tmp_path/name (RAVDESS actors as given)."""
    ravdess = data_dir / "ravdess"
    if not (ravdess / "labels.csv").is_file():
        pytest.skip("needs ../shared/data/ravdess")

    def run(name: str, *options: str) -> dict[str, dict]:
        assert rw.main([str(tmp_path / name), "--data", str(ravdess), *options]) == 0
        return read(tmp_path / name)

    run.ravdess = ravdess  # type: ignore[attr-defined]
    return run


def test_windows_keep_the_pads_around_the_speech(cut, tmp_path, capsys):
    short, long_ = tmp_path / "end100", tmp_path / "end200"
    a, b = cut("end100", "--actors", "1"), cut("end200", "--actors", "1", "--end-pad-ms", "200")
    assert len(a) >= 10 and a.keys() == b.keys()  # 12 clips of actor 1; the segmenter finds speech in (nearly) all
    for name, row in a.items():
        assert row["emotion"] and row["actor"] == "01"
        clip_s = float(row["duration_s"])
        n100, n200 = frames(short / name), frames(long_ / name)
        assert 0.5 * 16_000 < n100 < clip_s * 16_000  # the speech and its pads, not the whole file
        assert n200 - n100 == 1_600  # 100 ms more of the closing silence, the rest the same cut
    assert "pads 200 ms before the speech, 100 ms after" in capsys.readouterr().out


def test_missing_data_or_bad_pads_are_one_line_and_exit_2(rw, tmp_path, capsys):
    assert rw.main([str(tmp_path / "out"), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("ravdess_windows: missing ")
    (tmp_path / "labels.csv").write_text("path,actor\n")
    assert rw.main([str(tmp_path / "out"), "--data", str(tmp_path), "--end-pad-ms", "600"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ravdess_windows: end_pad_ms") and len(err.splitlines()) == 1


def test_the_vad_step_is_the_shipped_models_unless_asked(rw, cut, tmp_path):
    # the default cuts with 32 ms decisions (make default-model's windows); --vad-hop-ms 16 as the monitor does now:
    # the same clips give windows of the same speech, cut at 16 ms instead of 32 ms steps
    old, new = tmp_path / "hop32", tmp_path / "hop16"
    a, b = cut("hop32", "--actors", "2"), cut("hop16", "--actors", "2", "--vad-hop-ms", "16")
    assert len(a) >= 10 and a.keys() == b.keys()
    moved = [abs(frames(old / name) - frames(new / name)) for name in a]
    assert max(moved) <= 16_000 and any(moved)
    with pytest.raises(SystemExit):
        rw.main([str(tmp_path / "bad"), "--data", str(cut.ravdess), "--vad-hop-ms", "20"])
