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


def test_face_members_scores_with_the_first_branches_of_an_ensemble(tiny_bert, tmp_path):
    """``[scorer] face_members = 1`` on a checkpoint whose face branch is an ensemble of 3: the face score is the
    first member's alone (its own graph), the text and audio scores unchanged; 0 keeps every member."""
    import torch

    from mmsa.model import MMSAModel, load_checkpoint, save_checkpoint
    from tests.model.helpers import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(tiny_bert, fusion="late", vision_head="valence3", vision_members=3)
    path = save_checkpoint(tmp_path / "ens.safetensors", MMSAModel.build(cfg, tiny_bert).eval(), name="ens")
    rng = seeded(5)
    samples = [random_sample(rng, n_faces=k, seconds=s) for k, s in ((4, 2.0), (2, 1.0), (0, 1.5))]
    graphs = tmp_path / "graphs"
    every = Scorer(load_checkpoint(path), "cpu", runtime="onnx", graph_cache=str(graphs), face_members=0)
    first = Scorer(load_checkpoint(path), "cpu", runtime="onnx", graph_cache=str(graphs), face_members=1)
    assert (every.face_members, first.face_members) == (3, 1)
    # each its own graph, side by side: building the one does not remove the other
    assert sorted(p.name.rsplit("-", 1)[0] for p in graphs.glob("*.onnx")) == ["ens", "ens-faces1"]
    # the first member alone: the same network with vision_members = 1 and member 1's weights
    one = MMSAModel.build(dataclasses.replace(cfg, vision_members=1), tiny_bert)
    one.load_state_dict({k: v for k, v in load_checkpoint(path).model.state_dict().items()
                         if not k.startswith("vision_members.")})
    alone = Scorer(load_checkpoint(path), "cpu")
    alone.model = one.eval()
    for got, want, all3 in zip(first.score(samples), alone.score(samples), every.score(samples)):
        assert np.isclose(got.score, want.score, atol=1e-4)
        for m in ("text", "audio"):
            assert got.unimodal[m] == pytest.approx(all3.unimodal[m], abs=1e-4)
        assert (got.unimodal["vision"] is None) == (want.unimodal["vision"] is None)
        if want.unimodal["vision"] is not None:
            assert np.isclose(got.unimodal["vision"], want.unimodal["vision"], atol=1e-4)
            assert not np.isclose(got.unimodal["vision"], all3.unimodal["vision"], atol=1e-4)  # the ensemble differs
    with pytest.raises(ValueError, match="face_members: 0"):
        ScorerConfig(face_members=-1)
