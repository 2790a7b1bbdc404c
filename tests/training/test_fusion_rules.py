"""examples/fusion_rules.py: the fusion rules the model card compares on RAVDESS, the shipped one among
them scored exactly as the model scores it (the measurement itself needs the cross-validation fold runs,
see the script's docstring)."""

from __future__ import annotations

import pytest
import torch

from mmsa.model import MMSAModel, collate
from tests.conftest import load_example
from tests.model.helpers import random_sample, seeded, tiny_config


@pytest.fixture(scope="module")
def rules():
    return load_example("fusion_rules")


def test_the_text_gate_rule_is_the_models_fusion(rules, tiny_bert, tokenizer):
    prior = (0.3, 0.2, 0.5)
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="calibrated", audio_head="valence3", calibration=(0.6, 0.8, 1.0),
                                        fusion_gate="text", text_prior=prior), tiny_bert).eval()
    rng = seeded(3)
    b = collate([random_sample(rng, text=t, n_faces=0) for t in ("it was really good", "awful", "the door")], tokenizer)
    with torch.no_grad():
        out = model(b)
    p = model.polarity_probs(out.unimodal, out.logits).double()
    fused = rules.fuse("text gate, prior divided", p[:, 0], p[:, 1], torch.tensor(prior, dtype=torch.float64))
    assert torch.allclose(fused.float(), out.score, atol=1e-5)
    plain = rules.fuse("product", p[:, 0], p[:, 1], torch.tensor(prior, dtype=torch.float64))
    assert not torch.allclose(plain.float(), out.score, atol=1e-3)  # the rules do differ on these inputs


def test_missing_inputs_are_one_line_and_exit_2(rules, tmp_path, capsys):
    assert rules.main(["--transcripts", str(tmp_path / "t.csv"), "--cv", str(tmp_path / "cv"),
                       "--eval", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fusion_rules: missing ") and "t.csv" in err and len(err.splitlines()) == 1
