"""Shared fixtures: where the real data lives, a tiny BERT for fast model tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_data_dir() -> Path | None:
    """../shared/data beside the checkout, or $MMSA_DATA."""
    for cand in (os.environ.get("MMSA_DATA"), REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data"):
        if cand and (Path(cand) / "mosi" / "label.csv").is_file():
            return Path(cand)
    return None


DATA_DIR = find_data_dir()


def load_example(name: str):
    """examples/<name>.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data of ../shared/data; tests that need it skip where it is absent."""
    if DATA_DIR is None:
        pytest.skip("needs ../shared/data (or MMSA_DATA): real MOSI/MOSEI/RAVDESS/FER2013 data is not on this machine")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the packaged MiniLM vocabulary."""
    from transformers import BertConfig, BertModel

    from mmsa.model import resolve_bert

    src = resolve_bert()
    out = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(out)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from mmsa.model import resolve_bert

    return AutoTokenizer.from_pretrained(resolve_bert())
