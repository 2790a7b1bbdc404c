"""The models a process shares between its streams: Whisper, the featurizer and the fusion scorer.

:class:`Engine` owns them and the threads they run on: the ``asr`` pool (one thread per Whisper
worker: ``Transcriber.workers``, one per core at most), the ``featurize`` pool (as many threads,
each with its own OpenCV face detector, which is not thread-safe) and the scoring service's own
thread (``scoring.py``). Every stream's processing stage calls :meth:`Engine.transcribe` and
:meth:`Engine.featurize` (a stream has at most one window in each at a time, so a busy stream
never queues ahead of a quiet one), and scores through :attr:`Engine.scoring`, which batches
windows across streams. :meth:`Engine.serve` is the one long-lived task of the engine; whoever
runs the streams runs it beside them, in the same TaskGroup.

A window's faces are searched in ``[scorer] faces_per_window`` of its frames (:attr:`Engine.faces_per_window`;
the checkpoint's ``frames_per_window`` when 0). Load shedding (``load.py``) lowers
:attr:`Engine.frames_per_window` (fewer frames searched for faces) and clears :attr:`Engine.vision` (no
faces at all) for every stream at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from mmsa.media import FaceDetector, window_sample
from mmsa.model import Sample
from mmsa.model.features import FACE_SIZE, FeatureConfig

from .asr import Transcriber, Transcript
from .config import ScorerConfig
from .scorer import Scorer
from .scoring import ScoreService

log = logging.getLogger(__name__)


def window_features(features: FeatureConfig, frames_per_window: int | None) -> FeatureConfig:
    """``features`` with ``frames_per_window`` frames searched for faces (None: as they are)."""
    if frames_per_window is None or frames_per_window == features.frames_per_window:
        return features
    return dataclasses.replace(features, frames_per_window=frames_per_window)


class Engine:
    """Whisper, the featurizer and the scorer, each on a thread of its own (module docstring)."""

    def __init__(self, transcriber: Transcriber, scorer: Scorer, cfg: ScorerConfig = ScorerConfig()) -> None:
        self.transcriber = transcriber
        self.scorer = scorer
        self.scoring = ScoreService(scorer, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms)
        workers = getattr(transcriber, "workers", 1)
        self._asr = ThreadPoolExecutor(workers, thread_name_prefix="asr")
        self._featurize = ThreadPoolExecutor(workers, thread_name_prefix="featurize")
        self._detectors = threading.local()  # one face detector per featurize thread
        self.faces_per_window = cfg.faces_per_window or None  # the setting (None: the checkpoint's)
        self.frames_per_window = self.faces_per_window  # now (load shedding lowers it)
        self.vision = True  # False: windows are featurized without faces (load shedding)
        self.faces_ahead = cfg.faces_ahead  # the frozen face networks on the featurize thread ([scorer] faces_ahead)

    @property
    def tag(self) -> str:
        return self.scorer.tag

    @property
    def device(self) -> str:
        return self.scorer.device

    async def transcribe(self, audio: np.ndarray, pauses: tuple[int, ...] = ()) -> Transcript:
        """``pauses``: offsets of the utterance's pauses in ``audio`` (``Transcriber.transcribe``)."""
        return await asyncio.get_running_loop().run_in_executor(self._asr, self.transcriber.transcribe, audio, pauses)

    @property
    def features(self) -> FeatureConfig:
        """The scorer's features with the frames per window searched for faces now (``frames_per_window``)."""
        return window_features(self.scorer.features, self.frames_per_window)

    async def featurize(self, audio: np.ndarray, frames: list[np.ndarray]) -> Sample:
        """The window's model input but the words (faces and STFT need none)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._featurize, self._featurize_window, audio, frames if self.vision else [], self.features)

    def _featurize_window(self, audio: np.ndarray, frames: list[np.ndarray], features) -> Sample:
        detector = getattr(self._detectors, "detector", None)
        if detector is None:
            detector = self._detectors.detector = FaceDetector()
        sample = window_sample(audio, frames, None, detector, features)
        if self.faces_ahead and sample.faces is not None:
            try:
                self.scorer.prepare(sample.faces)
            except Exception as exc:  # noqa: BLE001 - only a head start: scoring computes them anyway
                log.warning("the face networks ahead failed (%s: %s); the scorer computes them", type(exc).__name__, exc)
        return sample

    def warm_up(self) -> None:
        """One transcription per Whisper worker (at once) and one forward pass, so the first utterance of a
        session does not pay the first-call costs (memory allocation, kernel selection). Blocking."""
        from mmsa.model.features import audio_features

        audio = (np.random.default_rng(0).standard_normal(16_000 * 2) * 0.05).astype(np.float32)
        list(self._asr.map(self.transcriber.transcribe, [audio] * getattr(self.transcriber, "workers", 1)))
        crops = torch.from_numpy(np.random.default_rng(0).random((1, 1, FACE_SIZE, FACE_SIZE), np.float32))
        self.scorer.prepare(crops)
        self.scorer.score([Sample(text="warm up", audio=audio_features(audio, self.scorer.features), faces=crops)])

    async def serve(self) -> None:
        """The scoring service's loop, until cancelled."""
        await self.scoring.serve()

    def close(self) -> None:
        self._asr.shutdown(wait=False, cancel_futures=True)
        self._featurize.shutdown(wait=False, cancel_futures=True)
