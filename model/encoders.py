"""Unimodal encoders of the paper (section 3): BERT text, STFT audio, 2D-Inception image.

Shapes are written at every boundary. Choices where the paper is vague:

* Text (Eq. 1-4): any Hugging Face BERT (a plain BERT runs on :mod:`mmsa.model.bert`, others on
  ``transformers.AutoModel``); h^c is the mean of all token states of the input
  (Eq. 2), h^seg1 / h^seg2 the means over the aspect span in segment 1 / segment 2 (Eq. 3-4).
* Audio: the paper only says STFT. We encode the normalised log-STFT map with 1-D convolutions
  over time that take every frequency bin as a channel (a TDNN), then pool the mean and the
  standard deviation over time; padded frames are zeroed after every layer, so a short clip
  gets the same embedding alone or in a padded batch. Optionally (``[model] audio_bands``) the
  201 STFT bins are first averaged into mel-spaced triangular bands by a fixed matrix: fewer,
  smoother channels generalised better to unseen RAVDESS speakers (docs/default-model.md).
* Image (section 3.2): two stacked 2D-Inception blocks. Branch 1: 1x1 conv then a d x d conv;
  branch 2: a 2d x 2d conv; branch 3: max pooling of width round(1.5 d) then a 1x1 conv;
  the branches are concatenated on channels; average pooling (2x2) and BatchNorm follow
  each block. The self-attention module of Eq. 5 sits between the second block and the
  last conv layer (at 12x12 positions: attention over 24x24 positions would cost 16x more
  for little gain on 48x48 faces); its output is added to the feature map with a learned
  gate gamma that starts at 0 (SAGAN). Frame vectors are averaged over the window's crops.
  Optionally (``[model] face_mesh``) a frozen pretrained face network adds its features: the
  paper's CNN alone cannot learn expressions from the 2,000 FER2013 faces the default model has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import expression, memo
from .augment import AugmentConfig, audio_view, map_view
from .facemesh import FEATURE_DIM, FEATURES, MAP, MAP_CHANNELS, FaceMesh
from .features import TextInputs
from .runtime import has_rows, put_rows


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of x over ``dim`` where mask is true; mask broadcasts against x."""
    m = mask.to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


# --------------------------------------------------------------------------- text


@dataclass
class TextFeatures:
    h_c: torch.Tensor  # (B, D) mean of all token states (Eq. 2)
    h_seg1: torch.Tensor | None  # (B, D) aspect in segment 1 (Eq. 3)
    h_seg2: torch.Tensor | None  # (B, D) aspect in segment 2 (Eq. 4)


def _span_mask(spans: torch.Tensor, length: int) -> torch.Tensor:
    pos = torch.arange(length, device=spans.device)[None]
    return (pos >= spans[:, :1]) & (pos < spans[:, 1:2])  # (B, L)


class TextEncoder(nn.Module):
    """Wraps a Hugging Face BERT; returns the pooled features of Eq. 2-4."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert
        self.dim = int(bert.config.hidden_size)

    @classmethod
    def from_dir(cls, bert_dir: Path, pretrained: bool = True) -> TextEncoder:
        """A plain BERT through :mod:`mmsa.model.bert` (fast to load), any other model through AutoModel."""
        from .bert import Bert

        bert = Bert.from_dir(bert_dir, pretrained=pretrained)
        if bert is not None:
            return cls(bert)
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if pretrained:
            bert = AutoModel.from_pretrained(bert_dir, add_pooling_layer=False)
        else:
            bert = AutoModel.from_config(AutoConfig.from_pretrained(bert_dir), add_pooling_layer=False)
        return cls(bert)

    def forward(self, text: TextInputs) -> TextFeatures:
        out = self.bert(
            input_ids=text.input_ids,
            attention_mask=text.attention_mask,
            token_type_ids=text.token_type_ids,
        )
        hidden = out if isinstance(out, torch.Tensor) else out.last_hidden_state  # (B, L, D)
        L = hidden.shape[1]
        h_c = _masked_mean(hidden, text.attention_mask.bool()[..., None], 1)
        if text.seg1 is None or text.seg2 is None:
            return TextFeatures(h_c, None, None)
        h1 = _masked_mean(hidden, _span_mask(text.seg1, L)[..., None], 1)
        h2 = _masked_mean(hidden, _span_mask(text.seg2, L)[..., None], 1)
        return TextFeatures(h_c, h1, h2)


# --------------------------------------------------------------------------- audio


def mel_bands(n_freq: int, n_bands: int, sample_rate: int) -> torch.Tensor:
    """(n_bands, n_freq): triangular filters evenly spaced on the mel scale from 0 Hz to Nyquist,
    each row normalised to sum 1 (a weighted mean of the bins it covers). Bands narrower than
    one bin still take the nearest bin, so no row is empty."""
    hz = torch.linspace(0.0, sample_rate / 2, n_freq, dtype=torch.float64)
    top = 2595.0 * math.log10(1.0 + sample_rate / 2 / 700.0)  # Nyquist on the mel scale
    pts = 700.0 * (10 ** (torch.linspace(0.0, top, n_bands + 2, dtype=torch.float64) / 2595.0) - 1.0)  # band edges, Hz
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    rise = (hz[None] - lo) / (mid - lo).clamp_min(1e-9)
    fall = (hi - hz[None]) / (hi - mid).clamp_min(1e-9)
    fb = torch.minimum(rise, fall).clamp_min(0.0)  # (n_bands, n_freq)
    empty = fb.sum(1) == 0
    if empty.any():
        fb[empty, (mid[empty, 0] / (sample_rate / 2) * (n_freq - 1)).round().long()] = 1.0
    return (fb / fb.sum(1, keepdim=True)).float()


class AudioEncoder(nn.Module):
    """Log-STFT map (B, n_freq, T) + frame mask (B, T) -> (B, out_dim).

    The map is read as a sequence of n_freq-dimensional frames: 1-D convolutions over time
    (kernels 5, 3, 3 with dilations 1, 2, 3: a TDNN / x-vector front end), BatchNorm and ReLU,
    padded frames zeroed after every layer, then statistics pooling (masked mean and standard
    deviation over time) and a linear layer. Keeping every frequency bin as a channel keeps
    where the energy lies in the spectrum, which the mean over frequency of a 2-D CNN loses; on
    RAVDESS it learned faster and generalised better to unseen actors (docs/default-model.md).
    With ``bands`` > 0 a fixed mel filterbank (:func:`mel_bands`, not a parameter, not stored)
    first pools the bins into that many bands: (B, n_freq, T) -> (B, bands, T) (:meth:`to_bands`;
    the model draws its training views' frequency masks on the bands).
    """

    KERNELS = (5, 3, 3, 3)
    DILATIONS = (1, 2, 3, 1)

    def __init__(
        self, n_freq: int, channels: tuple[int, ...], out_dim: int, bands: int = 0, sample_rate: int = 16000
    ) -> None:
        super().__init__()
        if not 1 <= len(channels) <= len(self.KERNELS):
            raise ValueError(f"audio_channels needs 1 to {len(self.KERNELS)} layers, got {len(channels)}")
        if not 0 <= bands <= n_freq:
            raise ValueError(f"audio_bands must be 0 (every STFT bin) or 1 to {n_freq}, got {bands}")
        self.bands: torch.Tensor | None
        if bands:
            self.register_buffer("bands", mel_bands(n_freq, bands, sample_rate), persistent=False)
        else:
            self.bands = None
        layers = []
        c_in = bands or n_freq
        for c, k, d in zip(channels, self.KERNELS, self.DILATIONS):
            layers.append(nn.Sequential(
                nn.Conv1d(c_in, c, k, dilation=d, padding=d * (k - 1) // 2, bias=False), nn.BatchNorm1d(c), nn.ReLU(),
            ))
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.proj = nn.Linear(2 * c_in, out_dim)
        self.dim = out_dim

    def to_bands(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, n_freq, T) -> (B, bands, T): the mel pooling; the map itself without bands."""
        if self.bands is None:
            return spec
        return torch.matmul(self.bands.to(spec.dtype), spec)

    def view(self, x: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """One random training view of the map after :meth:`to_bands`: a crop with time/frequency masks."""
        return audio_view(x, mask, cfg)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Log-STFT map (B, n_freq, T) -> (B, out_dim)."""
        return self.encode(self.to_bands(spec), mask)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The map after :meth:`to_bands` (B, F, T) + frame mask (B, T) -> (B, out_dim)."""
        m = mask[:, None, :]  # (B, 1, T)
        x = x * m.to(x.dtype)  # (B, F, T)
        for layer in self.layers:
            x = layer(x) * m.to(x.dtype)  # (B, C, T), zero beyond each clip's end
        mean = _masked_mean(x, m, 2)  # (B, C)
        var = _masked_mean((x - mean[..., None]) ** 2, m, 2)
        return self.proj(torch.cat([mean, (var + 1e-5).sqrt()], 1))  # (B, out_dim)


class SpeechStatsEncoder(nn.Module):
    """Whisper's encoder statistics (B, 768, T) + frame mask (B, T) -> (B, out_dim) (``audio_input = "whisper"``).

    The input has one frame per utterance (``mmsa.model.speech``); the masked mean over frames keeps any
    T. Batch normalisation without affine parameters standardises each of the 768 statistics with its
    running mean and variance over the training utterances (their scales differ by orders of magnitude),
    then dropout 0.2 and one linear layer: the linear probe of examples/whisper_audio_cv.py, whose head
    (``network._head``) adds a hidden layer. :meth:`to_bands` is the identity (no STFT bins to pool).
    """

    def __init__(self, d_in: int, out_dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d_in, affine=False)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(d_in, out_dim)
        self.dim = out_dim

    def to_bands(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def view(self, x: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """The input itself: statistics have no frames to crop or mask (the views differ by dropout)."""
        return x, mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encode(x, mask)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = _masked_mean(x, mask[:, None, :].to(x.dtype), 2)  # (B, 768)
        if self.training and pooled.shape[0] < 2:  # one utterance: no batch statistics, use the running ones
            normed = F.batch_norm(pooled, self.norm.running_mean, self.norm.running_var, training=False)
        else:
            normed = self.norm(pooled)
        return self.proj(self.drop(normed))


# --------------------------------------------------------------------------- image


def _same_conv(c_in: int, c_out: int, k: int) -> nn.Sequential:
    """k x k conv keeping H and W for any k (even k pads one more on the right/bottom)."""
    lo, hi = (k - 1) // 2, k // 2
    return nn.Sequential(nn.ZeroPad2d((lo, hi, lo, hi)), nn.Conv2d(c_in, c_out, k))


class Inception2D(nn.Module):
    """The 2D-Inception block of Figure 3: (N, c_in, H, W) -> (N, 3 c, H, W)."""

    def __init__(self, c_in: int, c: int, d: int) -> None:
        super().__init__()
        pool = max(1, round(1.5 * d))
        self.branch1 = nn.Sequential(
            nn.Conv2d(c_in, c, 1), nn.ReLU(), _same_conv(c, c, d), nn.ReLU()
        )
        self.branch2 = nn.Sequential(_same_conv(c_in, c, 2 * d), nn.ReLU())
        # "same" pooling for any width: pad (left, right) = (k // 2, (k - 1) // 2)
        self.pool_pad = (pool // 2, (pool - 1) // 2, pool // 2, (pool - 1) // 2)
        self.pool = nn.MaxPool2d(pool, stride=1)
        self.branch3 = nn.Sequential(nn.Conv2d(c_in, c, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3(self.pool(F.pad(x, self.pool_pad, mode="replicate")))
        return torch.cat([self.branch1(x), self.branch2(x), b3], dim=1)


class SelfAttention2d(nn.Module):
    """Eq. 5: s_ij = f(x_i)^T g(x_j), beta = softmax over i, o = h(x) beta; x + gamma * o."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.f = nn.Conv2d(channels, dim, 1, bias=False)
        self.g = nn.Conv2d(channels, dim, 1, bias=False)
        self.h = nn.Conv2d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        f = self.f(x).flatten(2)  # (N, d, HW)
        g = self.g(x).flatten(2)  # (N, d, HW)
        h = self.h(x).flatten(2)  # (N, C, HW)
        beta = torch.softmax(f.transpose(1, 2) @ g, dim=1)  # (N, HW_i, HW_j), normalised over i
        o = (h @ beta).view(N, C, H, W)  # o_j = sum_i beta_ij h(x_i)
        return x + self.gamma * o


class _FeatureNorm(nn.BatchNorm1d):
    """BatchNorm1d that falls back on its running statistics for a training batch of one row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


@dataclass
class MeshFeatures:
    """The frozen face-mesh trunk's view of N crops (each averaged with its mirror image)."""

    vec: torch.Tensor  # (N, FEATURE_DIM) the last shared features, p_re_lu_17
    map: torch.Tensor | None  # (N, MAP_CHANNELS, 12, 12) the last 12x12 map, p_re_lu_12 (face_cnn = "mesh")
    expr: torch.Tensor | None = None  # (N, expression.FEATURE_DIM) the expression network's (face_expression)

    def window_rows(self, rows: torch.Tensor, mask: torch.Tensor) -> MeshFeatures:
        """Outputs laid out per window, (B, K, ...) -> the valid crops' (N, ...) of the windows ``rows``
        (``mask``: their (b, K) valid crops), as :meth:`ImageEncoder.window_mesh` returns them."""
        idx = mask.reshape(-1).nonzero().squeeze(1)
        has_rows(idx)  # (tells the exporter that the crops are not none: the CNN's convolutions would branch on it)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[rows].flatten(0, 1)[idx]

        vec = pick(self.vec)
        assert vec is not None
        return MeshFeatures(vec, pick(self.map), pick(self.expr))


class ImageEncoder(nn.Module):
    """Face crops (N, 1, 48, 48) -> (N, out_dim): two 2D-Inception blocks + self-attention.

    With ``face_mesh``, the frozen MediaPipe face-landmark trunk (:mod:`mmsa.model.facemesh`)
    also sees each crop: whole (the random training crops of the views would cut into the
    margin the network needs) and mirrored, the two outputs averaged, so that they do not
    depend on which way a face looks. Its 1,152 last features pass BatchNorm (their scales differ
    by orders of magnitude), dropout :data:`MESH_DROPOUT` and a linear layer, and are added to
    the CNN's embedding. Only that projection trains; the trunk is not in the checkpoint.

    With ``expression_net`` (needs ``face_mesh``), the frozen FER2013 expression network
    (:mod:`mmsa.model.expression`) also sees each crop and its mirror, in the trunk's pass
    (:meth:`mesh_features`); its 135 features (pooled last map and emotion logits) pass their own
    BatchNorm, dropout and linear layer, as the trunk's do, and are added too. On FER2013 it lifts
    the branch from 0.70 to 0.80 / 0.79 valence_uar3 (valid / test, three seeds of the standalone
    recipe; docs/default-model.md, "Face: a second pretrained network").

    ``cnn_input``: what the paper's CNN sees. ``pixels``: the 48x48 crop (two 2D-Inception
    blocks with pooling, self-attention at 12x12). ``mesh``: the trunk's 12x12x128 feature map
    (:data:`facemesh.MAP`; the mirror's map flipped back and averaged with the crop's; in training
    one of the two at random, a flip augmentation that cost nothing): one 2D-Inception
    block (``channels[1]`` per branch) and BatchNorm at 12x12, the self-attention of Eq. 5 and
    the last conv layer, the "improved Inception" on a pretrained trunk. On 2,000 FER2013 faces
    the CNN on pixels added nothing next to the trunk (its output could be replaced by its mean);
    on the trunk's map it adds (docs/default-model.md). Training views of the map: random
    shifts by up to :data:`MAP_SHIFT` cells (``augment.map_view``), the same in both modes of
    Eq. 7 (two views, two shifts).
    """

    MESH_DROPOUT = 0.3
    """Dropout on the trunk features (chosen on FER2013 valid among 0.3, 0.5 and 0.6)."""
    MAP_SHIFT = 1
    """Training views of the trunk's map: random shifts of up to this many cells (of 12)."""

    def __init__(
        self, channels: tuple[int, int], d: int, attention_dim: int, out_dim: int, face_mesh: bool = False,
        cnn_input: str = "pixels", expression_net: bool = False, frozen_nets: bool = True,
    ) -> None:
        """``frozen_nets=False``: the trainable parts only, for a further member of an ensemble whose frozen
        networks' outputs (:meth:`window_mesh`) come from the first member's (``MMSAModel``,
        ``[model] vision_members``)."""
        super().__init__()
        c1, c2 = channels
        self.cnn_input = cnn_input
        if cnn_input == "mesh":
            if not face_mesh:
                raise ValueError('cnn_input "mesh" needs the face mesh')
            self.block1 = Inception2D(MAP_CHANNELS, c2, d)  # (N, 3 c2, 12, 12)
            self.post1 = nn.BatchNorm2d(3 * c2)
        else:
            self.block1 = Inception2D(1, c1, d)  # (N, 3 c1, 48, 48)
            self.post1 = nn.Sequential(nn.AvgPool2d(2), nn.BatchNorm2d(3 * c1))  # (N, 3 c1, 24, 24)
            self.block2 = Inception2D(3 * c1, c2, d)  # (N, 3 c2, 24, 24)
            self.post2 = nn.Sequential(nn.AvgPool2d(2), nn.BatchNorm2d(3 * c2))  # (N, 3 c2, 12, 12)
        self.attention = SelfAttention2d(3 * c2, attention_dim)  # (N, 3 c2, 12, 12)
        self.head = nn.Sequential(
            nn.Conv2d(3 * c2, out_dim, 3, padding=1), nn.BatchNorm2d(out_dim), nn.ReLU()
        )  # (N, out_dim, 12, 12)
        self.dim = out_dim
        self.mesh: FaceMesh | None = None
        if face_mesh:
            if frozen_nets:
                self.mesh = FaceMesh(outputs=(FEATURES, MAP) if cnn_input == "mesh" else (FEATURES,))
            self.mesh_proj = nn.Sequential(
                _FeatureNorm(FEATURE_DIM), nn.Dropout(self.MESH_DROPOUT), nn.Linear(FEATURE_DIM, out_dim)
            )
        self.expression: expression.MiniXception | None = None
        self.frozen_memo: memo.RowMemo | None = None  # training only: remember()
        if expression_net:
            if not face_mesh:
                raise ValueError("the expression network rides on the face mesh's pass: needs face_mesh")
            if frozen_nets:
                self.expression = expression.MiniXception()
            self.expr_proj = nn.Sequential(
                _FeatureNorm(expression.FEATURE_DIM), nn.Dropout(self.MESH_DROPOUT),
                nn.Linear(expression.FEATURE_DIM, out_dim),
            )

    def cnn(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's CNN: crops (N, 1, 48, 48) or trunk maps (N, 128, 12, 12) -> (N, out_dim)."""
        x = self.post1(self.block1(x))
        if self.cnn_input == "pixels":
            x = self.post2(self.block2(x))
        return self.head(self.attention(x)).mean((2, 3))

    def forward(self, faces: torch.Tensor, mesh: MeshFeatures | None = None, train_view: bool = False) -> torch.Tensor:
        """(N, 1, S, S) crops (the views) -> (N, out_dim). ``mesh``: the crops' trunk outputs
        (:meth:`mesh_features` of the uncut crops); computed from ``faces`` when not given.
        ``train_view``: with ``cnn_input = "mesh"``, a random view (shift) of the trunk's map."""
        if self.mesh is not None and mesh is None:
            mesh = self.mesh_features(faces)
        if self.cnn_input == "mesh":
            assert mesh is not None and mesh.map is not None
            x = self.cnn(map_view(mesh.map, train_view, self.MAP_SHIFT))
        else:
            x = self.cnn(faces)
        if mesh is not None:
            x = x + self.mesh_proj(mesh.vec)
            if mesh.expr is not None:
                x = x + self.expr_proj(mesh.expr)
        return x

    def remember(self, budget_bytes: int = memo.BUDGET_BYTES) -> None:
        """Keep the frozen networks' outputs of every crop seen (:mod:`mmsa.model.memo`): for
        training, where the same crops come back every epoch. Scores are unchanged."""
        self.frozen_memo = memo.RowMemo(budget_bytes)

    def _frozen(self, faces: torch.Tensor) -> memo.Outputs:
        """(N, 1, S, S) -> the frozen networks' outputs of the crops and of their mirrors: the trunk's
        last features (two (N, FEATURE_DIM)), its map (two (N, C, 12, 12), the mirror's flipped back;
        or None) and the expression network's features (two (N, E), or None)."""
        assert self.mesh is not None
        n = faces.shape[0]
        both = torch.cat([faces, torch.flip(faces, dims=[3])])
        out = self.mesh.outputs(both)
        ma = mb = ea = eb = None
        if MAP in out:
            ma, mb = out[MAP][:n], torch.flip(out[MAP][n:], dims=[3])
        if self.expression is not None:
            e = self.expression.features(both)
            ea, eb = e[:n], e[n:]
        return out[FEATURES][:n], out[FEATURES][n:], ma, mb, ea, eb

    def mesh_features(self, faces: torch.Tensor, train_view: bool = False) -> MeshFeatures:
        """(N, 1, S, S) -> the trunk's outputs of each crop and its mirror (the mirror's map flipped
        back first): averaged, or with ``train_view`` (``cnn_input = "mesh"`` in training) one of the
        two at random per crop, so that training sees both orientations as two faces."""
        frozen = self._frozen(faces) if self.frozen_memo is None else self.frozen_memo(self._frozen, faces)
        a, b, ma, mb, ea, eb = frozen
        fmap = None
        if ma is not None and mb is not None:
            if train_view:
                pick = torch.rand(faces.shape[0], device=faces.device) < 0.5
                expr = None if ea is None else torch.where(pick[:, None], ea, eb)
                return MeshFeatures(torch.where(pick[:, None], a, b), torch.where(pick[:, None, None, None], ma, mb), expr)
            fmap = (ma + mb) / 2
        return MeshFeatures((a + b) / 2, fmap, None if ea is None or eb is None else (ea + eb) / 2)

    def window_mesh(self, whole: torch.Tensor, mask: torch.Tensor, train_view: bool = False) -> MeshFeatures | None:
        """(B, K, 1, S, S) uncut crops + (B, K) mask -> the valid crops' trunk outputs, once for every
        view of them (None without a face mesh)."""
        if self.mesh is None:
            return None
        idx = mask.reshape(-1).nonzero().squeeze(1)
        if not has_rows(idx):
            return None
        return self.mesh_features(whole.reshape(-1, *whole.shape[2:])[idx], train_view)

    def encode_windows(self, faces: torch.Tensor, mask: torch.Tensor, mesh: MeshFeatures | None = None,
                       train_view: bool = False) -> torch.Tensor:
        """(B, K, 1, S, S) crops + (B, K) mask -> (B, out_dim), mean over valid crops.

        ``mesh``: :meth:`window_mesh` of the same crops before the random training views."""
        B, K = mask.shape
        feats = faces.new_zeros(B * K, self.dim)
        idx = mask.reshape(-1).nonzero().squeeze(1)
        if has_rows(idx):
            put_rows(feats, idx, self(faces.reshape(B * K, *faces.shape[2:])[idx], mesh, train_view))
        return _masked_mean(feats.view(B, K, -1), mask[..., None], 1)
