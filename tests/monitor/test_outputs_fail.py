"""An output that fails fails alone: the stream goes on with the others, says so, and the exit status tells.

A full disk under the session log (``/dev/full``), a sink whose task raises, stdout's reader going away
(``| head -1``), a session aborted while connected to the broker (the retained status must still say
``offline``), and config values that used to fail late with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmsa.monitor.bus import BusItem, EventBus, Sink
from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.events import ScoreEvent
from mmsa.monitor.sessionlog import SessionLog, read_lines
from tests.monitor.conftest import Subscriber, monitor_cmd, replay_sources, run_cli
from tests.monitor.test_cli import run_main
from tests.monitor.test_pipeline import Collector

DEV_FULL = Path("/dev/full")


class Breaks(Sink):
    """A sink with a defect: its task raises at the first event."""

    name = "breaks"

    def handle(self, item: BusItem) -> None:
        if isinstance(item, ScoreEvent):
            raise RuntimeError("this sink has a bug")


async def test_a_sink_whose_task_raises_fails_alone(make_pipeline, speech_clip, speech_script):
    bus = EventBus()
    broken = Breaks()
    broken.attach(bus)
    pipe, bus, folder = make_pipeline(replay_sources(speech_clip), bus=bus)
    pipe.sinks.append(broken)
    seen = Collector(bus)
    await asyncio.wait_for(pipe.run(), 300)
    await seen.closed.wait()
    assert len(read_lines(folder.path / "events.jsonl")) == len(speech_script) == len(seen.events)
    assert bus.failed == {"breaks": "this sink has a bug"}
    assert any(s.degraded == ["breaks failed"] and s.message == "breaks failed: this sink has a bug"
               for s in seen.statuses)
    assert seen.statuses[-1].finished and seen.statuses[-1].degraded == ["breaks failed"]
    assert json.loads((folder.path / "metadata.json").read_text())["failed_outputs"] == bus.failed


@pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")
async def test_a_full_disk_under_the_session_log_loses_nothing_else(transcriber, loaded_tiny, speech_clip,
                                                                    speech_script, tmp_path):
    from mmsa.monitor.engine import Engine
    from mmsa.monitor.pipeline import Pipeline
    from mmsa.monitor.scorer import Scorer
    from mmsa.monitor.session import SessionFolder

    folder = SessionFolder.create(tmp_path / "session", "full-disk")
    bus = EventBus()
    log = SessionLog(DEV_FULL)
    engine = Engine(transcriber, Scorer(loaded_tiny, "cpu"), MonitorConfig().scorer)
    pipe = Pipeline(MonitorConfig(), replay_sources(speech_clip), engine=engine, bus=bus, folder=folder,
                    session_log=log)
    seen = Collector(bus)
    await asyncio.wait_for(pipe.run(), 300)
    await seen.closed.wait()
    assert len(seen.events) == len(speech_script) and pipe.n_events == len(speech_script)  # scored and published
    assert log.n_events == 0 and bus.failed == {"jsonl": os.strerror(28)}  # ENOSPC
    last = seen.statuses[-1]
    assert last.finished and last.degraded == ["jsonl failed"]
    assert last.message == f"session ended: {len(speech_script)} events (0 of them in {DEV_FULL})"


@pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")
def test_cli_full_disk_is_a_line_and_exit_1(tmp_path, tiny_checkpoint, speech_clip, speech_script):
    res = run_cli("--replay", str(speech_clip), "--fast", "--headless", "--model", str(tiny_checkpoint),
                  "--jsonl", str(DEV_FULL), cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stdout.strip().splitlines()) == len(speech_script)  # every event still printed
    n = len(speech_script)
    assert f"the jsonl output failed (No space left on device): {n} of {n} events are not in" in res.stderr


def test_stdout_closed_stops_the_session_cleanly(tmp_path, tiny_checkpoint, speech_clip):
    """``mmsa-monitor ... | head -1``: no traceback, exit 0, what was scored is logged and the session ended."""
    cmd = " ".join(monitor_cmd("--replay", str(speech_clip), "--fast", "--headless", "--model", str(tiny_checkpoint),
                               "--record", str(tmp_path / "rec")))
    res = subprocess.run(["bash", "-c", f"{cmd} 2>err.txt | head -1; exit ${{PIPESTATUS[0]}}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    err = (tmp_path / "err.txt").read_text()
    assert res.returncode == 0 and "Traceback" not in err and "Exception ignored" not in err, err
    assert len(res.stdout.splitlines()) == 1
    logged = read_lines(tmp_path / "rec" / "events.jsonl")
    assert logged and f'"{logged[0]["text"]}"' in res.stdout
    meta = json.loads((tmp_path / "rec" / "metadata.json").read_text())
    assert meta["ended"] and meta["n_events"] == len(logged)


@pytest.mark.broker
async def test_an_aborted_publisher_still_says_offline(broker, tmp_path):
    """Aborted while connected (a second Ctrl-C cancels every task): leaving the client sends a clean DISCONNECT,
    after which the broker drops the Last Will, so the publisher says ``offline`` itself first."""
    from mmsa.monitor.mqtt import MqttPublisher
    from tests.monitor.test_mqtt import mqtt_cfg

    pub = MqttPublisher(mqtt_cfg(broker, "abort"), EventBus(), tmp_path / "outbox.sqlite")
    async with Subscriber(broker, ["abort/status"]) as sub:
        task = asyncio.ensure_future(pub.run())
        await sub.wait_for(lambda s: b"online" in s.on("abort/status"), timeout=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sub.wait_for(lambda s: s.on("abort/status")[-1:] == [b"offline"], timeout=10)
    async with Subscriber(broker, ["abort/status"]) as late:  # retained: what Home Assistant sees from now on
        await late.wait_for(lambda s: s.on("abort/status"), timeout=10)
    assert late.on("abort/status") == [b"offline"]


@pytest.mark.parametrize("toml, message", [
    (b"\xff\xfe[mqtt]\n", "not a UTF-8 text file"),
    (b"[mqtt]\nhost = 'h'\nport = -1\n", "mqtt: port: 0"),
    (b"[mqtt]\nhost = 'h'\nkeepalive_s = -5\n", "keepalive_s: 1 or more"),
    (b"[mqtt]\nhost = 'h'\nbackoff_min_s = 0\n", "need 0 < backoff_min_s <= backoff_max_s"),
    (b"[metrics]\nport = 70000\n", "metrics: port: 0"),
])
def test_bad_config_values_are_one_line_before_anything_runs(toml, message, tmp_path, capsys):
    cfg = tmp_path / "m.toml"
    cfg.write_bytes(toml)
    code, err = run_main(["--config", cfg, "--headless"], capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err


@pytest.mark.parametrize("args, message", [
    (["--config", "afile/m.toml"], "afile/m.toml: cannot read the config file (Not a directory)"),
    (["--metrics", "99999"], "--metrics '127.0.0.1:99999': the port must be a number from 1 to 65535"),
    (["--mqtt", "127.0.0.1:70000"], "--mqtt '127.0.0.1:70000': the port must be a number from 1 to 65535"),
])
def test_bad_paths_and_ports_are_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    code, err = run_main([*args, "--headless"], capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err


async def test_the_watcher_never_takes_the_monitors_client_id():
    from mmsa.monitor.config import MqttConfig
    from mmsa.monitor.fleet import FleetModel
    from mmsa.monitor.watch import MqttWatcher

    watcher = MqttWatcher(MqttConfig(host="127.0.0.1", client_id="kitchen"), FleetModel("mmsa-monitor"), None)
    ids = {watcher._client().identifier for _ in range(3)}
    assert len(ids) == 3 and all(i.startswith("kitchen-watch-") for i in ids)


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("the failure modes above are Linux's (/dev/full, bash)", allow_module_level=True)
