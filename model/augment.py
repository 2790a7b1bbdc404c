"""Random views for the contrastive losses (Eq. 6-8), applied inside the model in training.

* Audio: a random time crop keeping ``crop`` of the valid frames, then one time mask and one
  frequency mask (SpecAugment style) per view. Padded frames stay masked.
* Image: a random square crop covering ``scale`` of the side, resized back to the input size
  (RandomResizedCrop without aspect change). In evaluation both views are the same centre
  crop at the mean scale, so scoring is deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGE_SCALE = (0.75, 1.0)
AUDIO_CROP = 0.8
TIME_MASK = 0.1  # fraction of valid frames
FREQ_MASK = 0.1  # fraction of bins


def audio_view(spec: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F, T), (B, T) -> one random view of the same shapes (the crop is left-aligned)."""
    B, Fq, T = spec.shape
    out = torch.zeros_like(spec)
    out_mask = torch.zeros_like(mask)
    lengths = mask.sum(1)
    for i in range(B):
        n = int(lengths[i])
        if n == 0:
            continue
        keep = max(1, int(n * AUDIO_CROP))
        start = int(torch.randint(0, n - keep + 1, ()))
        seg = spec[i, :, start : start + keep].clone()
        tm = int(keep * TIME_MASK)
        if tm > 0:
            t0 = int(torch.randint(0, keep - tm + 1, ()))
            seg[:, t0 : t0 + tm] = 0.0
        fm = int(Fq * FREQ_MASK)
        if fm > 0:
            f0 = int(torch.randint(0, Fq - fm + 1, ()))
            seg[f0 : f0 + fm] = 0.0
        out[i, :, :keep] = seg
        out_mask[i, :keep] = True
    return out, out_mask


def image_view(faces: torch.Tensor, train: bool) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, S, S): a random crop in training, the centre crop otherwise."""
    N, C, S, _ = faces.shape
    if N == 0:
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
    theta[:, 0, 2] = ((x0 + side / 2) / S * 2 - 1).to(faces.dtype)
    theta[:, 1, 2] = ((y0 + side / 2) / S * 2 - 1).to(faces.dtype)
    grid = F.affine_grid(theta, list(faces.shape), align_corners=False)
    return F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False)
