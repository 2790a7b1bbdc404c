"""The default model's scorer on CUDA beside the CPU: parity on real windows and windows/s by batch size.

    python bench/gpu_scorer.py [--windows FILE] [--save-windows FILE] [--batch 1 8 32 128] [--repeat 20]
                               [--json OUT]

The windows are real: the sample session's utterances and the MOSI clip (when ../shared/data is there),
featurized as the monitor does (bench/batch_throughput.py's ``featurized_windows``: Whisper's encoder
states for the audio, ``[scorer] faces_per_window`` face crops, the transcript). Whisper's encoder runs
in CTranslate2 on the CPU, so a machine without it (a bare GPU machine) reads windows saved on one that
has it: ``--save-windows FILE`` writes them and exits, ``--windows FILE`` reads them.

One call is ``Scorer.score(batch)``, what the monitor's scoring thread runs: collate + forward + the
scores back on the host (which waits for the device). windows/s = batch / the median of ``--repeat``
calls after two warm-ups. Printed: the largest difference between the CPU's and CUDA's scores of the
same windows (fused and per branch), and windows/s on CUDA (torch) and on the CPU (torch, and the ONNX
runtime, the monitor's default there) with this machine's cores.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from benchlib import device_info, median_time, write_json

from mmsa.model import load_checkpoint  # noqa: E402 - after benchlib, which puts the repository on the path
from mmsa.model.onnxrt import GraphError  # noqa: E402
from mmsa.monitor.config import ScorerConfig  # noqa: E402
from mmsa.monitor.scorer import Scorer  # noqa: E402


def windows(args) -> list:
    if args.windows:
        return torch.load(args.windows, weights_only=False)
    from batch_throughput import featurized_windows

    from mmsa.monitor.engine import window_features

    notes: list[str] = []
    loaded = load_checkpoint(args.model)
    samples, _ = featurized_windows(notes, window_features(loaded.features, ScorerConfig().faces_per_window))
    for n in notes:
        print(n, file=sys.stderr)
    return samples


def max_diff(a, b) -> dict[str, float]:
    out = {"fused": max(abs(x.score - y.score) for x, y in zip(a, b, strict=True))}
    for m in a[0].unimodal:
        d = [abs(x.unimodal[m] - y.unimodal[m]) for x, y in zip(a, b, strict=True) if x.unimodal[m] is not None]
        out[m] = max(d) if d else math.nan
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--windows", type=Path, help="read the featurized windows from this file (--save-windows)")
    ap.add_argument("--save-windows", type=Path, help="featurize the windows, write them here and exit")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    samples = windows(args)
    if args.save_windows:
        torch.save(samples, args.save_windows)
        print(f"{len(samples)} windows -> {args.save_windows}")
        return 0
    if not torch.cuda.is_available():
        print("gpu_scorer: torch sees no CUDA device", file=sys.stderr)
        return 1
    scorers = {"cuda": Scorer(load_checkpoint(args.model), device="cuda"),
               "cpu": Scorer(load_checkpoint(args.model), device="cpu", runtime="torch")}
    try:
        scorers["cpu_onnx"] = Scorer(load_checkpoint(args.model), device="cpu", runtime="onnx")
    except GraphError as exc:  # the export needs the pinned torch; a GPU image may have another
        print(f"no cpu_onnx row: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
    ref = scorers["cpu"].score(samples)
    diff = {name: max_diff(ref, s.score(samples)) for name, s in scorers.items() if name != "cpu"}
    rows = []
    for n in args.batch:
        batch = [samples[i % len(samples)] for i in range(n)]
        row = {"batch": n}
        for name, s in scorers.items():
            if name != "cuda" and n > 32:
                continue  # the CPU rows stop at the monitor's sizes
            med, _ = median_time(lambda s=s, batch=batch: s.score(batch), args.repeat if name == "cuda" else 5, warmup=2)
            row[f"{name}_windows_per_s"] = round(n / med, 1)
        rows.append(row)
    info = device_info()
    print(f"device: {info['summary']}; torch {info['torch']}, {info['torch_threads']} CPU threads; {len(samples)} windows")
    print("largest |score difference| against the CPU's torch:",
          "; ".join(f"{k}: " + ", ".join(f"{m} {v:.2e}" for m, v in d.items()) for k, d in diff.items()))
    print(f"{'batch':>5}  {'cuda w/s':>9}  {'cpu torch w/s':>13}  {'cpu onnx w/s':>12}")
    for r in rows:
        print(f"{r['batch']:>5}  {r['cuda_windows_per_s']:>9}  {r.get('cpu_windows_per_s', ''):>13}  "
              f"{r.get('cpu_onnx_windows_per_s', ''):>12}")
    if args.json:
        write_json(args.json, {"device": info, "windows": len(samples), "max_abs_diff": diff, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
