"""The shipped default model through the ONNX runtime on real inputs: MOSI transcripts, RAVDESS
speech, FER2013 faces and the real MOSI video clip, against torch (the reference)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from mmsa.media import FaceDetector, clip_sample, load_audio
from mmsa.model import MODALITIES, Sample, collate, load_checkpoint
from mmsa.model.export import load_graph
from mmsa.model.features import audio_features, face_crop, face_window

TOL = 1e-4
"""Largest difference allowed between a torch score and the runtime's (measured: about 1e-6)."""

pytestmark = [pytest.mark.slow, pytest.mark.data]


def read_csv(path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def real_samples(data, features) -> list[Sample]:
    """Real inputs as ``features`` (the model's: its audio input) make them."""
    rows = read_csv(data / "mosi" / "label.csv")
    texts = [r["text"] for r in rows if r["mode"] == "valid"][:12]
    rav = read_csv(data / "ravdess" / "labels.csv")
    audio = [audio_features(load_audio(data / "ravdess" / r["path"]), features) for r in rav[::150][:8]]
    fer = read_csv(data / "fer2013" / "labels.csv")
    faces = [face_crop(cv2.imread(str(data / "fer2013" / r["path"]), cv2.IMREAD_GRAYSCALE)) for r in fer[::97][:24]]
    windows = [face_window(faces[i : i + k]) for i, k in ((0, 8), (8, 1), (9, 5), (14, 8))]
    out = [Sample(text=t) for t in texts[:4]] + [Sample(audio=a) for a in audio[:3]] + [Sample(faces=w) for w in windows]
    out += [Sample(text=t, audio=a, faces=w) for t, a, w in zip(texts[4:], audio[3:], windows)]
    clip = data / "mosi" / "clips" / "Oz06ZWiO20M_6.mp4"
    out.append(clip_sample(clip, texts[-1], FaceDetector(), cfg=features))
    assert out[-1].faces is not None and out[-1].audio is not None
    return out


def test_default_model_runtime_matches_torch_on_real_inputs(data_dir, tmp_path):
    loaded = load_checkpoint("default")
    graph = load_graph(loaded, tmp_path)
    samples = real_samples(data_dir, loaded.features)
    for rows in (samples, samples[:1], samples[4:7], samples[7:11]):  # mixed, text only, audio only, faces only
        x = collate(rows, loaded.tokenizer, loaded.features)
        with torch.inference_mode():
            want = loaded.model(x)
        got = graph(x)
        for g, w in [(got.score, want.score)] + [(got.unimodal[m], want.unimodal[m]) for m in MODALITIES]:
            assert torch.equal(torch.isnan(g), torch.isnan(w))
            assert np.nanmax(np.abs(g.numpy() - w.numpy()), initial=0.0) <= TOL
