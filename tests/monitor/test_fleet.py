"""The fleet model (sans-IO) with the payloads a monitor publishes, health (de)serialisation, the feed queue."""

from __future__ import annotations

import json
import random

import pytest

from mmsa.monitor import fleet
from mmsa.monitor.events import MonitorStatus, PartialScore, ScoreEvent
from mmsa.monitor.fleet import (
    FeedQueue,
    FeedStatus,
    FleetModel,
    Presence,
    StreamKey,
    StreamState,
    health_from_json,
    health_to_json,
    parse_topic,
)
from tests.monitor.test_dashboard import LIVE_STATUS, make_event, sample_events

KITCHEN = StreamKey("kitchen")  # a single-stream monitor
CAM0, DOOR = StreamKey("hall", "cam0"), StreamKey("hall", "door")  # two streams of one monitor


def payload(event: ScoreEvent) -> bytes:
    """What MqttPublisher sends for an event (score, partial and state alike)."""
    return event.to_json().encode()


def other_session(event: ScoreEvent, seq: int) -> ScoreEvent:
    return ScoreEvent.from_dict({**event.to_dict(), "session": "a-new-session", "seq": seq})


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_parse_topic_both_layouts_and_nothing_else() -> None:
    assert parse_topic("mmsa-monitor/kitchen/score") == (KITCHEN, "score")
    assert parse_topic("mmsa-monitor/hall/cam0/health") == (CAM0, "health")
    assert parse_topic("site/a/mmsa-monitor/hall/door/status", "site/a/mmsa-monitor") == (DOOR, "status")
    for topic in ("mmsa-monitor/kitchen", "mmsa-monitor/kitchen/config", "mmsa-monitor/a/b/c/score",
                  "mmsa-monitor//score", "mmsa-monitor/a//state", "homeassistant/sensor/kitchen/sentiment/config",
                  "mmsa-monitorx/kitchen/score", "other/kitchen/score"):
        assert parse_topic(topic) is None, topic


def test_a_late_watcher_gets_each_stream_from_the_retained_messages() -> None:
    events = sample_events()
    model = FleetModel()
    # What a broker replays on subscribe: status and state of every stream (retained), newest state only.
    assert model.apply("mmsa-monitor/kitchen/status", b"online", retained=True) == (KITCHEN, Presence(True, None))
    assert model.apply("mmsa-monitor/kitchen/state", payload(events[5]), retained=True) == (KITCHEN, events[5])
    assert model.apply("mmsa-monitor/hall/door/status", b"offline", retained=True) is not None
    assert model.apply("mmsa-monitor/hall/door/state", payload(events[2]), retained=True) is not None
    assert model.apply("homeassistant/sensor/kitchen/sentiment/config", b"{}", retained=True) is None
    assert sorted(model.streams) == [DOOR, KITCHEN]
    kitchen, door = model.streams[KITCHEN], model.streams[DOOR]
    assert kitchen.presence == "online" and kitchen.latest == events[5] and list(kitchen.history) == [events[5]]
    assert door.presence == "offline" and door.since is None  # when it went away is not known
    assert door.last_seen == pytest.approx(fleet.wall_time_s(events[2]))
    assert model.n_ignored == 1 and model.n_bad == 0


def test_live_scores_partials_and_the_last_will() -> None:
    events = sample_events()
    clock = Clock()
    model = FleetModel(clock=clock)
    model.apply("mmsa-monitor/hall/cam0/status", b"online")
    assert model.streams[CAM0].since == clock.t
    partial = make_event(0, 1.2, 2.5, "so i finally", 0.1, 0.2, 0.0, 0.1, 10)
    assert model.apply("mmsa-monitor/hall/cam0/partial", payload(partial)) == (CAM0, PartialScore(partial))
    assert model.streams[CAM0].partial == partial
    for ev in events[:3]:
        assert model.apply("mmsa-monitor/hall/cam0/score", payload(ev)) == (CAM0, ev)
        # The publisher sends the retained state of the same event right after it: nothing new.
        assert model.apply("mmsa-monitor/hall/cam0/state", payload(ev)) is None
    state = model.streams[CAM0]
    assert state.partial is None  # the event it previewed (seq 0) arrived
    assert [e.seq for e in state.history] == [0, 1, 2] and state.n_events == 3 and state.latest == events[2]
    stale = make_event(1, 5.1, 7.0, "and honestly", -1.0, -1.2, -0.4, -0.5, 12)
    assert model.apply("mmsa-monitor/hall/cam0/partial", payload(stale)) is None  # seq 1 is scored already
    assert model.apply("mmsa-monitor/hall/cam0/score", payload(events[1])) is None  # a redelivered QoS 1 copy
    clock.t += 30
    assert model.apply("mmsa-monitor/hall/cam0/status", b"offline") == (CAM0, Presence(False, clock.t))
    assert state.presence == "offline" and state.since == clock.t and state.last_seen == clock.t
    assert model.apply("mmsa-monitor/hall/cam0/status", b"offline") is None  # said twice: no change


def test_a_new_session_starts_the_history_again() -> None:
    events = sample_events()
    model = FleetModel()
    for ev in events[:4]:
        model.apply("mmsa-monitor/kitchen/score", payload(ev))
    restarted = other_session(events[0], 0)
    assert model.apply("mmsa-monitor/kitchen/score", payload(restarted)) == (KITCHEN, restarted)
    assert list(model.streams[KITCHEN].history) == [restarted] and model.streams[KITCHEN].n_events == 5


def test_history_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "STREAM_HISTORY_MAX", 4)
    state = StreamState(KITCHEN)
    for ev in sample_events():
        assert state.apply(ev)
    assert [e.seq for e in state.history] == [14, 15, 16, 17] and state.n_events == 18


def test_health_round_trip_and_payload() -> None:
    status = LIVE_STATUS.replace(drops={"frames": 2, "audio": 0}, n_events=12, message="camera lost", finished=True)
    status.errors, status.behind_s, status.degraded, status.stream = 3, 4.5, ["partials", "faces"], "cam0"
    text = health_to_json(status)
    d = json.loads(text)
    assert list(d) == ["schema", "stream", "source", "camera", "mic", "mqtt", "model", "device", "drops", "errors",
                       "latency_p50_ms", "latency_p95_ms", "n_events", "behind_s", "degraded", "message", "finished"]
    assert d["schema"] == 1 and d["stream"] == "cam0" and d["errors"] == 3 and d["degraded"] == ["partials", "faces"]
    back = health_from_json(text.encode())
    for name in ("source", "camera", "mic", "mqtt", "model", "device", "drops", "latency_p50_ms",
                 "latency_p95_ms", "n_events", "message", "finished", "errors", "behind_s", "degraded", "stream"):
        assert getattr(back, name) == getattr(status, name), name
    plain = health_to_json(MonitorStatus())  # a MonitorStatus without the new fields
    assert json.loads(plain)["errors"] == 0 and json.loads(plain)["degraded"] == [] and json.loads(plain)["stream"] == ""


def test_health_from_json_tolerates_missing_extra_and_malformed_keys() -> None:
    old = health_from_json(b'{"source": "camera 0 + mic", "camera": "ok", "drops": {"frames": 4}, "future": [1]}')
    assert old.source == "camera 0 + mic" and old.camera == "ok" and old.drops == {"frames": 4}
    assert old.errors == 0 and old.behind_s == 0.0 and old.degraded == [] and old.latency_p50_ms is None
    odd = health_from_json('{"errors": -1, "behind_s": "lots", "drops": {"frames": "x", "audio": 2}, '
                           '"degraded": ["faces", 7], "finished": 1, "latency_p50_ms": NaN, "n_events": 2.5}')
    assert odd.errors == 0 and odd.behind_s == 0.0 and odd.drops == {"audio": 2} and odd.degraded == ["faces"]
    assert odd.finished is False and odd.latency_p50_ms is None and odd.n_events == 0
    for bad in (b"not json", b"[1, 2]", b"\xff\xfe", b'"online"'):
        with pytest.raises(ValueError):
            health_from_json(bad)


def test_bad_payloads_are_counted_and_ignored() -> None:
    ev = sample_events()[4]
    model = FleetModel()
    model.apply("mmsa-monitor/kitchen/score", payload(ev))
    broken = {
        "score": [b"{", b"\xff\xfe\x00", json.dumps({**ev.to_dict(), "score": 7.0}).encode(),
                  json.dumps({**ev.to_dict(), "polarity": "negative"}).encode(), b"[" * 100_000 + b"]" * 100_000],
        "state": [b"null", b"42"],
        "partial": [json.dumps({k: v for k, v in ev.to_dict().items() if k != "modalities"}).encode()],
        "status": [b"maybe", b"\x00"],
        "health": [b"[]", b"nope"],
    }
    n = 0
    for leaf, payloads in broken.items():
        for p in payloads:
            assert model.apply(f"mmsa-monitor/kitchen/{leaf}", p) is None
            n += 1
            assert model.n_bad == n and model.last_error.startswith(f"kitchen {leaf}: ")
    state = model.streams[KITCHEN]
    assert state.latest == ev and state.partial is None and state.health is None and state.online is None
    assert model.apply("mmsa-monitor/kitchen/state", b"", retained=True) is None  # a retained message cleared
    assert model.n_bad == n


def test_random_corruptions_of_real_payloads_never_crash() -> None:
    rng = random.Random(7)
    model = FleetModel()
    originals = [payload(e) for e in sample_events()] + [health_to_json(LIVE_STATUS).encode(), b"online"]
    for _ in range(3000):
        p = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(max(1, len(p)))
            op = rng.random()
            if op < 0.4 and p:
                p[i] = rng.randrange(256)
            elif op < 0.7:
                del p[i : i + rng.randint(1, 20)]
            else:
                p[i:i] = rng.choice([b'"', b"{", b"null", b"-1e999", b"[", b"}", b","])
        model.apply(f"mmsa-monitor/n{rng.randrange(3)}/{rng.choice(fleet.LEAVES)}", bytes(p))
    assert model.n_bad > 2000  # nearly every corruption is caught; a few are still valid


async def test_feed_queue_keeps_order_drops_the_oldest_and_ends() -> None:
    events = sample_events()
    feed = FeedQueue(maxsize=3)
    feed.put(None, FeedStatus("connected"))
    for ev in events[:4]:
        feed.put(KITCHEN, ev)
    feed.close()  # the end marker also takes a place: the three oldest (the status, two events) are dropped
    got = [pair async for pair in feed]
    assert got == [(KITCHEN, events[2]), (KITCHEN, events[3])] and feed.n_dropped == 3
