"""The pipeline end to end in-process: replay, the live path with device stand-ins, faults, shutdown."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import numpy as np
import pytest

from mmsa.media import load_audio
from mmsa.monitor.bus import EventBus
from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.devices import CameraSource, MicSource
from mmsa.monitor.events import MonitorStatus, ScoreEvent, validate_event
from mmsa.monitor.frames import FrameRing, VideoFrame
from mmsa.monitor.sessionlog import read_lines
from mmsa.monitor.source import StateChange
from tests.monitor.conftest import replay_sources
from tests.monitor.helpers import word_recall
from tests.monitor.standins import FileCamera, mic_factory


class Collector:
    """Subscribes to a bus and keeps everything it sees until the bus closes."""

    def __init__(self, bus: EventBus, log_path=None) -> None:
        self.queue = bus.subscribe()
        self.log_path = log_path  # given: check that each event is in the session log when it arrives here
        self.logged_first: list[bool] = []
        self.events: list[ScoreEvent] = []
        self.statuses: list[MonitorStatus] = []
        self.closed = asyncio.Event()
        self.changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, ScoreEvent):
                if self.log_path is not None:
                    self.logged_first.append(item.to_json() in self.log_path.read_text().splitlines())
                self.events.append(item)
            elif isinstance(item, MonitorStatus):
                self.statuses.append(item)
            self.changed.set()
        self.closed.set()
        self.changed.set()

    async def until(self, predicate, timeout: float = 120.0) -> None:
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


@pytest.mark.parametrize("vad_hop_ms", [32, 16])
async def test_replay_scores_each_sentence_and_logs_before_publishing(make_pipeline, speech_clip, speech_script,
                                                                      vad_hop_ms):
    cfg = MonitorConfig().replace("segmenter", vad_hop_ms=vad_hop_ms)
    pipe, bus, folder = make_pipeline(replay_sources(speech_clip), cfg=cfg)
    seen = Collector(bus, log_path=pipe.log.path)  # a subscriber checks that the log had each event first
    await pipe.run()
    await seen.closed.wait()
    events = seen.events
    assert len(events) == len(speech_script)
    assert seen.logged_first == [True] * len(events)
    assert [e.seq for e in events] == list(range(len(events)))
    for ev, line in zip(events, speech_script):
        validate_event(ev.to_dict())
        assert ev.t_start <= line["t_start"] + 0.3 and ev.t_end >= line["t_end"] - 0.3
        assert word_recall(line["text"], ev.text) >= 0.6, (line["text"], ev.text)
        assert ev.modalities["vision"].present and ev.modalities["vision"].face_frames > 0
        assert ev.modalities["audio"].present and ev.modalities["text"].present
        assert ev.model == pipe.scorer.tag and ev.session == pipe.session_id
        assert 0 < ev.latency_ms["asr"] <= ev.latency_ms["total"] and ev.latency_ms["model"] > 0
    assert [json.loads(e.to_json()) for e in events] == read_lines(folder.path / "events.jsonl")
    final = seen.statuses[-1]
    assert final.finished and final.n_events == len(events) and final.drops == {} and final.camera == "replay"
    assert pipe._assembler.vad.hop == vad_hop_ms * 16  # noqa: SLF001 - the VAD the config asked for
    meta = json.loads((folder.path / "metadata.json").read_text())
    assert meta["n_events"] == len(events) and meta["ended"]
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert others == []


async def test_audio_only_replay_masks_vision(make_pipeline, clip_dir, speech_script):
    pipe, bus, _ = make_pipeline(replay_sources(clip_dir[0] / "speech.wav"))
    seen = Collector(bus)
    await pipe.run()
    await seen.closed.wait()
    assert len(seen.events) == len(speech_script)
    for ev in seen.events:
        v = ev.modalities["vision"]
        assert (v.present, v.score, v.face_frames) == (False, None, 0)
        assert ev.modalities["audio"].present


async def test_live_path_with_a_camera_that_stops_and_recording_replays_the_same_scores(
    make_pipeline, speech_clip, speech_script
):
    """Camera + mic stand-ins feed real media through CameraSource/MicSource in real time.

    The camera stops after the first sentence: the dashboard status says ``lost`` and the
    later sentences are scored from audio and text. The session is recorded; replaying the
    recording gives the same windows, transcripts and scores.
    """
    audio = load_audio(speech_clip)
    cut_frame = int((speech_script[0]["t_end"] + 0.5) * 10)  # the clip has 10 fps
    cfg = MonitorConfig().replace("frames", camera_lost_s=1.0, camera_retry_s=30.0, camera_max_fps=0.0)
    t_zero = time.monotonic()
    clock = lambda: time.monotonic() - t_zero  # noqa: E731
    opened = []

    def open_capture(spec):
        cam = FileCamera(spec, stop_after=cut_frame) if not opened else FileCamera(spec, stop_after=0)
        opened.append(cam)
        return cam

    camera = CameraSource(str(speech_clip), clock, max_fps=0.0, lost_s=1.0, retry_s=30.0, open_capture=open_capture)
    mic = MicSource(None, clock, block=1024, open_stream=mic_factory(audio))
    pipe, bus, folder = make_pipeline([camera, mic], cfg=cfg, record=True)
    seen = Collector(bus)
    run = asyncio.ensure_future(pipe.run())
    await seen.until(lambda: len(seen.events) >= len(speech_script))
    pipe.request_stop()
    await run
    await seen.closed.wait()
    live = seen.events
    assert len(live) == len(speech_script)
    for ev, line in zip(live, speech_script):
        validate_event(ev.to_dict())
        assert word_recall(line["text"], ev.text) >= 0.6
    assert live[0].modalities["vision"].present
    assert not live[-1].modalities["vision"].present and live[-1].modalities["audio"].present
    assert any(s.camera == "lost" and "camera lost" in s.message for s in seen.statuses)
    assert seen.statuses[-1].finished and seen.statuses[-1].mic == "ok"

    replay_pipe, replay_bus, _ = make_pipeline(replay_sources(folder.path))
    again = Collector(replay_bus)
    await replay_pipe.run()
    await again.closed.wait()
    assert [(e.t_start, e.t_end, e.text) for e in again.events] == [(e.t_start, e.t_end, e.text) for e in live]
    assert [e.modalities["vision"].face_frames for e in again.events] == [
        e.modalities["vision"].face_frames for e in live]
    assert [e.score for e in again.events] == pytest.approx([e.score for e in live], abs=1e-4)


async def test_stop_mid_replay_drains_flushes_and_ends_every_task(make_pipeline, speech_clip, speech_script):
    pipe, bus, folder = make_pipeline(replay_sources(speech_clip, fast=False))
    seen = Collector(bus)
    run = asyncio.ensure_future(pipe.run())
    await seen.until(lambda: len(seen.events) >= 1)
    pipe.request_stop()
    await asyncio.wait_for(run, 60)
    await seen.closed.wait()
    assert 1 <= len(seen.events) < len(speech_script)
    assert read_lines(folder.path / "events.jsonl") == [json.loads(e.to_json()) for e in seen.events]
    assert seen.statuses[-1].finished
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert others == []


async def test_slow_consumer_means_counted_frame_drops_not_memory(speech_clip):
    """A camera delivering while nobody consumes: the frames queue keeps the newest 4, counts the rest."""
    import threading

    delivered = threading.Event()
    n = 120
    device = FileCamera(speech_clip, paced=False, loop=True, stop_after=n, block_after=delivered)
    camera = CameraSource(str(speech_clip), time.monotonic, queue=4, open_capture=lambda _spec: device)
    tracemalloc.start()
    try:
        await camera.start()  # nobody iterates it: its buffer keeps the newest 4 frames
        frames = camera.buffer
        await asyncio.to_thread(delivered.wait)
        await asyncio.sleep(0)  # let the loop run the wake-up callbacks already scheduled
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        device.release()  # unblock the stalled device so the camera thread can end
        camera.stop()
    assert len(frames) == 4 and frames.dropped == n - 4 and frames.high_water == 4
    one_frame = 320 * 240 * 3
    assert peak < 30 * one_frame  # 120 frames went through; a few are alive at any time
    got = [f for f in [frames.get_nowait() for _ in range(5)] if isinstance(f, VideoFrame)]
    assert len(got) == 4 and [f.t for f in got] == sorted(f.t for f in got)


async def test_audio_queue_is_capped_in_seconds(speech_clip):
    audio = load_audio(speech_clip)
    cap_s = 2.0
    opener = mic_factory(audio, paced=False, tail_s=0.0)
    mic = MicSource(None, time.monotonic, block=1024, queue_s=cap_s, open_stream=opener)
    await mic.start()  # nobody iterates it: its buffer keeps the newest 2 s
    ch = mic.buffer
    await asyncio.to_thread(opener.made[0]._thread.join)  # noqa: SLF001 - wait for the stand-in to finish
    await asyncio.sleep(0)
    mic.stop()
    chunks = [c for c in [ch.get_nowait() for _ in range(len(ch))] if not isinstance(c, StateChange)]
    assert sum(c.samples.size for c in chunks) <= cap_s * 16000 and ch.dropped == audio.size // 1024 - len(chunks)
    assert chunks[0].t0 > 0  # the oldest audio was the one dropped


def test_frame_ring_is_bounded_by_age_and_count():
    ring = FrameRing(ring_s=1.0, ring_max=5)
    img = np.zeros((2, 2, 3), np.uint8)
    for i in range(20):
        ring.add(VideoFrame(i * 0.1, img))
    assert len(ring) == 5 and ring.dropped == 15  # evicted by the count cap while younger than ring_s
    assert len(ring.between(1.5, 1.75)) == 3 and len(ring.between(1.6, None)) == 4


async def test_a_flood_of_frames_stays_bounded_and_the_drops_are_shown(make_pipeline, speech_clip):
    """A camera far faster than the pipeline keeps: memory stays bounded, drops are counted in the status."""
    cfg = MonitorConfig().replace("frames", ring_max=5, camera_max_fps=0.0, face_status_hz=0.0)
    t_zero = time.monotonic()
    clock = lambda: time.monotonic() - t_zero  # noqa: E731
    camera = CameraSource(str(speech_clip), clock, queue=cfg.frames.queue,
                          open_capture=lambda s: FileCamera(s, paced=False, loop=True))
    mic = MicSource(None, clock, block=1024, open_stream=mic_factory(np.zeros(16000, np.float32), tail_s=10.0))
    pipe, bus, _ = make_pipeline([camera, mic], cfg=cfg)
    seen = Collector(bus)
    run = asyncio.ensure_future(pipe.run())
    await seen.until(lambda: any(s.drops.get("frame_ring", 0) > 50 for s in seen.statuses))
    pipe.request_stop()
    await run
    assert len(pipe.ring) <= 5 and camera.buffer.high_water <= 4
    assert seen.statuses[-1].drops["frame_ring"] == pipe.ring.dropped and seen.events == []


def test_scorer_flushes_denormals_on_the_thread_that_scores(loaded_tiny):
    """Denormal activations are many times slower on x86 (mmsa.model.runtime); the scorer turns
    them off on whichever thread calls it (the monitor scores on a worker thread)."""
    import threading

    import torch

    from mmsa.model import Sample
    from mmsa.monitor.scorer import Scorer

    scorer = Scorer(loaded_tiny, "cpu")
    out = {}

    def work():
        torch.set_flush_denormal(False)  # whatever this thread inherited
        before = float(torch.tensor([1e-39]) * 1.0)
        scores = scorer.score([Sample(text="a good day")])
        out["v"] = (before, float(torch.tensor([1e-39]) * 1.0), scores[0].score)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    before, after, score = out["v"]
    assert before > 0.0 and after == 0.0 and -3.0 <= score <= 3.0


async def test_every_batch_is_scored_on_one_dedicated_thread(loaded_tiny):
    """The scoring service keeps the forward passes on one thread of its own (one allocator arena,
    not one per pool thread: monitor/scoring.py), and scores every window it is given, in order."""
    import threading

    from mmsa.model import Sample
    from mmsa.monitor.scorer import Scorer
    from mmsa.monitor.scoring import ScoreService

    scorer = Scorer(loaded_tiny, "cpu")
    threads: list[str] = []
    score = scorer.score

    def recording(samples):
        threads.append(threading.current_thread().name)
        return score(samples)

    scorer.score = recording  # the real scorer, noting where it runs
    service = ScoreService(scorer, max_batch=2, max_wait_ms=1)
    task = asyncio.create_task(service.serve())
    texts = ["a good day", "a bad day", "it was fine", "awful", "lovely"]
    futures = []
    for text in texts:
        futures.append(service.submit(Sample(text=text)))
        await asyncio.sleep(0.05)
    got = [await f for f in futures]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    alone = [score([Sample(text=t)])[0].score for t in texts]  # each answer is its own window's, in order
    assert [g.scores.score for g in got] == pytest.approx(alone, abs=1e-5)
    assert len(threads) >= 3 and len(set(threads)) == 1 and threads[0].startswith("scorer")
    assert threads[0] != threading.current_thread().name
