"""The live pipeline: sources -> segmenter -> ASR -> featurize -> scorer -> log -> bus.

Tasks (one asyncio.TaskGroup) and the bounded channels between them::

    camera thread --offer--> [frames: keep newest] --> frame task --> FrameRing (+ recorder, face status)
    mic callback --offer---> [audio: cap in s, drop oldest] --> segment task (VAD) --> [windows] --> ASR task
    ASR task (Whisper, then mmsa.media.window_sample) --> [scoring] --> scorer task (batched model)
    scorer task --> session log (JSONL, first) --> EventBus (dashboard, MQTT, terminal)

Speculation (``segmenter.speculative``): while the silence that will close an utterance runs,
the segmenter already knows the window it will close with (:meth:`Segmenter.tentative`, from
``speech_pad_ms`` into the silence). The segment task collects that window's frames and hands
it to the ASR task, which runs Whisper and the featurization on it whenever it is idle (never
ahead of a window that is waiting). When the utterance closes with the same window (start,
end, audio, frames), its precomputed result goes to the scorer; if speech resumes first, or
the window differs, the work is discarded and never published. A run already in a worker
thread cannot be interrupted (faster-whisper's encoder and decoder are single blocking calls),
so a stale run delays the next window by at most its remainder; one not started yet is
dropped for free. Off in ``--fast`` replays, where the segmenter runs ahead of Whisper anyway.

Partial scores (``segmenter.partials``; live and paced replay, never ``--fast``): scores of
the utterance still open, published as :class:`PartialScore` on the bus (dashboard, MQTT
``<prefix>/partial``) and never written to the session log. Two sources: the speculative
run on the tentative window, scored as soon as its ASR and features are ready, and, during
speech, the open window so far every ``segmenter.partial_every_s`` seconds of speech. Both
are idle work of the ASR task: a waiting window always goes first (a pending open-window
request is dropped when speech stops or a window is cut), a partial is only queued for the
scorer when no window waits for ASR or scoring, and the scorer drops a partial whenever a
real window is waiting or in the same batch (so finals are never batched with partials); a
final that closes with the window of its speculative partial takes that partial's model
output instead of a pass of its own. A partial carries the ``seq`` the next ScoreEvent gets.

Overflow policies: ``frames`` and ``audio`` drop their oldest items when full (live devices
cannot wait); ``windows`` drops its oldest window live and makes a replay wait; ``scoring``
always makes the ASR task wait (results are never dropped); every drop is counted and shown
in :class:`MonitorStatus`. A replay feeds the same channels with ``put`` (waiting), so it
never loses data.

Shutdown (``request_stop``, Ctrl-C, or the end of a replay): stop the sources, close their
channels, let every stage drain its inbox and close its outbox, close the session log and
the recorder, then close the bus (MQTT then flushes its outbox and publishes ``offline``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmsa.media import FaceDetector, FaceTracker, window_sample
from mmsa.model import Sample
from mmsa.model.features import MODALITIES, SAMPLE_RATE_HZ

from .asr import Transcriber, Transcript
from .channels import Channel, ChannelClosed
from .config import MonitorConfig
from .errors import MonitorError
from .events import EventBus, ModalityScore, PartialScore, ScoreEvent, confidence_of, utc_now_iso
from .frames import AudioChunk, FrameRing, VideoFrame, Watermark, fit_width
from .recorder import Recorder, SessionFolder
from .scorer import ScoreJob, Scorer, Scores, run_scorer
from .sessionlog import SessionLog
from .sources import CameraSource, MicSource, ReplaySource
from .vad import Segment, Segmenter, SileroVAD

try:
    from asyncio import TaskGroup
except ImportError:  # Python 3.10
    from taskgroup import TaskGroup  # type: ignore[no-redef]

log = logging.getLogger(__name__)

END_FRAMES_S = 1.0  # the last window of a stream also takes the frames of the second after its audio


@dataclass
class Sources:
    """Either live devices (mic, optionally a camera) or a replay."""

    mic: MicSource | None = None
    camera: CameraSource | None = None
    replay: ReplaySource | None = None

    @property
    def live(self) -> bool:
        return self.replay is None

    @property
    def label(self) -> str:
        if self.replay is not None:
            return self.replay.label + (" (fast)" if self.replay.fast else "")
        return " + ".join(s.label for s in (self.camera, self.mic) if s is not None)


@dataclass
class Window:
    """A cut of the stream on its way to the model."""

    t_start: float
    t_end: float
    audio: np.ndarray
    frames: list[np.ndarray]
    final: bool
    closed_at: float  # time.monotonic() when the audio that completed it arrived
    spec: _Speculation | None = None  # work already started on this same window (speculation)
    partial: bool = False  # scored as a partial score of the open utterance (never logged)
    work: _Speculation | None = None  # the speculation whose result this window carries (partial or final)

    def same_input(self, other: Window) -> bool:
        """Whether ``other`` is the same cut: same times, audio and frames (the model input but the words)."""
        return (self.t_start == other.t_start and self.t_end == other.t_end and self.final == other.final
                and self.audio.shape == other.audio.shape and bool(np.array_equal(self.audio, other.audio))
                and len(self.frames) == len(other.frames)
                and all(a is b for a, b in zip(self.frames, other.frames)))


Processed = tuple[Sample, Transcript, float]  # features with the transcript's text, the transcript, ASR ms


@dataclass(eq=False)
class _Speculation:
    """Work on a window of an open utterance: the tentative window (:meth:`Segmenter.tentative`) or the open
    window so far (:meth:`Segmenter.open_window`, for a partial score)."""

    segment: Segment
    arrived: float = math.nan  # time.monotonic() when the audio that completed the segment arrived
    window: Window | None = None  # once its frames are collected
    collect: asyncio.Future | None = None  # the task collecting the frames
    job: asyncio.Future[Processed] | None = None  # ASR + featurization, once the ASR task started it
    scores: tuple[Scores, float] | None = None  # model output and ms, once its partial score was scored


@dataclass
class SpeculationStats:
    """Counts of speculative work (``segmenter.speculative``) in a session."""

    tentative: int = 0  # tentative windows seen (each closing silence of an utterance, and each change)
    ran: int = 0  # of those, ASR + featurization started before the utterance closed
    used: int = 0  # results published (the utterance closed with the same window)
    wasted: int = 0  # runs discarded: speech resumed or the window differed


@dataclass
class _Stats:
    totals_ms: deque = field(default_factory=lambda: deque(maxlen=200))

    def percentiles(self) -> tuple[float | None, float | None]:
        if not self.totals_ms:
            return None, None
        a = np.asarray(self.totals_ms)
        return round(float(np.percentile(a, 50)), 1), round(float(np.percentile(a, 95)), 1)


class Pipeline:
    """Runs one session; implements :class:`mmsa.monitor.events.Controls` for the dashboard."""

    def __init__(
        self,
        cfg: MonitorConfig,
        sources: Sources,
        *,
        transcriber: Transcriber,
        scorer: Scorer,
        bus: EventBus,
        folder: SessionFolder,
        session_log: SessionLog,
        session_id: str,
        recorder: Recorder | None = None,
    ) -> None:
        if sources.replay is None and sources.mic is None:
            raise MonitorError("the pipeline needs a microphone or a replay")
        self.cfg = cfg
        self.sources = sources
        self.transcriber = transcriber
        self.scorer = scorer
        self.bus = bus
        self.folder = folder
        self.log = session_log
        self.session_id = session_id
        self.recorder = recorder
        self.detector = FaceDetector()  # window faces (ASR task's worker thread)
        self._tracker = FaceTracker(FaceDetector(), detect_every=1)  # live "face seen" status
        self._vad = SileroVAD() if cfg.segmenter.mode == "vad" else None
        self._seq = 0
        self._stats = _Stats()
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._camera = "off" if sources.live and sources.camera is None else ("ok" if sources.live else "replay")
        self._face_job: asyncio.Future | None = None
        self._face_due = 0.0
        self.channels: dict[str, Channel[Any]] = {}
        self.ring = FrameRing(cfg.frames.ring_s, cfg.frames.ring_max)
        self.audio_progress = Watermark()
        self.extra_drops: dict[str, Callable[[], int]] = {}  # other components' drop counters (MQTT outbox)
        self._sources_stopped = False
        fast = sources.replay is not None and sources.replay.fast
        self.speculative = cfg.segmenter.speculative and cfg.segmenter.mode == "vad" and not fast
        self.speculation = SpeculationStats()
        self._spec: _Speculation | None = None  # the speculation on the open utterance (segment task's)
        self._spec_ready = asyncio.Event()  # a speculation's (or an open window's) window is ready for the ASR task
        seg_cfg = cfg.segmenter
        self.partials = seg_cfg.partials and seg_cfg.mode == "vad" and not fast
        self.n_partials = 0  # partial scores published on the bus
        self._open: _Speculation | None = None  # the latest open-window partial request (segment task's)
        self._open_utt: int | None = None  # speech_start of the utterance the open-window requests follow
        self._open_next = 0.0  # seconds of its speech at which the next open-window request is due

    # ------------------------------------------------------------------ Controls

    def request_stop(self) -> None:
        """Begin a clean shutdown (idempotent)."""
        self._stop.set()

    def toggle_recording(self) -> bool:
        """Start, pause or resume recording media into the session folder; True when recording now."""
        if self.recorder is None:
            fps = self.cfg.frames.camera_max_fps if self.sources.live else 30.0
            self.recorder = Recorder(self.folder, self.cfg.session.record_crf, nominal_fps=fps)
        if self.recorder.recording:
            self.recorder.pause()
        else:
            self.recorder.start()
        self.bus.update_status(recording=self.recorder.recording,
                               message="recording" if self.recorder.recording else "recording paused")
        return self.recorder.recording

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Run until the replay ends or a stop is requested; then drain and close everything."""
        cfg = self.cfg
        live = self.sources.live
        loop = asyncio.get_running_loop()
        audio_cap = max(int(cfg.audio.queue_s * SAMPLE_RATE_HZ), 1)
        self.channels = {
            "frames": Channel("frames", cfg.frames.queue, loop),
            "audio": Channel("audio", audio_cap, loop, size_of=lambda c: int(c.samples.size)),
            "windows": Channel("windows", cfg.asr.queue, loop),
            "scoring": Channel("scoring", cfg.scorer.queue, loop),
        }
        if self.recorder is not None and not self.recorder.recording:
            self.recorder.start()
        self.bus.update_status(
            source=self.sources.label, camera=self._camera,
            mic="replay" if not live else "ok", model=self.scorer.tag, device=self.scorer.device,
            recording=bool(self.recorder and self.recorder.recording), session_dir=str(self.folder.path),
        )
        try:
            async with TaskGroup() as tg:
                self._start_sources(tg, loop)
                tg.create_task(self._frame_task(), name="frames")
                tg.create_task(self._segment_task(), name="segmenter")
                tg.create_task(self._asr_task(), name="asr")
                tg.create_task(self._scorer_task(), name="scorer")
                tg.create_task(self._status_task(), name="status")
                tg.create_task(self._stopper(), name="stopper")
        finally:
            self._stop_sources()
            await self._close_outputs()

    def _start_sources(self, tg: TaskGroup, loop: asyncio.AbstractEventLoop) -> None:
        s = self.sources
        if s.replay is not None:
            tg.create_task(s.replay.run_audio(self.channels["audio"]), name="replay-audio")
            tg.create_task(s.replay.run_video(self.channels["frames"], self.audio_progress), name="replay-video")
            return
        if s.camera is not None:
            s.camera.start(self.channels["frames"].offer,
                           lambda state: loop.call_soon_threadsafe(self._camera_state, state))
        else:
            self.channels["frames"].close()
        assert s.mic is not None
        s.mic.start(self.channels["audio"].offer)

    def _stop_sources(self) -> None:
        if self._sources_stopped:
            return
        self._sources_stopped = True
        s = self.sources
        if s.replay is not None:
            s.replay.stop()
        for dev in (s.camera, s.mic):
            if dev is not None:
                dev.stop()
        if s.live:
            for name in ("frames", "audio"):
                if name in self.channels:
                    self.channels[name].close()

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

    async def _close_outputs(self) -> None:
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        self.log.close()
        extra: dict[str, Any] = {"speculation": dataclasses.asdict(self.speculation)} if self.speculative else {}
        if self.partials:
            extra["n_partials"] = self.n_partials
        self.folder.update(ended=utc_now_iso(), n_events=self._seq, drops=self.drops(), **extra)
        self.bus.update_status(finished=True, n_events=self._seq, drops=self.drops(), face_seen=None,
                               message=f"session ended: {self._seq} events in {self.log.path}")
        self.bus.close()

    # ------------------------------------------------------------------ stages

    async def _frame_task(self) -> None:
        frames = self.channels["frames"]
        max_w = self.cfg.frames.max_width
        try:
            while True:
                try:
                    f = await frames.get()
                except ChannelClosed:
                    return
                vf = VideoFrame(f.t, fit_width(f.image, max_w))
                self.ring.add(vf)
                if self.recorder is not None:
                    self.recorder.frame(vf)
                self._face_status(vf)
        finally:
            self.ring.watermark.end()

    def _face_status(self, frame: VideoFrame) -> None:
        hz = self.cfg.frames.face_status_hz
        now = time.monotonic()
        if hz <= 0 or now < self._face_due or (self._face_job is not None and not self._face_job.done()):
            return
        self._face_due = now + 1.0 / hz
        self._face_job = asyncio.ensure_future(asyncio.to_thread(self._tracker.update, frame.image))

        def done(job: asyncio.Future) -> None:
            if not job.cancelled() and job.exception() is None and not self.bus.closed:
                seen = job.result() is not None
                if seen != self.bus.last_status.face_seen:
                    self.bus.update_status(face_seen=seen)

        self._face_job.add_done_callback(done)

    async def _segment_task(self) -> None:
        audio = self.channels["audio"]
        seg: Segmenter | None = None
        stream_t0 = 0.0
        last_arrived = time.monotonic()
        try:
            while True:
                try:
                    chunk: AudioChunk = await audio.get()
                except ChannelClosed:
                    break
                if self.recorder is not None:
                    self.recorder.audio(chunk)
                if seg is not None and round((chunk.t0 - stream_t0) * SAMPLE_RATE_HZ) != seg.position:
                    # audio was dropped: close what was open and start a fresh stream at this chunk
                    for s in seg.flush():
                        await self._window(s, stream_t0, last_arrived, last=False)
                    seg = None
                if seg is None:
                    self._drop_speculation()
                    self._drop_open()
                    self._open_utt = None
                    if self._vad is not None:
                        self._vad.reset()
                    seg = Segmenter(self.cfg.segmenter, self._vad)
                    stream_t0 = chunk.t0
                seg.push(chunk.samples)
                last_arrived = chunk.arrived
                self.audio_progress.advance(stream_t0 + seg.position / SAMPLE_RATE_HZ)
                cut = seg.ready()
                for s in cut:
                    await self._window(s, stream_t0, chunk.arrived, last=False)
                if self.speculative:
                    self._speculate(seg.tentative(), stream_t0, chunk.arrived)
                if self.partials:
                    self._open_partial(seg, stream_t0, chunk.arrived, cut=bool(cut))
            self.audio_progress.end()
            if seg is not None:
                for s in seg.flush():
                    await self._window(s, stream_t0, time.monotonic(), last=True)
        finally:
            self._drop_speculation()
            self._drop_open()
            self.audio_progress.end()
            self.channels["windows"].close()

    async def _frames_until(self, t: float) -> None:
        """Wait until the ring holds the frames before ``t`` (a replay delivers them; a live camera gets wait_ms)."""
        if self.sources.replay is not None:
            await self.ring.watermark.wait(t)
        elif self._camera == "ok":
            await self.ring.watermark.wait(t, self.cfg.frames.wait_ms / 1000)

    async def _window(self, s: Segment, stream_t0: float, arrived: float, *, last: bool) -> None:
        """Collect the frames of a segment and queue the window for ASR."""
        t0 = stream_t0 + s.start / SAMPLE_RATE_HZ
        t1 = stream_t0 + s.end / SAMPLE_RATE_HZ
        frames_until = t1 + END_FRAMES_S if last else t1
        await self._frames_until(frames_until)
        w = Window(t0, t1, s.audio, self.ring.between(t0, frames_until), s.final, arrived)
        spec = self._spec
        if s.final and spec is not None:  # the utterance closed: its speculation is used here or never
            self._spec = None
            if spec.job is not None and spec.window is not None and spec.window.same_input(w):
                w.spec = spec
            else:
                self._drop_speculation(spec)
        if self.sources.live:
            self.channels["windows"].offer(w)
        else:
            await self.channels["windows"].put(w)

    def _speculate(self, tentative: Segment | None, stream_t0: float, arrived: float) -> None:
        """Follow the segmenter's tentative window: start collecting a new one, drop a withdrawn one."""
        if self._spec is not None and self._spec.segment is tentative:
            return
        self._drop_speculation()
        if tentative is None:
            return
        spec = self._spec = _Speculation(tentative, arrived)
        self.speculation.tentative += 1
        spec.collect = asyncio.ensure_future(self._collect_speculation(spec, stream_t0))

    async def _collect_speculation(self, spec: _Speculation, stream_t0: float) -> None:
        """The window's frames (as :meth:`_window` will take them); then it is the ASR task's to run."""
        s = spec.segment
        t0 = stream_t0 + s.start / SAMPLE_RATE_HZ
        t1 = stream_t0 + s.end / SAMPLE_RATE_HZ
        await self._frames_until(t1)
        if spec is self._spec or spec is self._open:
            spec.window = Window(t0, t1, s.audio, self.ring.between(t0, t1), s.final, math.nan)
            self._spec_ready.set()

    def _open_partial(self, seg: Segmenter, stream_t0: float, arrived: float, *, cut: bool) -> None:
        """Every ``partial_every_s`` seconds of speech, ask for a partial score of the open window so far.

        A request not started yet is dropped when speech stops (the tentative window then takes
        over) or a window was just cut (it goes first); a newer request replaces it.
        """
        every = self.cfg.segmenter.partial_every_s
        if every <= 0:
            return
        if cut or not seg.in_speech:
            if self._open is not None and self._open.job is None:
                self._drop_open()
            return
        start = seg.speech_start
        assert start is not None
        if start != self._open_utt:
            self._open_utt, self._open_next = start, every
        spoken = (seg.position - start) / SAMPLE_RATE_HZ
        if spoken < self._open_next:
            return
        self._open_next = (math.floor(spoken / every) + 1) * every
        window = seg.open_window()
        if window is None:
            return
        self._drop_open()
        req = self._open = _Speculation(window, arrived)
        req.collect = asyncio.ensure_future(self._collect_speculation(req, stream_t0))

    def _drop_open(self) -> None:
        """Forget the open-window partial request (a run in flight is left to end; its partial may still go out)."""
        req, self._open = self._open, None
        if req is not None and req.collect is not None:
            req.collect.cancel()

    def _drop_speculation(self, spec: _Speculation | None = None) -> None:
        """Discard a speculation (the current one by default): never published; a run in flight is left to end."""
        if spec is None:
            spec, self._spec = self._spec, None
            if spec is None:
                return
        if spec.collect is not None:
            spec.collect.cancel()
        if spec.job is not None:
            self.speculation.wasted += 1
            log.debug("speculative work on %.2f s discarded", spec.segment.end / SAMPLE_RATE_HZ)

    async def _asr_task(self) -> None:
        windows, scoring = self.channels["windows"], self.channels["scoring"]
        try:
            while True:
                try:
                    w: Window = await self._next_window(windows, scoring)
                except ChannelClosed:
                    return
                spec, w.spec = w.spec, None
                if spec is not None and spec.job is not None:  # computed ahead on the same window
                    sample, transcript, asr_ms = await spec.job
                    self.speculation.used += 1
                    w.work = spec
                else:
                    sample, transcript, asr_ms = await self._process(w)
                await scoring.put(ScoreJob(sample, (w, transcript, asr_ms)))
        finally:
            scoring.close()

    async def _next_window(self, windows: Channel[Window], scoring: Channel[ScoreJob]) -> Window:
        """The next window; while none is waiting, work on the open utterance (when ready).

        One window at a time is processed (the Transcriber is not thread-safe). A waiting window
        always goes first, then the speculation on the tentative window, then the open window
        so far (for a partial score).
        """
        while True:
            w = windows.get_nowait()
            if w is not None:
                return w
            work = next((x for x in (self._spec, self._open)
                         if x is not None and x.window is not None and x.job is None), None)
            if work is not None:
                work.job = asyncio.ensure_future(self._process(work.window))
                work.job.add_done_callback(_retrieve)  # a discarded run's error must not be reported as lost
                if work is self._spec:
                    self.speculation.ran += 1
                try:
                    await asyncio.wait({work.job})  # uninterruptible once in the worker threads: let it end
                except asyncio.CancelledError:
                    work.job.cancel()
                    raise
                if work is self._open:
                    self._open = None
                await self._queue_partial(work, windows, scoring)
                continue
            self._spec_ready.clear()
            getting = asyncio.ensure_future(windows.get())
            ready = asyncio.ensure_future(self._spec_ready.wait())
            try:
                await asyncio.wait({getting, ready}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                if not getting.done():
                    getting.cancel()  # Channel.get takes nothing until it returns
                await asyncio.gather(getting, ready, return_exceptions=True)
            if getting.done() and not getting.cancelled():
                return getting.result()  # ChannelClosed once closed and drained

    async def _queue_partial(self, work: _Speculation, windows: Channel[Window], scoring: Channel[ScoreJob]) -> None:
        """Hand the result of work on the open utterance to the scorer as a partial, if nothing else waits."""
        job = work.job
        if not self.partials or job is None or work.window is None or job.cancelled() or job.exception() is not None:
            return
        if len(windows) or len(scoring):  # a window is waiting: it goes first (and makes this one stale)
            return
        sample, transcript, asr_ms = job.result()
        w = dataclasses.replace(work.window, partial=True, spec=None, closed_at=work.arrived, work=work)
        await scoring.put(ScoreJob(sample, (w, transcript, asr_ms)))

    def _select(self, batch: list[ScoreJob]) -> list[ScoreJob]:
        """The scorer's choice in a batch: real windows; a partial only when nothing else waits.

        A final window whose speculative partial was scored takes that pass's scores (the very
        same model input) instead of a pass of its own.
        """
        windows = [job for job in batch if not job.context[0].partial]
        if len(windows) < len(batch) and not windows and not len(self.channels["windows"]) \
                and not len(self.channels["scoring"]):
            return batch[-1:]  # the newest partial alone
        for job in windows:
            work = job.context[0].work
            if work is not None and work.scores is not None:
                job.scores, job.model_ms = work.scores
        return windows

    async def _process(self, w: Window) -> Processed:
        """Whisper on the window's audio, in parallel with its features (faces and STFT need no words)."""
        featurizing = asyncio.ensure_future(
            asyncio.to_thread(window_sample, w.audio, w.frames, None, self.detector, self.scorer.features)
        )
        t = time.perf_counter()
        try:
            transcript = await asyncio.to_thread(self.transcriber.transcribe, w.audio)
        except (RuntimeError, ValueError) as exc:  # one bad window must not end the session
            log.error("ASR failed on %.2f-%.2f s: %s", w.t_start, w.t_end, exc)
            self.bus.update_status(message=f"ASR failed: {exc}")
            transcript = Transcript("", ())
        finally:
            asr_ms = (time.perf_counter() - t) * 1000
            sample = await featurizing
        # what window_sample(audio, frames, transcript, ...) returns, computed in two parts
        return dataclasses.replace(sample, text=transcript.text or None), transcript, asr_ms

    async def _scorer_task(self) -> None:
        try:
            await run_scorer(
                self.scorer, self.channels["scoring"], self._publish,
                max_batch=self.cfg.scorer.max_batch, max_wait_ms=self.cfg.scorer.max_wait_ms,
                on_error=lambda msg: self.bus.update_status(message=msg),
                select=self._select if self.partials else None,
            )
        finally:
            self._done.set()

    async def _publish(self, job: ScoreJob, scores: Scores, model_ms: float) -> None:
        """The result path: session log first, then the bus. Never drops.

        A partial (a window of the open utterance) goes to the bus only, as a :class:`PartialScore`
        with the ``seq`` the next event will get.
        """
        w, transcript, asr_ms = job.context
        sample = job.sample
        n_faces = 0 if sample.faces is None else int(len(sample.faces))
        mods = {
            "text": ModalityScore(sample.text is not None and scores.unimodal["text"] is not None, scores.unimodal["text"]),
            "audio": ModalityScore(scores.unimodal["audio"] is not None, scores.unimodal["audio"]),
            "vision": ModalityScore(scores.unimodal["vision"] is not None, scores.unimodal["vision"], face_frames=n_faces),
        }
        for m in MODALITIES:  # keep present/score consistent with the contract
            if not mods[m].present:
                mods[m].score = None
        if math.isnan(scores.score):
            if not w.partial:
                log.warning("no usable modality in %.2f-%.2f s; not scored", w.t_start, w.t_end)
            return
        score = max(-3.0, min(3.0, scores.score))
        event = ScoreEvent(
            session=self.session_id, seq=self._seq, t_start=w.t_start, t_end=w.t_end, text=transcript.text,
            score=score, modalities=mods, latency_ms={"asr": asr_ms, "model": model_ms, "total": 0.0},
            model=self.scorer.tag, confidence=confidence_of(score, {m: mods[m].score for m in MODALITIES}),
        )
        if w.partial:
            if w.work is not None:  # the final of this same window (if it comes) reuses these scores
                w.work.scores = (scores, model_ms)
            event.latency_ms["total"] = (time.monotonic() - w.closed_at) * 1000
            self.n_partials += 1
            self.bus.publish(PartialScore(event))
            return
        self._seq += 1
        event.latency_ms["total"] = (time.monotonic() - w.closed_at) * 1000
        self.log.write(event)
        self._stats.totals_ms.append(event.latency_ms["total"])
        self.bus.publish(event)

    async def _status_task(self) -> None:
        done = asyncio.ensure_future(self._done.wait())
        try:
            while not self._done.is_set():
                await asyncio.wait({done}, timeout=0.5)
                p50, p95 = self._stats.percentiles()
                fields: dict[str, Any] = dict(drops=self.drops(), latency_p50_ms=p50, latency_p95_ms=p95,
                                              n_events=self._seq)
                if self.recorder is not None:
                    fields["recording"] = self.recorder.recording
                last = self.bus.last_status
                if any(getattr(last, k) != v for k, v in fields.items()):
                    self.bus.update_status(**fields)
        finally:
            done.cancel()

    def _camera_state(self, state: str) -> None:
        self._camera = state
        if state == "lost":
            log.warning("camera lost: scoring audio and text")
            self.bus.update_status(camera=state, message="camera lost: scoring audio and text", face_seen=None)
        else:
            log.info("camera back")
            self.bus.update_status(camera=state, message="camera back")

    def drops(self) -> dict[str, int]:
        """Items dropped so far, per queue (only the non-zero ones)."""
        out = {name: ch.dropped for name, ch in self.channels.items() if ch.dropped}
        if self.ring.dropped:
            out["frame_ring"] = self.ring.dropped
        if self.recorder is not None and self.recorder.dropped:
            out["recorder"] = self.recorder.dropped
        if self.sources.mic is not None and self.sources.mic.overflows:
            out["mic_overflow"] = self.sources.mic.overflows
        for name, count in self.extra_drops.items():
            if count():
                out[name] = count()
        return out

    @property
    def n_events(self) -> int:
        return self._seq


def _retrieve(job: asyncio.Future) -> None:
    if not job.cancelled():
        job.exception()


