"""The dashboard's keys drive the running pipeline through the Controls protocol (q stops, r records)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.monitor.conftest import replay_sources
from tests.monitor.test_pipeline import Collector

dashboard = pytest.importorskip("mmsa.monitor.dashboard", reason="the dashboard is not in this build")


async def test_r_records_and_q_stops_the_pipeline_cleanly(make_pipeline, speech_clip, speech_script):
    pipe, bus, folder = make_pipeline(replay_sources(speech_clip, fast=False))
    seen = Collector(bus)
    app = dashboard.MonitorApp(bus, pipe, title="test")
    async with app.run_test(size=(120, 40)) as pilot:
        run = asyncio.ensure_future(pipe.run())
        await pilot.press("r")
        assert pipe.recorder is not None and pipe.recorder.recording
        await seen.until(lambda: len(seen.events) >= 1)
        await pilot.press("q")
        await asyncio.wait_for(run, 60)
    await seen.closed.wait()
    assert 1 <= len(seen.events) < len(speech_script)
    assert [e.seq for e in app.events] == [e.seq for e in seen.events]
    assert any(s.recording for s in seen.statuses)
    meta = json.loads((folder.path / "metadata.json").read_text())
    assert meta["audio_samples"] > 16000 and (folder.path / "audio.wav").is_file()
