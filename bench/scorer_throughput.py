"""Scorer throughput: featurized windows scored per second at batch sizes 1, 8 and 32 (CPU, and CUDA when present).

    python bench/scorer_throughput.py SESSION [--model auto|default|PATH] [--batch 1 8 32] [--repeat 5] [--json OUT]

The windows are real: the utterances of SESSION (text, 16 kHz audio, face crops) featurized
with mmsa.media.window_sample. One call is ``Scorer.score(batch)``, what the monitor's scorer
task runs: collate (tokenizer, padding) + forward + copying the scores back (which waits for
the device). windows/s = batch / the median seconds of ``--repeat`` calls after one warm-up.
The process is in a monitor's state (Whisper loaded and run once). CPU is measured twice:
with torch's default intra-op threads (one per core, as the monitor runs) and with one
thread (``cpu_1_thread``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchlib import Monitor, load_avg, median_time, resolve_model, say, write_json
from stages import session_windows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    from mmsa.media import FaceDetector, window_sample
    from mmsa.model import load_checkpoint
    from mmsa.monitor.scorer import Scorer

    load0 = load_avg()
    model, model_info = resolve_model(args.model)
    _, _, windows = session_windows(args.session)
    det = FaceDetector()
    samples = [window_sample(w["audio"], w["frames"], w["text"], det) for w in windows]
    # the state of a monitor process: Whisper has run before the scorer (it matters on a shared
    # CPU, see bench/README.md "Contention")
    mon = Monitor.load(model, "cpu")
    mon.warm_up()
    default_threads = torch.get_num_threads()
    # (result key, device, torch threads): the monitor as it runs (torch's default threads), then
    # limited to one thread, then CUDA
    runs = [("cpu", "cpu", default_threads), ("cpu_1_thread", "cpu", 1)]
    if torch.cuda.is_available():
        runs.append(("cuda", "cuda", default_threads))
    out: dict = {"model": model_info, "windows_per_s": {}, "s_per_batch": {}, "torch_threads_default": default_threads}
    for key, dev, threads in runs:
        torch.set_num_threads(threads)
        scorer = mon.scorer if dev == "cpu" else Scorer(load_checkpoint(model, device=dev), dev)
        out["windows_per_s"][key], out["s_per_batch"][key] = {}, {}
        for n in args.batch:
            batch = (samples * (n // len(samples) + 1))[:n]
            sec, _ = median_time(lambda b=batch, sc=scorer: sc.score(b), args.repeat)
            out["windows_per_s"][key][str(n)] = round(n / sec, 1)
            out["s_per_batch"][key][str(n)] = round(sec, 4)
            say(f"scorer {key} batch {n}: {n / sec:.1f} windows/s ({sec * 1000:.0f} ms per batch)")
        if dev == "cuda":
            out["cuda_device"] = torch.cuda.get_device_name(0)
    torch.set_num_threads(default_threads)
    out["load_before"], out["load_after"] = load0, load_avg()
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
