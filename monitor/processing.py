"""Processing: each window's ASR and features, one window at a time, errors kept to their window.

:class:`Processor` takes the assembled windows in order. For each it runs Whisper on the ``asr``
thread (on the part of the window Whisper hears: ``Window.asr_audio``) and, at the same time, the
featurization (STFT, face crops) on the ``featurize`` thread (:class:`~mmsa.monitor.engine.Engine`),
and queues a :class:`WindowResult` for scoring. While no window waits it does the idle work of the
speculator (``speculation.py``): the transcription of a closing utterance, started in the
background at once (a window with the same Whisper input then takes its transcript), and windows
of the open utterance, processed ahead of its close. One transcription of the stream runs at a time.

Any exception inside ASR or featurization of one window (``cv2.error``, ``OSError``, a CUDA error,
anything but cancellation) is reported once through :class:`ErrorReport` (logged with the window's
times, counted, shown in the status) and the session goes on with the next window: a failed ASR
leaves the window scored without words (text absent), a failed featurization skips it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmsa.model import Sample

from .asr import Transcript
from .assembler import Window
from .channels import Channel, ChannelClosed
from .engine import Engine
from .speculation import Ahead, Heard, Speculator, heard_at

log = logging.getLogger(__name__)


@dataclass
class WindowResult:
    """A window with its model input (words included), its transcript and how long ASR took.

    ``window`` is kept without its frames (a copy with none): what they gave is in ``sample.faces``, and
    nothing after featurization looks at them, so a result waiting to be scored or published pins no frame.
    """

    window: Window
    sample: Sample
    transcript: Transcript
    asr_ms: float

    def __post_init__(self) -> None:
        if self.window.frames:
            self.window = dataclasses.replace(self.window, frames=[])


class ErrorReport:
    """Counts the windows that failed and tells the status (``on_error(count, message)``) about each."""

    def __init__(self, on_error: Callable[[int, str], None] = lambda _n, _m: None) -> None:
        self.count = 0
        self._on_error = on_error

    def __call__(self, stage: str, window: Window, exc: BaseException) -> None:
        self.count += 1
        what = f"{stage} failed on {window.t_start:.2f}-{window.t_end:.2f} s"
        log.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        self._on_error(self.count, f"{what}: {type(exc).__name__}: {exc}")


class Processor:
    """ASR + featurization of one stream's windows (module docstring)."""

    def __init__(self, engine: Engine, errors: ErrorReport, speculator: Speculator | None = None) -> None:
        self.engine = engine
        self.errors = errors
        self.speculator = speculator
        self._heard: asyncio.Future | None = None  # the transcription ahead started last (may still run)
        if speculator is not None:  # Whisper's speed, for the open-window partials (segmenter.partial_asr_ms)
            speculator.asr_speed = lambda: getattr(engine.transcriber, "ms_per_s", None)

    async def run(self, windows: Channel[Window], results: Channel[WindowResult]) -> None:
        """Until ``windows`` is closed and drained; then close ``results``."""
        try:
            while True:
                try:
                    item = await self._next(windows)
                except ChannelClosed:
                    return
                if isinstance(item, Window):
                    result = await self._final(item)
                    if result is not None:
                        await results.put(result)
                else:
                    await self._ahead(item, windows, results)
        finally:
            if self._heard is not None:
                self._heard.cancel()
            results.close()

    async def process(self, w: Window) -> WindowResult | None:
        """Whisper on the window's audio, in parallel with its features; None if featurization failed."""
        featurizing = asyncio.ensure_future(self.engine.featurize(w.audio, w.frames))
        t = time.perf_counter()
        try:
            transcript, asr_ms = await self._transcribe(w)
        except asyncio.CancelledError:
            featurizing.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - one bad window must not end the session
            self.errors("ASR", w, exc)
            transcript, asr_ms = Transcript("", ()), (time.perf_counter() - t) * 1000
        try:
            sample = await featurizing
        except Exception as exc:  # noqa: BLE001
            self.errors("featurization", w, exc)
            return None
        # what window_sample(audio, frames, transcript, ...) returns, computed in two parts
        return WindowResult(w, dataclasses.replace(sample, text=transcript.text or None), transcript, asr_ms)

    async def _transcribe(self, w: Window) -> tuple[Transcript, float]:
        """The window's transcript and the ms Whisper took: the transcription ahead of it if one ran, else Whisper's."""
        audio = w.asr_audio
        ahead = self.speculator.transcript_for(heard_at(w), audio) if self.speculator is not None else None
        if ahead is not None:
            try:
                return await asyncio.shield(ahead)
            except asyncio.CancelledError:
                if not ahead.cancelled():
                    raise
            except Exception as exc:  # noqa: BLE001 - it failed ahead: Whisper runs again, and reports if it fails
                log.debug("the transcription ahead failed (%s: %s); running it again", type(exc).__name__, exc)
        return await self._timed_transcribe(audio, w.asr_pauses, self._heard)

    async def _timed_transcribe(self, audio: np.ndarray, pauses: tuple[int, ...],
                                after: asyncio.Future | None) -> tuple[Transcript, float]:
        """Whisper on ``audio`` (its pauses: ``pauses``) once ``after`` (the stream's transcription ahead, if any
        runs) is done: one at a time."""
        if after is not None and not after.done():
            await asyncio.wait([after])
        t = time.perf_counter()
        transcript = await self.engine.transcribe(audio, pauses)
        return transcript, (time.perf_counter() - t) * 1000

    def _start_heard(self, heard: Heard) -> None:
        assert self.speculator is not None
        self._heard = asyncio.ensure_future(self._timed_transcribe(heard.segment.audio, heard.segment.asr_pauses,
                                                                   self._heard))
        self.speculator.heard_started(heard, self._heard)

    async def _final(self, w: Window) -> WindowResult | None:
        ahead: Ahead | None = w.ahead
        if ahead is None or not ahead.started:
            return await self.process(w)
        assert self.speculator is not None
        self.speculator.used()  # computed ahead on the same input
        if ahead.result is None:  # it failed (and was reported) on this very input
            return None
        return dataclasses.replace(ahead.result, window=w)

    async def _ahead(self, work: Ahead, windows: Channel[Window], results: Channel[WindowResult]) -> None:
        assert self.speculator is not None and work.window is not None
        result = await self.process(work.window)
        partial = self.speculator.finished(work, result)
        if partial is not None and not len(windows) and not len(results):  # a waiting window goes first
            await results.put(dataclasses.replace(result, window=partial))

    async def _next(self, windows: Channel[Window]) -> Window | Ahead:
        """The next window; while none is waiting, the speculator's work (when ready)."""
        spec = self.speculator
        while True:
            w = windows.get_nowait()
            if w is not None:
                return w
            work = spec.take() if spec is not None else None
            if isinstance(work, Heard):
                self._start_heard(work)  # in the background: the loop goes on to the next work
                continue
            if work is not None:
                return work
            if spec is None:
                return await windows.get()  # ChannelClosed once closed and drained
            spec.ready.clear()
            w = await windows.get_unless(spec.ready)  # ChannelClosed once closed and drained
            if w is not None:
                return w
