"""The models a process shares between its streams: Whisper, the featurizer and the fusion scorer.

:class:`Engine` owns them and the threads they run on, one each: ``asr`` (faster-whisper is not
thread-safe), ``featurize`` (STFT and face crops; the OpenCV face detector is not thread-safe
either) and the scoring service's own thread (``scoring.py``). Every stream's processing stage
calls :meth:`Engine.transcribe` and :meth:`Engine.featurize`, and scores through
:attr:`Engine.scoring`, which batches windows across streams. :meth:`Engine.serve` is the one
long-lived task of the engine; whoever runs the streams runs it beside them, in the same TaskGroup.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mmsa.media import FaceDetector, window_sample
from mmsa.model import Sample

from .asr import Transcriber, Transcript
from .config import ScorerConfig
from .scorer import Scorer
from .scoring import ScoreService


class Engine:
    """Whisper, the featurizer and the scorer, each on a thread of its own (module docstring)."""

    def __init__(self, transcriber: Transcriber, scorer: Scorer, cfg: ScorerConfig = ScorerConfig()) -> None:
        self.transcriber = transcriber
        self.scorer = scorer
        self.scoring = ScoreService(scorer, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms)
        self.detector = FaceDetector()  # window faces (the featurize thread's)
        self._asr = ThreadPoolExecutor(1, thread_name_prefix="asr")
        self._featurize = ThreadPoolExecutor(1, thread_name_prefix="featurize")

    @property
    def tag(self) -> str:
        return self.scorer.tag

    @property
    def device(self) -> str:
        return self.scorer.device

    async def transcribe(self, audio: np.ndarray) -> Transcript:
        return await asyncio.get_running_loop().run_in_executor(self._asr, self.transcriber.transcribe, audio)

    async def featurize(self, audio: np.ndarray, frames: list[np.ndarray]) -> Sample:
        """The window's model input but the words (faces and STFT need none)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._featurize, window_sample, audio, frames, None, self.detector, self.scorer.features)

    async def serve(self) -> None:
        """The scoring service's loop, until cancelled."""
        await self.scoring.serve()

    def close(self) -> None:
        self._asr.shutdown(wait=False, cancel_futures=True)
        self._featurize.shutdown(wait=False, cancel_futures=True)
