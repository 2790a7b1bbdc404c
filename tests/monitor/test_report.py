"""``mmsa-monitor report`` on recorded sessions (events.jsonl written from real ScoreEvents).

Set ``MMSA_UPDATE_DOCS_IMAGES=1`` to refresh docs/images/report.png from the realistic session.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from mmsa.monitor.report import PNG_SIZE_PX, main, pick_transcript, write_report
from tests.monitor.test_dashboard import DOCS_IMAGES, make_event, sample_events


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (and proof that the file is a PNG)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def write_session(folder: Path, lines: list[str], metadata: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if metadata is not None:
        (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return folder


@pytest.fixture
def session(tmp_path: Path) -> Path:
    # Written out of order, as two publishers could interleave; the report sorts by time.
    events = sample_events()
    lines = [e.to_json() for e in events[1:]] + [events[0].to_json()]
    return write_session(tmp_path / "2026-11-27T19-30-00", lines, {"source": "replay examples/film-review.mp4"})


def test_report_of_a_recorded_session(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(session)]) == 0
    png, page = session / "report.png", session / "report.html"
    assert png_size(png) == PNG_SIZE_PX
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text
    for event in sample_events():
        assert event.text in text
    assert text.index("so i finally went to see the movie") < text.index("so yeah go see it")
    assert "no face" in text  # two utterances were said looking away
    assert "replay examples/film-review.mp4" in text  # metadata.json
    assert "18 utterances" in text
    out = capsys.readouterr().out
    assert "report of 18 utterances" in out and "report.png" in out


def test_report_from_the_events_file_into_another_folder(session: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "film"
    assert main([str(session / "events.jsonl"), "--out", str(out)]) == 0
    assert png_size(out / "report.png") == PNG_SIZE_PX
    assert "lead actress is fantastic" in (out / "report.html").read_text(encoding="utf-8")
    assert not (session / "report.png").exists()


def test_empty_session_says_so(tmp_path: Path) -> None:
    folder = write_session(tmp_path / "empty", [])
    paths = write_report(folder)
    assert paths.n_events == 0
    assert png_size(paths.png) == PNG_SIZE_PX
    assert "No scored utterances in this session" in paths.html.read_text(encoding="utf-8")


def test_malformed_line_names_file_and_line(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events_file = session / "events.jsonl"
    lines = events_file.read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[3])
    bad["score"] = 7.5
    lines[3] = json.dumps(bad)
    lines.insert(6, '{"schema": 1, "session": "trunc')  # a write cut short
    events_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert main([str(session)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{events_file} line 4: bad value for 'score': 7.5" in err
    assert not (session / "report.png").exists()

    assert main([str(session), "--skip-invalid"]) == 0
    assert "2 malformed lines left out" in capsys.readouterr().out
    page = (session / "report.html").read_text(encoding="utf-8")
    assert "2 malformed line(s) left out" in page and "line 4" in page


def test_missing_session_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such session folder or events file"
    (tmp_path / "not-a-session").mkdir()
    assert main([str(tmp_path / "not-a-session")]) == 1
    assert "has no events.jsonl" in capsys.readouterr().err


def test_text_that_needs_escaping_and_unicode_line_separators(tmp_path: Path) -> None:
    said = "<b>great</b> & fun\u2028really"
    folder = write_session(tmp_path / "s", [make_event(0, 0.5, 2.0, said, 1.2, 1.3, 0.8, None, 0).to_json()])
    paths = write_report(folder)
    page = paths.html.read_text(encoding="utf-8")
    assert "&lt;b&gt;great&lt;/b&gt; &amp; fun" in page and "<b>great</b>" not in page


def test_a_long_transcript_keeps_the_strongest_of_both_sides() -> None:
    events = sample_events()
    assert pick_transcript(events, n_rows=100) == events
    # +2.45 and -1.90 first; +2.35 wraps to two lines and no longer fits; -1.60 does. In time order.
    assert [e.score for e in pick_transcript(events, n_rows=3)] == [-1.90, 2.45, -1.60]


def test_report_image_for_the_readme(session: Path) -> None:
    """Writes docs/images/report.png when MMSA_UPDATE_DOCS_IMAGES=1."""
    paths = write_report(session)
    assert png_size(paths.png) == PNG_SIZE_PX
    if os.environ.get("MMSA_UPDATE_DOCS_IMAGES"):
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths.png, DOCS_IMAGES / "report.png")
