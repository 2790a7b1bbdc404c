"""Issue #12: the training loop stays in small steps. No function in training/ is longer than 60
lines (decorators and docstring included), and trainer.py stays under 450 lines."""

import ast
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[2] / "training"
MAX_FUNCTION_LINES = 60
MAX_TRAINER_LINES = 450


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            n = node.end_lineno - first + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{path.name}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_function_in_training_is_over_60_lines():
    assert [f for p in sorted(TRAINING.glob("*.py")) for f in long_functions(p)] == []


def test_trainer_module_stays_small():
    assert len((TRAINING / "trainer.py").read_text().splitlines()) <= MAX_TRAINER_LINES


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text(f"def f():\n{body}\n")
    assert long_functions(path) == [f"long.py:1 f: {MAX_FUNCTION_LINES + 1} lines"]
