"""examples/text_soup.py: the text branch's weights averaged between two checkpoints, every other weight
kept from the second (the model card's "Tried, not shipped" of the text branch)."""

from __future__ import annotations

import torch

from mmsa.model import MMSAModel
from tests.conftest import load_example
from tests.model.helpers import tiny_config


def test_soup_mixes_only_the_text_branch(tiny_bert):
    soup = load_example("text_soup")
    torch.manual_seed(1)
    first = MMSAModel.build(tiny_config(tiny_bert, text_proj_dim=8), tiny_bert).state_dict()
    torch.manual_seed(2)
    second = {k: v + 1.0 if v.is_floating_point() else v
              for k, v in MMSAModel.build(tiny_config(tiny_bert, text_proj_dim=8), tiny_bert).state_dict().items()}
    keys = soup.text_keys(second)
    assert keys and any(k.startswith("heads.text.") for k in keys) and any(k.startswith("text_proj.") for k in keys)
    assert not any(k.startswith(("audio", "vision", "heads.audio", "heads.vision")) for k in keys)
    half = soup.soup(first, second, 0.5)
    for k, v in half.items():
        if k in keys:
            assert torch.allclose(v, (first[k] + second[k]) / 2)
        else:
            assert v is second[k]  # the voice, the face and the rest: the second checkpoint's
    assert all(torch.equal(soup.soup(first, second, 0.0)[k], first[k]) for k in keys)


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    soup = load_example("text_soup")
    assert soup.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("text_soup: missing ") and "a.safetensors" in err and len(err.splitlines()) == 1
