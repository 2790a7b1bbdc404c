"""Partial scores of open utterances (``segmenter.partials``) on the bus and the MQTT ``partial`` topic.

A paced replay (real time, as a microphone delivers audio) of a clip with a long first
utterance, against a real mosquitto, with real Whisper: partials of the open window arrive
on ``<prefix>/partial`` (QoS 0, not retained) before the utterance's ``score`` event, each a
valid ScoreEvent carrying the seq its utterance's event gets, and none of them is in the
session log. Switched off, or in a ``--fast`` replay, none is published.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from mmsa.monitor.bus import EventBus
from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.events import ModalityScore, PartialScore, ScoreEvent, validate_event
from mmsa.monitor.mqtt import MqttPublisher
from mmsa.monitor.sessionlog import read_lines
from tests.monitor.conftest import Subscriber, replay_sources, speech_clips
from tests.monitor.test_mqtt import mqtt_cfg
from tests.monitor.test_speculation import without_timing

pytestmark = pytest.mark.broker

LONG_SENTENCES = [
    ("positive", "I have to say that the whole evening was wonderful, from the very beginning "
                 "to the very end."),
    ("negative", "That was a terrible idea."),
]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, make_sample):
    """speech.mp4 (video + audio) and speech.wav (audio only) of LONG_SENTENCES, and the script."""
    return speech_clips(make_sample, tmp_path_factory.mktemp("long"), LONG_SENTENCES, gap_s=3.0)


class BusLog:
    """Everything a bus carries, in order (ScoreEvents and PartialScores), until it closes."""

    def __init__(self, bus: EventBus) -> None:
        self.queue = bus.subscribe()
        self.items: list[ScoreEvent | PartialScore] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, (ScoreEvent, PartialScore)):
                self.items.append(item)

    @property
    def events(self) -> list[ScoreEvent]:
        return [i for i in self.items if isinstance(i, ScoreEvent)]

    @property
    def partials(self) -> list[ScoreEvent]:
        return [i.event for i in self.items if isinstance(i, PartialScore)]


async def replay_with_broker(broker, make_pipeline, path, prefix: str, fast: bool = False, **segmenter):
    """Replay ``path`` through the pipeline and MqttPublisher; return (pipe, bus log, subscriber, folder, publisher)."""
    cfg = MonitorConfig().replace("mqtt", **vars(mqtt_cfg(broker, prefix)))
    if segmenter:
        cfg = cfg.replace("segmenter", **segmenter)
    async with Subscriber(broker, [f"{prefix}/#"]) as sub:
        pipe, bus, folder = make_pipeline(replay_sources(path, fast=fast), cfg=cfg)
        seen = BusLog(bus)
        pub = MqttPublisher(cfg.mqtt, bus, folder.path / "outbox.sqlite")
        await asyncio.gather(pipe.run(), pub.run())
        await seen.task
        await sub.wait_for(lambda s: b"offline" in s.on(f"{prefix}/status"))
    return pipe, seen, sub, folder, pub


async def test_paced_replay_publishes_partials_before_the_final_event(broker, make_pipeline, long_clip):
    # 2 s of silence close an utterance here (default 0.5 s): room enough for the speculative
    # run on the tentative window to end before the close, however busy the shared CPU is; open-window
    # partials whatever Whisper's speed (partial_asr_ms = 0: the test below checks the limit)
    pipe, seen, sub, folder, pub = await replay_with_broker(
        broker, make_pipeline, long_clip[0] / "speech.mp4", "test/partial", min_silence_ms=2000, partial_asr_ms=0)
    script = long_clip[1]
    assert pipe.partials and pipe.speculative
    events = seen.events
    assert len(events) == len(script)

    # on the bus: every partial is a valid ScoreEvent with the seq the next event gets
    partials = seen.partials
    assert partials and pipe.n_partials == len(partials)
    n_before = 0
    for item in seen.items:
        if isinstance(item, ScoreEvent):
            n_before += 1
            continue
        p = item.event
        validate_event(p.to_dict())
        assert p.seq == n_before and p.session == pipe.session_id and p.model == pipe.scorer.tag
        assert p.latency_ms["total"] >= 0

    # the long utterance: partials of its open window while it was being spoken (every
    # partial_every_s = 2 s of speech), and the speculative partial of its closing window
    first = events[0]
    assert script[0]["t_end"] - script[0]["t_start"] > 5.0
    of_first = [p for p in partials if p.seq == first.seq]
    assert any(p.t_end < first.t_end - 1.0 for p in of_first), [(p.t_start, p.t_end) for p in of_first]
    assert all(first.t_start <= p.t_start and p.t_end <= first.t_end for p in of_first)
    spec = [p for p in of_first if (p.t_start, p.t_end) == (first.t_start, first.t_end)]
    assert spec and spec[-1].text == first.text and spec[-1].score == first.score
    assert pipe.speculation.used >= 1

    # on the broker: the partial topic (QoS 0, not retained) carries them before the score event
    topic, score_topic = "test/partial/partial", "test/partial/score"
    on_broker = [(t, json.loads(p), r, q) for (t, p, r), q in zip(sub.messages, sub.qos)
                 if t in (topic, score_topic)]
    broker_partials = [d for t, d, _, _ in on_broker if t == topic]
    assert broker_partials and pub.n_partials == len(broker_partials)
    for d in broker_partials:
        validate_event(d)
    assert all((r, q) == (False, 0) for t, _, r, q in on_broker if t == topic)
    kinds = [(t, d["seq"]) for t, d, _, _ in on_broker]
    assert (topic, first.seq) in kinds
    assert kinds.index((topic, first.seq)) < kinds.index((score_topic, first.seq))
    # partials of an utterance never arrive after its event
    for i, (t, seq) in enumerate(kinds):
        if t == topic:
            assert (score_topic, seq) not in kinds[:i]
    partial_json = [p.to_dict() for p in partials]
    assert all(d in partial_json for d in broker_partials)

    # never in the session log (nor on the score topic): it holds exactly the final events
    logged = read_lines(folder.path / "events.jsonl")
    assert logged == [e.to_dict() for e in events] == [d for t, d, _, _ in on_broker if t == score_topic]
    assert not any(d in logged for d in partial_json)
    meta = json.loads((folder.path / "metadata.json").read_text())
    assert meta["n_events"] == len(events) and meta["n_partials"] == len(partials)

    async with Subscriber(broker, ["test/partial/#"]) as late:  # nothing of them is retained
        await late.wait_for(lambda s: s.on("test/partial/state") and s.on("test/partial/status"))
    assert not late.on(topic)


async def test_final_events_are_the_same_with_and_without_partials(make_pipeline, long_clip):
    finals = {}
    for partials in (False, True):
        cfg = MonitorConfig().replace("segmenter", partials=partials, min_silence_ms=2000)
        pipe, bus, _ = make_pipeline(replay_sources(long_clip[0] / "speech.wav", fast=False), cfg=cfg)
        seen = BusLog(bus)
        await pipe.run()
        await seen.task
        finals[partials] = seen.events
        assert (pipe.n_partials > 0) == partials
        if partials:  # some final took its speculative partial's model pass (the same "model" time)
            assert {e.latency_ms["model"] for e in seen.events} & {p.latency_ms["model"] for p in seen.partials}
    assert len(finals[True]) == len(long_clip[1])
    # windows, texts, scores (bit for bit: a final never shares a batch with a partial, or takes
    # the output of its speculative partial, the very same input), modalities, confidence, seq
    assert [without_timing(e) for e in finals[True]] == [without_timing(e) for e in finals[False]]


async def test_partials_switched_off_publish_none(broker, make_pipeline, long_clip):
    pipe, seen, sub, folder, pub = await replay_with_broker(
        broker, make_pipeline, long_clip[0] / "speech.wav", "test/nopartial", partials=False)
    assert not pipe.partials and pipe.speculative
    assert len(seen.events) == len(long_clip[1])
    assert seen.partials == [] and pipe.n_partials == 0
    assert sub.on("test/nopartial/partial") == [] and pub.n_partials == 0
    assert len(sub.on("test/nopartial/score")) == len(long_clip[1])
    assert "n_partials" not in json.loads((folder.path / "metadata.json").read_text())


async def test_partial_every_s_0_leaves_only_the_speculative_partials(broker, make_pipeline, long_clip):
    pipe, seen, sub, _, pub = await replay_with_broker(
        broker, make_pipeline, long_clip[0] / "speech.wav", "test/specpartial", partial_every_s=0.0,
        min_silence_ms=2000)  # room for the speculative runs to end before the close (see above)
    assert pipe.partials and len(seen.events) == len(long_clip[1])
    # no open-window partials during the long utterance: at most one per speculative run
    assert 1 <= pipe.n_partials <= pipe.speculation.ran
    assert len(sub.on("test/specpartial/partial")) == pub.n_partials <= pipe.n_partials


async def test_open_window_partials_are_skipped_where_whisper_would_take_too_long(broker, make_pipeline, long_clip):
    """``partial_asr_ms``: once Whisper's speed is measured, an open-window partial whose transcription would take
    longer is skipped (counted): with a limit of 1 ms, at most the long utterance's first runs (before Whisper was
    ever timed); with no limit, as in the first test, its open window has partials."""
    limited, seen, _, _, _ = await replay_with_broker(
        broker, make_pipeline, long_clip[0] / "speech.wav", "test/partiallimit", min_silence_ms=2000, partial_asr_ms=1)
    free, seen_free, _, _, _ = await replay_with_broker(
        broker, make_pipeline, long_clip[0] / "speech.wav", "test/partialfree", min_silence_ms=2000, partial_asr_ms=0)
    assert len(seen.events) == len(seen_free.events) == len(long_clip[1])
    first = seen.events[0]
    open_limited = [p for p in seen.partials if p.seq == first.seq and p.t_end < first.t_end - 0.5]
    open_free = [p for p in seen_free.partials if p.seq == first.seq and p.t_end < first.t_end - 0.5]
    assert len(open_limited) <= 1 <= len(open_free)
    assert limited.speculation.partials_skipped >= 1 and free.speculation.partials_skipped == 0
    assert limited.speculator.asr_speed() > 1  # ms of Whisper per second of audio, measured


async def test_fast_replay_publishes_no_partials(broker, make_pipeline, long_clip):
    pipe, seen, sub, _, pub = await replay_with_broker(
        broker, make_pipeline, long_clip[0] / "speech.wav", "test/fastpartial", fast=True)
    assert not pipe.partials and not pipe.speculative
    assert len(seen.events) == len(long_clip[1])
    assert seen.partials == [] and pipe.n_partials == 0
    assert sub.on("test/fastpartial/partial") == [] and pub.n_partials == 0


def _event(seq: int) -> ScoreEvent:
    return ScoreEvent(
        session="s", seq=seq, t_start=0.0, t_end=1.0, text="fine", score=0.7,
        modalities={"text": ModalityScore(True, 0.7), "audio": ModalityScore(True, 0.2),
                    "vision": ModalityScore(False, None, 0)},
        latency_ms={"asr": 1.0, "model": 1.0, "total": 2.0}, model="tiny@0123",
    )


async def test_partials_are_dropped_while_the_broker_is_away_and_never_stored(broker, tmp_path):
    broker.stop()
    bus = EventBus()
    cfg = mqtt_cfg(broker, "test/away", drain_timeout_s=30.0)
    pub = MqttPublisher(cfg, bus, tmp_path / "outbox.sqlite")
    publishing = asyncio.ensure_future(pub.run())
    bus.publish(PartialScore(_event(0)))
    bus.publish(_event(0))
    bus.publish(PartialScore(_event(1)))
    async def taken_in():
        while pub.partials_dropped < 2 or len(pub.outbox) < 1:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(taken_in(), 10)
    assert [m.topic for m in pub.outbox.peek()] == ["test/away/score"]
    assert pub.partials_dropped == 2
    broker.start()
    async with Subscriber(broker, ["test/away/#"]) as sub:
        bus.close()
        await asyncio.wait_for(publishing, 60)
        await sub.wait_for(lambda s: b"offline" in s.on("test/away/status"))
    assert sub.on("test/away/partial") == [] and pub.n_partials == 0
    assert [json.loads(p)["seq"] for p in sub.on("test/away/state")] == [0]
