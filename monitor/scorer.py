"""The fusion model, blocking: collate a batch of featurized windows and run one forward pass.

:class:`Scorer` is called from one thread at a time (the scoring service's own thread,
``scoring.py``, which batches the windows of every stream).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from mmsa.model import LoadedModel, Sample, collate, flush_denormals
from mmsa.model.features import MODALITIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """Model output for one window; absent modalities have ``None`` scores."""

    score: float
    unimodal: dict[str, float | None]


def pick_torch_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from .errors import MonitorError

        raise MonitorError("--device cuda: no CUDA device is available to torch")
    return device


class Scorer:
    """Blocking batched scoring with a loaded checkpoint (call from one thread at a time)."""

    def __init__(self, loaded: LoadedModel, device: str = "cpu") -> None:
        flush_denormals()
        self.device = device
        self.model = loaded.model.to(device).eval()
        self.tokenizer = loaded.tokenizer
        self.features = loaded.features
        self.tag = loaded.info.tag

    def score(self, samples: list[Sample]) -> list[Scores]:
        flush_denormals()  # per thread: the monitor scores on a worker thread
        batch = collate(samples, self.tokenizer, self.features).to(self.device)
        with torch.inference_mode():
            out = self.model(batch)
        fused = out.score.float().cpu().tolist()
        uni = {m: out.unimodal[m].float().cpu().tolist() for m in MODALITIES}
        res = []
        for i, s in enumerate(fused):
            res.append(Scores(float(s), {m: None if math.isnan(uni[m][i]) else float(uni[m][i]) for m in MODALITIES}))
        return res
