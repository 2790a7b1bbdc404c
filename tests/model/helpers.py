"""Small builders shared by the model tests."""

from __future__ import annotations

import numpy as np
import torch

from mmsa.model import ModelConfig, Sample, collate
from mmsa.model.features import DEFAULT_FEATURES, FeatureConfig, audio_features, face_crop, face_window

TINY = dict(hidden_dim=16, audio_channels=(4, 8), inception_channels=(4, 8), attention_dim=4, fusion_layers=2, fusion_heads=2)


def tiny_config(bert, **kw) -> ModelConfig:
    return ModelConfig(bert=str(bert), **{**TINY, **kw})


def random_sample(rng: np.random.Generator, text: str | None = "it was really good", seconds: float = 1.5,
                  n_faces: int = 5, aspect: str | None = None, features: FeatureConfig = DEFAULT_FEATURES) -> Sample:
    wave = rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    audio = audio_features(wave, features) if seconds else None
    faces = None
    if n_faces:
        frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(n_faces)]
        faces = face_window([face_crop(f, (30, 20, 60, 70)) for f in frames])
    return Sample(text=text, aspect=aspect, audio=audio, faces=faces)


def batch(tokenizer, samples, features: FeatureConfig = DEFAULT_FEATURES):
    return collate(samples, tokenizer, features)


def seeded(seed: int = 0) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
