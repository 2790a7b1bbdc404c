"""Issue #12: a core a newcomer can read in one sitting. In monitor/ and training/ no function is
longer than 60 lines (decorators and docstring included) and no class longer than 300; no module of
monitor/ and not training/trainer.py passes 450 lines."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = [*sorted((REPO / "monitor").glob("*.py")), *sorted((REPO / "training").glob("*.py"))]
SMALL_MODULES = [*sorted((REPO / "monitor").glob("*.py")), REPO / "training" / "trainer.py"]
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 300
MAX_MODULE_LINES = 450


def too_long(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            n = node.end_lineno - first + 1
            if n > limit:
                out.append(f"{path.relative_to(path.parents[1])}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_function_over_60_lines_and_no_class_over_300():
    assert [f for p in CHECKED for f in too_long(p)] == []


@pytest.mark.parametrize("path", SMALL_MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_stays_under_450_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "pkg" / "long.py"
    path.parent.mkdir()
    path.write_text(f"def f():\n{body}\n")
    assert too_long(path) == [f"pkg/long.py:1 f: {MAX_FUNCTION_LINES + 1} lines"]
