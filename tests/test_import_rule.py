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
# Optional runtime packages model/ may import lazily (inside a function, never at import time),
# each in one module only: the ONNX runtime of the scorer and mmsa-eval (docs/architecture.md), and
# CTranslate2 / faster-whisper for the Whisper encoder features of model/speech.py, and h5py for the
# weights of the face branch's expression network (model/expression.py).
MODEL_LAZY = {"onnxruntime": "model/onnxrt.py", "onnx": "model/export.py", "onnxscript": "model/export.py",
              "ctranslate2": "model/speech.py", "faster_whisper": "model/speech.py", "h5py": "model/expression.py"}


def imports(folder: str, lazy: bool = False):
    """(path, module) of every import; ``lazy``: (path, module, inside a function?)."""
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                yield (path, name, id(node) in in_function) if lazy else (path, name)


def test_model_imports_only_torch_numpy_transformers_safetensors():
    bad = [
        f"{p.relative_to(REPO)}: {name}"
        for p, name, in_function in imports("model", lazy=True)
        if name.split(".")[0] not in MODEL_ALLOWED | set(sys.stdlib_module_names) and not name.startswith("mmsa.common")
        and not (in_function and MODEL_LAZY.get(name.split(".")[0]) == str(p.relative_to(REPO)))
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


def test_model_imports_its_optional_runtime_lazily():
    import subprocess

    code = "import sys, mmsa.model, mmsa.model.export; print(sorted(set(sys.modules) & {'onnxruntime', 'onnx', 'onnxscript'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("folder, forbidden", [
    ("training", "mmsa.monitor"), ("monitor", "mmsa.training"),
    ("model", "mmsa.training"), ("model", "mmsa.monitor"), ("model", "mmsa.media"),
    ("media", "mmsa.training"), ("media", "mmsa.monitor"),
])
def test_packages_do_not_import_each_other(folder, forbidden):
    bad = [f"{p.relative_to(REPO)}: {n}" for p, n in imports(folder) if n == forbidden or n.startswith(forbidden + ".")]
    assert bad == []
