"""Model load time: how long ``mmsa-monitor --model MODEL`` takes to have its models ready, offline.

    python bench/model_load.py [--model auto|default|PATH] [--repeat 3] [--json OUT]

Each repeat is a fresh interpreter (cold imports, warm OS file cache after the first) with
``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``, which does what the monitor's start does,
timed step by step from the interpreter's start:

- ``import_s``: ``import torch, mmsa.model, mmsa.monitor.scorer`` (torch dominates);
- ``checkpoint_s``: ``load_checkpoint(MODEL)`` (metadata, the packaged BERT, the stored
  delta / heads) wrapped in the monitor's ``Scorer`` with its default runtime (``onnx``: the
  graph's key and the ONNX Runtime session; the graph itself is built before the timed runs, as
  ``make install`` does: ``graph_build_or_check_s``, a few seconds when it was cached): the *model load*;
- ``first_score_s``: the first ``Scorer.score`` on a 2-second window (first-call costs);
- ``whisper_s``: the monitor's ``Transcriber`` (Whisper tiny.en through CTranslate2);
- ``ready_s``: all of the above, the interpreter's start to models ready.

Figures: the median of ``--repeat`` runs (the first one included: it is what a user sees once
after a reboot, less whatever the OS already cached).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import load_avg, resolve_model, say, write_json

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import torch
from mmsa.model import Sample, load_checkpoint
from mmsa.model.features import audio_features
from mmsa.monitor.config import ScorerConfig
from mmsa.monitor.scorer import Scorer
t1 = time.perf_counter()
sc = ScorerConfig()
scorer = Scorer(load_checkpoint(sys.argv[1], device="cpu"), "cpu", runtime=sc.runtime, graph_cache=sc.graph_cache)
t2 = time.perf_counter()
audio = (np.random.default_rng(0).standard_normal(32000) * 0.05).astype(np.float32)
scorer.score([Sample(text="this is fine", audio=audio_features(torch.from_numpy(audio), scorer.features))])
t3 = time.perf_counter()
from mmsa.monitor.asr import Transcriber
from mmsa.monitor.config import AsrConfig
Transcriber(AsrConfig(), "cpu")
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "checkpoint_s": t2 - t1, "first_score_s": t3 - t2,
                  "whisper_s": t4 - t3, "ready_s": t4 - t0, "tag": scorer.tag, "scorer_runtime": scorer.runtime}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    load0 = load_avg()
    model, model_info = resolve_model(args.model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t = time.perf_counter()  # the ONNX graph, as make install builds it (a no-op when cached)
    subprocess.run([sys.executable, "-m", "mmsa.model.export", model], capture_output=True, env=env, timeout=900, check=True)
    graph_build_s = time.perf_counter() - t
    runs = []
    for i in range(args.repeat):
        res = subprocess.run([sys.executable, "-c", CHILD, model], capture_output=True, text=True, env=env, timeout=300)
        if res.returncode != 0:
            say(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}")
            return 1
        run = json.loads(res.stdout.strip().splitlines()[-1])
        runs.append(run)
        say(f"load run {i + 1}: imports {run['import_s']:.2f} s, checkpoint {run['checkpoint_s']:.2f} s, "
            f"first score {run['first_score_s']:.2f} s, Whisper {run['whisper_s']:.2f} s, ready {run['ready_s']:.2f} s")
    keys = ("import_s", "checkpoint_s", "first_score_s", "whisper_s", "ready_s")
    out = {"model": model_info, "median": {k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
           "runs": [{k: round(r[k], 3) for k in keys} for r in runs], "scorer_runtime": runs[0]["scorer_runtime"],
           "graph_build_or_check_s": round(graph_build_s, 1), "load_before": load0, "load_after": load_avg()}
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
