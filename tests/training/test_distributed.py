"""Multi-process training through torchrun (DistributedDataParallel, gloo on CPU), the same command."""

import json
import subprocess
import sys

import pytest

from tests.training.conftest import write_config


@pytest.mark.slow
def test_torchrun_two_processes(mmsa_raw, tiny_bert, tmp_path):
    cfg = write_config(
        tmp_path / "ddp.toml", tiny_bert, tmp_path / "cache",
        [{"reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "train"}],
        [{"reader": "mmsa-raw", "labels": str(mmsa_raw), "split": "valid"}],
        train={"epochs": 2, "batch_size": 2},
    )
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mmsa.training.cli", str(cfg), "--out", str(run)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # 4 training rows, a global batch of 2 split over 2 processes: 2 steps per epoch
    assert metrics["steps"] == 4 and metrics["epochs_run"] == 2
    assert (run / "model.safetensors").is_file() and metrics["valid"]["mmsa_raw_valid"]["n"] == 2
