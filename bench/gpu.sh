#!/usr/bin/env bash
# The GPU check of issues #13/#14, for a lent device machine (H100/H200); never part of CI.
#   bash bench/gpu.sh [OUT_DIR]        (about 8 minutes; OUT_DIR defaults to $OUT or bench/gpu-out)
# 1. install (the pinned torch is the CUDA build there), 2. the tests with CUDA (the gpu-marked ones
# and the monitor's), 3. scorer throughput and the streams figure on the GPU: N paced streams in one
# process (the monitor picks CUDA for torch and Whisper by itself), target >= 32 real-time streams.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/gpu-out}}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
make install > "$out/install.log" 2>&1 || { echo "install failed (see $out/install.log)"; exit 1; }
.venv/bin/python -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
  | tee "$out/torch.txt"
timeout 300 .venv/bin/python -m pytest -q -m gpu tests > "$out/tests-gpu.log" 2>&1; echo "gpu tests: exit $?"
timeout 600 .venv/bin/python -m pytest -q -x tests/monitor/test_streams.py tests/monitor/test_pipeline.py \
  > "$out/tests-monitor.log" 2>&1; echo "monitor tests: exit $?"
timeout 300 .venv/bin/python bench/run.py --only scorer --out "$out/scorer.json" > "$out/scorer.log" 2>&1
echo "scorer: exit $?"
timeout 900 .venv/bin/python bench/streams.py --n 8 16 32 48 --modes in_process --json "$out/streams.json" \
  > "$out/streams.log" 2>&1; echo "streams: exit $?"
tail -20 "$out/streams.log"
