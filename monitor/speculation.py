"""Work done ahead of the utterance's close: speculation and partial scores.

:class:`Speculator` implements the window assembler's hooks (``assembler.AssemblerHooks``) and
offers the processing stage idle work (:meth:`Speculator.take`).

Speculation (``segmenter.speculative``): while the silence that will close an utterance runs,
the segmenter already knows the window it will close with (:meth:`Segmenter.tentative`, from
``end_pad_ms`` into the silence). The speculator collects that window's frames, and the
processing stage runs Whisper and the featurization on it whenever it is idle (never ahead of a
window that is waiting). When the utterance closes with the same window (start, end, audio,
frames), its result goes on to scoring (:meth:`Speculator.closing` attaches it to the final
window as ``window.ahead``); if speech resumes first, or the window differs, the work is discarded
and never published. A run already in a worker thread cannot be interrupted (faster-whisper's
encoder and decoder are single blocking calls), so a stale run delays the next window by at most
its remainder; one not started yet is dropped for free. Off in ``--fast`` replays, where the
segmenter runs ahead of Whisper anyway.

Partial scores (``segmenter.partials``; live and paced replay, never ``--fast``): scores of the
utterance still open. Two kinds of work feed them: the speculative run on the tentative window,
and, during speech, the open window so far every ``segmenter.partial_every_s`` seconds of speech.
Both are idle work: a waiting window always goes first (a pending open-window request is dropped
when speech stops or a window is cut), a partial is only queued for scoring when no window waits
for processing or scoring, and the scorer drops a partial whenever a final window is waiting (so
finals are never delayed by partials); a final that closes with the window of its speculative
partial takes that partial's model output instead of a pass of its own (``emitter.py``).

Transcription ahead (also ``segmenter.speculative``): Whisper hears a closed utterance only up to
``asr_pad_ms`` after its speech (``Segment.asr_end``), so that audio is complete
(:meth:`Segmenter.heard`) well before the tentative window. The speculator offers it to the
processing stage first; the processing stage starts its transcription at once, in the background
(:class:`Heard`), and a window with the same Whisper input (the tentative window, or the final one)
takes that transcript (:meth:`Speculator.transcript_for`) instead of running Whisper again. A
stream still has at most one transcription in the ``asr`` pool at a time.

On a slow CPU an open-window run can take longer than the silence that closes the utterance, and one still
in Whisper when the speech ends holds back the final's transcription (one transcription of a stream at a
time, and a Whisper call cannot be interrupted). So an open-window partial is skipped when its transcription
would take more than ``segmenter.partial_asr_ms``: Whisper's measured time per second of audio
(``Transcriber.ms_per_s``, over its passes since it was loaded, the warm-up's included) times the window's
length. Until Whisper has been timed nothing is skipped.

Adaptive close (``segmenter.early_close_ms``): when the transcript ahead ends a sentence (``.``,
``!`` or ``?``, not ``...``), the speculator lets the segmenter close the utterance with its
tentative window after ``early_close_ms`` of silence instead of ``min_silence_ms``
(:meth:`Segmenter.allow_early_close`) and pokes the assembler to queue it at once; the final window
then takes the speculative result. A transcript without end punctuation that still ends on a word
that closes a phrase (:func:`~mmsa.monitor.asr.ends_phrase`: not "and", "the", "to", a comma ...)
closes after ``phrase_close_ms``; mid-sentence the long wait stays (:func:`close_after_ms`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsa.model.features import SAMPLE_RATE_HZ

from .asr import ends_phrase, ends_sentence
from .assembler import Window
from .config import SegmenterConfig
from .vad import Segment, Segmenter

log = logging.getLogger(__name__)


def close_after_ms(text: str, cfg: SegmenterConfig) -> int | None:
    """The silence after which an utterance whose transcript is ``text`` may close: ``early_close_ms`` when it
    ends a sentence, ``phrase_close_ms`` when it ends a phrase (:func:`~mmsa.monitor.asr.ends_phrase`), else None
    (the long wait, ``min_silence_ms``)."""
    if not cfg.early_close_ms:
        return None
    if ends_sentence(text):
        return cfg.early_close_ms
    if cfg.phrase_close_ms and ends_phrase(text):
        return max(cfg.phrase_close_ms, cfg.early_close_ms)
    return None


@dataclass
class SpeculationStats:
    """Counts of speculative work (``segmenter.speculative``) in a session."""

    tentative: int = 0  # tentative windows seen (each closing silence of an utterance, and each change)
    ran: int = 0  # of those, ASR + featurization started before the utterance closed
    used: int = 0  # results published (the utterance closed with the same window)
    wasted: int = 0  # runs discarded: speech resumed or the window differed
    allowed: int = 0  # closing silences whose transcript ended a sentence (or a phrase) in time: allowed to close early
    phrase: int = 0  # of those, the transcript ended a phrase without end punctuation (``phrase_close_ms``)
    early: int = 0  # utterances closed early (allowed, and the silence went on)
    late: int = 0  # utterances whose transcript ended a sentence too late: they had closed with the long wait
    heard: int = 0  # transcriptions started ahead (``asr_pad_ms`` into a closing silence)
    heard_used: int = 0  # ... whose transcript a window took (the others: speech resumed)
    partials_skipped: int = 0  # open-utterance partials not run: Whisper would take too long (``partial_asr_ms``)


@dataclass(eq=False)
class Ahead:
    """Work on a window of an open utterance: the tentative window (:meth:`Segmenter.tentative`) or the
    open window so far (:meth:`Segmenter.open_window`, for a partial score)."""

    segment: Segment
    tentative: bool
    arrived: float = math.nan  # time.monotonic() when the audio that completed the segment arrived
    window: Window | None = None  # once its frames are collected
    collect: asyncio.Task | None = None  # the task collecting the frames
    started: bool = False  # processing started (by the processing stage)
    result: Any = None  # the processing's WindowResult (None: not done, or it failed)
    scored: asyncio.Future | None = None  # the scoring of its partial, once submitted (emitter.py)


@dataclass(eq=False)
class Heard:
    """What Whisper hears of the utterance closing now (:meth:`Segmenter.heard`), transcribed ahead of its close."""

    segment: Segment
    at: int  # where it starts: session time in samples (``heard_at`` of the windows it is the Whisper input of)
    transcript: asyncio.Future | None = None  # once started: (Transcript, ms that Whisper took)
    used: bool = False

    def same(self, at: int, audio: np.ndarray) -> bool:
        """Whether Whisper would hear exactly this audio, starting at ``at``."""
        return at == self.at and bool(np.array_equal(audio, self.segment.audio))


def heard_at(window: Window) -> int:
    """Session time in samples of the start of ``window``."""
    return round(window.t_start * SAMPLE_RATE_HZ)


KEEP_HEARD = 4  # transcriptions ahead kept for the windows still to come (a final window comes after its tentative)


Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task]
Collect = Callable[[Segment, float, float], Awaitable[Window]]
class Speculator:
    """The assembler's hooks for speculation and partial scores, and the idle work they make."""

    def __init__(self, cfg: SegmenterConfig, *, speculative: bool, partials: bool, spawn: Spawn,
                 collect: Collect, poke: Callable[[], None] = lambda: None) -> None:
        self.cfg = cfg
        self.speculative = speculative
        self.partials = partials
        self.stats = SpeculationStats()
        self.ready = asyncio.Event()  # a window of some work is ready for processing
        self._spawn = spawn
        self._collect = collect
        self._poke = poke  # wakes the assembler: a window closed outside a push
        self._seg: Segmenter | None = None  # the segmenter of the stream now (for the adaptive close)
        self._spec: Ahead | None = None  # the speculation on the open utterance's tentative window
        self._heard: Heard | None = None  # the transcription ahead of the open utterance's close
        self._started: deque[Heard] = deque(maxlen=KEEP_HEARD)  # the last ones started (windows may still take them)
        self._decided: tuple[int, int | None] | None = None  # (speech_start, asr_end) whose early close was decided
        self._closed: tuple[int, int | None] | None = None  # the same of the window the last utterance closed with
        self._n_early = 0  # the segmenter's early closes counted so far
        self._open: Ahead | None = None  # the latest open-window partial request
        self._open_utt: int | None = None  # speech_start of the utterance the open-window requests follow
        self._open_next = 0.0  # seconds of its speech at which the next open-window request is due
        # Whisper's ms per second of audio now (None: not measured yet); the processing stage points it at
        # ``Transcriber.ms_per_s``
        self.asr_speed: Callable[[], float | None] = lambda: None

    # ------------------------------------------------------------------ hooks (assembler's task)

    def restart(self) -> None:
        self._seg, self._n_early = None, 0
        self._heard = None
        self._started.clear()
        self._drop_speculation()
        self._drop_open()
        self._open_utt = None

    def pushed(self, seg: Segmenter, stream_t0: float, arrived: float, *, cut: bool) -> None:
        self._seg = seg
        if self.speculative:
            self._follow_heard(seg.heard(), stream_t0)
            self._speculate(seg.tentative(), stream_t0, arrived)
        if self.partials:
            self._open_partial(seg, stream_t0, arrived, cut=cut)

    def closing(self, window: Window) -> None:
        """The utterance closed: its speculation is used here (same input) or never."""
        if self._seg is not None and self._seg.n_early > self._n_early:
            self._n_early = self._seg.n_early
            self.stats.early += 1
        heard, self._heard = self._heard, None
        spec, self._spec = self._spec, None
        if heard is not None and heard.same(heard_at(window), window.asr_audio):
            self._closed = (heard.segment.speech_start, heard.segment.asr_end)
        elif spec is not None and spec.window is not None and spec.window.same_input(window):
            self._closed = (spec.segment.speech_start, spec.segment.asr_end)
        else:
            self._closed = None
        if spec is None:
            return
        if spec.started and spec.window is not None and spec.window.same_input(window):
            window.ahead = spec
        else:
            self._drop_speculation(spec)

    def close(self) -> None:
        self._heard = None
        self._started.clear()
        self._drop_speculation()
        self._drop_open()

    # ------------------------------------------------------------------ idle work (processing stage's task)

    def take(self) -> Heard | Ahead | None:
        """The next work not started: the transcription ahead first, then the speculation, then the open window."""
        heard = self._heard
        if heard is not None and heard.transcript is None:
            return heard
        work = next((x for x in (self._spec, self._open) if x is not None and x.window is not None and not x.started),
                    None)
        if work is not None:
            work.started = True
            if work is self._spec:
                self.stats.ran += 1
        return work

    def heard_started(self, heard: Heard, transcript: asyncio.Future) -> None:
        """The processing stage started transcribing ``heard`` (the future gives (Transcript, ms))."""
        heard.transcript = transcript
        self._started.append(heard)
        self.stats.heard += 1
        transcript.add_done_callback(lambda fut: self._heard_done(heard, fut))

    def transcript_for(self, at: int, audio: np.ndarray) -> asyncio.Future | None:
        """The transcription ahead of a window's Whisper input (``audio``, from ``at``: ``heard_at``), if one was started."""
        for heard in self._started:
            if heard.same(at, audio):
                if not heard.used:
                    heard.used = True
                    self.stats.heard_used += 1
                return heard.transcript
        return None

    def finished(self, work: Ahead, result: Any) -> Window | None:
        """Processing of ``work`` ended with ``result``: the window to score as a partial, if any."""
        work.result = result
        if work is self._open:
            self._open = None
        if work.tentative and result is not None and self.speculative:
            self._close_early(work.segment, result.transcript.text, current=work is self._spec)
        if not self.partials or result is None or work.window is None:
            return None
        return dataclasses.replace(work.window, partial=True, closed_at=work.arrived, ahead=work)

    def used(self) -> None:
        self.stats.used += 1

    def _heard_done(self, heard: Heard, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None or not self.speculative:
            return
        transcript, _ms = fut.result()
        self._close_early(heard.segment, transcript.text, current=heard is self._heard)

    def _close_early(self, segment: Segment, text: str, *, current: bool) -> None:
        """The transcript of ``segment`` (heard, or tentative) is ``text``: if it ends a sentence or a phrase
        (:func:`close_after_ms`), the utterance may close after a shorter silence (if it has not closed yet; if
        speech resumed, nothing). Decided once per closing silence."""
        after_ms = close_after_ms(text, self.cfg)
        if after_ms is None:
            return
        key = (segment.speech_start, segment.asr_end)
        if key == self._decided:
            return
        self._decided = key
        if current and self._seg is not None and self._seg.allow_early_close(segment, after_ms):
            self.stats.allowed += 1
            self.stats.phrase += not ends_sentence(text)
            self._poke()
        elif key == self._closed:
            self.stats.late += 1

    # ------------------------------------------------------------------ internals

    def _speculate(self, tentative: Segment | None, stream_t0: float, arrived: float) -> None:
        """Follow the segmenter's tentative window: start collecting a new one, drop a withdrawn one."""
        if self._spec is not None and self._spec.segment is tentative:
            return
        self._drop_speculation()
        if tentative is None:
            return
        spec = self._spec = Ahead(tentative, True, arrived)
        self.stats.tentative += 1
        spec.collect = self._spawn(self._window_of(spec, stream_t0))

    def _follow_heard(self, heard: Segment | None, stream_t0: float) -> None:
        """Follow the segmenter's :meth:`Segmenter.heard`: offer a new one for transcription, forget a withdrawn one."""
        if self._heard is not None and self._heard.segment is heard:
            return
        # at: as heard_at() of the window the assembler makes of the same segment (its t_start, the same float)
        self._heard = None if heard is None else Heard(heard, round((stream_t0 + heard.start / SAMPLE_RATE_HZ)
                                                                    * SAMPLE_RATE_HZ))
        if self._heard is not None:
            self.ready.set()

    async def _window_of(self, work: Ahead, stream_t0: float) -> None:
        """The work's frames (as the assembler will take them); then it is the processing stage's to run."""
        window = await self._collect(work.segment, stream_t0, math.nan)
        if work is self._spec or work is self._open:
            work.window = window
            self.ready.set()

    def _open_partial(self, seg: Segmenter, stream_t0: float, arrived: float, *, cut: bool) -> None:
        """Every ``partial_every_s`` seconds of speech, ask for a partial score of the open window so far.

        A request not started yet is dropped when speech stops (the tentative window then takes
        over) or a window was just cut (it goes first); a newer request replaces it.
        """
        every = self.cfg.partial_every_s
        if every <= 0:
            return
        if cut or not seg.in_speech:
            if self._open is not None and not self._open.started:
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
        budget, rate = self.cfg.partial_asr_ms, self.asr_speed()
        if budget and rate is not None and rate * (window.end - window.start) / SAMPLE_RATE_HZ > budget:
            self.stats.partials_skipped += 1  # it could hold Whisper when the speech ends (docstring)
            return
        self._drop_open()
        req = self._open = Ahead(window, False, arrived)
        req.collect = self._spawn(self._window_of(req, stream_t0))

    def _drop_open(self) -> None:
        """Forget the open-window partial request (a run in flight is left to end; its partial may still go out)."""
        req, self._open = self._open, None
        if req is not None and req.collect is not None:
            req.collect.cancel()

    def _drop_speculation(self, spec: Ahead | None = None) -> None:
        """Discard a speculation (the current one by default): never published; a run in flight is left to end."""
        if spec is None:
            spec, self._spec = self._spec, None
            if spec is None:
                return
        if spec.collect is not None:
            spec.collect.cancel()
        if spec.started:
            self.stats.wasted += 1
            log.debug("speculative work on %.2f s discarded", spec.segment.end / SAMPLE_RATE_HZ)
