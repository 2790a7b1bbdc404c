"""The real packaged BERT loads offline."""

import os

import pytest
import torch

from mmsa.model import ResourceError, resolve_bert
from mmsa.model.encoders import TextEncoder
from mmsa.model.features import tokenize


def test_packaged_bert_loads_offline_and_encodes(tokenizer):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    enc = TextEncoder.from_dir(resolve_bert()).eval()
    assert enc.dim == 384
    with torch.inference_mode():
        f = enc(tokenize(["i loved this movie", "i hated this movie", "i loved this film"], tokenizer))
    sims = torch.nn.functional.cosine_similarity(f.h_c[0:1], f.h_c[1:])
    assert sims[1] > 0.9  # near-synonyms land close in the pretrained space


def test_other_directories_are_checked(tmp_path):
    with pytest.raises(ResourceError, match="not a BERT directory"):
        resolve_bert(tmp_path)
