"""Fixtures of the training tests: generated media datasets and tiny-model configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.model.helpers import TINY
from tests.training import synth


@pytest.fixture(scope="session")
def media_tools() -> None:
    missing = synth.have_tools()
    if missing:
        pytest.skip(f"needs {missing} to generate the test media")


@pytest.fixture(scope="session")
def mmsa_raw(tmp_path_factory, media_tools) -> Path:
    """label.csv of a generated dataset in the MMSA raw layout (speech + face video per clip)."""
    return synth.make_mmsa_raw(tmp_path_factory.mktemp("mmsa_raw"))


@pytest.fixture(scope="session")
def ravdess_like(tmp_path_factory, media_tools) -> Path:
    return synth.make_ravdess(tmp_path_factory.mktemp("ravdess"))


@pytest.fixture(scope="session")
def fer_like(tmp_path_factory, media_tools) -> Path:
    return synth.make_fer(tmp_path_factory.mktemp("fer"))


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return repr(v)


TRAIN = {"epochs": 1, "batch_size": 4, "seed": 1, "lr": 1e-3, "bert_lr": 1e-4}


def write_config(path: Path, bert: Path, cache: Path, sources: list[dict], valid: list[dict], **sections) -> Path:
    """A training TOML with the tiny model of tests/model/helpers.py and the given sources."""
    model = {**TINY, **sections.pop("model", {})}
    tables = {
        "train": {**TRAIN, **sections.pop("train", {})},
        "cache": {"dir": str(cache), "workers": 2, **sections.pop("cache", {})},
        **sections,
    }
    lines = ["[model]", f'bert = "{bert}"', *(f"{k} = {_value(v)}" for k, v in model.items())]
    for name, table in tables.items():
        lines += ["", f"[{name}]", *(f"{k} = {_value(v)}" for k, v in table.items())]
    for group, items in (("train", sources), ("valid", valid)):
        for src in items:
            lines += ["", f"[[data.{group}]]", *(f"{k} = {_value(v)}" for k, v in src.items())]
    path.write_text("\n".join(lines) + "\n")
    return path
