"""The console scripts are installed and answer --help."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("cmd, words", [
    ("mmsa-monitor", ["--camera", "--replay", "--mqtt", "--model", "report"]),
    ("mmsa-train", ["config", "--set", "--out"]),
    ("mmsa-eval", ["--model", "--dataset", "--labels", "--predictions"]),
    ("mmsa-fit-fusion", ["--model", "--heldout", "--heldout-model", "--report"]),
])
def test_console_script_help(cmd, words):
    # the venv's bin folder need not be on PATH (make test calls .venv/bin/pytest)
    exe = shutil.which(cmd, path=str(Path(sys.executable).parent))
    assert exe, f"{cmd} is not installed (pip install -e .)"
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage:")
    for w in words:
        assert w.lower() in res.stdout.lower()
    assert "Traceback" not in res.stderr
