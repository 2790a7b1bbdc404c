"""The live core's guarantees (issue #12): errors stay with their window, a stalled subscriber stays
bounded, and a sink added through the registry (Prometheus /metrics) works end to end."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
import urllib.request

import pytest

from mmsa.monitor.bus import EventBus
from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.engine import Engine
from mmsa.monitor.events import ModalityScore, MonitorStatus, ScoreEvent
from mmsa.monitor.scorer import Scorer
from mmsa.monitor.sessionlog import read_lines
from mmsa.monitor.sinks import close_shared
from mmsa.monitor.stream import open_stream
from tests.monitor.conftest import free_port, replay_sources
from tests.monitor.helpers import word_recall
from tests.monitor.test_pipeline import Collector


class Unforeseen(Exception):
    """An exception type the pipeline never names."""


class FailingEngine(Engine):
    """The real engine, except that featurization (or ASR) raises on the n-th window it is given."""

    def __init__(self, *args, featurize_fails_at: int = 0, asr_fails_at: int = 0) -> None:
        super().__init__(*args)
        self.n_featurized = self.n_transcribed = 0
        self.featurize_fails_at, self.asr_fails_at = featurize_fails_at, asr_fails_at

    async def featurize(self, audio, frames):
        self.n_featurized += 1
        if self.n_featurized == self.featurize_fails_at:
            raise Unforeseen("a face crop that no detector expected")
        return await super().featurize(audio, frames)

    async def transcribe(self, audio, pauses=()):
        self.n_transcribed += 1
        if self.n_transcribed == self.asr_fails_at:
            raise Unforeseen("the decoder gave up")
        return await super().transcribe(audio, pauses)


def stream_over(engine, tmp_path, clip, cfg=None, **kw):
    cfg = cfg or MonitorConfig().replace("session", dir=str(tmp_path / "sessions"))
    return open_stream(cfg, replay_sources(clip), engine, log_file=False, **kw)


async def test_an_unforeseen_exception_in_featurization_costs_one_window(tmp_path, transcriber, loaded_tiny,
                                                                          speech_clip, speech_script):
    engine = FailingEngine(transcriber, Scorer(loaded_tiny, "cpu"), featurize_fails_at=2)
    stream = stream_over(engine, tmp_path, speech_clip)
    seen = Collector(stream.bus)
    await stream.pipeline.run()
    await seen.closed.wait()
    kept = [speech_script[0], speech_script[2]]  # the second sentence's window failed
    assert [e.seq for e in seen.events] == [0, 1]
    assert all(word_recall(line["text"], e.text) >= 0.6 for e, line in zip(seen.events, kept))
    assert read_lines(stream.pipeline.log.path) == [json.loads(e.to_json()) for e in seen.events]  # JSONL complete
    final = seen.statuses[-1]
    assert final.finished and final.errors == 1
    assert any("featurization failed" in s.message and "Unforeseen" in s.message for s in seen.statuses)
    assert json.loads((stream.folder.path / "metadata.json").read_text())["errors"] == 1


async def test_a_failed_asr_leaves_the_window_scored_without_words(tmp_path, transcriber, loaded_tiny, speech_clip,
                                                                   speech_script):
    engine = FailingEngine(transcriber, Scorer(loaded_tiny, "cpu"), asr_fails_at=1)
    stream = stream_over(engine, tmp_path, speech_clip)
    seen = Collector(stream.bus)
    await stream.pipeline.run()
    await seen.closed.wait()
    assert len(seen.events) == len(speech_script)
    first, *rest = seen.events
    assert first.text == "" and not first.modalities["text"].present and first.modalities["audio"].present
    assert all(e.modalities["text"].present for e in rest)
    assert seen.statuses[-1].errors == 1


async def test_a_window_that_breaks_the_model_is_skipped_and_its_batch_scored(tmp_path, transcriber, loaded_tiny,
                                                                             speech_clip, speech_script):
    scorer = Scorer(loaded_tiny, "cpu")
    score = scorer.score

    def breaks_on_worst(samples):  # the real scorer, failing whenever the second sentence is in the batch
        if any(s.text and "worst" in s.text.lower() for s in samples):
            raise Unforeseen("NaN in the fusion layer")
        return score(samples)

    scorer.score = breaks_on_worst
    cfg = MonitorConfig().replace("scorer", max_wait_ms=500).replace("session", dir=str(tmp_path / "s"))
    stream = stream_over(Engine(transcriber, scorer, cfg.scorer), tmp_path, speech_clip, cfg=cfg)
    seen = Collector(stream.bus)
    await stream.pipeline.run()
    await seen.closed.wait()
    assert len(seen.events) == len(speech_script) - 1 and not any("worst" in e.text.lower() for e in seen.events)
    assert seen.statuses[-1].errors == 1 and len(read_lines(stream.pipeline.log.path)) == len(seen.events)


async def test_a_stalled_subscriber_stays_bounded_while_scoring_goes_on(make_pipeline, speech_clip, speech_script):
    pipe, bus, folder = make_pipeline(replay_sources(speech_clip))
    stalled = bus.subscribe(capacity=2, name="stalled")  # never read
    seen = Collector(bus)
    await pipe.run()
    await seen.closed.wait()
    assert len(seen.events) == len(speech_script) == len(read_lines(folder.path / "events.jsonl"))
    assert len(stalled) <= 2 + 1 and stalled.dropped == len(speech_script) - 2  # 2 events and the latest status
    assert seen.statuses[-1].drops["stalled_feed"] == stalled.dropped


def test_a_stalled_feed_keeps_memory_flat_under_a_flood():
    bus = EventBus()
    stalled = bus.subscribe(capacity=64)
    event = ScoreEvent(session="s", seq=0, t_start=0.0, t_end=1.0, text="x" * 200, score=1.0,
                       modalities={m: ModalityScore(True, 1.0, 0 if m == "vision" else None)
                                   for m in ("text", "audio", "vision")},
                       latency_ms={"asr": 1.0, "model": 1.0, "total": 1.0}, model="m@1")
    tracemalloc.start()
    try:
        for i in range(20_000):
            bus.publish(event)
            bus.publish(MonitorStatus(n_events=i))
            if i == 1000:
                early, _ = tracemalloc.get_traced_memory()
        late, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(stalled) == 64 + 1 and stalled.dropped == 20_000 - 64
    assert late - early < 64 * 1024  # flat: statuses coalesce, old events are dropped
    statuses = [x for x in (stalled.get_nowait() for _ in range(65)) if isinstance(x, MonitorStatus)]
    assert [s.n_events for s in statuses] == [19_999]  # the latest status only


async def test_prometheus_metrics_of_a_real_replay(tmp_path, transcriber, loaded_tiny, speech_clip, speech_script):
    port = free_port()
    cfg = MonitorConfig().replace("metrics", port=port).replace("session", dir=str(tmp_path / "sessions"))
    shared: dict = {}
    stream = stream_over(Engine(transcriber, Scorer(loaded_tiny, "cpu")), tmp_path, speech_clip, cfg=cfg,
                         shared=shared)
    seen = Collector(stream.bus)
    try:
        await stream.pipeline.run()
        await seen.closed.wait()
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read())
    finally:
        close_shared(shared)
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}
    n = len(speech_script)
    total = sum(v for (name, _), v in samples.items() if name == "mmsa_utterances_total")
    assert total == n == len(seen.events)
    assert samples[("mmsa_latency_seconds_count", (("stream", ""),))] == n
    last = seen.events[-1]
    assert samples[("mmsa_score", (("modality", "fused"), ("stream", "")))] == pytest.approx(last.score, abs=1e-4)
    assert samples[("mmsa_score", (("modality", "text"), ("stream", "")))] == pytest.approx(
        last.modalities["text"].score, abs=1e-4)
    assert samples[("mmsa_stream_up", (("stream", ""),))] == 0  # the session ended
    with pytest.raises(OSError):  # closed with the process's shared objects
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


class FailsOnceOnLongAudio(FailingEngine):
    """The real engine, except that the first transcription of more than 3 s of audio raises."""

    async def transcribe(self, audio, pauses=()):
        if not self.asr_fails_at and audio.size > 3 * 16_000:
            self.asr_fails_at = self.n_transcribed + 1
        return await super().transcribe(audio, pauses)


async def test_a_transcription_ahead_that_fails_is_run_again_for_its_window(tmp_path, transcriber, loaded_tiny,
                                                                           speech_clip, speech_script):
    """Paced (speculative): the transcription ahead of the first sentence's close (its whole 3.3 s; the pause at its
    comma came earlier, on less audio) fails, so its window runs Whisper itself: every utterance keeps its words
    and no window counts an error."""
    engine = FailsOnceOnLongAudio(transcriber, Scorer(loaded_tiny, "cpu"))
    cfg = (MonitorConfig().replace("session", dir=str(tmp_path / "sessions"))
           .replace("segmenter", partials=False, early_close_ms=0))
    stream = open_stream(cfg, replay_sources(speech_clip, fast=False), engine, log_file=False)
    seen = Collector(stream.bus)
    await stream.pipeline.run()
    await seen.closed.wait()
    stats = stream.pipeline.speculation
    assert engine.asr_fails_at and engine.n_transcribed == stats.heard + 1  # the failed one, run again
    assert len(seen.events) == len(speech_script)
    assert all(word_recall(line["text"], e.text) >= 0.6 for e, line in zip(seen.events, speech_script))
    assert seen.statuses[-1].errors == 0
