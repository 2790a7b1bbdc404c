"""Random views for the contrastive losses (Eq. 6-8), applied inside the model in training.

* Audio: a random time crop keeping ``crop`` of the valid frames, then one time mask and one
  frequency mask (SpecAugment style) per view, on the STFT bins or, with ``[model] audio_bands``,
  on the mel bands. Padded frames stay masked.
* Image: a random square crop covering ``scale`` of the side, resized back to the input size
  (RandomResizedCrop without aspect change). In evaluation both views are the same centre
  crop at the mean scale, so scoring is deterministic.

:class:`AugmentConfig` holds the training-only strengths (the trainer's ``[augment]`` table);
its defaults are the fixed constants below, so a model without one trains as it always did.
Evaluation views never depend on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGE_SCALE = (0.75, 1.0)
AUDIO_CROP = 0.8
TIME_MASK = 0.1  # fraction of valid frames
FREQ_MASK = 0.1  # fraction of bins


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of the random training views (never used in evaluation)."""

    audio_crop: float = AUDIO_CROP
    """Audio: fraction of the valid frames kept by the random time crop."""
    time_mask: float = TIME_MASK
    """Audio: width of each time mask, as a fraction of the cropped frames."""
    time_masks: int = 1
    """Audio: number of time masks per view (SpecAugment)."""
    freq_mask: float = FREQ_MASK
    """Audio: width of each frequency mask, as a fraction of the bins."""
    freq_masks: int = 1
    """Audio: number of frequency masks per view (SpecAugment)."""
    image_flip: float = 0.0
    """Image: chance of a horizontal (left-right) flip of each training crop."""
    image_rotate: float = 0.0
    """Image: each training crop is rotated by a random angle in [-image_rotate, image_rotate] degrees."""

    def __post_init__(self) -> None:
        if not 0.0 < self.audio_crop <= 1.0:
            raise ValueError("audio_crop: must be in (0, 1]")
        for key in ("time_mask", "freq_mask", "image_flip"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key}: must be in [0, 1]")
        if self.time_masks < 0 or self.freq_masks < 0:
            raise ValueError("time_masks and freq_masks: must be >= 0")
        if not 0.0 <= self.image_rotate <= 180.0:
            raise ValueError("image_rotate: must be in [0, 180] degrees")


DEFAULT_AUGMENT = AugmentConfig()


def audio_view(
    spec: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig = DEFAULT_AUGMENT
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F, T), (B, T) -> one random view of the same shapes (the crop is left-aligned)."""
    B, Fq, T = spec.shape
    out = torch.zeros_like(spec)
    out_mask = torch.zeros_like(mask)
    lengths = mask.sum(1)
    for i in range(B):
        n = int(lengths[i])
        if n == 0:
            continue
        keep = max(1, int(n * cfg.audio_crop))
        start = int(torch.randint(0, n - keep + 1, ()))
        seg = spec[i, :, start : start + keep].clone()
        tm = int(keep * cfg.time_mask)
        for _ in range(cfg.time_masks if tm > 0 else 0):
            t0 = int(torch.randint(0, keep - tm + 1, ()))
            seg[:, t0 : t0 + tm] = 0.0
        fm = int(Fq * cfg.freq_mask)
        for _ in range(cfg.freq_masks if fm > 0 else 0):
            f0 = int(torch.randint(0, Fq - fm + 1, ()))
            seg[f0 : f0 + fm] = 0.0
        out[i, :, :keep] = seg
        out_mask[i, :keep] = True
    return out, out_mask


def image_view(faces: torch.Tensor, train: bool, cfg: AugmentConfig = DEFAULT_AUGMENT) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, S, S): a random crop in training (flipped and rotated where
    ``cfg`` asks), the centre crop otherwise."""
    N, C, S, _ = faces.shape
    if not torch.compiler.is_exporting() and N == 0:  # (exporting: N is not known yet)
        return faces
    if not train:
        side = int(round(S * sum(IMAGE_SCALE) / 2))
        o = (S - side) // 2
        crop = faces[:, :, o : o + side, o : o + side]
        return F.interpolate(crop, size=(S, S), mode="bilinear", align_corners=False)
    scale = torch.empty(N).uniform_(*IMAGE_SCALE)
    side = (scale * S).round().clamp(1, S)
    x0 = (torch.rand(N) * (S - side + 1)).floor()
    y0 = (torch.rand(N) * (S - side + 1)).floor()
    # affine grid does every crop + resize in one batched call
    theta = torch.zeros(N, 2, 3, dtype=faces.dtype, device=faces.device)
    theta[:, 0, 0] = side / S
    theta[:, 1, 1] = side / S
    if cfg.image_rotate > 0 or cfg.image_flip > 0:
        # output -> input map: scale, then rotate, then mirror x (a flip of the crop)
        ang = (torch.rand(N) * 2 - 1) * (cfg.image_rotate * math.pi / 180)
        flip = torch.where(torch.rand(N) < cfg.image_flip, -1.0, 1.0)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta[:, 0, 0] = (side / S * cos * flip).to(faces.dtype)
        theta[:, 0, 1] = (-side / S * sin).to(faces.dtype)
        theta[:, 1, 0] = (side / S * sin * flip).to(faces.dtype)
        theta[:, 1, 1] = (side / S * cos).to(faces.dtype)
    theta[:, 0, 2] = ((x0 + side / 2) / S * 2 - 1).to(faces.dtype)
    theta[:, 1, 2] = ((y0 + side / 2) / S * 2 - 1).to(faces.dtype)
    grid = F.affine_grid(theta, list(faces.shape), align_corners=False)
    return F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False)


def map_view(maps: torch.Tensor, train: bool, shift: int) -> torch.Tensor:
    """(N, C, H, W) feature maps -> a random view in training: each map shifted by up to ``shift``
    cells in x and y, the cells it uncovers copied from the border (replicate). Evaluation: as given."""
    N, _, H, W = maps.shape
    if not train or shift <= 0 or N == 0:
        return maps
    padded = F.pad(maps, (shift, shift, shift, shift), mode="replicate")
    dx = torch.randint(0, 2 * shift + 1, (N,)).tolist()
    dy = torch.randint(0, 2 * shift + 1, (N,)).tolist()
    return torch.stack([padded[i, :, y : y + H, x : x + W] for i, (x, y) in enumerate(zip(dx, dy))])
