"""Speech to text: Whisper (tiny.en by default) through faster-whisper, one utterance at a time.

faster-whisper pads every input to Whisper's 30 s window before the encoder, so a 3 s
utterance pays for 30 s of encoding. With ``trim_encoder`` the padded mel features are cut
back to the utterance plus a margin before they reach the CTranslate2 encoder (which accepts
any even number of frames up to 3000); decoding, word alignment and timestamps are
faster-whisper's own. docs/monitor.md gives the measured speed-up and word accuracy
(``bench/asr_trim.py``).

One :class:`Transcriber` serves every stream of a process. It is built with ``workers``
CTranslate2 workers (``asr.workers``), and :meth:`Transcriber.transcribe` may then be called from
that many threads at once (the engine's ``asr`` pool): windows of different streams are transcribed
in parallel, one per core, sharing one copy of the weights. (CTranslate2 could also batch the
encoder and decoder across streams, but faster-whisper's word timestamps, temperature fallback and
hallucination guards work on one audio at a time; a worker per core keeps them and keeps every
stream's transcript exactly what a single-stream run gives.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mmsa.model.features import SAMPLE_RATE_HZ, normalize_text

from .config import AsrConfig
from .errors import MonitorError
from .resources import resolve_whisper

log = logging.getLogger(__name__)

N_WINDOW_FRAMES = 3000  # Whisper's 30 s window in 10 ms mel frames
MAX_TOKENS_PER_S = 8  # speech is about 3 words (4 tokens) a second; timestamps add a few
MIN_TAIL_S = 1.0  # a pause this close to the end of the audio does not cut it (Whisper errs on scraps)
PIECES_KEPT = 32  # transcribed pieces remembered (``Transcriber.transcribe`` with ``pauses``)


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float  # from the start of the utterance audio
    end_s: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]


def _trimmed_whisper_class():
    from faster_whisper import WhisperModel

    class TrimmedWhisper(WhisperModel):
        """WhisperModel whose encoder sees the content frames (+ margin) instead of 3000."""

        trim_margin_frames: int | None = None  # None: faster-whisper's padded behaviour

        def encode(self, features: np.ndarray):
            if self.trim_margin_frames is not None:
                features = trim_padding(features, self.trim_margin_frames)
            return super().encode(features)

    return TrimmedWhisper


def trim_padding(features: np.ndarray, margin_frames: int) -> np.ndarray:
    """Cut the zero columns that ``pad_or_trim`` appended, keeping ``margin_frames`` of them.

    features: (n_mels, 3000) or (1, n_mels, 3000) -> same rank, an even number of frames
    (the encoder's first convolution has stride 2). Log-mel columns of real audio are never
    all zero (Whisper's normalisation maps silence to about -1.5), so the last non-zero column
    is the end of the content.
    """
    cols = np.flatnonzero(np.any(features.reshape(-1, features.shape[-1]) != 0, axis=0))
    n_content = int(cols[-1]) + 1 if cols.size else 0
    n = min(features.shape[-1], n_content + margin_frames)
    n = max(2, n + (n % 2))
    return np.ascontiguousarray(features[..., :n])


MIN_REPEAT_WORDS = 3  # a phrase of at least this many words said twice in a row is Whisper looping, not speech


def collapse_repeats(text: str, min_words: int = MIN_REPEAT_WORDS) -> str:
    """Keep one copy of a phrase that Whisper wrote twice or more in a row, and drop a cut-off copy at the end.

    ``"Dogs are sitting by the door. Dogs are sitting by the door. Dogs are"`` -> ``"Dogs are sitting by the
    door."``. Whisper loops like this on short utterances, more often the less silence follows them in its encoder
    input (``trim_margin_s``), until ``max_new_tokens`` cuts it off. Words compare without case and punctuation.
    A person who says the same phrase of ``min_words`` or more words twice in a row is written once too.
    """
    words = text.split()
    return " ".join(words[j] for j in kept_words(words, min_words))


def kept_words(words: list[str], min_words: int = MIN_REPEAT_WORDS) -> list[int]:
    """The indices of ``words`` that :func:`collapse_repeats` keeps."""
    keys = [normalize_text(w) for w in words]
    kept: list[int] = []  # indices of the words kept
    tail: list[str] = []  # their keys
    repeated: list[str] = []  # the phrase last found repeated
    i = 0
    while i < len(words):
        rest = keys[i:]
        if repeated and len(rest) < len(repeated) and rest == repeated[: len(rest)]:
            break  # the loop's last copy, cut off
        n = next((n for n in range(min(len(tail), len(rest)), min_words - 1, -1) if tail[-n:] == rest[:n]), 0)
        if n:
            repeated = rest[:n]
            i += n
        elif len(rest) >= min_words and kept and ends_sentence(words[kept[-1]]) and any(
                tail[-n:][: len(rest)] == rest and (n == len(tail) or ends_sentence(words[kept[-n - 1]]))
                for n in range(len(rest) + 1, len(tail) + 1)):
            break  # the text ends with the start of the sentence before it: a copy cut off
        else:
            kept.append(i)
            tail.append(keys[i])
            i += 1
    return kept


SENTENCE_END = re.compile(r"(?<!\.)[.!?][\"')\]]*$")  # . ! ? at the end, not an ellipsis


def ends_sentence(text: str) -> bool:
    """Whether a transcript ends a sentence: ``.``, ``!`` or ``?`` last (quotes after it allowed), not ``...``."""
    return bool(SENTENCE_END.search(text.strip()))


CONTINUES = frozenset("""
a an the this that these those my your his her its our their some any every each no
and or but so because if when while although though since unless until than as whether nor yet then
of to in on at for with from by about into onto over under after before between through without like near
is are was were be been being am have has had do does did will would can could should may might must shall
i we they he she very really quite not just um uh er ah hmm
it's i'm you're we're they're he's she's that's there's what's i've we've you've they've i'd i'll we'll you'll
""".split())
"""Last words after which a sentence goes on (articles and determiners, conjunctions, prepositions,
auxiliaries, subject pronouns and their contractions, intensifiers, fillers): :func:`ends_phrase` is false after them."""


def ends_phrase(text: str) -> bool:
    """Whether a transcript without end punctuation may still end an utterance: it ends on a word (no comma,
    colon, dash or ellipsis after it) that is not one of :data:`CONTINUES`. Whisper tiny.en leaves the full stop
    off many short complete utterances ("I love it", "terrible service")."""
    t = text.strip().rstrip("\"')]")
    words = re.findall(r"[a-z0-9']+", t.lower())
    return bool(words) and t[-1].isalnum() and words[-1].strip("'") not in CONTINUES


def piece_cuts(n: int, pauses: Sequence[int], min_piece: int, min_tail: int) -> list[int]:
    """Where audio of ``n`` samples is cut into pieces: at the ``pauses`` (sample offsets) that leave at least
    ``min_piece`` samples since the previous cut and ``min_tail`` before the end, earliest first."""
    cuts: list[int] = []
    last = 0
    for p in sorted(pauses):
        if p - last >= min_piece and n - p >= min_tail:
            cuts.append(p)
            last = p
    return cuts


def pick_device(device: str) -> tuple[str, str]:
    """``auto|cpu|cuda`` -> (CTranslate2 device, default compute type)."""
    if device == "auto":
        try:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except (ImportError, RuntimeError):
            device = "cpu"
    return device, ("float16" if device == "cuda" else "int8")


class Transcriber:
    """Owns one faster-whisper model; :meth:`transcribe` turns 16 kHz mono audio into words."""

    def __init__(self, cfg: AsrConfig = AsrConfig(), device: str = "auto", workers: int = 1) -> None:
        try:
            cls = _trimmed_whisper_class()
        except ImportError as exc:
            raise MonitorError("faster-whisper is not installed (pip install faster-whisper==1.2.1)") from exc
        path = resolve_whisper(cfg.model)
        ct2_device, default_type = pick_device(device)
        compute_type = default_type if cfg.compute_type == "auto" else cfg.compute_type
        self.workers = max(1, workers)
        threads = cfg.cpu_threads
        if not threads and self.workers > 1:  # the cores shared among the workers instead of 4 threads each
            threads = max(1, (os.cpu_count() or 1) // self.workers)
        try:
            self.model = cls(str(path), device=ct2_device, compute_type=compute_type, cpu_threads=threads,
                             num_workers=self.workers)
        except (RuntimeError, ValueError) as exc:
            raise MonitorError(f"{path}: cannot load Whisper on {ct2_device} ({exc})") from exc
        self.cfg = cfg
        self.device = ct2_device
        self.compute_type = compute_type
        self.word_timestamps = cfg.word_timestamps
        self.timestamps = cfg.timestamps
        self.set_trim(cfg.trim_encoder)
        self._pieces: OrderedDict[tuple, Transcript] = OrderedDict()
        self._pieces_lock = threading.Lock()
        # Whisper's ms per second of audio, an exponential average (weight 0.3 on the newest) over its passes of
        # 0.5 s or more (remembered pieces excluded): what ``segmenter.partial_asr_ms`` is checked against
        self.ms_per_s: float | None = None

    def set_trim(self, on: bool) -> None:
        """Switch the trimmed encoder input on or off (for measurements)."""
        margin = int(round(self.cfg.trim_margin_s * 100))
        self.model.trim_margin_frames = margin if on else None

    def transcribe(self, audio: np.ndarray, pauses: Sequence[int] | None = None) -> Transcript:
        """audio: (n_samples,) float32 at 16 kHz -> the transcript (its words timed with ``word_timestamps``). Blocking.

        Whatever Whisper places after the end of the audio is a hallucination (the trimmed encoder's margin is
        silence) and is dropped: a segment that starts there, and with ``word_timestamps`` a word that starts there.

        ``pauses`` (the monitor's windows: ``Segment.pauses``, as offsets into ``audio``): with ``piece_min_s``, the
        audio is cut at those of its pauses that :func:`piece_cuts` picks and transcribed piece by piece, each
        piece with the text before it as Whisper's prompt; the pieces are remembered, so the transcription of a
        longer audio that begins with the same pieces (the utterance heard again after a pause) runs Whisper on
        its new piece alone. The words depend only on the audio and its pauses, never on what was remembered.
        """
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if pauses is None or self.cfg.piece_min_s <= 0:
            return self._whisper(audio, "")
        bounds = [0, *self.cuts(audio.size, pauses), audio.size]
        text, words = "", []
        for a, b in zip(bounds, bounds[1:]):
            piece = self._piece(audio[a:b], text)
            text = f"{text} {piece.text}".strip()
            words += [replace(w, start_s=w.start_s + a / SAMPLE_RATE_HZ, end_s=w.end_s + a / SAMPLE_RATE_HZ)
                      for w in piece.words]
        return Transcript(text, tuple(words))

    def cuts(self, n: int, pauses: Sequence[int]) -> list[int]:
        """Where :meth:`transcribe` cuts ``n`` samples with these ``pauses`` (none with ``piece_min_s`` 0)."""
        if self.cfg.piece_min_s <= 0:
            return []
        return piece_cuts(n, pauses, int(self.cfg.piece_min_s * SAMPLE_RATE_HZ), int(MIN_TAIL_S * SAMPLE_RATE_HZ))

    def _piece(self, audio: np.ndarray, before: str) -> Transcript:
        """:meth:`_whisper` of one piece, remembered by its audio, the text before it and the settings."""
        key = (before, self.timestamps, self.word_timestamps, self.model.trim_margin_frames, audio.size,
               hashlib.blake2b(audio.tobytes(), digest_size=16).digest())
        with self._pieces_lock:
            got = self._pieces.get(key)
            if got is not None:
                self._pieces.move_to_end(key)
                return got
        got = self._whisper(audio, before)
        with self._pieces_lock:
            self._pieces[key] = got
            while len(self._pieces) > PIECES_KEPT:
                self._pieces.popitem(last=False)
        return got

    def _whisper(self, audio: np.ndarray, before: str) -> Transcript:
        """One Whisper pass; ``before``: the utterance's text before this audio (with ``prompt``, its prompt)."""
        if audio.size < SAMPLE_RATE_HZ // 10:
            return Transcript("", ())
        duration_s = audio.size / SAMPLE_RATE_HZ
        t0 = time.perf_counter()
        prompt = f"{self.cfg.prompt} {before}".strip()
        segments, _ = self.model.transcribe(
            audio,
            language="en",
            beam_size=self.cfg.beam_size,
            word_timestamps=self.word_timestamps,
            without_timestamps=not self.timestamps,
            vad_filter=False,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
            # greedy at temperature 0 only: the same audio always gives the same words (replay parity);
            # faster-whisper's fallback samples at higher temperatures, which is random
            temperature=0.0,
            # a looping decoder (it happens on short inputs) stops after about 8 tokens a second
            max_new_tokens=int(duration_s * MAX_TOKENS_PER_S) + 10,
        )
        words: list[Word] = []
        texts: list[str] = []
        for seg in segments:
            if seg.start >= duration_s:
                continue
            texts.append(seg.text.strip())
            for w in seg.words or ():
                if w.start >= duration_s:
                    continue
                words.append(Word(w.word.strip(), float(w.start), float(min(w.end, duration_s)), float(w.probability)))
        if duration_s >= 0.5:  # Whisper's speed here; shorter passes are mostly fixed costs
            rate = (time.perf_counter() - t0) * 1000 / duration_s
            self.ms_per_s = rate if self.ms_per_s is None else 0.7 * self.ms_per_s + 0.3 * rate
        if words:
            words = [words[j] for j in kept_words([w.text for w in words])]
            text = " ".join(w.text for w in words)
        else:
            text = collapse_repeats(" ".join(t for t in texts if t))
        return Transcript(text.strip(), tuple(words))
