"""One utterance window (audio + frames + text) -> a model ``Sample``, the same way everywhere.

Both the live pipeline (``mmsa.monitor``) and dataset readers / ``mmsa-eval`` (``mmsa.training``)
call :func:`window_sample`, so a clip scored live and offline gets identical features:
``frames_per_window`` frames spread evenly over the window are run through the face
detector (searching near the previous frame's face first; nothing carries over from before
the window, so the result depends only on the window), and the crops of the frames with a
face form the vision input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsa.model.features import DEFAULT_FEATURES, FeatureConfig, Sample, audio_features, face_crop, spread_indices

from .audio import load_audio, probe
from .faces import Box, FaceDetector
from .video import read_frames


def window_faces(
    frames: Sequence[np.ndarray], detector: FaceDetector | None, cfg: FeatureConfig = DEFAULT_FEATURES
):
    """Crops (n, 1, S, S) of the faces in ``frames_per_window`` evenly spread frames, or None."""
    import torch

    if detector is None or not frames:
        return None
    crops = []
    last: Box | None = None
    for i in spread_indices(len(frames), cfg.frames_per_window):
        # near the face of the previous frame first (cheap), the whole frame if it is not there
        box = detector.detect(frames[i], near=last) if last is not None else None
        if box is None:
            box = detector.detect(frames[i])
        if box is not None:
            crops.append(face_crop(frames[i], box, cfg))
            last = box
    return torch.stack(crops) if crops else None


def window_sample(
    audio: np.ndarray | None,
    frames: Sequence[np.ndarray],
    text: str | None,
    detector: FaceDetector | None,
    cfg: FeatureConfig = DEFAULT_FEATURES,
) -> Sample:
    """Features of one window: 16 kHz mono audio, BGR frames of the window, transcript."""
    return Sample(
        text=text or None,
        audio=None if audio is None else audio_features(audio, cfg),
        faces=window_faces(frames, detector, cfg),
    )


def clip_sample(
    path: str | Path,
    text: str | None,
    detector: FaceDetector | None,
    start_s: float | None = None,
    end_s: float | None = None,
    cfg: FeatureConfig = DEFAULT_FEATURES,
) -> Sample:
    """A media file (or its [start_s, end_s) part) -> Sample. Audio-only files have no vision."""
    info = probe(path)
    audio = load_audio(path, cfg.sample_rate_hz, start_s, end_s) if info.has_audio else None
    frames: list[np.ndarray] = []
    if info.has_video and detector is not None:
        frames = [f for _, f in read_frames(path, start_s, end_s)]
    return window_sample(audio, frames, text, detector, cfg)
