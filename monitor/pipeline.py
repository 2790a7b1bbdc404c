"""One stream's live core: sources -> window assembly -> processing -> scoring -> sinks.

::

    sources (camera, mic, replay)      ... Source: async iteration of AudioChunk / VideoFrame / StateChange
      | pump task per source: frames -> FrameRing (+ media sinks), audio -> [audio]
    WindowAssembler (VAD segmenter, frames from the ring; hooks: Speculator)   assembler.py, speculation.py
      | [windows]
    Processor (Whisper on the asr thread || features on the featurize thread)   processing.py, engine.py
      | [results]
    Emitter (shared ScoreService: batched across streams, its own thread)      emitter.py, scoring.py
      | EventBus.publish: DURABLE sinks first (JSONL log, MQTT outbox), then bounded feeds   bus.py
    sinks: session log | MQTT | Prometheus | terminal | dashboard | recorder

Every task lives in one ``TaskGroup`` (the pumps, the stages, the sinks, the status and face-status
tasks, the speculator's frame collectors and, when the pipeline owns its engine, the scoring
service). Channels are bounded: ``audio`` holds ``AUDIO_LEAD_S`` of audio (a replay never runs
further ahead of segmentation, so the frame ring always holds the frames of the windows being cut),
``windows`` drops its oldest window live and makes a replay wait, ``results`` always makes the
processing stage wait (results are never dropped). Sources bound their own buffers (a camera keeps
its newest frames, a microphone ``audio.queue_s`` seconds). Every drop is counted and shown in the
status, with the windows that failed (``errors``) and how far processing lags (``behind_s``).

Shutdown (``request_stop``, Ctrl-C, or the end of a replay): stop the sources, let every stage
drain its inbox and close its outbox, then publish the final status and close the bus; the sinks
then finish (the session log is fsynced, MQTT delivers its outbox and publishes ``offline``, the
recorder finishes its files).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mmsa.media import FaceDetector, FaceTracker
from mmsa.model.features import SAMPLE_RATE_HZ

from .assembler import FrameTake, Window, WindowAssembler
from .bus import EventBus, Sink
from .channels import Channel
from .config import MonitorConfig
from .emitter import Emitter
from .engine import Engine
from .errors import MonitorError
from .events import utc_now_iso
from .frames import AudioChunk, FrameRing, Thinner, VideoFrame, VideoMark, fit_width
from .processing import ErrorReport, Processor, WindowResult
from .recorder import Recorder
from .session import SessionFolder
from .sessionlog import SessionLog
from .source import AUDIO, VIDEO, Source, SourceState, StateChange
from .speculation import SpeculationStats, Speculator
from .vad import SileroVAD

try:
    from asyncio import TaskGroup
except ImportError:  # Python 3.10
    from taskgroup import TaskGroup  # type: ignore[no-redef]

log = logging.getLogger(__name__)

AUDIO_LEAD_S = 1.0  # audio between the sources and segmentation (a replay's lead over the frames it needs)
STATUS_EVERY_S = 0.5


class Pipeline:
    """Runs one stream's session; implements :class:`mmsa.monitor.events.Controls` for the dashboard."""

    def __init__(self, cfg: MonitorConfig, sources: Sequence[Source], *, engine: Engine, bus: EventBus,
                 folder: SessionFolder, session_log: SessionLog, sinks: Sequence[Sink] = (),
                 recorder: Recorder | None = None, stream: str = "", own_engine: bool = True) -> None:
        if not any(AUDIO in s.kinds for s in sources):
            raise MonitorError("the pipeline needs a microphone or a replay")
        self.cfg, self.sources, self.engine, self.bus, self.folder = cfg, list(sources), engine, bus, folder
        self.log, self.stream, self.own_engine = session_log, stream, own_engine
        self.session_id = folder.session_id
        session_log.attach(bus)  # the first sink: an event is on disk before anything else sees it
        bus.stop_hooks.append(self.request_stop)
        self.sinks: list[Sink] = [session_log, *sinks]
        self.recorder = recorder
        self.live = any(s.live for s in self.sources)
        if recorder is not None:
            recorder.lossless = not self.live  # a replay waits for the recorder instead of losing media
            recorder.attach(bus)
            self.sinks.append(recorder)
        fast = not all(s.paced for s in self.sources)
        seg = cfg.segmenter
        self.speculative = seg.speculative and seg.mode == "vad" and not fast
        self.partials = seg.partials and seg.mode == "vad" and not fast
        self.ring = FrameRing(cfg.frames.ring_s, cfg.frames.ring_max)
        self.errors = ErrorReport(lambda n, msg: self.bus.update_status(errors=n, message=msg))
        self.emitter = Emitter(engine.scoring, bus, self.errors, session_id=self.session_id, model=engine.tag,
                               stream=stream)
        self.channels: dict[str, Channel[Any]] = {}
        self.speculator: Speculator | None = None
        self._tg: TaskGroup | None = None
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._sources_stopped = False
        self._video = next((s for s in self.sources if VIDEO in s.kinds), None)
        self.finished = False  # every stage drained and the bus closed
        self._faces = FaceStatus(cfg.frames.face_status_hz, bus, self._video)

    @property
    def scorer(self):
        return self.engine.scorer

    @property
    def speculation(self) -> SpeculationStats:
        return self.speculator.stats if self.speculator is not None else SpeculationStats()

    @property
    def n_events(self) -> int:
        return self.emitter.n_events

    @property
    def n_partials(self) -> int:
        return self.emitter.n_partials

    @property
    def label(self) -> str:
        return " + ".join(s.label for s in self.sources)

    def shed(self, steps: Sequence[str]) -> None:
        """Load shedding (``load.py``): switch ``partials`` / ``speculation`` off while they are in ``steps``."""
        if self.speculator is not None:
            self.speculator.partials = self.partials and "partials" not in steps
            self.speculator.speculative = self.speculative and "speculation" not in steps
        self.bus.shed = list(steps)
        if self.bus.degraded() != self.bus.last_status.degraded and not self.bus.closed:
            self.bus.update_status(degraded=self.bus.degraded())

    # ------------------------------------------------------------------ Controls

    def request_stop(self) -> None:
        """Begin a clean shutdown (idempotent). No window waits for frames any more: the sources are stopping, and a
        window waiting for a frame that comes after audio nobody reads would hold the drain."""
        self._stop.set()
        self.ring.watermark.end()

    def toggle_recording(self) -> bool:
        """Start, pause or resume recording media into the session folder; True when recording now."""
        if self.recorder is None:
            fps = self.cfg.frames.camera_max_fps if self.live else 30.0
            self.recorder = Recorder(self.folder, self.cfg.session.record_crf, nominal_fps=fps, lossless=not self.live)
            self.recorder.attach(self.bus)
            self.sinks.append(self.recorder)
            if self._tg is not None:
                self._tg.create_task(self.bus.run_sink(self.recorder), name="recorder")
        if self.recorder.recording:
            self.recorder.pause()
        else:
            self.recorder.start()
        self.bus.update_status(recording=self.recorder.recording,
                               message="recording" if self.recorder.recording else "recording paused")
        return self.recorder.recording

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Run until the sources end or a stop is requested; then drain, publish the end and finish the sinks."""
        if self.recorder is not None and not self.recorder.recording:
            self.recorder.start()
        self.bus.update_status(**self._first_status())
        try:
            async with TaskGroup() as tg:
                self._tg = tg
                for sink in self.sinks:
                    tg.create_task(self.bus.run_sink(sink), name=f"sink-{sink.name}")
                engine = tg.create_task(self.engine.serve(), name="scoring") if self.own_engine else None
                tg.create_task(self._stages(tg, engine), name="stages")
        finally:
            self._stop_sources()
            self._tg = None
            if self.own_engine:
                self.engine.close()
            if not self.bus.closed:  # a stage failed: no subscriber may wait for an end that never comes
                try:
                    self.log.close()
                except OSError as exc:
                    self.bus.fail(self.log, exc)
                self.bus.close()
            self.finished = True

    async def _stages(self, tg: TaskGroup, engine: asyncio.Task | None) -> None:
        """Start the sources and the stages; when they have drained, end the session (and the engine we own)."""
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        audio: Channel[AudioChunk] = Channel("audio", max(int(AUDIO_LEAD_S * SAMPLE_RATE_HZ), 1), loop,
                                             size_of=lambda c: int(c.samples.size))
        windows: Channel[Window] = Channel("windows", cfg.asr.queue, loop)
        results: Channel[WindowResult] = Channel("results", cfg.scorer.queue, loop)
        self.channels = {"audio": audio, "windows": windows, "results": results}
        vad = SileroVAD.for_config(cfg.segmenter) if cfg.segmenter.mode == "vad" else None
        assembler = WindowAssembler(cfg.segmenter, self.ring, vad, self._frame_wait)
        if self.speculative or self.partials:
            self.speculator = assembler.hooks = Speculator(
                cfg.segmenter, speculative=self.speculative, partials=self.partials,
                spawn=lambda coro: tg.create_task(coro), collect=assembler.collect, poke=assembler.poke)
        self._assembler = assembler
        try:
            await self._start_sources(tg, audio)
            stages = [tg.create_task(assembler.run(audio, windows, lossless=not self.live), name="assembler"),
                      tg.create_task(Processor(self.engine, self.errors, self.speculator).run(windows, results),
                                     name="processing"),
                      tg.create_task(self.emitter.run(results), name="emitter")]
            status = tg.create_task(self._status_task(), name="status")
            stopper = tg.create_task(self._stopper(), name="stopper")
            faces = tg.create_task(self._faces.run(self._done), name="face-status")
            await asyncio.gather(*stages)
        finally:
            self._done.set()
            self._faces.offer(None)
        await asyncio.gather(status, stopper, faces)
        if engine is not None:
            engine.cancel()
        self._finish()

    async def _start_sources(self, tg: TaskGroup, audio: Channel[AudioChunk]) -> None:
        try:
            for src in self.sources:
                await src.start()
        except BaseException:
            self._stop_sources()
            audio.close()
            self.ring.watermark.end()
            raise
        pumps = [tg.create_task(self._pump(src, audio), name=f"source-{src.label}") for src in self.sources]

        async def ended() -> None:  # every source ended: no more audio or frames
            await asyncio.gather(*pumps)
            audio.close()
            self.ring.watermark.end()

        tg.create_task(ended(), name="sources")

    async def _pump(self, src: Source, audio: Channel[AudioChunk]) -> None:
        """One source's items into the stream: audio to segmentation, frames to the ring (and the media sinks)."""
        max_w = self.cfg.frames.max_width
        # a recording comes at its own rate (thinned to replay_max_fps), so the ring's age bound holds it, not the cap
        thin = Thinner(0.0 if src.live else self.cfg.frames.replay_max_fps)
        async for item in src:
            if isinstance(item, AudioChunk):
                self.bus.media(item)
                await audio.put(item)
            elif isinstance(item, VideoFrame):
                if not thin.keep(item.t):
                    continue  # a replay faster than frames.replay_max_fps
                frame = VideoFrame(item.t, fit_width(item.image, max_w))
                self.ring.add(frame, capped=src.live)
                self.bus.media(frame)
                self._faces.offer(frame)
            elif isinstance(item, VideoMark):  # a recording's video has no frame before item.t left to deliver
                self.ring.watermark.advance(item.t)
            elif isinstance(item, StateChange):
                self._source_state(src, item)

    def _source_state(self, src: Source, change: StateChange) -> None:
        if VIDEO in src.kinds and change.state is SourceState.ENDED and change.kind in (VIDEO, None):
            self.ring.watermark.end()  # no more frames: windows stop waiting for them
        if change.message:
            log.warning("%s: %s", src.label, change.message)
        if VIDEO in src.kinds and src.live and change.state in (SourceState.LOST, SourceState.LIVE):
            fields: dict[str, Any] = {"camera": self._camera_state(), "message": change.message}
            if change.state is SourceState.LOST:
                fields["face_seen"] = None
            self.bus.update_status(**fields)
        elif change.message:
            self.bus.update_status(message=f"{src.label}: {change.message}")

    def _frame_wait(self) -> FrameTake:
        """How a window takes its frames (assembler.FrameWait): how long it may wait for them, and how many it keeps
        (those the featurizer may search for faces: the engine's faces per window, before any load shedding)."""
        keep = self.engine.faces_per_window or self.engine.scorer.features.frames_per_window
        v = self._video
        live_wait = self.cfg.frames.wait_ms / 1000 if v is not None and v.state is SourceState.LIVE else 0.0
        # a recording delivers every frame and says how far its video was read (VideoMark): wait without limit
        return FrameTake(None if v is not None and not v.live else live_wait, keep)

    def _stop_sources(self) -> None:
        if self._sources_stopped:
            return
        self._sources_stopped = True
        for src in self.sources:
            src.stop()

    async def _stopper(self) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            done.cancel()
        if self._stop.is_set() and not self._done.is_set():
            self.bus.update_status(message="stopping: draining queues")
            await asyncio.to_thread(self._stop_sources)

    # ------------------------------------------------------------------ status

    def _camera_state(self) -> str:
        v = self._video
        if v is None:
            return "off"
        if not v.live:
            return "replay"
        return "lost" if v.state is SourceState.LOST else "ok"

    def _first_status(self) -> dict[str, Any]:
        return dict(source=self.label, camera=self._camera_state(), mic="ok" if self.live else "replay",
                    model=self.engine.tag, device=self.engine.device, stream=self.stream,
                    recording=bool(self.recorder and self.recorder.recording), session_dir=str(self.folder.path))

    def drops(self) -> dict[str, int]:
        """Items dropped so far, per queue (only the non-zero ones)."""
        out = {name: ch.dropped for name, ch in self.channels.items() if ch.dropped}
        for src in self.sources:
            if src.dropped:
                out["frames" if VIDEO in src.kinds else "audio"] = src.dropped
            if getattr(src, "overflows", 0):
                out["mic_overflow"] = src.overflows
        if self.ring.dropped:
            out["frame_ring"] = self.ring.dropped
        out.update(self.bus.drops())
        return out

    def behind_s(self) -> float:
        """How far processing lags: the age of the oldest window waiting, or the audio not yet segmented."""
        if not all(s.paced for s in self.sources):
            return 0.0
        now = time.monotonic()
        oldest = [x for name, ch in self.channels.items() if name != "audio" for x in ch.peek_oldest()]
        ages = [now - (x.window if isinstance(x, WindowResult) else x).closed_at for x in oldest]
        backlog = sum(getattr(s, "backlog_s", 0.0) for s in self.sources)
        return round(max([backlog, *ages, 0.0]), 2)

    async def _status_task(self) -> None:
        done = asyncio.ensure_future(self._done.wait())
        try:
            while not self._done.is_set():
                await asyncio.wait({done}, timeout=STATUS_EVERY_S)
                p50, p95 = self.emitter.latency_percentiles()
                fields: dict[str, Any] = dict(drops=self.drops(), latency_p50_ms=p50, latency_p95_ms=p95,
                                              n_events=self.n_events, errors=self.errors.count,
                                              behind_s=self.behind_s())
                if self.recorder is not None:
                    fields["recording"] = self.recorder.recording
                last = self.bus.last_status
                if any(getattr(last, k) != v for k, v in fields.items()):
                    self.bus.update_status(**fields)
        finally:
            done.cancel()

    def _finish(self) -> None:
        """Every stage drained: record the end and close the bus (the sinks then finish)."""
        extra: dict[str, Any] = {"speculation": dataclasses.asdict(self.speculation)} if self.speculative else {}
        if self.partials:
            extra["n_partials"] = self.n_partials
        n = self.n_events
        record_end(self.folder, self.bus, n_events=n, drops=self.drops(), errors=self.errors.count, **extra)
        where = f"({self.log.n_events} of them in {self.log.path})" if "jsonl" in self.bus.failed else f"in {self.log.path}"
        self.bus.update_status(finished=True, n_events=n, drops=self.drops(), face_seen=None, errors=self.errors.count,
                               behind_s=0.0, message=f"session ended: {n} events {where}")
        self.bus.close()
        self.finished = True


def record_end(folder: SessionFolder, bus: EventBus, **fields: Any) -> None:
    """The session's end in metadata.json, with the outputs that failed (``failed_outputs``). A full disk there is
    said (and counted as the ``metadata`` output failing), not raised: the events went out already."""
    if bus.failed:
        fields["failed_outputs"] = dict(bus.failed)
    try:
        folder.update(ended=utc_now_iso(), **fields)
    except OSError as exc:
        log.error("%s: cannot update metadata.json (%s)", folder.path, exc.strerror or exc)
        bus.failed.setdefault("metadata", f"{exc.strerror or exc}")


class FaceStatus:
    """The live "face seen" status: the newest frame through a light tracker, ``hz`` times a second, on a thread
    of its own (live video only; a recording's faces are the windows' business)."""

    def __init__(self, hz: float, bus: EventBus, video: Source | None) -> None:
        self.hz, self.bus, self.video = hz, bus, video
        self._frame: VideoFrame | None = None  # a mailbox of one: the newest frame
        self._wake = asyncio.Event()

    def offer(self, frame: VideoFrame | None) -> None:
        """The newest frame (None: just wake up, the stream is ending)."""
        if frame is not None:
            self._frame = frame
        self._wake.set()

    async def run(self, done: asyncio.Event) -> None:
        if self.hz <= 0 or self.video is None or not self.video.live:
            return
        tracker = FaceTracker(FaceDetector(), detect_every=1)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, thread_name_prefix="face-status") as thread:
            while not done.is_set():
                await self._wake.wait()
                self._wake.clear()
                frame, self._frame = self._frame, None
                if frame is None:
                    continue
                seen = await loop.run_in_executor(thread, tracker.update, frame.image) is not None
                if seen != self.bus.last_status.face_seen and self.video.state is SourceState.LIVE:
                    self.bus.update_status(face_seen=seen)
                await asyncio.sleep(1.0 / self.hz)
