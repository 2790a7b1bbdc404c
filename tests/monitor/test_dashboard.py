"""The Textual dashboard driven headless with Pilot and fed real ScoreEvents through a real EventBus.

Set ``MMSA_UPDATE_DOCS_IMAGES=1`` to refresh docs/images/dashboard.svg (and the wide variant)
from the realistic session below; otherwise the screenshots go to a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.widget import Widget

from mmsa.monitor import dashboard, widgets
from mmsa.monitor.bus import EventBus
from mmsa.monitor.dashboard import HelpScreen, MonitorApp
from mmsa.monitor.errors import MonitorError
from mmsa.monitor.events import (
    ModalityScore,
    MonitorStatus,
    PartialScore,
    ScoreEvent,
    confidence_of,
    validate_event,
)
from mmsa.monitor.widgets import Transcript, plot_timeline, score_bar, status_text

REPO = Path(__file__).resolve().parents[2]
DOCS_IMAGES = REPO / "docs" / "images"
SESSION = "5d0c6f1e-2b7a-4d38-9a51-0f3c2e8b9d41"
MODEL = "default@3f9a1c2e"

# A realistic two-and-a-half-minute session: someone talking about a film they saw.
# (t_start, t_end, text, fused, text, audio, vision or None when no face, face frames)
SAMPLE: list[tuple[float, float, str, float, float, float, float | None, int]] = [
    (1.2, 4.0, "so i finally went to see the movie last night", 0.12, 0.20, 0.05, 0.10, 22),
    (5.1, 9.8, "and honestly the first half hour was really boring", -1.35, -1.70, -0.60, -0.90, 36),
    (11.0, 14.2, "nothing happens it just drags on and on", -1.90, -2.10, -1.10, -1.40, 25),
    (16.3, 19.0, "but then the music kicks in", 0.45, 0.60, 0.70, 0.20, 21),
    (20.5, 25.4, "and the whole thing completely changes i loved that part", 2.10, 2.30, 1.40, 1.60, 38),
    (27.0, 30.1, "the lead actress is fantastic", 2.45, 2.60, 1.20, 1.90, 24),
    (32.4, 36.0, "i mean every scene with her just works", 1.80, 1.90, 1.00, None, 0),
    (38.2, 41.5, "the villain on the other hand", -0.30, -0.20, -0.10, None, 0),
    (42.0, 47.3, "was kind of a joke to be honest he was not scary at all", -1.60, -1.80, -0.80, -1.10, 40),
    (49.1, 52.0, "and the dialogue was pretty cheesy", -1.10, -1.40, -0.30, -0.50, 23),
    (54.0, 57.7, "the special effects though wow", 1.55, 1.40, 1.60, 1.30, 29),
    (60.2, 64.9, "i have not seen anything like that in a theater in years", 2.20, 2.00, 1.50, 1.80, 37),
    (67.0, 69.5, "it is long though", -0.60, -0.70, -0.20, -0.40, 20),
    (71.0, 76.2, "almost three hours and my back was killing me by the end", -1.45, -1.60, -0.90, -1.00, 41),
    (78.5, 81.0, "would i see it again", 0.05, 0.00, 0.10, 0.05, 19),
    (83.3, 86.1, "probably yes actually", 1.05, 1.20, 0.60, 0.70, 22),
    (88.0, 93.4, "it is not perfect but it is the most fun i have had at the movies this year", 2.35, 2.50, 1.30, 1.70, 43),
    (95.9, 98.2, "so yeah go see it", 1.70, 1.80, 1.10, 1.20, 18),
]


def make_event(seq: int, t_start: float, t_end: float, text: str, fused: float, s_text: float | None,
               s_audio: float | None, s_vision: float | None, face_frames: int = 0) -> ScoreEvent:
    """A ScoreEvent that passes the contract's validation (the same object the pipeline publishes)."""
    unimodal = {"text": s_text, "audio": s_audio, "vision": s_vision}
    mods = {m: ModalityScore(s is not None, s) for m, s in unimodal.items()}
    mods["vision"].face_frames = face_frames
    event = ScoreEvent(
        session=SESSION, seq=seq, t_start=t_start, t_end=t_end, text=text, score=fused, modalities=mods,
        latency_ms={"asr": 290.0 + 7 * seq, "model": 17.0 + seq % 3, "total": 380.0 + 11 * seq}, model=MODEL,
        wall_time=f"2026-11-27T19:{30 + int(t_end) // 60:02d}:{int(t_end) % 60:02d}.000Z",
        confidence=confidence_of(fused, unimodal),
    )
    validate_event(event.to_dict())
    return event


def sample_events() -> list[ScoreEvent]:
    return [make_event(i, *row) for i, row in enumerate(SAMPLE)]


LIVE_STATUS = MonitorStatus(
    source="replay examples/film-review.mp4", camera="replay", mic="replay", model=MODEL, device="cpu",
    mqtt="connected", drops={"frames": 0}, latency_p50_ms=402, latency_p95_ms=611,
)


class FakeControls:
    """Stands in for the running monitor (the other side of the Controls protocol); records calls."""

    def __init__(self, fail: str | None = None) -> None:
        self.stops = 0
        self.recording = False
        self.fail = fail

    def request_stop(self) -> None:
        self.stops += 1

    def toggle_recording(self) -> bool:
        if self.fail:
            raise MonitorError(self.fail)
        self.recording = not self.recording
        return self.recording


def shown(widget: Widget) -> str:
    """The text a widget currently draws on screen (its visible region), lines joined by newlines."""
    w, h = widget.outer_size  # border included; also for rows scrolled out of view
    return "\n".join(strip.text.rstrip() for strip in widget.render_lines(Region(0, 0, w, h)))


def transcript_text(app: MonitorApp) -> str:
    """Every transcript line as rendered (lines scrolled out of view included)."""
    return "\n".join(strip.text.rstrip() for strip in app.query_one(Transcript).lines)


def publish_all(bus: EventBus, events: list[ScoreEvent]) -> None:
    for ev in events:
        bus.publish(ev)


# ---- pure helpers -------------------------------------------------------------------------------


def test_plot_timeline_bars_follow_the_sign_and_the_window() -> None:
    lines = plot_timeline([(0.0, 10.0, 3.0), (20.0, 30.0, -3.0)], width=63, height=7, now_s=30.0, window_s=60.0)
    assert len(lines) == 7
    rows = [line.plain for line in lines]
    assert all(len(r) == 63 for r in rows[:6])
    # 60 plot columns of 1 s: +3 fills every row above zero, -3 every row below it.
    assert rows[0][3 + 5] == "█" and rows[2][3 + 5] == "█" and rows[3][3 + 5] == " "
    assert rows[3][3 + 25] == "█" and rows[5][3 + 25] == "█" and rows[0][3 + 25] == " "
    assert rows[2][3 + 45] == "▁"  # the zero axis where nobody spoke
    assert rows[0].startswith("+3") and rows[5].startswith("-3")
    assert "0:00" in rows[6] and "0:30" in rows[6]


def test_plot_timeline_scrolls_to_the_last_minutes() -> None:
    lines = plot_timeline([(0.0, 5.0, 2.0), (590.0, 600.0, 2.0)], width=63, height=7, now_s=600.0, window_s=60.0)
    top = lines[1].plain[3:]  # +2 fills two of the three rows above zero
    assert top[-1] == "█" and top[0] == " "  # the utterance at 0 s scrolled out of the window
    assert "10:00" in lines[6].plain


def test_score_bar_fills_from_the_center() -> None:
    assert score_bar(None, 7).plain == "───│───"
    assert score_bar(3.0, 7).plain == "───│███"
    assert score_bar(-1.5, 7).plain == "─▐█│───"


def test_status_text_shows_errors_lag_and_degradation_only_when_they_matter() -> None:
    quiet = status_text(LIVE_STATUS.replace(behind_s=0.4)).plain  # work in flight, not a lag worth a warning
    assert "errors" not in quiet and "behind" not in quiet and "degraded" not in quiet
    loaded = LIVE_STATUS.replace(errors=3, behind_s=4.25, degraded=["partials", "faces"])
    text = status_text(loaded).plain
    assert "errors: 3" in text and "behind 4.2 s" in text and "degraded: partials, faces" in text
    assert text.index("p50/p95 402/611 ms") < text.index("errors: 3")


# ---- the app --------------------------------------------------------------------------------------


async def test_live_session_shows_timeline_score_modalities_and_transcript() -> None:
    bus = EventBus()
    app = MonitorApp(bus, FakeControls(), title="mmsa-monitor")
    async with app.run_test(size=(80, 24)) as pilot:
        bus.publish(LIVE_STATUS)
        events = sample_events()
        publish_all(bus, events[:6])
        await pilot.pause()
        last = events[5]
        assert app.query_one("#score-digits").value == "+2.45"
        caption = shown(app.query_one("#score-caption"))
        assert "POSITIVE" in caption and f"conf {last.confidence:.2f}" in caption and "0:27" in caption
        mods = shown(app.query_one("#modalities"))
        assert "+2.60" in mods and "+1.20" in mods and "+1.90" in mods and "face seen (24 fr)" in mods
        assert "speech heard" in mods
        transcript = transcript_text(app)
        assert "the lead actress is fantastic" in transcript and "+2.45" in transcript
        assert transcript.index("went to see the movie") < transcript.index("the lead actress")
        timeline = shown(app.query_one("#timeline"))
        assert "█" in timeline and "0:00" in timeline
        top = shown(app.query_one("#topbar"))
        assert "LIVE" in top and "6 utterances" in top
        status = shown(app.query_one("#status"))
        for part in ("replay examples/film-review.mp4", "cam: replay", "MQTT: connected", "drops: 0", "p50/p95 402/611 ms"):
            assert part in status
        # Everything fits in 80x24: the status bar and the footer are on screen, nothing overlaps.
        assert app.query_one("#status").region.bottom <= 23
        assert app.query_one("#transcript").region.height >= 5


async def test_empty_session() -> None:
    bus = EventBus()
    app = MonitorApp(bus)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.query_one("#score-digits").value == ""
        assert "waiting for speech" in shown(app.query_one("#score-caption"))
        assert "waiting for the first utterance" in shown(app.query_one("#timeline"))
        assert "0 utterances" in shown(app.query_one("#topbar"))
        bus.close()
        await pilot.pause()
        top = shown(app.query_one("#topbar"))
        assert "SESSION ENDED" in top and "none were scored" in top
        assert transcript_text(app) == ""
        assert app.is_running  # the data stays until the user quits


async def test_session_without_a_face_shows_vision_absent() -> None:
    bus = EventBus()
    app = MonitorApp(bus)
    async with app.run_test(size=(80, 24)) as pilot:
        bus.publish(make_event(0, 2.0, 5.5, "i am not sure about this", -0.8, -1.1, -0.3, None, 0))
        await pilot.pause()
        mods = shown(app.query_one("#modalities"))
        vision = next(line for line in mods.splitlines() if line.startswith("vision"))
        assert "no face" in vision and "—" in vision and "face seen" not in vision
        assert "-1.10" in mods and "-0.30" in mods
        assert "no face" in transcript_text(app)
        assert app.query_one("#score-digits").value == "-0.80"
        assert "NEGATIVE" in shown(app.query_one("#score-caption"))


async def test_broker_disconnect_shows_in_the_status_bar() -> None:
    bus = EventBus()
    app = MonitorApp(bus)
    async with app.run_test(size=(80, 24)) as pilot:
        bus.publish(LIVE_STATUS)
        await pilot.pause()
        assert "MQTT: connected" in shown(app.query_one("#status"))
        bus.update_status(mqtt="disconnected", message="broker unreachable, retrying")
        bus.publish(make_event(0, 1.0, 3.0, "still scoring", 0.2, 0.3, 0.1, 0.0, 12))
        await pilot.pause()
        status = shown(app.query_one("#status"))
        assert "MQTT: disconnected" in status and "broker unreachable, retrying" in status
        assert "still scoring" in transcript_text(app)  # scores keep coming without the broker
        bus.update_status(mqtt="connected", message="", drops={"frames": 3}, recording=True)
        await pilot.pause()
        status = shown(app.query_one("#status"))
        assert "MQTT: connected" in status and "drops: 3 (frames 3)" in status and "● REC" in status


async def test_pause_keeps_collecting_and_shows_on_resume() -> None:
    bus = EventBus()
    app = MonitorApp(bus)
    events = sample_events()
    async with app.run_test(size=(80, 24)) as pilot:
        bus.publish(events[0])
        await pilot.pause()
        await pilot.press("p")
        bus.publish(events[1])
        bus.publish(PartialScore(events[2]))
        bus.update_status(mqtt="disconnected")
        await pilot.pause()
        assert app.paused
        top = shown(app.query_one("#topbar"))
        assert "PAUSED" in top and "1 new" in top
        assert "first half hour" not in transcript_text(app)
        assert app.query_one("#score-digits").value == "+0.12"
        assert "MQTT: disconnected" in shown(app.query_one("#status"))  # health stays live
        await pilot.press("p")
        await pilot.pause()
        assert "first half hour" in transcript_text(app)
        assert app.query_one("#score-digits").value == "-1.35"
        assert "listening" in shown(app.query_one("#partial"))
        assert "LIVE" in shown(app.query_one("#topbar"))
        # The session ends while paused: both are said, and the backlog shows on resume.
        await pilot.press("p")
        bus.publish(events[3])
        bus.close()
        await pilot.pause()
        top = shown(app.query_one("#topbar"))
        assert "SESSION ENDED" in top and "PAUSED" in top and "1 new" in top
        await pilot.press("p")
        await pilot.pause()
        assert "music kicks in" in transcript_text(app)
        assert "session ended" in shown(app.query_one("#partial"))


async def test_partial_score_is_shown_until_the_utterance_is_scored() -> None:
    bus = EventBus()
    app = MonitorApp(bus)
    async with app.run_test(size=(80, 24)) as pilot:
        partial = make_event(0, 1.0, 2.5, "the first half", -0.9, -1.0, -0.4, -0.2, 10)
        bus.publish(PartialScore(partial))
        await pilot.pause()
        line = shown(app.query_one("#partial"))
        assert "listening" in line and "-0.90" in line and "the first half" in line
        bus.publish(make_event(0, 1.0, 4.0, "the first half was boring", -1.3, -1.5, -0.6, -0.7, 20))
        await pilot.pause()
        assert "listening" not in shown(app.query_one("#partial"))


async def test_help_overlay_lists_the_keys() -> None:
    app = MonitorApp(EventBus())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        body = shown(app.screen.query_one("#help-body"))
        for key in ("q   quit", "p   pause", "r   start / stop recording", "?   this help"):
            assert key in body
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_q_requests_a_clean_stop_and_exits() -> None:
    controls = FakeControls()
    app = MonitorApp(EventBus(), controls)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert controls.stops == 1
    assert app.return_code == 0


async def test_ctrl_q_also_stops_the_monitor() -> None:
    controls = FakeControls()
    app = MonitorApp(EventBus(), controls)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert controls.stops == 1


async def test_q_quits_from_the_help_overlay() -> None:
    controls = FakeControls()
    app = MonitorApp(EventBus(), controls)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.press("q")
        await pilot.pause()
    assert controls.stops == 1


async def test_r_toggles_recording_through_the_controls() -> None:
    controls = FakeControls()
    bus = EventBus()
    app = MonitorApp(bus, controls)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert controls.recording
        assert "recording on" in shown(app.query_one("#topbar"))
        assert "● REC" in shown(app.query_one("#status"))
        await pilot.press("r")
        await pilot.pause()
        assert not controls.recording
        assert "recording off" in shown(app.query_one("#topbar"))
        assert "rec off" in shown(app.query_one("#status"))


async def test_r_without_controls_or_with_a_failure_says_so() -> None:
    app = MonitorApp(EventBus())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert "recording is not available" in shown(app.query_one("#topbar"))
    app = MonitorApp(EventBus(), FakeControls(fail="no --record folder given"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert "recording: no --record folder given" in shown(app.query_one("#topbar"))
        assert app.is_running


async def test_subscribing_after_the_session_ended() -> None:
    bus = EventBus()
    bus.close()
    app = MonitorApp(bus)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "SESSION ENDED" in shown(app.query_one("#topbar"))


async def test_wide_terminal_puts_the_transcript_beside_and_adds_modality_traces() -> None:
    bus = EventBus()
    app = MonitorApp(bus)
    async with app.run_test(size=(160, 48)) as pilot:
        bus.publish(LIVE_STATUS)
        publish_all(bus, sample_events())
        await pilot.pause()
        timeline = app.query_one("#timeline").region
        transcript = app.query_one("#transcript-box").region
        assert transcript.x >= timeline.right  # side by side
        assert timeline.height >= 10
        for m in ("text", "audio", "vision"):
            trace = app.query_one(f"#trace-{m}")
            assert trace.display and trace.region.height >= 5
        assert "·" in shown(app.query_one("#trace-vision"))  # the utterances without a face
        assert "so yeah go see it" in transcript_text(app)
        width = app.query_one(Transcript).scrollable_content_region.width
        assert all(len(line.rstrip()) <= width for line in transcript_text(app).splitlines())  # wrapped, not cut
    narrow = MonitorApp(EventBus())
    async with narrow.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert narrow.query_one("#trace-text").region.height == 0


async def test_transcript_keeps_the_newest_lines_and_rewraps_on_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(widgets, "TRANSCRIPT_MAX_LINES", 6)
    bus = EventBus()
    app = MonitorApp(bus)
    async with app.run_test(size=(100, 30)) as pilot:
        publish_all(bus, sample_events())
        await pilot.pause()
        lines = transcript_text(app).splitlines()
        assert len(lines) == 6 and "so yeah go see it" in lines[-1]
        assert "18 utterances" in shown(app.query_one("#topbar"))  # the count is of the whole session
        long_line = "it is not perfect but it is the most fun i have had at the movies this year"
        assert any(long_line in line for line in lines)  # one line at 100 columns
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        lines = transcript_text(app).splitlines()
        assert not any(long_line in line for line in lines)  # wrapped at 80 columns
        assert "so yeah go see it" in lines[-1]
        assert all(len(line) <= app.query_one(Transcript).scrollable_content_region.width for line in lines)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_screenshot_of_a_realistic_session(size: tuple[int, int], tmp_path: Path) -> None:
    """Writes the README screenshot (docs/images/ with MMSA_UPDATE_DOCS_IMAGES=1)."""
    out_dir = DOCS_IMAGES if os.environ.get("MMSA_UPDATE_DOCS_IMAGES") else tmp_path
    name = "dashboard.svg" if size == (80, 24) else "dashboard-wide.svg"
    bus = EventBus()
    app = MonitorApp(bus, FakeControls())
    async with app.run_test(size=size) as pilot:
        bus.publish(LIVE_STATUS.replace(mqtt="connected", recording=True))
        events = sample_events()
        publish_all(bus, events)
        bus.publish(PartialScore(make_event(len(events), 100.5, 102.0, "and bring", 0.6, 0.5, 0.4, 0.6, 9)))
        await pilot.pause()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = Path(app.save_screenshot(filename=name, path=str(out_dir)))
    svg = path.read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "go see it" in svg.replace("&#160;", " ")


async def test_history_is_bounded_and_the_count_is_of_the_whole_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "EVENTS_MAX", 5)
    bus = EventBus()
    app = MonitorApp(bus)
    events = sample_events()
    async with app.run_test(size=(100, 30)) as pilot:
        publish_all(bus, events[:8])
        await pilot.pause()
        assert [e.seq for e in app.events] == [3, 4, 5, 6, 7] and app.n_events == 8
        await pilot.press("p")
        publish_all(bus, events[8:])  # 10 more while paused: only the newest 5 wait for the display
        await pilot.pause()
        assert "10 new" in shown(app.query_one("#topbar"))
        await pilot.press("p")
        await pilot.pause()
        assert [e.seq for e in app.events] == [13, 14, 15, 16, 17]
        top = shown(app.query_one("#topbar"))
        assert "18 utterances" in top and "1:38" in top  # the last utterance ends at 98.2 s
        transcript = transcript_text(app)
        assert "so yeah go see it" in transcript and "the lead actress" in transcript  # shown before the pause
        assert "the special effects" not in transcript  # seq 10: arrived while paused, beyond the cap
        assert app.query_one("#score-digits").value == "+1.70"
