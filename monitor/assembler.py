"""Window assembly: the stream's audio cut into windows (VAD segmentation), each with its frames.

:class:`WindowAssembler` is the first stage after the sources. It pushes every audio chunk into
a sans-IO :class:`~mmsa.monitor.vad.Segmenter`, and for every window the segmenter cuts it takes
the window's video frames from the :class:`~mmsa.monitor.frames.FrameRing` (waiting for them as
the frame policy says: :class:`FrameTake`) and queues a :class:`Window` for processing. A window
keeps only the frames the featurizer may search for faces (``FrameTake.keep``, spread over the
window's frames as :func:`~mmsa.model.features.spread_indices` spreads them), so a window waiting
for processing holds a few frames, not every frame of its seconds. Audio that arrives with a gap
(dropped blocks) closes what was open and starts a fresh segmenter at the new chunk.

Work done ahead of time (speculation, partial scores) plugs in through :class:`AssemblerHooks`,
which the assembler calls after each chunk and before it queues a final window; the assembler
knows nothing of what the hooks do (``mmsa.monitor.speculation`` implements them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mmsa.model.features import SAMPLE_RATE_HZ, spread_indices

from .channels import Channel, ChannelClosed
from .config import SegmenterConfig
from .frames import AudioChunk, FrameRing
from .vad import Segment, Segmenter

END_FRAMES_S = 1.0  # the last window of a stream also takes the frames of the second after its audio


@dataclass
class Window:
    """A cut of the stream on its way to the model."""

    t_start: float
    t_end: float
    audio: np.ndarray
    frames: list[np.ndarray]  # the frames the featurizer may search for faces (FrameTake.keep), oldest first
    final: bool
    closed_at: float  # time.monotonic() when the audio that completed it arrived
    partial: bool = False  # scored as a partial score of the open utterance (never logged)
    ahead: Any = None  # work already started on this same cut (set by the hooks; see speculation.py)
    asr_samples: int | None = None  # how much of ``audio`` Whisper hears (``Segment.asr_end``); None: all of it
    asr_pauses: tuple[int, ...] = ()  # the utterance's pauses in what Whisper hears (``Segment.asr_pauses``)

    @property
    def asr_audio(self) -> np.ndarray:
        """The part of ``audio`` Whisper hears."""
        return self.audio if self.asr_samples is None else self.audio[: self.asr_samples]

    def same_input(self, other: Window) -> bool:
        """Whether ``other`` is the same cut: same times, audio and frames (the model input but the words)."""
        return (self.t_start == other.t_start and self.t_end == other.t_end and self.final == other.final
                and self.asr_samples == other.asr_samples and self.asr_pauses == other.asr_pauses
                and self.audio.shape == other.audio.shape and bool(np.array_equal(self.audio, other.audio))
                and len(self.frames) == len(other.frames)
                and all(a is b for a, b in zip(self.frames, other.frames)))


class AssemblerHooks(Protocol):
    """What work done ahead of time needs from window assembly (all called from the assembler's task)."""

    def restart(self) -> None:
        """A new audio stream began (the start, or after a gap): forget the work on the old one."""

    def pushed(self, seg: Segmenter, stream_t0: float, arrived: float, *, cut: bool) -> None:
        """A chunk went into the segmenter (``cut``: it completed a window)."""

    def closing(self, window: Window) -> None:
        """A final window is about to be queued: attach (``window.ahead``) or drop the work done on it."""

    def close(self) -> None:
        """The stream ended."""


class NoHooks:
    """Window assembly with nothing done ahead of time."""

    def restart(self) -> None:
        pass

    def pushed(self, seg: Segmenter, stream_t0: float, arrived: float, *, cut: bool) -> None:
        pass

    def closing(self, window: Window) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class FrameTake:
    """How a window takes its frames from the ring."""

    wait_s: float | None
    """Seconds it may wait for the frames up to its end: None without limit (a recording delivers them,
    and says how far its video was read: :class:`~mmsa.monitor.frames.VideoMark`), 0 not at all (no camera,
    or a lost one), else a live camera's ``frames.wait_ms``."""
    keep: int | None = None
    """The most frames it keeps: the ``keep`` that ``spread_indices`` picks out of all of them, which are
    the very frames a featurizer searching ``keep`` frames for faces takes (None: every frame)."""


FrameWait = Callable[[], "FrameTake | float | None"]
"""The frame policy, asked once per window (a bare number or None: ``FrameTake(wait_s)``, every frame kept)."""


class WindowAssembler:
    """Segments one stream's audio and queues its windows with their frames (module docstring)."""

    def __init__(
        self,
        cfg: SegmenterConfig,
        ring: FrameRing,
        vad: Callable[[np.ndarray], np.ndarray] | None,
        frame_wait: FrameWait,
        hooks: AssemblerHooks | None = None,
    ) -> None:
        self.cfg = cfg
        self.ring = ring
        self.vad = vad
        self.frame_wait = frame_wait
        self.hooks: AssemblerHooks = hooks or NoHooks()
        self.position_s = 0.0  # session time up to which audio was segmented
        self.n_windows = 0
        self._poked = asyncio.Event()  # a window was closed outside a push (the adaptive close)

    def poke(self) -> None:
        """Queue what the segmenter closed meanwhile now, not at the next chunk (``Segmenter.allow_early_close``)."""
        self._poked.set()

    async def run(self, audio: Channel[AudioChunk], windows: Channel[Window], *, lossless: bool) -> None:
        """Until the audio channel is closed and drained; then flush the open utterance and close ``windows``.

        ``lossless``: a full ``windows`` channel makes the assembler wait (replays); else the oldest
        sliding window is dropped and counted (live: the audio cannot wait); a final window (the
        end of an utterance) is never dropped.
        """
        self._out, self._lossless = windows, lossless
        seg: Segmenter | None = None
        stream_t0, last_arrived = 0.0, time.monotonic()
        try:
            while True:
                try:
                    chunk = await self._next_chunk(audio)
                except ChannelClosed:
                    break
                if chunk is None:  # poked: a window closed early
                    for s in seg.ready() if seg is not None else ():
                        await self._queue(s, stream_t0, time.monotonic())
                    continue
                if seg is not None and round((chunk.t0 - stream_t0) * SAMPLE_RATE_HZ) != seg.position:
                    for s in seg.flush():  # audio was dropped: close what was open, start afresh at this chunk
                        await self._queue(s, stream_t0, last_arrived)
                    seg = None
                if seg is None:
                    seg, stream_t0 = self._new_segmenter(), chunk.t0
                seg.push(chunk.samples)
                last_arrived = chunk.arrived
                self.position_s = stream_t0 + seg.position / SAMPLE_RATE_HZ
                cut = seg.ready()
                for s in cut:
                    await self._queue(s, stream_t0, chunk.arrived)
                self.hooks.pushed(seg, stream_t0, chunk.arrived, cut=bool(cut))
            if seg is not None:
                for s in seg.flush():
                    await self._queue(s, stream_t0, time.monotonic(), last=True)
        finally:
            self.hooks.close()
            windows.close()

    async def _next_chunk(self, audio: Channel[AudioChunk]) -> AudioChunk | None:
        """The next chunk, or None when poked first."""
        chunk = audio.get_nowait()
        if chunk is None and not self._poked.is_set():
            chunk = await audio.get_unless(self._poked)
        self._poked.clear()
        return chunk

    def _new_segmenter(self) -> Segmenter:
        self.hooks.restart()
        if self.vad is not None and hasattr(self.vad, "reset"):
            self.vad.reset()
        return Segmenter(self.cfg, self.vad)

    async def collect(self, s: Segment, stream_t0: float, arrived: float, *, last: bool = False) -> Window:
        """The segment as a window with its frames, once the ring holds them (or the wait is over)."""
        t0 = stream_t0 + s.start / SAMPLE_RATE_HZ
        t1 = stream_t0 + s.end / SAMPLE_RATE_HZ
        frames_until = t1 + END_FRAMES_S if last else t1
        take = self.frame_wait()
        if not isinstance(take, FrameTake):
            take = FrameTake(take)
        if take.wait_s is None or take.wait_s > 0:
            await self.ring.watermark.wait(frames_until, take.wait_s)
        frames = self.ring.between(t0, frames_until)
        if take.keep is not None and len(frames) > take.keep:
            frames = [frames[i] for i in spread_indices(len(frames), take.keep)]
        return Window(t0, t1, s.audio, frames, s.final, arrived,
                      asr_samples=None if s.asr_end is None else s.asr_end - s.start, asr_pauses=s.asr_pauses)

    async def _queue(self, s: Segment, stream_t0: float, arrived: float, *, last: bool = False) -> None:
        w = await self.collect(s, stream_t0, arrived, last=last)
        if w.final:
            self.hooks.closing(w)
        self.n_windows += 1
        if self._lossless:
            await self._out.put(w)
        else:  # live: a sliding window may be dropped when processing lags, a final one never
            self._out.offer(w, droppable=not w.final)
