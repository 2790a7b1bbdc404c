"""Scorer(runtime="onnx"): the same Scores as the torch scorer, through the exported graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmsa.model.onnxrt import OnnxModel
from mmsa.monitor.config import ScorerConfig
from mmsa.monitor.scorer import Scorer
from tests.model.helpers import random_sample, seeded

pytestmark = pytest.mark.slow


def test_onnx_scorer_scores_like_the_torch_scorer(loaded_tiny, tmp_path):
    rng = seeded(4)
    samples = [random_sample(rng, n_faces=k, seconds=s) for k, s in ((8, 2.0), (0, 1.0), (3, 0))]
    samples.append(dataclasses.replace(samples[0], text=None))
    onnx = Scorer(loaded_tiny, "cpu", runtime="onnx", graph_cache=str(tmp_path))
    assert onnx.runtime == "onnx" and isinstance(onnx.model, OnnxModel)
    for got, want in zip(onnx.score(samples), Scorer(loaded_tiny, "cpu").score(samples)):
        assert got.score == pytest.approx(want.score, abs=1e-4)
        for m, v in want.unimodal.items():
            assert (got.unimodal[m] is None) == (v is None)
            assert v is None or np.isclose(got.unimodal[m], v, atol=1e-4)


def test_the_monitor_default_runtime_is_onnx():
    assert ScorerConfig().runtime == "onnx" and ScorerConfig().graph_build
