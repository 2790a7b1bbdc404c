"""The fusion model, blocking: collate a batch of featurized windows and run one forward pass.

:class:`Scorer` is called from one thread at a time (the scoring service's own thread,
``scoring.py``, which batches the windows of every stream).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from mmsa.model import LoadedModel, MMSAModel, Sample, collate, flush_denormals
from mmsa.model.features import MODALITIES
from mmsa.model.onnxrt import OnnxModel

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
    """Blocking batched scoring with a loaded checkpoint (call from one thread at a time).

    ``runtime``: ``torch``, or ``onnx`` (``[scorer] runtime``): the checkpoint's graph exported to
    ONNX and run by ONNX Runtime (``mmsa.model.export``; built into ``graph_cache`` at first use
    unless ``graph_build`` is false). ``face_members`` (``[scorer] face_members``): score with the first N
    face branches of a checkpoint whose face branch is an ensemble (0: all); its own graph.
    The ONNX runtime is for the CPU: on CUDA the scorer runs torch. ``self.runtime`` is the one in use.
    """

    def __init__(self, loaded: LoadedModel, device: str = "cpu", runtime: str = "torch",
                 graph_cache: str | None = None, graph_build: bool = True, face_members: int = 0) -> None:
        flush_denormals()
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
        self.device = device
        self.tokenizer = loaded.tokenizer
        self.features = loaded.features
        self.tag = loaded.info.tag
        self.runtime = runtime if device == "cpu" else "torch"
        if self.runtime != runtime:
            log.info("the onnx runtime is for the CPU; the scorer runs torch on %s", device)
        members = loaded.model.cfg.vision_members  # [scorer] face_members: the first of an ensemble's face branches only
        self.face_members = loaded.model.keep_face_members(face_members).cfg.vision_members
        if self.face_members < members:
            log.info("scoring faces with %d of the checkpoint's %d face branches ([scorer] face_members)", self.face_members, members)
        self.model: MMSAModel | OnnxModel
        if self.runtime == "onnx":
            from mmsa.model.export import load_graph

            self.model = load_graph(loaded, graph_cache or None, build=graph_build)  # the torch model is not kept
        else:
            self.model = loaded.model.to(device).eval()

    def prepare(self, crops: torch.Tensor) -> None:
        """A window's face crops ahead of its scoring: the ONNX runtime runs the frozen face networks on them now
        (``OnnxModel.prepare``); nothing for torch or a graph that is not split. Any thread."""
        if isinstance(self.model, OnnxModel):
            self.model.prepare(crops)

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
