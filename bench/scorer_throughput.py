"""Scorer throughput: featurized windows scored per second at batch sizes 1, 8 and 32 (CPU, and CUDA when present).

    python bench/scorer_throughput.py SESSION [--model auto|default|PATH] [--batch 1 8 32] [--repeat 5]
                                      [--runtime torch onnx] [--json OUT]

The windows are real: the utterances of SESSION (text, 16 kHz audio, face crops) featurized
with mmsa.media.window_sample. One call is ``Scorer.score(batch)``, what the monitor's scorer
task runs: collate (tokenizer, padding) + forward + copying the scores back (which waits for
the device). Every batch size scores the same pool of windows, the first ``max(--batch)`` of
the session's (cycled when it has fewer), in consecutive batches of that size: windows/s = the
pool's windows / the median seconds of ``--repeat`` passes over the pool after one warm-up pass,
the batch sizes taking turns pass by pass (since 2026-12-05, late: a slow spell of the machine had
fallen on one batch size's passes), so the batch sizes are compared on the same windows (before 2026-12-05 batch n timed the first n
windows, and batch 1 the session's shortest utterance alone).
The process is in a monitor's state (Whisper loaded and run once). CPU is measured twice per
runtime: with one thread per core (the CPUs the process may use) and with one thread: torch (``cpu``,
``cpu_1_thread``; torch's threads set for the row: in the monitor process loading Whisper left torch
one thread, ``torch_threads_in_monitor``) and the ONNX runtime (``[scorer] runtime = "onnx"``:
``onnx``, ``onnx_1_thread``; its graph comes from the user's graph cache, built first if missing,
outside the timings). Windows are featurized as the monitor does (``[scorer] faces_per_window``
frames searched for faces); ``--also-faces N`` adds a row of the monitor's runtime on windows of N
faces (``onnx_faces8``: as before that setting) and their ratio (``faces_speedup``); ``onnx_in_turn`` is the
ONNX runtime running a batch's graph runs one at a time on every thread, as before 2026-12-05, and
``parallel_runs_speedup`` the monitor's ``onnx`` over it (one run per thread at once). With a checkpoint
whose face branch is an ensemble (the default model: 3 members), ``--also-members N`` adds a row of the
monitor's runtime scoring with the first N alone (``[scorer] face_members``: ``onnx_members1``) and its ratio
over all of them (``members_speedup``). ``onnx_prepared`` is the monitor's runtime scoring windows whose crops
went through ``Scorer.prepare`` first (untimed), as the monitor's featurize thread prepares them while
Whisper transcribes: the pass the scorer runs at an utterance's close with a split graph (the default
model's), the text, audio and face branches on the frozen face networks' kept outputs
(``prepared_hits`` = crops found prepared / crops scored, 1.0 when every lookup hit). The rows of one
run are measured in turn on the same windows, so their ratios hold on a busy machine where the
absolute figures do not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from benchlib import Monitor, load_avg, resolve_model, say, write_json
from stages import session_windows

PREPARED = "onnx_prepared"
"""The row of the monitor's runtime on windows whose crops were prepared ahead (``Scorer.prepare``, untimed)."""
IN_TURN = "onnx_in_turn"
"""The row of the ONNX runtime running a batch's graph runs one after another on the default intra-op
threads, as it did before 2026-12-05 (``OnnxModel(parallel_runs=False)``); ``onnx`` runs them at once."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--runtime", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    ap.add_argument("--also-faces", type=int, nargs="*", default=[8],
                    help="also time the monitor's runtime on windows with this many frames searched for faces "
                         "(the monitor's [scorer] faces_per_window is timed anyway; 8: as before it was 4)")
    ap.add_argument("--also-members", type=int, nargs="*", default=[1],
                    help="also time the monitor's runtime scoring with only this many of an ensemble checkpoint's face "
                         "branches ([scorer] face_members; the default model has 3)")
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    from mmsa.media import FaceDetector, window_sample
    from mmsa.model import load_checkpoint
    from mmsa.model.onnxrt import OnnxModel
    from mmsa.model.runtime import cpu_threads
    from mmsa.monitor.engine import window_features
    from mmsa.monitor.scorer import Scorer

    load0 = load_avg()
    model, model_info = resolve_model(args.model)
    _, _, windows = session_windows(args.session)
    det = FaceDetector()
    # the state of a monitor process: Whisper has run before the scorer (it matters on a shared
    # CPU, see bench/README.md "Contention")
    mon = Monitor.load(model, "cpu")
    mon.warm_up()
    samples = [window_sample(w["audio"], w["frames"], w["text"], det, mon.features) for w in windows]
    monitor_torch_threads = torch.get_num_threads()  # 1 once Whisper is loaded (CTranslate2 sets OpenMP's count)
    default_threads = cpu_threads()
    # (result key, device, runtime, threads): one thread per CPU (the monitor's ONNX scorer as it runs),
    # then one thread, per runtime, then CUDA
    runs = [(key + suffix, "cpu", rt, n) for rt, key in (("torch", "cpu"), ("onnx", "onnx")) if rt in args.runtime
            for suffix, n in (("", default_threads), ("_1_thread", 1))]
    if "onnx" in args.runtime and default_threads > 1:  # the ONNX runtime as before 2026-12-05: one run at a time
        runs.insert(runs.index(("onnx", "cpu", "onnx", default_threads)) + 1, (IN_TURN, "cpu", "onnx", default_threads))
    if torch.cuda.is_available():
        runs.append(("cuda", "cuda", "torch", default_threads))
    faces = mon.features.frames_per_window
    pool_n = max(args.batch)
    out: dict = {"model": model_info, "windows_per_s": {}, "s_per_batch": {}, "threads_default": default_threads,
                 "torch_threads_in_monitor": monitor_torch_threads, "faces_per_window": faces}
    # the monitor's runtime as it runs, on windows with other numbers of faces (after the rows above, same run)
    runs += [(f"{mon.scorer.runtime}_faces{n}", "cpu", mon.scorer.runtime, default_threads, n)
             for n in args.also_faces if n != faces and mon.device == "cpu"]
    members = mon.scorer.face_members  # the face branches the monitor scores with (an ensemble's: [model] vision_members)
    runs += [(f"{mon.scorer.runtime}_members{n}", "cpu", mon.scorer.runtime, default_threads)
             for n in args.also_members if 0 < n < members and mon.device == "cpu"]
    if mon.scorer.runtime == "onnx" and getattr(mon.scorer.model, "split", False):  # faces ahead: a split graph
        runs.append((PREPARED, "cpu", "onnx", default_threads))
    for key, dev, rt, threads, *n_faces in runs:
        torch.set_num_threads(threads)  # the torch rows' threads; the ONNX rows' sessions get theirs below
        if dev == "cpu" and rt == mon.scorer.runtime and threads == default_threads and key != IN_TURN:
            scorer = mon.scorer
        else:
            n_members = int(key.rpartition("_members")[2]) if "_members" in key else 0
            scorer = Scorer(load_checkpoint(model, device=dev), dev, runtime=rt, face_members=n_members)
        if rt == "onnx" and scorer is not mon.scorer:  # the session's threads as the row says
            scorer.model = OnnxModel(scorer.model.path, threads, parallel_runs=key != IN_TURN)
        rows = samples
        if n_faces:
            feats = window_features(mon.scorer.features, n_faces[0])
            rows = [window_sample(w["audio"], w["frames"], w["text"], det, feats) for w in windows]
        out["windows_per_s"][key], out["s_per_batch"][key] = {}, {}
        pool = (rows * (pool_n // len(rows) + 1))[:pool_n]  # the same windows at every batch size
        if key == PREPARED:  # what the featurize thread did before the close; the memo holds them all
            for s in rows:
                scorer.prepare(s.faces)
            hits0, crops = scorer.model.memo_hits, 0
        # the batch sizes in turn, pass by pass (a warm-up pass each first): a slow spell of the machine
        # (another tenant, the clock) then falls on every batch size alike, not on one of them
        passes = {n: (lambda bs=[pool[i : i + n] for i in range(0, pool_n, n)], sc=scorer: [sc.score(b) for b in bs])
                  for n in args.batch}
        times: dict[int, list[float]] = {n: [] for n in args.batch}
        for r in range(args.repeat + 1):
            for n, run_pass in passes.items():
                t0 = time.perf_counter()
                run_pass()
                if r:
                    times[n].append(time.perf_counter() - t0)
        if key == PREPARED:
            crops += (args.repeat + 1) * len(args.batch) * sum(len(s.faces) for s in pool)
        for n in args.batch:
            sec, n_batches = statistics.median(times[n]), -(-pool_n // n)
            out["windows_per_s"][key][str(n)] = round(pool_n / sec, 1)
            out["s_per_batch"][key][str(n)] = round(sec / n_batches, 4)
            say(f"scorer {key} batch {n}: {pool_n / sec:.1f} windows/s ({sec / n_batches * 1000:.0f} ms per batch)")
        if key == PREPARED:
            out["prepared_hits"] = round((scorer.model.memo_hits - hits0) / max(crops, 1), 3)
        if dev == "cuda":
            out["cuda_device"] = torch.cuda.get_device_name(0)
    torch.set_num_threads(default_threads)
    wps = out["windows_per_s"]
    for suffix in ("", "_1_thread"):
        if "cpu" + suffix in wps and "onnx" + suffix in wps:
            out.setdefault("onnx_over_torch", {})["cpu" + suffix] = {
                n: round(wps["onnx" + suffix][n] / wps["cpu" + suffix][n], 2) for n in wps["cpu" + suffix]}
    if IN_TURN in wps and "onnx" in wps:
        out["parallel_runs_speedup"] = {n: round(wps["onnx"][n] / wps[IN_TURN][n], 2) for n in wps[IN_TURN]}
    mine = wps.get(mon.scorer.runtime if mon.scorer.runtime == "onnx" else "cpu")  # the monitor's row
    for n in args.also_faces:
        other = wps.get(f"{mon.scorer.runtime}_faces{n}")
        if other and mine:
            out.setdefault("faces_speedup", {})[f"{faces}_over_{n}"] = {b: round(mine[b] / other[b], 2) for b in other}
    for n in args.also_members:
        other = wps.get(f"{mon.scorer.runtime}_members{n}")
        if other and mine:
            out.setdefault("members_speedup", {})[f"{n}_over_{members}"] = {b: round(other[b] / mine[b], 2) for b in other}
    for key in (PREPARED, "onnx"):  # batching: windows/s at each batch size over batch 1's
        if key in wps and "1" in wps[key]:
            out.setdefault("batch_over_1", {})[key] = {n: round(v / wps[key]["1"], 2) for n, v in wps[key].items() if n != "1"}
    out["face_members"] = members
    out["load_before"], out["load_after"] = load0, load_avg()
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
