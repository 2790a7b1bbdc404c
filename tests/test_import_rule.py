"""ARCHITECTURE section 1: model imports neither training nor monitor (and only its allowed
third-party packages); training and monitor never import each other. media (shared decoding
and face detection) imports model only. common (errors, the settings loader, the score scale)
imports nothing of ours and only the standard library, so torch-free tools can use it."""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_ALLOWED = {"torch", "numpy", "transformers", "safetensors", "tomli"}


def imports(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module


def test_model_imports_only_torch_numpy_transformers_safetensors():
    bad = [
        f"{p.relative_to(REPO)}: {name}"
        for p, name in imports("model")
        if name.split(".")[0] not in MODEL_ALLOWED | set(sys.stdlib_module_names) and not name.startswith("mmsa.common")
    ]
    assert bad == []


def test_common_imports_only_the_standard_library():
    bad = [
        f"{p.relative_to(REPO)}: {name}"
        for p, name in imports("common")
        if name.split(".")[0] not in {"tomli", "mmsa"} | set(sys.stdlib_module_names)
        or (name.startswith("mmsa.") and not name.startswith("mmsa.common"))
    ]
    assert bad == []


@pytest.mark.parametrize("folder, forbidden", [
    ("training", "mmsa.monitor"), ("monitor", "mmsa.training"),
    ("model", "mmsa.training"), ("model", "mmsa.monitor"), ("model", "mmsa.media"),
    ("media", "mmsa.training"), ("media", "mmsa.monitor"),
])
def test_packages_do_not_import_each_other(folder, forbidden):
    bad = [f"{p.relative_to(REPO)}: {n}" for p, n in imports(folder) if n == forbidden or n.startswith(forbidden + ".")]
    assert bad == []
