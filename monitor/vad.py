"""Speech segmentation: streaming Silero VAD and a sans-IO segmenter.

:class:`SileroVAD` runs the Silero VAD v6 ONNX model bundled with faster-whisper on 512-sample
(32 ms) windows at 16 kHz, carrying the LSTM state and the 64-sample context across calls, so
a stream pushed in chunks of any size gets the probabilities faster-whisper computes for the
whole recording at once. With ``hop=256`` it runs two such streams, the second 256 samples behind the first, and
decides every 16 ms (``[segmenter] vad_hop_ms``); the segmenter counts silences in the VAD's steps either way.

:class:`Segmenter` is sans-IO (``push(samples)``, ``ready()``, ``flush()``,
``tentative()``, ``open_window()``): it knows nothing of devices or the event loop and is
tested with plain arrays. In ``vad`` mode an utterance opens on speech and closes after
``min_silence_ms`` of silence; speech longer than ``max_window_s`` is cut into sliding
windows every ``hop_s``. In ``continuous`` mode windows are cut regardless of speech
(scoring whole files, or a stream without pauses).

While the silence that will close an utterance runs, the window it will close with is already
fixed: it ends ``end_pad_ms`` after the speech, so once that much silence has been pushed
its audio is known, about ``min_silence_ms - end_pad_ms`` before the utterance closes (a window starts
``speech_pad_ms`` before its speech: that pad costs no waiting, so it can be longer).
:meth:`Segmenter.tentative` returns that window (the pipeline starts ASR and featurization on
it early: ``segmenter.speculative``); it is withdrawn if speech resumes first.

What Whisper hears of a closed utterance (``Segment.asr_end``): its window up to
``asr_pad_ms`` after the speech, not the whole ``end_pad_ms`` (the rest is silence, which
changes no words: ``bench/early_close.py`` measures it). So the transcript is known even sooner:
:meth:`Segmenter.heard` returns that audio once ``asr_pad_ms`` of the closing silence has been
pushed (the pipeline transcribes it at once: the final window, or the tentative one, then takes
that transcript instead of running Whisper again). Every final window of a ``vad`` utterance is
transcribed that way, speculation or not, so a live run and a replay give the same words.

Adaptive close (``segmenter.early_close_ms``): the caller may allow the open utterance to close
with its tentative window after a shorter silence (:meth:`Segmenter.allow_early_close`: the
pipeline does when the transcript of :meth:`heard` ends a sentence). Mid-sentence the long wait
stays; the window an early close emits is exactly the tentative window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmsa.model.features import SAMPLE_RATE_HZ

from .config import SegmenterConfig
from .errors import MonitorError
from .resources import resolve_vad

WINDOW = 512  # samples per VAD decision (32 ms at 16 kHz)
CONTEXT = 64  # samples of the previous window the v6 model sees in front of each window


class SileroVAD:
    """Speech probability of 512-sample windows, state carried between calls.

    ``hop``: samples between the starts of consecutive windows. 512 (32 ms, the model's own stride):
    one stream, faster-whisper's probabilities. 256 (16 ms): two streams, each the model's own stride,
    one starting 256 samples after the other, each with its own LSTM state and context; their windows
    alternate, so a decision comes every 16 ms (``[segmenter] vad_hop_ms``: a silence's start and the
    close it waits for are known to 16 ms instead of 32; twice the VAD's work). Each decision is the mean
    of the two latest windows' probabilities (the one ending now and the one 16 ms before, from the other
    stream): taken alone, the two streams disagree often enough near a pause's edges to move it by 16 ms
    either way (docs/performance.md, "VAD decisions every 16 ms").
    """

    @classmethod
    def for_config(cls, cfg: SegmenterConfig) -> SileroVAD:
        """The VAD a ``[segmenter]`` asks for: a decision every ``vad_hop_ms``."""
        return cls(cfg.vad_hop_ms * SAMPLE_RATE_HZ // 1000)

    def __init__(self, hop: int = WINDOW) -> None:
        if hop not in (WINDOW, WINDOW // 2):
            raise ValueError(f"hop: {WINDOW} or {WINDOW // 2} samples, not {hop}")
        try:
            import onnxruntime
        except ImportError as exc:
            raise MonitorError("onnxruntime is not installed (pip install onnxruntime)") from exc
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            str(resolve_vad()), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self.hop = hop
        self.reset()

    def reset(self) -> None:
        streams = WINDOW // self.hop
        self._state = [(np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32)) for _ in range(streams)]
        self._context = [np.zeros(CONTEXT, dtype=np.float32) for _ in range(streams)]
        self._next = 0  # the stream the next window belongs to
        self._last: float | None = None  # the latest window's probability (hop 256: averaged with the next)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """windows: (n, 512) float32 windows, each ``hop`` samples after the one before -> (n,) speech probabilities
        (hop 256: each the mean of its window's and the window's before)."""
        windows = np.asarray(windows, dtype=np.float32).reshape(-1, WINDOW)
        out = np.zeros(len(windows), dtype=np.float32)
        streams = len(self._state)
        for k in range(min(streams, len(windows))):
            s = (self._next + k) % streams
            out[k::streams] = self._run(s, windows[k::streams])
        self._next = (self._next + len(windows)) % streams
        if streams == 1 or not len(out):
            return out
        before = np.concatenate([[out[0] if self._last is None else self._last], out[:-1]]).astype(np.float32)
        self._last = float(out[-1])
        return (out + before) / 2

    def _run(self, s: int, windows: np.ndarray) -> np.ndarray:
        """Consecutive windows of stream ``s``."""
        # each row is prefixed with the last 64 samples of the row before it (the first with
        # the previous call's); the model runs its LSTM over the rows in order
        prev = np.concatenate([self._context[s][None], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([prev, windows], axis=1)
        h, c = self._state[s]
        probs, h, c = self._session.run(None, {"input": batch, "h": h, "c": c})
        self._state[s] = (h, c)
        self._context[s] = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class Segment:
    """A window of the stream to score. Sample indices count from the segmenter's start."""

    start: int
    end: int
    audio: np.ndarray  # (end - start,) float32
    final: bool  # True: the utterance (or the stream) ended; False: a sliding window of ongoing speech
    speech_start: int  # where the utterance's speech began (equals start for continuous windows)
    asr_end: int | None = None  # where the audio Whisper hears ends (``asr_pad_ms`` after the speech); None: at end
    pauses: tuple[int, ...] = ()  # the utterance's pauses inside the window: where Whisper heard it up to (see below)

    @property
    def asr_pauses(self) -> tuple[int, ...]:
        """Offsets into :attr:`asr_audio` of the pauses of at least ``asr_pad_ms`` inside it: each is where
        :meth:`Segmenter.heard` ended while that pause ran (the places Whisper may cut the utterance into pieces:
        ``asr.piece_min_s``)."""
        end = self.end if self.asr_end is None else self.asr_end
        return tuple(p - self.start for p in self.pauses if p < end)  # the segmenter keeps those after start

    @property
    def asr_audio(self) -> np.ndarray:
        """The part of ``audio`` Whisper hears."""
        return self.audio if self.asr_end is None else self.audio[: self.asr_end - self.start]


class Segmenter:
    """Turns a 16 kHz stream into :class:`Segment` windows. ``vad`` is any callable like :class:`SileroVAD`.

    The segmenter counts in its VAD's steps (``vad.hop``, 512 samples if it has none), whatever
    ``cfg.vad_hop_ms`` says: that setting is for whoever makes the VAD (:meth:`SileroVAD.for_config`).
    """

    def __init__(
        self,
        cfg: SegmenterConfig,
        vad: Callable[[np.ndarray], np.ndarray] | None = None,
        sample_rate_hz: int = SAMPLE_RATE_HZ,
    ) -> None:
        if cfg.mode == "vad" and vad is None:
            raise ValueError("vad mode needs a VAD model")
        self.cfg = cfg
        self.vad = vad
        ms = self._ms = sample_rate_hz // 1000
        self._pad = cfg.speech_pad_ms * ms  # before the speech
        self._end_pad = cfg.end_pad_ms * ms  # after it
        self._asr_pad = cfg.asr_pad_ms * ms
        self._min_silence = cfg.min_silence_ms * ms
        self._min_speech = cfg.min_speech_ms * ms
        self._max = int(round(cfg.max_window_s * sample_rate_hz))
        self._hop = int(round(cfg.hop_s * sample_rate_hz))
        self._buf = np.zeros(0, dtype=np.float32)  # audio from sample index self._buf_start
        self._buf_start = 0
        self._vad_hop = int(getattr(vad, "hop", WINDOW))  # samples between the VAD's windows (SileroVAD.hop)
        self._pending = np.zeros(0, dtype=np.float32)  # audio from the next VAD window's start (< 512 samples)
        self._n = 0  # samples pushed
        self._ready: list[Segment] = []
        self._speech_start: int | None = None  # open utterance
        self._pauses: list[int] = []  # its pauses so far: where heard() ended in each (silence start + asr pad)
        self._silence_since: int | None = None  # first silent window after speech
        self._win_start = 0  # start of the next sliding window
        self._last_end = 0  # end of the last emitted window (continuous mode)
        self._tentative: Segment | None = None  # what tentative() returned last (returned again while unchanged)
        self._heard: Segment | None = None  # what heard() returned last (returned again while unchanged)
        self._early: tuple[int, int, int] | None = None  # (speech start, silence start, samples of silence) allowed
        self._early_silence = cfg.early_close_ms * ms
        self.n_early = 0  # utterances closed early

    @property
    def position(self) -> int:
        """Samples pushed so far."""
        return self._n

    @property
    def speaking(self) -> bool:
        """True while an utterance is open."""
        return self._speech_start is not None

    @property
    def in_speech(self) -> bool:
        """True while an utterance is open and no silence is running in it (its last VAD window was not silent)."""
        return self._speech_start is not None and self._silence_since is None

    @property
    def speech_start(self) -> int | None:
        """Where the open utterance's speech began (None when none is open)."""
        return self._speech_start

    def open_window(self) -> Segment | None:
        """The open utterance so far: from where its next window starts to the audio pushed, ``max_window_s`` at most.

        ``final`` is False: the utterance goes on. None when no utterance is open and in
        ``continuous`` mode. The pipeline scores it for partial scores (``segmenter.partial_every_s``).
        """
        if self.cfg.mode != "vad" or self._speech_start is None:
            return None
        start = max(self._win_start, self._n - self._max, self._buf_start)
        return self._segment(start, self._n, False, self._speech_start)

    def tentative(self) -> Segment | None:
        """The final window the open utterance will close with if the silence now running goes on.

        Not None once speech has stopped (a VAD window below ``neg_threshold``), at least
        ``end_pad_ms`` of that silence has been pushed (the window's audio is then complete)
        and the utterance has enough speech to be emitted. None again once speech resumes,
        once the utterance closed (the window is then in :meth:`ready`), and in ``continuous``
        mode. If the silence goes on, the utterance closes with exactly this window (same start,
        end and audio), except in two rare cases that callers must check for by comparing: VAD
        probabilities in the hysteresis band (``neg_threshold`` .. ``threshold``) delay the close
        while a sliding window of speech longer than ``max_window_s`` is cut, or the stream ends
        first (:meth:`flush`). The same object is returned while it is unchanged.
        """
        return self._closing("_tentative", self._end_pad)

    def heard(self) -> Segment | None:
        """What Whisper will hear of the open utterance if the silence now running goes on.

        The audio of :meth:`tentative`'s window up to ``asr_pad_ms`` after the speech
        (``asr_end``): available once that much of the silence has been pushed, before the
        tentative window itself; the same conditions and the same caveats otherwise. A final
        window's :attr:`Segment.asr_audio` equals it when the utterance closes with that window.
        The same object is returned while it is unchanged.
        """
        return self._closing("_heard", self._asr_pad)

    def _closing(self, slot: str, pad: int) -> Segment | None:
        """The final window's audio up to ``pad`` after the speech, once pushed (:meth:`tentative`, :meth:`heard`);
        kept in ``slot`` and returned again while unchanged."""
        seg = None
        if self._closing_silence() and self._n >= self._silence_since + pad:
            start, end = self._closing_start(self._silence_since + self._end_pad), self._silence_since + pad
            seg = getattr(self, slot)
            if seg is None or (seg.start, seg.end, seg.speech_start) != (start, end, self._speech_start):
                seg = self._segment(start, end, True, self._speech_start, self._silence_since + self._asr_pad)
        setattr(self, slot, seg)
        return seg

    def _closing_silence(self) -> bool:
        """A silence runs in an open ``vad`` utterance that has enough speech to be emitted."""
        return (self.cfg.mode == "vad" and self._speech_start is not None and self._silence_since is not None
                and self._silence_since - self._speech_start >= self._min_speech)

    def _closing_start(self, end: int) -> int:
        """Where the final window ending at ``end`` starts if the silence now running closes the utterance."""
        assert self._silence_since is not None
        # _step still cuts sliding windows at each VAD window until the one that closes the utterance
        # (the first that ends min_silence after the silence began, and not the one that began it)
        hop = self._vad_hop
        closing_end = self._silence_since + WINDOW + max(1, math.ceil((self._min_silence - WINDOW) / hop)) * hop
        win_start = self._win_start
        while closing_end - hop - win_start >= self._max:
            win_start += self._hop
        return max(win_start, end - self._max, self._buf_start)

    def allow_early_close(self, window: Segment, silence_ms: int | None = None) -> bool:
        """Let the open utterance close with its tentative window once ``silence_ms`` (default ``early_close_ms``)
        of silence has passed.

        ``window``: :meth:`heard` or :meth:`tentative` of the silence now running (the permission
        lapses when speech resumes; one for an earlier silence is refused). ``silence_ms``: at least
        ``end_pad_ms`` (the window's audio must be complete); from ``min_silence_ms`` on it changes nothing.
        If that much silence was already pushed, the utterance closes now (see :meth:`ready`).
        Returns whether the permission was taken.
        """
        silence = self._early_silence if silence_ms is None else max(silence_ms * self._ms, self._end_pad)
        if self._early_silence <= 0 or silence >= self._min_silence or not self._closing_silence():
            return False
        if (window.speech_start, window.asr_end) != (self._speech_start, self._silence_since + self._asr_pad):
            return False
        self._early = (self._speech_start, self._silence_since, silence)
        if self._n - self._silence_since >= silence:
            self._close_early()
        return True

    def _close_early(self) -> None:
        t = self.tentative()  # the early silence is at least the pad: the window's audio is complete
        assert t is not None
        self._early = None
        self.n_early += 1
        self._ready.append(t)
        self._last_end = max(self._last_end, t.end)
        self._speech_start = self._silence_since = None
        self._tentative = self._heard = None

    def push(self, samples: np.ndarray) -> None:
        """Append contiguous audio; windows that become complete are collected for :meth:`ready`."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, samples])
        self._n += samples.size
        if self.cfg.mode == "continuous":
            self._continuous()
        else:
            self._pending = np.concatenate([self._pending, samples])
            hop = self._vad_hop
            n_win = (self._pending.size - WINDOW) // hop + 1 if self._pending.size >= WINDOW else 0
            if n_win:
                first = self._n - self._pending.size
                windows = np.lib.stride_tricks.sliding_window_view(self._pending, WINDOW)[::hop][:n_win]
                probs = self.vad(np.ascontiguousarray(windows))
                self._pending = self._pending[n_win * hop :]
                for i, p in enumerate(probs):
                    self._step(first + i * hop, float(p))
        self._trim()

    def ready(self) -> list[Segment]:
        """Windows completed since the last call, oldest first."""
        out, self._ready = self._ready, []
        return out

    def flush(self) -> list[Segment]:
        """End of stream: close the open utterance (or the last continuous window) and return all."""
        if self.cfg.mode == "continuous":
            if self._n > self._last_end:
                self._emit(max(self._win_start, self._n - self._max), self._n, True, None)
        elif self._speech_start is not None:
            if self._silence_since is None:
                self._close(self._n, None)
            else:
                since = self._silence_since
                self._close(min(self._n, since + self._end_pad), min(self._n, since + self._asr_pad))
        self._speech_start = self._silence_since = None
        return self.ready()

    # ------------------------------------------------------------------ internals

    def _step(self, at: int, prob: float) -> None:
        """One VAD window [at, at + 512) with speech probability ``prob``."""
        cfg = self.cfg
        end = at + WINDOW
        if prob >= cfg.threshold:
            if self._silence_since is not None and at - self._silence_since >= self._asr_pad:
                self._pauses.append(self._silence_since + self._asr_pad)
            self._silence_since = None
            self._early = None  # speech resumed: the permission was for the silence that ended
            if self._speech_start is None:
                self._speech_start = at
                self._pauses = []
                self._win_start = max(0, at - self._pad)
        elif self._speech_start is not None and prob < cfg.neg_threshold:
            if self._silence_since is None:
                self._silence_since = at
            elif end - self._silence_since >= self._min_silence:
                self._close(self._silence_since + self._end_pad, self._silence_since + self._asr_pad)
                return
            elif self._early is not None and self._early[:2] == (self._speech_start, self._silence_since) and (
                    end - self._silence_since >= self._early[2]):
                self._close_early()
                return
        if self._speech_start is not None:
            while end - self._win_start >= self._max:
                self._emit(self._win_start, self._win_start + self._max, False, self._speech_start)
                self._win_start += self._hop

    def _close(self, end: int, asr_end: int | None) -> None:
        """Close the open utterance with the window ending at ``end`` (Whisper hears it up to ``asr_end``)."""
        speech_end = end - self._end_pad
        start = self._speech_start
        assert start is not None
        if speech_end - start >= self._min_speech:
            self._emit(max(self._win_start, end - self._max), end, True, start, asr_end)
        self._speech_start = self._silence_since = None
        self._early = None

    def _continuous(self) -> None:
        while self._n - self._win_start >= self._max:
            self._emit(self._win_start, self._win_start + self._max, False, None)
            self._win_start += self._hop

    def _segment(self, start: int, end: int, final: bool, speech_start: int | None,
                 asr_end: int | None = None) -> Segment:
        start = max(start, self._buf_start)
        audio = self._buf[start - self._buf_start : end - self._buf_start].copy()
        pauses = tuple(p for p in self._pauses if start < p < end) if speech_start is not None else ()
        return Segment(start, end, audio, final, start if speech_start is None else speech_start, asr_end, pauses)

    def _emit(self, start: int, end: int, final: bool, speech_start: int | None, asr_end: int | None = None) -> None:
        self._ready.append(self._segment(start, end, final, speech_start, asr_end))
        self._last_end = max(self._last_end, end)

    def _trim(self) -> None:
        """Forget audio no window can still need (bounded memory whatever the stream length)."""
        keep_from = self._n - self._pending.size - self._pad - WINDOW  # the next VAD window may open speech
        if self._speech_start is not None or self.cfg.mode == "continuous":
            keep_from = min(keep_from, self._win_start)
        keep_from = max(keep_from, self._buf_start)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
