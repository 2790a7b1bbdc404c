"""The single feature contract: raw media -> model input, shared by training and live use.

Every constant that turns audio, face frames or text into tensors lives here, so that
``mmsa.training`` (datasets, cache) and ``mmsa.monitor`` (live windows) cannot drift apart.
A checkpoint stores :class:`FeatureConfig` and its fingerprint; loading one whose features
differ is refused (``mmsa.model.checkpoint``).

Choices where the paper is silent (written down here, as the single place to change them):

* Audio: 16 kHz mono, log-magnitude STFT (Hann window, n_fft 400 = 25 ms, hop 160 = 10 ms,
  ``center=False`` so that a stream cut into chunks gives exactly the frames of the whole),
  ``log(|X| + 1e-5)``, then normalised per utterance to zero mean and unit variance over its
  valid frames (microphone gain invariance). Windows longer than ``max_audio_s`` keep their
  middle ``max_audio_s``.
* Faces: gray 48x48 crops (the FER2013 format) of the detector box enlarged by ``face_margin``,
  scaled to [0, 1]; ``frames_per_window`` crops spread evenly over the utterance.
* Text: lower-cased, punctuation removed (the MOSI transcript style, so Whisper output and
  MOSI/MOSEI/VADER text look alike), then ``[CLS] text [SEP]`` or
  ``[CLS] text [SEP] aspect [SEP]`` (Eq. 1), truncated to ``max_tokens``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from mmsa.common.scale import MODALITIES  # noqa: F401 - re-exported: the order of presence flags and heads

SAMPLE_RATE_HZ = 16_000
N_FFT = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz -> 100 STFT frames per second
N_FREQ = N_FFT // 2 + 1  # 201 frequency bins
FACE_SIZE = 48  # FER2013 crop size


@dataclass(frozen=True)
class FeatureConfig:
    """Feature settings; a checkpoint refuses to load where any of them differs."""

    sample_rate_hz: int = SAMPLE_RATE_HZ
    """Audio sample rate; inputs at other rates must be resampled by the caller."""
    n_fft: int = N_FFT
    """STFT size (and window length) in samples."""
    hop_length: int = HOP_LENGTH
    """STFT hop in samples."""
    window: Literal["hann"] = "hann"
    """STFT window."""
    log_floor: float = 1e-5
    """Added to the magnitude before the log."""
    max_audio_s: float = 10.0
    """Longest audio window fed to the model; longer inputs keep their middle part."""
    min_audio_s: float = 0.3
    """Shorter audio counts as absent (too few frames for the encoder)."""
    face_size: int = FACE_SIZE
    """Side of the square gray face crop."""
    face_margin: float = 0.15
    """Detector boxes are enlarged by this fraction of their size on each side."""
    frames_per_window: int = 8
    """Face crops per utterance window."""
    max_tokens: int = 64
    """Longest token sequence, [CLS] and [SEP] included."""
    text_style: Literal["mosi", "raw"] = "mosi"
    """``mosi``: lower case, punctuation removed, like the MOSI transcripts. ``raw``: as given."""
    audio_input: Literal["stft", "whisper"] = "stft"
    """What the audio branch reads, set by the model (``[model] audio_input``): ``stft``, the normalised
    log-STFT map (n_freq, n_frames); ``whisper``, the statistics of Whisper's encoder states over the
    utterance (768, 1) (:mod:`mmsa.model.speech`). Left out of the fingerprint when ``stft``, so that
    checkpoints from before it load."""

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def audio_dim(self) -> int:
        """Rows of the audio input: STFT bins, or Whisper's statistics."""
        if self.audio_input == "whisper":
            from .speech import STATS_DIM

            return STATS_DIM
        return self.n_freq

    @property
    def max_audio_samples(self) -> int:
        return int(round(self.max_audio_s * self.sample_rate_hz))

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate_hz / self.hop_length

    def to_json(self) -> str:
        return json.dumps(self._settings(), sort_keys=True)

    def _settings(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["audio_input"] == "stft":  # the fingerprint of every checkpoint made before the setting existed
            del d["audio_input"]
        return d

    def fingerprint(self) -> str:
        """Short sha256 of the settings: equal fingerprints mean identical features."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def differences(self, other: FeatureConfig | dict[str, Any]) -> list[str]:
        """Human-readable list of settings where ``other`` differs from ``self``."""
        theirs = dict(other if isinstance(other, dict) else other._settings())
        mine = self._settings()
        for d in (mine, theirs):
            d.setdefault("audio_input", "stft")
        out = []
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key, "<absent>") != theirs.get(key, "<absent>"):
                out.append(f"{key} (checkpoint {theirs.get(key, '<absent>')!r}, code {mine.get(key, '<absent>')!r})")
        return out


DEFAULT_FEATURES = FeatureConfig()


# --------------------------------------------------------------------------- audio


def n_stft_frames(n_samples: int, cfg: FeatureConfig = DEFAULT_FEATURES) -> int:
    """Frames that :func:`audio_features` yields for ``n_samples`` samples (``center=False``)."""
    if n_samples < cfg.n_fft:
        return 0
    return 1 + (n_samples - cfg.n_fft) // cfg.hop_length


@lru_cache(maxsize=8)
def _window(n_fft: int, device: str) -> torch.Tensor:
    return torch.hann_window(n_fft, device=device)


def log_stft(waves: torch.Tensor, cfg: FeatureConfig = DEFAULT_FEATURES) -> torch.Tensor:
    """Log-magnitude STFT without normalisation.

    waves: (batch, n_samples) float in [-1, 1] -> (batch, n_freq, n_frames).
    """
    if waves.dim() != 2:
        raise ValueError(f"waves must be (batch, n_samples), got {tuple(waves.shape)}")
    if waves.shape[1] < cfg.n_fft:
        return waves.new_zeros(waves.shape[0], cfg.n_freq, 0)
    spec = torch.stft(
        waves.float(),
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        window=_window(cfg.n_fft, str(waves.device)),
        center=False,
        return_complex=True,
    )
    return torch.log(spec.abs() + cfg.log_floor)


def crop_audio(wave: np.ndarray | torch.Tensor, cfg: FeatureConfig = DEFAULT_FEATURES):
    """Keep the middle ``max_audio_s`` of a 1-D waveform (unchanged when shorter)."""
    n = cfg.max_audio_samples
    if wave.shape[-1] <= n:
        return wave
    start = (wave.shape[-1] - n) // 2
    return wave[..., start : start + n]


def audio_features(
    wave: np.ndarray | torch.Tensor, cfg: FeatureConfig = DEFAULT_FEATURES
) -> torch.Tensor | None:
    """One utterance's audio -> normalised log-STFT map, or None when too short to use.

    wave: (n_samples,) mono float at ``cfg.sample_rate_hz`` -> (n_freq, n_frames) float32; with
    ``cfg.audio_input == "whisper"``, Whisper's encoder statistics (768, 1) (:mod:`mmsa.model.speech`).
    """
    wave_t = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(-1)
    wave_t = crop_audio(wave_t, cfg)
    if wave_t.numel() < max(cfg.n_fft, int(cfg.min_audio_s * cfg.sample_rate_hz)):
        return None
    if cfg.audio_input == "whisper":
        from .speech import speech_encoder

        return torch.from_numpy(speech_encoder()(wave_t.numpy()))[:, None]
    spec = log_stft(wave_t[None], cfg)[0]
    return normalize_spectrogram(spec)


def normalize_spectrogram(spec: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the whole map: (n_freq, n_frames) -> same."""
    std, mean = torch.std_mean(spec)
    return (spec - mean) / (std + 1e-5)


# --------------------------------------------------------------------------- faces


def expand_box(
    box: Sequence[float], frame_hw: tuple[int, int], cfg: FeatureConfig = DEFAULT_FEATURES
) -> tuple[int, int, int, int]:
    """Detector box (x, y, w, h) -> the crop box enlarged by ``face_margin``, clipped to the frame."""
    x, y, w, h = (float(v) for v in box)
    mx, my = w * cfg.face_margin, h * cfg.face_margin
    H, W = frame_hw
    x0, y0 = max(0, int(round(x - mx))), max(0, int(round(y - my)))
    x1, y1 = min(W, int(round(x + w + mx))), min(H, int(round(y + h + my)))
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)


def to_gray(frame: np.ndarray, bgr: bool = True) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> (H, W) float32 in [0, 255] (ITU-R BT.601 luma)."""
    if frame.ndim == 2:
        return frame.astype(np.float32)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"frame must be (H, W) or (H, W, 3), got {frame.shape}")
    c = frame[..., :3].astype(np.float32)
    r, g, b = (c[..., 2], c[..., 1], c[..., 0]) if bgr else (c[..., 0], c[..., 1], c[..., 2])
    return 0.299 * r + 0.587 * g + 0.114 * b


def face_crop(
    frame: np.ndarray,
    box: Sequence[float] | None = None,
    cfg: FeatureConfig = DEFAULT_FEATURES,
    bgr: bool = True,
) -> torch.Tensor:
    """A frame (and optional detector box) -> gray crop (1, face_size, face_size) in [0, 1].

    ``box`` is (x, y, w, h) in pixels as a detector returns it; None uses the whole frame
    (images that are already face crops, such as FER2013).
    """
    gray = to_gray(frame, bgr=bgr)
    if box is not None:
        x, y, w, h = expand_box(box, gray.shape[:2], cfg)
        gray = gray[y : y + h, x : x + w]
    t = torch.from_numpy(np.ascontiguousarray(gray))[None, None] / 255.0
    s = cfg.face_size
    if t.shape[-2:] != (s, s):
        t = F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    return t[0].clamp_(0.0, 1.0)


def spread_indices(n_available: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n_available)`` (all of them when fewer)."""
    if n_available <= k:
        return list(range(n_available))
    return [int((i + 0.5) * n_available / k) for i in range(k)]


def face_window(crops: Sequence[torch.Tensor], cfg: FeatureConfig = DEFAULT_FEATURES) -> torch.Tensor | None:
    """The crops of one utterance -> (n, 1, S, S) with n <= frames_per_window, or None if no face."""
    if len(crops) == 0:
        return None
    idx = spread_indices(len(crops), cfg.frames_per_window)
    return torch.stack([crops[i] for i in idx])


# --------------------------------------------------------------------------- text

_PUNCT = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str, cfg: FeatureConfig = DEFAULT_FEATURES) -> str:
    """Apply ``text_style``: ``"It's GREAT!"`` -> ``"its great"`` for the ``mosi`` style."""
    if cfg.text_style == "mosi":
        text = _PUNCT.sub("", text.lower())
    return _SPACES.sub(" ", text).strip()


@dataclass
class TextInputs:
    """Tokenised text batch (Eq. 1). Spans are [start, end) token positions."""

    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long
    token_type_ids: torch.Tensor  # (B, L) long
    seg1: torch.Tensor | None  # (B, 2) aspect span inside segment 1, or None without aspects
    seg2: torch.Tensor | None  # (B, 2) aspect span = segment 2


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


def tokenize(
    texts: Sequence[str],
    tokenizer: Any,
    cfg: FeatureConfig = DEFAULT_FEATURES,
    aspects: Sequence[str | None] | None = None,
) -> TextInputs:
    """Texts (and optional aspect terms) -> padded token ids with the spans of Eq. 2-4.

    With aspects, the input is ``[CLS] text [SEP] aspect [SEP]``; ``seg2`` spans the aspect
    in segment 2 and ``seg1`` its first occurrence in the text (the whole text segment when
    the aspect does not occur in it). Rows without an aspect get both spans = the text.
    """
    texts = [normalize_text(t, cfg) for t in texts]
    if aspects is None or all(a is None for a in aspects):
        enc = tokenizer(
            texts, padding=True, truncation=True, max_length=cfg.max_tokens,
            return_tensors="pt", return_token_type_ids=True,
        )
        return TextInputs(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], None, None)
    aspects_n = [normalize_text(a or "", cfg) for a in aspects]
    rows, spans1, spans2 = [], [], []
    for text, aspect in zip(texts, aspects_n):
        a_ids = tokenizer(aspect, add_special_tokens=False)["input_ids"][: cfg.max_tokens // 4]
        budget = cfg.max_tokens - len(a_ids) - 3
        t_ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max(budget, 1)]
        ids = [tokenizer.cls_token_id, *t_ids, tokenizer.sep_token_id]
        types_ = [0] * len(ids)
        if a_ids:
            s2 = len(ids)
            ids += [*a_ids, tokenizer.sep_token_id]
            types_ += [1] * (len(a_ids) + 1)
            at = _find(t_ids, a_ids)
            span1 = (1 + at, 1 + at + len(a_ids)) if at >= 0 else (1, 1 + len(t_ids))
            span2 = (s2, s2 + len(a_ids))
        else:
            span1 = span2 = (1, 1 + len(t_ids))
        rows.append((ids, types_))
        spans1.append(span1)
        spans2.append(span2)
    L = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.full((len(rows), L), pad, dtype=torch.long)
    types_t = torch.zeros((len(rows), L), dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, (ids, ty) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        types_t[i, : len(ty)] = torch.tensor(ty)
        mask[i, : len(ids)] = 1
    return TextInputs(input_ids, mask, types_t, torch.tensor(spans1), torch.tensor(spans2))


# --------------------------------------------------------------------------- batches


@dataclass
class Sample:
    """One utterance's features; None marks a missing modality (masked, never faked)."""

    text: str | None = None
    aspect: str | None = None
    audio: torch.Tensor | None = None  # (n_freq, n_frames) from audio_features (Whisper's: (768, 1))
    faces: torch.Tensor | None = None  # (n, 1, S, S) from face_window


@dataclass
class ModelInputs:
    """A padded batch for :class:`mmsa.model.MMSAModel`; ``*_present`` masks missing modalities."""

    text: TextInputs
    text_present: torch.Tensor  # (B,) bool
    audio: torch.Tensor  # (B, n_freq, T) float, zero padded
    audio_mask: torch.Tensor  # (B, T) bool, valid frames
    audio_present: torch.Tensor  # (B,) bool
    faces: torch.Tensor  # (B, K, 1, S, S) float, zero padded
    face_mask: torch.Tensor  # (B, K) bool, valid crops
    vision_present: torch.Tensor  # (B,) bool
    # the frozen face networks' outputs of the crops, computed beforehand (B, K, ...): the model then skips them
    # (the ONNX runtime's split graphs, mmsa.model.export); None: computed from ``faces``
    mesh: Any = None  # encoders.MeshFeatures | None

    @property
    def batch_size(self) -> int:
        return self.text_present.shape[0]  # (no int(): it would fix the batch size of an exported graph)

    def presence(self) -> torch.Tensor:
        """(B, 3) bool in the order of MODALITIES."""
        return torch.stack([self.text_present, self.audio_present, self.vision_present], dim=1)

    def to(self, device: torch.device | str) -> ModelInputs:
        def mv(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=True)
            if isinstance(x, TextInputs):
                return TextInputs(*(mv(getattr(x, f.name)) for f in dataclasses.fields(x)))
            return x

        return ModelInputs(*(mv(getattr(self, f.name)) for f in dataclasses.fields(self)))


def collate(samples: Sequence[Sample], tokenizer: Any, cfg: FeatureConfig = DEFAULT_FEATURES) -> ModelInputs:
    """Pad a list of samples into one :class:`ModelInputs` batch."""
    B = len(samples)
    if B == 0:
        raise ValueError("collate needs at least one sample")
    text_present = torch.tensor([bool(s.text and normalize_text(s.text, cfg)) for s in samples])
    text = tokenize(
        [s.text or "" for s in samples], tokenizer, cfg,
        aspects=[s.aspect for s in samples] if any(s.aspect for s in samples) else None,
    )
    audio_present = torch.tensor([s.audio is not None and s.audio.shape[-1] > 0 for s in samples])
    T = max([s.audio.shape[-1] for s in samples if s.audio is not None] + [1])
    audio = torch.zeros(B, cfg.audio_dim, T)
    audio_mask = torch.zeros(B, T, dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.audio is not None:
            n = s.audio.shape[-1]
            audio[i, :, :n] = s.audio.float()
            audio_mask[i, :n] = True
    vision_present = torch.tensor([s.faces is not None and len(s.faces) > 0 for s in samples])
    K = max([len(s.faces) for s in samples if s.faces is not None] + [1])
    S = cfg.face_size
    faces = torch.zeros(B, K, 1, S, S)
    face_mask = torch.zeros(B, K, dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.faces is not None and len(s.faces):
            faces[i, : len(s.faces)] = s.faces.float()
            face_mask[i, : len(s.faces)] = True
    return ModelInputs(text, text_present, audio, audio_mask, audio_present, faces, face_mask, vision_present)
