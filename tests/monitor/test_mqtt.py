"""MQTT against a real mosquitto on 127.0.0.1: the topic contract, faults of the broker, TLS and passwords."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest

from mmsa.monitor.bus import EventBus
from mmsa.monitor.config import MonitorConfig, MqttConfig
from mmsa.monitor.events import ModalityScore, ScoreEvent, validate_event
from mmsa.monitor.mqtt import MqttPublisher
from mmsa.monitor.sessionlog import read_lines
from tests.conftest import REPO
from tests.monitor.conftest import Subscriber, free_port, replay_sources
from tests.monitor.test_pipeline import Collector

pytestmark = pytest.mark.broker

DISCOVERY = "homeassistant/sensor/{node}/sentiment/config"


def mqtt_cfg(broker, prefix: str, **kw) -> MqttConfig:
    base = dict(host=broker.host, port=broker.port, prefix=prefix, node_id=prefix.replace("/", "-"),
                backoff_min_s=0.05, backoff_max_s=0.5, drain_timeout_s=60.0, keepalive_s=5)
    return MqttConfig(**{**base, **kw})


def event(seq: int) -> ScoreEvent:
    return ScoreEvent(
        session="s", seq=seq, t_start=float(seq), t_end=seq + 1.0, text="fine", score=0.7,
        modalities={"text": ModalityScore(True, 0.7), "audio": ModalityScore(True, 0.2),
                    "vision": ModalityScore(False, None, 0)},
        latency_ms={"asr": 1.0, "model": 1.0, "total": 2.0}, model="tiny@0123",
    )


def seqs(sub: Subscriber, topic: str) -> list[int]:
    return [json.loads(p)["seq"] for p in sub.on(topic)]


async def test_replay_publishes_the_topic_contract(broker, make_pipeline, speech_clip, speech_script):
    cfg = MonitorConfig().replace("mqtt", **vars(mqtt_cfg(broker, "test/replay")))
    async with Subscriber(broker, ["test/replay/#", "homeassistant/#"]) as sub:
        pipe, bus, folder = make_pipeline(replay_sources(speech_clip), cfg=cfg)
        pub = MqttPublisher(cfg.mqtt, bus, folder.path / "outbox.sqlite")
        await asyncio.gather(pipe.run(), pub.run())
        await sub.wait_for(lambda s: b"offline" in s.on("test/replay/status"))
    scores = [json.loads(p) for p in sub.on("test/replay/score")]
    assert len(scores) == len(speech_script)
    for d in scores:
        validate_event(d)
    assert scores == read_lines(folder.path / "events.jsonl")
    assert sub.on("test/replay/status") == [b"online", b"offline"]
    assert json.loads(sub.on("test/replay/state")[-1]) == scores[-1]

    async with Subscriber(broker, ["test/replay/#", "homeassistant/#"]) as late:  # retained for late subscribers
        topic = DISCOVERY.format(node="test-replay")
        await late.wait_for(lambda s: s.on("test/replay/state") and s.on("test/replay/status") and s.on(topic))
    retained = {t: (p, r) for t, p, r in late.messages}
    assert retained["test/replay/status"] == (b"offline", True)
    assert json.loads(retained["test/replay/state"][0]) == scores[-1] and retained["test/replay/state"][1]
    assert "test/replay/score" not in retained
    disc = json.loads(retained[topic][0])
    assert disc["state_topic"] == "test/replay/state" and disc["availability_topic"] == "test/replay/status"
    assert disc["unique_id"] == "mmsa_monitor_test-replay_sentiment" and retained[topic][1]


async def test_discovery_is_resent_when_home_assistant_comes_online(broker, tmp_path):
    import aiomqtt

    bus = EventBus()
    pub = MqttPublisher(mqtt_cfg(broker, "test/ha"), bus, tmp_path / "outbox.sqlite")
    topic = DISCOVERY.format(node="test-ha")
    async with Subscriber(broker, [topic]) as sub:
        task = asyncio.ensure_future(pub.run())
        await sub.wait_for(lambda s: len(s.on(topic)) == 1)
        async with aiomqtt.Client(broker.host, broker.port) as ha:
            await ha.publish("homeassistant/status", "online", qos=1)
        await sub.wait_for(lambda s: len(s.on(topic)) == 2)
        bus.close()
        await task
    assert sub.on(topic)[0] == sub.on(topic)[1]


async def test_broker_down_at_start_scoring_goes_on_and_everything_arrives(
    broker_factory, make_pipeline, speech_clip, speech_script
):
    broker = broker_factory()
    async with Subscriber(broker, ["test/down/score"], client_id="sub-down", persistent=True):
        pass  # a persistent QoS 1 subscription: the broker queues what arrives while this client is away
    broker.stop()
    cfg = MonitorConfig().replace("mqtt", **vars(mqtt_cfg(broker, "test/down")))
    pipe, bus, folder = make_pipeline(replay_sources(speech_clip), cfg=cfg)
    seen = Collector(bus)
    pub = MqttPublisher(cfg.mqtt, bus, folder.path / "outbox.sqlite")
    publishing = asyncio.ensure_future(pub.run())
    await pipe.run()  # the whole replay is scored while the broker is down
    await seen.closed.wait()
    assert len(seen.events) == len(speech_script) and len(pub.outbox) == len(speech_script)
    assert any(s.mqtt == "disconnected" and "cannot reach" in s.message for s in seen.statuses)
    broker.start()
    async with Subscriber(broker, ["test/down/score"], client_id="sub-down", persistent=True) as sub:
        await asyncio.wait_for(publishing, 60)
        await sub.wait_for(lambda s: len(s.on("test/down/score")) >= len(speech_script))
    assert seqs(sub, "test/down/score") == list(range(len(speech_script)))


async def test_broker_killed_mid_replay_every_event_arrives_once_in_order(broker, make_pipeline):
    sample = REPO / "examples" / "sample-session"
    cfg = MonitorConfig().replace("mqtt", **vars(mqtt_cfg(broker, "test/kill")))
    async with Subscriber(broker, ["test/kill/score"], client_id="sub-kill", persistent=True) as sub:
        pipe, bus, folder = make_pipeline(replay_sources(sample), cfg=cfg)
        seen = Collector(bus)
        pub = MqttPublisher(cfg.mqtt, bus, folder.path / "outbox.sqlite")
        tasks = asyncio.gather(pipe.run(), pub.run())
        await sub.wait_for(lambda s: len(s.on("test/kill/score")) >= 1)
        broker.kill()
        n_before = len(seen.events)
        await seen.until(lambda: any(s.mqtt == "disconnected" for s in seen.statuses))
        await seen.until(lambda: len(seen.events) > n_before or seen.closed.is_set())  # scored while it is away
        broker.start()
        await asyncio.wait_for(tasks, 120)
        n = len(seen.events)
        await sub.wait_for(lambda s: len(s.on("test/kill/score")) >= n)
    assert n >= 6 and n > n_before
    assert seqs(sub, "test/kill/score") == list(range(n))
    assert [json.loads(p) for p in sub.on("test/kill/score")] == read_lines(folder.path / "events.jsonl")


@pytest.fixture()
def tls_files(tmp_path):
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs openssl and mosquitto_passwd")
    d = tmp_path / "tls"
    d.mkdir()

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=d, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=mmsa-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
    run("mosquitto_passwd", "-b", "-c", "passwd", "mmsa", "s3cret-pw")
    return d


async def test_tls_and_password(broker_factory, tls_files, tmp_path, monkeypatch):
    tls_port = free_port()
    broker = broker_factory(
        head="per_listener_settings true",
        extra=(f"listener {tls_port} 127.0.0.1\ncafile {tls_files}/ca.crt\ncertfile {tls_files}/server.crt\n"
               f"keyfile {tls_files}/server.key\nallow_anonymous false\npassword_file {tls_files}/passwd"),
    )
    monkeypatch.setenv("MMSA_TEST_MQTT_PW", "s3cret-pw")
    good = mqtt_cfg(broker, "test/tls", port=tls_port, tls=True, ca_file=str(tls_files / "ca.crt"),
                    username="mmsa", password_env="MMSA_TEST_MQTT_PW")
    (tmp_path / "wrong").write_text("not-the-pw\n")
    bad = MqttConfig(**{**vars(good), "password_env": "", "password_file": str(tmp_path / "wrong"),
                        "prefix": "test/tls-bad", "drain_timeout_s": 1.0})
    async with Subscriber(broker, ["test/#"]) as sub:  # the plain listener, for watching
        bus_ok, bus_bad = EventBus(), EventBus()
        seen_bad = Collector(bus_bad)
        ok = MqttPublisher(good, bus_ok, tmp_path / "ok.sqlite")
        nope = MqttPublisher(bad, bus_bad, tmp_path / "bad.sqlite")
        tasks = asyncio.gather(ok.run(), nope.run())
        bus_ok.publish(event(0))
        bus_bad.publish(event(0))
        await sub.wait_for(lambda s: s.on("test/tls/score"))
        await seen_bad.until(lambda: any(s.mqtt == "disconnected" for s in seen_bad.statuses))
        bus_ok.close()
        bus_bad.close()
        await tasks
        await sub.wait_for(lambda s: b"offline" in s.on("test/tls/status"))
    assert seqs(sub, "test/tls/score") == [0] and sub.on("test/tls-bad/score") == []
    failures = [s.message for s in seen_bad.statuses if s.mqtt == "disconnected"]
    assert failures and all("not-the-pw" not in m and "s3cret" not in m for m in failures)


async def test_a_broker_that_stops_answering_holds_shutdown_no_longer_than_the_drain_time(broker, tmp_path):
    # connected, then the broker freezes (SIGSTOP: the connection stays open, nothing is acknowledged): the session's
    # end waits drain_timeout_s for the outbox, not aiomqtt's 10 s per message; what is left stays in the outbox
    import os
    import signal
    import time

    from mmsa.monitor.outbox import Outbox

    bus = EventBus()
    pub = MqttPublisher(mqtt_cfg(broker, "test/stall", drain_timeout_s=1.0), bus, tmp_path / "outbox.sqlite")
    publishing = asyncio.ensure_future(pub.run())
    try:
        bus.publish(event(0))
        async def delivered() -> None:
            while pub.n_delivered < 1:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(delivered(), 60)  # acknowledged by the broker
        os.kill(broker.proc.pid, signal.SIGSTOP)
        for seq in range(1, 6):
            bus.publish(event(seq))
        t0 = time.monotonic()
        bus.close()
        await asyncio.wait_for(publishing, 60)
        took = time.monotonic() - t0
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    assert took < 6.0, took  # drain 1 s + at most 1 s saying offline + the disconnect; before: 10 s and more
    assert pub.n_delivered == 1 and pub.undelivered == 5
    kept = Outbox(tmp_path / "outbox.sqlite")
    try:
        assert [json.loads(m.payload)["seq"] for m in kept.peek(10)] == [1, 2, 3, 4, 5]
    finally:
        kept.close()


async def test_a_publish_under_way_when_the_drain_time_runs_out_is_not_thrown_away(broker, tmp_path):
    # drain_timeout_s = 0: the session's end waits for nothing new, but the score already sent and waiting for its
    # acknowledgement gets drain.GRACE_S: the broker (frozen while it was sent, thawed at the close) acknowledges
    # it, and it is counted delivered, not left in the outbox to be sent twice
    import os
    import signal

    bus = EventBus()
    pub = MqttPublisher(mqtt_cfg(broker, "test/grace", drain_timeout_s=0.0), bus, tmp_path / "outbox.sqlite")
    publishing = asyncio.ensure_future(pub.run())
    async with Subscriber(broker, ["test/grace/#"]) as sub:
        await sub.wait_for(lambda s: b"online" in s.on("test/grace/status"))
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            bus.publish(event(0))
            await asyncio.sleep(0.5)  # sent; no acknowledgement can come while the broker is stopped
            assert pub.n_delivered == 0
            bus.close()
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        await asyncio.wait_for(publishing, 60)
        await sub.wait_for(lambda s: b"offline" in s.on("test/grace/status"))
    assert pub.n_delivered == 1 and pub.undelivered == 0 and seqs(sub, "test/grace/score") == [0]
