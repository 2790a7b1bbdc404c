"""``mmsa-monitor watch`` against real mosquitto brokers: real monitors, their Last Will, a bridge, no torch."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import pytest

from mmsa.monitor import cli
from mmsa.monitor.bus import EventBus
from mmsa.monitor.config import MqttConfig
from mmsa.monitor.fleet import FeedQueue, FeedStatus, FleetModel, StreamKey
from mmsa.monitor.fleetview import FleetApp
from mmsa.monitor.mqtt import MqttPublisher
from mmsa.monitor.watch import MqttWatcher
from tests.conftest import REPO
from tests.monitor.conftest import monitor_cmd
from tests.monitor.test_dashboard import sample_events, shown
from tests.monitor.test_fleetview import row_of, until

SAMPLE = REPO / "examples" / "sample-session"
HEAVY = ("torch", "numpy", "cv2", "transformers", "faster_whisper", "ctranslate2", "sounddevice", "textual")


def watch_cfg(broker, **kw) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, backoff_min_s=0.05, backoff_max_s=0.5, **kw)


async def publish(broker, *messages: tuple[str, bytes | str, bool]) -> None:
    """Publish (topic, payload, retained) messages, QoS 1, as a monitor would."""
    import aiomqtt

    async with aiomqtt.Client(broker.host, broker.port) as client:
        for topic, payload, retain in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


class Lines:
    """The lines of a subprocess stream, read as they come."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.seen: list[str] = []

    async def until(self, predicate, timeout: float = 30.0) -> str:
        async def read() -> str:
            while True:
                raw = await self.stream.readline()
                if not raw:
                    raise AssertionError("the stream ended; seen: " + "\n".join(self.seen[-20:]))
                line = raw.decode().rstrip("\n")
                self.seen.append(line)
                if predicate(line):
                    return line

        return await asyncio.wait_for(read(), timeout)


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("args, message, code", [
    ([], "watch needs a broker: --mqtt HOST[:PORT]", 1),
    (["--mqtt", "broker:port"], "the port must be a number", 2),
])
def test_bad_watch_arguments_are_one_line(args, message, code, capsys):
    assert cli.main(["watch", *args]) == code
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err


def test_bad_tls_or_password_settings_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MMSA_NO_SUCH_PW", raising=False)
    for section, message in (
        ('tls = true\nca_file = "nowhere/ca.crt"', "mqtt TLS settings"),
        ('username = "u"\npassword_env = "MMSA_NO_SUCH_PW"', "MMSA_NO_SUCH_PW is not set"),
    ):
        (tmp_path / "w.toml").write_text(f"[mqtt]\n{section}\n")
        assert cli.main(["watch", "--mqtt", "127.0.0.1:1", "--config", str(tmp_path / "w.toml"), "--headless"]) == 1
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err


@pytest.mark.broker
async def test_headless_watch_waits_for_the_broker_prints_the_fleet_and_loads_no_torch(broker_factory, tmp_path):
    broker = broker_factory(start=False)  # down when watch starts
    (tmp_path / "w.toml").write_text("[mqtt]\nbackoff_min_s = 0.05\nbackoff_max_s = 0.3\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "mmsa.monitor.cli", "watch", "--mqtt", broker.address,
        "--config", str(tmp_path / "w.toml"), "--headless",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        await err.until(lambda line: "cannot reach" in line)
        broker.start()
        await err.until(lambda line: "MQTT connected to" in line)
        events = sample_events()
        await publish(broker, ("mmsa-monitor/kitchen/status", "online", True),
                      ("mmsa-monitor/kitchen/state", events[3].to_json(), True),
                      ("mmsa-monitor/hall/cam0/status", "online", True),
                      ("mmsa-monitor/hall/cam0/score", events[4].to_json(), False),
                      ("mmsa-monitor/hall/cam0/score", '{"schema": 1}', False),
                      ("mmsa-monitor/hall/cam0/status", "offline", True))
        await out.until(lambda line: line == "hall/cam0 offline")
        await err.until(lambda line: "1 bad payload(s) ignored" in line and "hall/cam0 score: missing field" in line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        rest_out, rest_err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    printed = out.seen + rest_out.decode().splitlines()
    assert printed[:2] == ["kitchen online", "kitchen #3 [16.30-19.00] +0.45 neutral  t+0.60 a+0.70 v+0.20  "
                                             '"but then the music kicks in"']
    assert printed[2:] == ["hall/cam0 online", f"hall/cam0 #4 [20.50-25.40] +2.10 positive  t+2.30 a+1.40 v+1.60  "
                                               f'"{events[4].text}"', "hall/cam0 offline"]
    stderr = err.seen + rest_err.decode().splitlines()
    assert sum("cannot reach" in line for line in stderr) == 1  # said once, however many retries
    assert "Traceback" not in "\n".join(stderr)
    imported = {m.group(1).split(".")[0] for line in stderr if (m := re.match(r"import time:.*\|\s+(\S+)$", line))}
    assert "aiomqtt" in imported and "mmsa" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


# --------------------------------------------------------------------------- the watcher


@pytest.mark.broker
async def test_watcher_says_when_the_broker_is_lost_and_resumes(broker):
    feed = FeedQueue()
    model = FleetModel()
    watcher = MqttWatcher(watch_cfg(broker), model, feed)
    task = asyncio.create_task(watcher.run())
    got: list = []

    async def collect(predicate) -> None:
        async for key, item in feed:
            got.append((key, item))
            if predicate(key, item):
                return

    try:
        await asyncio.wait_for(collect(lambda k, i: isinstance(i, FeedStatus) and i.ok), 10)
        await publish(broker, ("mmsa-monitor/kitchen/state", sample_events()[2].to_json(), True))
        await asyncio.wait_for(collect(lambda k, i: k == StreamKey("kitchen")), 10)
        broker.kill()
        await asyncio.wait_for(collect(lambda k, i: isinstance(i, FeedStatus) and not i.ok), 10)
        assert got[-1][1].text.startswith(f"MQTT lost {broker.address}")
        broker.start()
        await asyncio.wait_for(collect(lambda k, i: isinstance(i, FeedStatus) and i.ok), 10)
        n = len(got)
        await publish(broker, ("mmsa-monitor/kitchen/score", sample_events()[3].to_json(), False))
        await asyncio.wait_for(collect(lambda k, i: k == StreamKey("kitchen")), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # The retained state came again on the reconnect: already seen, so nothing new was fed for it.
    assert [item.seq for _, item in got[n:]] == [3]
    assert model.streams[StreamKey("kitchen")].n_events == 2


# --------------------------------------------------------------------------- real monitors


def start_node(tmp_path, broker, ckpt, node: str) -> subprocess.Popen:
    folder = tmp_path / node
    folder.mkdir()
    (folder / "node.toml").write_text(f'[mqtt]\nnode_id = "{node}"\n')
    return subprocess.Popen(
        monitor_cmd("--replay", str(SAMPLE), "--headless", "--mqtt", broker.address, "--config",
                    str(folder / "node.toml"), "--model", str(ckpt)),
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.broker
@pytest.mark.slow
async def test_watch_shows_two_real_monitors_and_a_killed_one_goes_offline(broker, tiny_checkpoint, tmp_path):
    alpha, beta = StreamKey("alpha"), StreamKey("beta")
    procs = [start_node(tmp_path, broker, tiny_checkpoint, node) for node in ("alpha", "beta")]
    feed = FeedQueue()
    watcher = asyncio.create_task(MqttWatcher(watch_cfg(broker), FleetModel(), feed).run())
    app = FleetApp(feed, title="watch")
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            both_scored = lambda: all(k in app.streams and app.streams[k].n_events for k in (alpha, beta))  # noqa: E731
            await until(pilot, both_scored, timeout=150)
            await pilot.pause()
            for key in (alpha, beta):
                row = shown(row_of(app, key)).splitlines()
                assert row[0].startswith(f"● {key.node}") and re.search(r"[+-]\d\.\d\d (negative|neutral|positive)", row[0])
                assert "● online since" in row[1]
            procs[1].kill()  # SIGKILL: no goodbye, the broker publishes beta's Last Will
            await until(pilot, lambda: app.streams[beta].online is False, timeout=30)
            await pilot.pause()
            assert "○ offline since" in shown(row_of(app, beta))
            assert app.streams[alpha].online
            assert "2 streams · 1 online · 1 offline" in shown(app.query_one("#fleet-topbar"))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        errs = []
        for proc in procs:
            proc.kill()
            errs.append(proc.communicate()[1])
    assert "Traceback" not in errs[0] and "Traceback" not in errs[1], errs


# --------------------------------------------------------------------------- a bridge (docs/fleet.md)


def bridge_snippet() -> str:
    """The mosquitto.conf bridge example of docs/fleet.md (the one block tagged ``conf``)."""
    text = (REPO / "docs" / "fleet.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```conf\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/fleet.md should hold one ```conf block"
    return blocks[0]


@pytest.mark.broker
async def test_the_bridge_of_the_docs_fans_a_monitor_in_to_the_central_broker(broker_factory, tmp_path):
    central = broker_factory()
    snippet = bridge_snippet()
    assert "central.example.org:1883" in snippet
    edge = broker_factory(extra=snippet.replace("central.example.org:1883", central.address))
    feed = FeedQueue()
    watcher = asyncio.create_task(MqttWatcher(watch_cfg(central), FleetModel(), feed).run())
    bus = EventBus()
    cfg = MqttConfig(host=edge.host, port=edge.port, node_id="edge-node", backoff_min_s=0.05, drain_timeout_s=10)
    publisher = asyncio.create_task(MqttPublisher(cfg, bus, tmp_path / "outbox.sqlite").run())
    seen: list = []
    key = StreamKey("edge-node")

    async def collect(predicate) -> None:
        async for k, item in feed:
            seen.append((k, item))
            if k == key and predicate(item):
                return

    try:
        await asyncio.wait_for(collect(lambda item: getattr(item, "online", None) is True), 30)
        events = sample_events()[:3]
        for ev in events:
            bus.publish(ev)
        await asyncio.wait_for(collect(lambda item: getattr(item, "seq", None) == 2), 30)
        bus.close()  # the monitor ends its session: offline travels over the bridge too
        await asyncio.wait_for(publisher, 30)
        await asyncio.wait_for(collect(lambda item: getattr(item, "online", None) is False), 30)
    finally:
        watcher.cancel()
        publisher.cancel()
        await asyncio.gather(watcher, publisher, return_exceptions=True)
    assert [item.seq for k, item in seen if k == key and hasattr(item, "seq")] == [0, 1, 2]
