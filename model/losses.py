"""Losses of section 3.3: InfoNCE per modality (Eq. 6-8) and the joint objective (Eq. 11-12).

* InfoNCE (NT-Xent): for n present rows the 2n views are compared by cosine similarity over
  temperature tau; each view's positive is its partner view, the other 2(n - 1) views are
  negatives. Fewer than two present rows give a zero loss (nothing to contrast).
* Task loss: the paper's cross entropy (Eq. 11) becomes a regression loss (L1 by default,
  as MMSA does for MOSI/MOSEI) on the fused score; the L2 term lambda ||theta|| is the
  optimizer's weight decay. Unimodal heads get the same loss on the rows where their
  modality is present, weighted by ``unimodal``.
* Classifying heads (``[model] vision_head = "valence3"``): their unimodal loss is the cross
  entropy of their logits against the label's polarity class (below -0.5 negative, above +0.5
  positive, else neutral), optionally label-smoothed, instead of the regression loss.
* Joint loss (Eq. 12): task + unimodal + text + vision + audio InfoNCE, each with a weight
  (1.0 in the paper; ``fused`` weighs the task loss of the fused score).
* Sign term (``sign``, not in the paper; 0 = off): the logistic loss softplus(-sign(y) s) of the
  fused score s on the rows whose label y is not 0, the rows whose sign MOSI's Acc-2 (non0) counts.
  L1 pulls a score toward its label at the same rate wherever it is; this term adds a push toward the
  label's side of 0 that is strongest on the wrong side and fades once the score is well on the right
  one (its gradient is 1 / (1 + e^(sign(y) s)): 0.5 at 0, 0.05 at 3 on the right side). Averaged over
  those rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .features import MODALITIES
from .network import ModelOutput, valence_class


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2n views: (n, D), (n, D) -> scalar."""
    n = z1.shape[0]
    if n < 2:
        return (z1.sum() + z2.sum()) * 0.0
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2n, D)
    sim = z @ z.T / temperature  # (2n, 2n)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@dataclass(frozen=True)
class LossConfig:
    """Weights of the joint objective (Eq. 12)."""

    task: Literal["l1", "mse", "huber"] = "l1"
    """Regression loss on the fused and unimodal scores."""
    unimodal: float = 1.0
    """Weight of the unimodal heads' task losses."""
    text: float = 1.0
    """Weight of L_text (Eq. 6)."""
    audio: float = 1.0
    """Weight of L_audio (Eq. 8)."""
    vision: float = 1.0
    """Weight of L_img (Eq. 7)."""
    temperature: float = 0.1
    """tau of Eq. 6-8."""
    fused: float = 1.0
    """Weight of the fused score's task loss (0: only the unimodal heads learn, e.g. a classifying
    head trained alone)."""
    label_smoothing: float = 0.0
    """Label smoothing of the classifying heads' cross entropy."""
    sign: float = 0.0
    """Weight of the sign term on the fused score (module docstring; 0: off), relative to its task loss: the term
    is scaled by ``fused`` too, so ``fused = 0`` leaves the fused score untrained whatever this says."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if not self.temperature > 0:
            raise ValueError(f"temperature: tau must be > 0, got {self.temperature}")
        for key in ("unimodal", "text", "audio", "vision", "fused", "sign"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key}: a loss weight must be >= 0 (0: off), got {getattr(self, key)}")


@dataclass
class LossBreakdown:
    total: torch.Tensor
    parts: dict[str, float]  # detached values, for logging


def _task(pred: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, y)
    if kind == "mse":
        return F.mse_loss(pred, y)
    return F.smooth_l1_loss(pred, y)


def joint_loss(out: ModelOutput, labels: torch.Tensor, cfg: LossConfig = LossConfig()) -> LossBreakdown:
    """Eq. 12 on a batch: labels (B,) on the MOSI scale."""
    labels = labels.to(out.score.dtype)
    task = _task(out.score, labels, cfg.task)
    total = cfg.fused * task
    parts = {"task": float(task.detach())}
    if cfg.sign:
        signed = labels != 0
        s = F.softplus(-torch.sign(labels[signed]) * out.score[signed]).mean() if signed.any() else out.score.sum() * 0.0
        total = total + cfg.fused * cfg.sign * s
        parts["sign"] = float(s.detach())
    for j, m in enumerate(MODALITIES):
        rows = out.presence[:, j]
        if cfg.unimodal and rows.any():
            if m in out.logits:
                u = F.cross_entropy(out.logits[m][rows], valence_class(labels[rows]), label_smoothing=cfg.label_smoothing)
            else:
                u = _task(out.unimodal[m][rows], labels[rows], cfg.task)
            total = total + cfg.unimodal * u
            parts[f"uni_{m}"] = float(u.detach())
        weight = getattr(cfg, m)
        if weight and m in out.views:
            c = info_nce(*out.views[m], cfg.temperature)
            total = total + weight * c
            parts[f"nce_{m}"] = float(c.detach())
    parts["total"] = float(total.detach())
    return LossBreakdown(total, parts)
