"""The shipped default model through the ONNX runtime on real inputs: MOSI transcripts, RAVDESS
speech, FER2013 faces and the real MOSI video clip, against torch (the reference)."""

from __future__ import annotations

import csv
import dataclasses

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


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A cache folder with the default model's graphs, built once for the tests of this module."""
    folder = tmp_path_factory.mktemp("graphs")
    load_graph(load_checkpoint("default"), folder)
    return folder


def test_default_model_runtime_matches_torch_on_real_inputs(data_dir, graphs):
    loaded = load_checkpoint("default")
    graph = load_graph(loaded, graphs)
    samples = real_samples(data_dir, loaded.features)
    for rows in (samples, samples[:1], samples[4:7], samples[7:11]):  # mixed, text only, audio only, faces only
        x = collate(rows, loaded.tokenizer, loaded.features)
        with torch.inference_mode():
            want = loaded.model(x)
        got = graph(x)
        for g, w in [(got.score, want.score)] + [(got.unimodal[m], want.unimodal[m]) for m in MODALITIES]:
            assert torch.equal(torch.isnan(g), torch.isnan(w))
            assert np.nanmax(np.abs(g.numpy() - w.numpy()), initial=0.0) <= TOL

    # the default's graph is split: its face networks can run ahead, and prepared crops change no score
    assert graph.split
    x = collate(samples, loaded.tokenizer, loaded.features)
    before = graph(x).score
    for s in samples:
        if s.faces is not None:
            graph.prepare(s.faces)
    hits = graph.memo_hits
    assert torch.equal(graph(x).score, before)
    assert graph.memo_hits - hits == int(x.face_mask.sum())


def test_the_monitor_runs_the_face_networks_ahead_on_the_featurize_thread(data_dir, graphs):
    """The engine's featurization of a window of the real MOSI clip prepares its crops (``[scorer] faces_ahead``):
    its scoring then finds every crop's frozen outputs, and scores as without the head start."""
    from mmsa.media import read_frames
    from mmsa.monitor.config import ScorerConfig
    from mmsa.monitor.engine import Engine
    from mmsa.monitor.scorer import Scorer

    clip = data_dir / "mosi" / "clips" / "Oz06ZWiO20M_6.mp4"
    audio, frames = load_audio(clip), [f for _, f in read_frames(clip)]
    scores = {}
    for ahead in (True, False):
        scorer = Scorer(load_checkpoint("default"), "cpu", runtime="onnx", graph_cache=str(graphs))
        engine = Engine(None, scorer, ScorerConfig(faces_ahead=ahead))
        sample = engine._featurize_window(audio, frames, engine.features)
        n = len(sample.faces)
        assert n == ScorerConfig().faces_per_window and len(scorer.model._memo) == (n if ahead else 0)
        scores[ahead] = scorer.score([dataclasses.replace(sample, text="it was fine")])[0]
        assert scorer.model.memo_hits == (n if ahead else 0)
        engine.close()
    assert scores[True] == scores[False]
