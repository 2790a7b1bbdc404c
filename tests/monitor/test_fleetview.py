"""The fleet dashboard driven by its Pilot, fed through a FeedQueue as ``watch`` and the local monitor feed it.

Set ``MMSA_UPDATE_DOCS_IMAGES=1`` to refresh docs/images/fleet.svg from the fleet below.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from rich.color import Color
from textual.geometry import Region

from mmsa.monitor.events import PartialScore, ScoreEvent
from mmsa.monitor.fleet import FeedQueue, FeedStatus, Presence, StreamKey
from mmsa.monitor.fleetview import FleetApp, StreamRow, StreamScreen, clock_time, sparkline
from mmsa.monitor.widgets import DIM, POLARITY_COLORS, Transcript
from tests.monitor.test_dashboard import DOCS_IMAGES, LIVE_STATUS, make_event, sample_events, shown

HALL_CAM, HALL_DOOR, KITCHEN = StreamKey("hall", "cam0"), StreamKey("hall", "door"), StreamKey("kitchen")

# Three more speakers for the screenshot: (t_start, t_end, text, fused, text, audio, vision or None, face frames)
OTHERS = {
    HALL_DOOR: [
        (2.0, 5.2, "can somebody open the door please", -0.20, -0.30, 0.10, None, 0),
        (7.5, 11.0, "i have been waiting out here for ten minutes", -1.70, -1.90, -0.90, None, 0),
        (13.2, 16.0, "this is really annoying", -2.10, -2.30, -1.20, None, 0),
    ],
    KITCHEN: [
        (1.0, 3.5, "the soup smells wonderful", 1.90, 2.10, 0.80, 1.20, 20),
        (5.0, 8.0, "can you pass me the salt", 0.10, 0.00, 0.20, 0.10, 25),
        (9.5, 12.1, "thanks this is perfect", 2.20, 2.40, 1.10, 1.50, 22),
    ],
}


def others(key: StreamKey) -> list[ScoreEvent]:
    return [make_event(i, *row) for i, row in enumerate(OTHERS[key])]


def screen_text(app: FleetApp) -> str:
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def row_of(app: FleetApp, key: StreamKey) -> StreamRow:
    return next(row for row in app.query(StreamRow) if row.state.key == key)


def colors_of(widget) -> set[str]:
    """The foreground colours a widget draws its text in."""
    w, h = widget.outer_size
    found = set()
    for strip in widget.render_lines(Region(0, 0, w, h)):
        for seg in strip:
            if seg.text.strip() and seg.style is not None and seg.style.color is not None:
                found.add(seg.style.color.get_truecolor().hex)
    return found


async def until(pilot, condition, timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds (the feed is consumed by a worker)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the app"
        await pilot.pause(0.02)


def fill(feed: FeedQueue, now: float) -> None:
    """A fleet of three streams: a busy camera, a door that went away, a kitchen with degraded health."""
    feed.put(None, FeedStatus("MQTT connected to broker.local:1883, watching mmsa-monitor/#"))
    feed.put(HALL_CAM, Presence(True, now - 600))
    for ev in sample_events():
        feed.put(HALL_CAM, ev)
    feed.put(HALL_CAM, LIVE_STATUS)
    feed.put(HALL_DOOR, Presence(True, now - 900))
    for ev in others(HALL_DOOR):
        feed.put(HALL_DOOR, ev)
    feed.put(HALL_DOOR, Presence(False, now - 120))  # its Last Will
    feed.put(KITCHEN, Presence(True, None))  # retained: online since before the watcher started
    for ev in others(KITCHEN):
        feed.put(KITCHEN, ev)
    loaded = LIVE_STATUS.replace(source="camera 0 + mic", camera="ok", mic="ok", drops={"audio": 3},
                                 latency_p50_ms=820, latency_p95_ms=1650, message="scorer is behind")
    loaded.errors, loaded.behind_s, loaded.degraded = 2, 3.5, ["partials"]
    feed.put(KITCHEN, loaded)
    feed.put(KITCHEN, PartialScore(make_event(3, 13.0, 14.2, "and the bread", 0.8, 0.9, 0.3, 0.5, 11)))


async def test_the_list_shows_every_stream_sorted_with_score_presence_transcript_and_health() -> None:
    feed, now = FeedQueue(), time.time()
    app = FleetApp(feed, title="fleet")
    async with app.run_test(size=(120, 30)) as pilot:
        fill(feed, now)
        await until(pilot, lambda: len(app.query(StreamRow)) == 3 and app.streams[KITCHEN].partial is not None)
        await pilot.pause()
        assert [r.state.key for r in app.query(StreamRow)] == [HALL_CAM, HALL_DOOR, KITCHEN]
        cam = shown(row_of(app, HALL_CAM)).splitlines()
        assert cam[0].startswith("● hall/cam0") and "+1.70 positive" in cam[0]
        assert f"online since {clock_time(now - 600)}" in cam[1] and "18 utt" in cam[1] and "so yeah go see it" in cam[1]
        assert "drops: 0" in cam[2] and "latency p50/p95 402/611 ms" in cam[2]
        door = shown(row_of(app, HALL_DOOR)).splitlines()
        assert door[0].startswith("○ hall/door") and "-2.10 negative" in door[0]
        assert f"offline since {clock_time(now - 120)}" in door[1] and "this is really annoying" in door[1]
        assert "no health published" in door[2]
        kitchen = shown(row_of(app, KITCHEN)).splitlines()
        assert "● online ·" in kitchen[1] and "speaking…" in kitchen[1]  # online since before we watched
        for part in ("drops: 3 (audio 3)", "latency p50/p95 820/1650 ms", "errors: 2", "behind 3.5 s",
                     "degraded: partials", "scorer is behind"):
            assert part in kitchen[2]
        # The offline stream is greyed: every character in the dim colour; the others keep their colours.
        assert colors_of(row_of(app, HALL_DOOR)) == {Color.parse(DIM).get_truecolor().hex}
        assert Color.parse(POLARITY_COLORS["positive"]).get_truecolor().hex in colors_of(row_of(app, HALL_CAM))
        top = shown(app.query_one("#fleet-topbar"))
        assert "3 streams · 2 online · 1 offline" in top
        assert "MQTT connected to broker.local:1883" in shown(app.query_one("#fleet-status"))


def test_sparkline_heights_follow_the_score() -> None:
    assert sparkline([-3.0, 0.0, 3.0, 1.0], 10).plain == "▁▅█▆"
    assert sparkline([-3.0, 0.0, 3.0], 2).plain == "▅█"  # the newest that fit
    assert sparkline([1.0], 0).plain == ""


async def test_enter_opens_the_stream_view_which_follows_that_stream_and_escape_returns() -> None:
    feed = FeedQueue()
    app = FleetApp(feed)
    async with app.run_test(size=(100, 30)) as pilot:
        fill(feed, time.time())
        await until(pilot, lambda: len(app.query(StreamRow)) == 3 and app.streams[KITCHEN].health is not None)
        await pilot.press("down", "down")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StreamScreen))
        screen = app.screen
        assert screen.key == KITCHEN
        assert screen.query_one("#score-digits").value == "+2.20"
        assert "thanks this is perfect" in "\n".join(s.text for s in screen.query_one(Transcript).lines)
        assert "listening" in shown(screen.query_one("#partial")) and "and the bread" in shown(screen.query_one("#partial"))
        assert "errors: 2" in shown(screen.query_one("#status"))
        assert "kitchen" in shown(screen.query_one("#topbar")) and "3 utterances" in shown(screen.query_one("#topbar"))
        # New items: the kitchen's appear, the hall camera's do not.
        feed.put(HALL_CAM, make_event(18, 100.0, 103.0, "one more from the hall", -1.0, -1.2, -0.3, -0.4, 20))
        feed.put(KITCHEN, make_event(3, 13.0, 15.5, "and the bread is still warm", 1.4, 1.6, 0.6, 0.9, 24))
        await until(pilot, lambda: app.streams[KITCHEN].n_events == 4)
        await pilot.pause()
        lines = "\n".join(s.text for s in screen.query_one(Transcript).lines)
        assert "still warm" in lines and "one more from the hall" not in lines
        assert screen.query_one("#score-digits").value == "+1.40"
        assert "listening" not in shown(screen.query_one("#partial"))  # the event it previewed arrived
        feed.put(KITCHEN, Presence(False, time.time()))
        await until(pilot, lambda: "offline" in shown(screen.query_one("#topbar")))
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, StreamScreen)
        assert app.fleet_list.index == 2  # the highlight stayed on the kitchen
        assert "-1.00 negative" in shown(row_of(app, HALL_CAM))  # the list kept up meanwhile


async def test_a_click_opens_a_stream_and_a_stream_without_health_says_so() -> None:
    feed = FeedQueue()
    app = FleetApp(feed)
    async with app.run_test(size=(100, 30)) as pilot:
        fill(feed, time.time())
        await until(pilot, lambda: len(app.query(StreamRow)) == 3)
        await pilot.pause()
        await pilot.click(row_of(app, HALL_DOOR))
        await until(pilot, lambda: isinstance(app.screen, StreamScreen))
        assert app.screen.key == HALL_DOOR
        assert "no health published" in shown(app.screen.query_one("#status"))
        assert "offline since" in shown(app.screen.query_one("#topbar"))


async def test_a_new_session_on_an_open_stream_starts_its_view_again() -> None:
    feed = FeedQueue()
    app = FleetApp(feed)
    async with app.run_test(size=(100, 30)) as pilot:
        for ev in sample_events()[:5]:
            feed.put(KITCHEN, ev)
        await until(pilot, lambda: len(app.query(StreamRow)) == 1 and app.streams[KITCHEN].n_events == 5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StreamScreen))
        restarted = ScoreEvent.from_dict({**others(KITCHEN)[0].to_dict(), "session": "after-a-restart"})
        feed.put(KITCHEN, restarted)
        await until(pilot, lambda: app.streams[KITCHEN].n_events == 6)
        await pilot.pause()
        lines = [s.text for s in app.screen.query_one(Transcript).lines]
        assert len(lines) == 1 and "the soup smells wonderful" in lines[0]
        assert app.screen.query_one("#score-digits").value == "+1.90"


async def test_rows_arriving_keep_the_highlight_and_the_feed_end_is_said() -> None:
    feed = FeedQueue()
    app = FleetApp(feed)
    async with app.run_test(size=(100, 30)) as pilot:
        assert "waiting for streams" in shown(app.query_one("#fleet-empty"))
        feed.put(HALL_DOOR, Presence(True, None))
        feed.put(KITCHEN, Presence(True, None))
        await until(pilot, lambda: len(app.query(StreamRow)) == 2)
        await pilot.press("down")
        assert app.fleet_list.highlighted_child.query_one(StreamRow).state.key == KITCHEN
        feed.put(HALL_CAM, Presence(True, None))  # sorts before both
        feed.put(None, FeedStatus("MQTT lost broker.local:1883 ([Errno 111] Connection refused); retrying", ok=False))
        await until(pilot, lambda: len(app.query(StreamRow)) == 3)
        await pilot.pause()
        assert app.fleet_list.highlighted_child.query_one(StreamRow).state.key == KITCHEN
        assert "MQTT lost broker.local:1883" in shown(app.query_one("#fleet-status"))
        assert not app.query_one("#fleet-empty").display
        feed.close()
        await until(pilot, lambda: app.ended)
        await pilot.pause()
        assert "ENDED" in shown(app.query_one("#fleet-topbar")) and app.is_running  # stays until q


async def test_q_stops_the_local_monitor_through_its_controls() -> None:
    class Controls:
        stops = 0

        def request_stop(self) -> None:
            self.stops += 1

        def toggle_recording(self) -> bool:  # pragma: no cover - not a fleet key
            return False

    controls = Controls()
    app = FleetApp(FeedQueue(), controls)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert controls.stops == 1 and app.return_code == 0


async def test_screenshot_of_a_fleet(tmp_path: Path) -> None:
    """Writes docs/images/fleet.svg (with MMSA_UPDATE_DOCS_IMAGES=1) for the README and docs/fleet.md."""
    out_dir = DOCS_IMAGES if os.environ.get("MMSA_UPDATE_DOCS_IMAGES") else tmp_path
    feed = FeedQueue()
    app = FleetApp(feed, title="mmsa-monitor watch broker.local:1883")
    async with app.run_test(size=(120, 14)) as pilot:
        # Fixed clock times, so the picture does not change from run to run.
        fill(feed, time.mktime((2026, 11, 27, 19, 42, 0, 0, 0, -1)))
        await until(pilot, lambda: len(app.query(StreamRow)) == 3 and app.streams[KITCHEN].partial is not None)
        await pilot.pause()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = Path(app.save_screenshot(filename="fleet.svg", path=str(out_dir)))
    svg = path.read_text(encoding="utf-8").replace("&#160;", " ")
    assert svg.startswith("<svg") and "hall/cam0" in svg and "offline since 19:40:00" in svg



async def test_an_item_arriving_while_the_app_closes_ends_the_feed_quietly() -> None:
    """Textual removes the screens before it cancels the workers: a feed item in between finds the widgets
    gone and ends the feed (test_watch saw it once); a widget missing while the app runs is still an error."""
    feed = FeedQueue()
    app = FleetApp(feed)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.screen.remove_children()  # what closing does to the default screen
        feed.put(KITCHEN, Presence(True, None))
        await until(pilot, lambda: not app.workers)  # the feed worker ended, without an error
        assert app.streams[KITCHEN].online
    feed = FeedQueue()
    app = FleetApp(feed)
    with pytest.raises(Exception, match="fleet-status"):
        async with app.run_test(size=(100, 30)) as pilot:
            await app.query_one("#fleet-status").remove()
            feed.put(KITCHEN, Presence(True, None))
            await until(pilot, lambda: not app.workers)
