"""``make bench``: latency, real-time factor, per-stage cost, scorer throughput, memory and several streams.

    .venv/bin/python bench/run.py [--quick] [--model auto|default|PATH] [--only SECTIONS] [--out bench/results.json]

Runs each measurement in its own interpreter (bench/stages.py, scorer_throughput.py,
replay.py, latency.py, streams.py, batch_throughput.py), prints a table of every figure with
its target (PASS / MISS) and writes ``bench/results.json``; bench/README.md defines every key.
Sessions are generated once with examples/make_sample.py into .cache/bench/. ``--quick`` is a
short pass (fewer repeats, the 8 sample sentences for latency, 4 minutes of media for memory,
which is too short to get past the warm-up, N = 1, 2, 4 streams of 20 s); its figures are
indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchlib import (
    MOSI_CLIP,
    REPO,
    SAMPLE_SESSION,
    device_info,
    latency_session,
    load_avg,
    long_session,
    resolve_model,
    say,
)

SECTIONS = ("load", "stages", "scorer", "replay", "latency", "rss", "streams", "batch_throughput")
TARGETS = {"replay_rtf": 0.5, "latency_p95_ms": 1000.0, "rss_growth_mb": 50.0, "model_load_s": 5.0}
MIN_REALTIME_STREAMS = 4  # streams_max_realtime_n (in one process), a floor


def run_section(name: str, script: str, argv: list[str], timeout_s: float, tmp: Path) -> tuple[dict | None, dict]:
    """Run ``bench/<script>`` in a fresh interpreter; -> (its JSON or None, timing and load)."""
    out = tmp / f"{name}.json"
    cmd = [sys.executable, str(REPO / "bench" / script), *argv, "--json", str(out)]
    load0, t = load_avg(), time.monotonic()
    say(f"--- {name}: {' '.join(Path(c).name if c.startswith('/') else c for c in cmd[1:])}")
    try:
        rc = subprocess.run(cmd, cwd=REPO, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    meta = {"seconds": round(time.monotonic() - t, 1), "load_before": load0, "load_after": load_avg()}
    if rc != 0 or not out.is_file():
        say(f"{name} failed ({rc})")
        meta["error"] = f"exit {rc}"
        return None, meta
    return json.loads(out.read_text()), meta


def fmt(x, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        x = f"{x:.3f}" if abs(x) < 1 else f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"
    return f"{x}{unit}"


def f2(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def verdict(value, target: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= target else "MISS"


def streams_rows(res: dict) -> list[tuple[str, str, str, str]]:
    """The streams section: the largest N in real time, then per N one process against N processes."""
    best = res.get("streams_max_realtime_n")
    if not best:
        return []
    one = best.get("in_process")
    rows = [("streams_max_realtime_n, one process (p95 <= 1.5 s, no final lost)", fmt(one),
             f">= {MIN_REALTIME_STREAMS}", "n/a" if one is None else "PASS" if one >= MIN_REALTIME_STREAMS else "MISS"),
            ("  same, N separate processes", fmt(best.get("separate")), "(info)", "")]
    runs = res["streams"]
    labels = {"in_process": "one process", "separate": "separate"}
    for n in runs.get("in_process", runs.get("separate", {})):
        pair = {m: runs[m][n] for m in labels if n in runs.get(m, {})}
        for mode, r in pair.items():
            shed = r["shed"]
            rows.append((f"streams N={n}, {labels[mode]}: p50 / p95 ms; events; drops; shed (last)",
                         f"{fmt(r['latency_p50_ms'])} / {fmt(r['latency_p95_ms'])}; {r['n_events_received']}/"
                         f"{r['n_events_expected']}; {r['drops_total']}; {len(shed)}{f' {shed[-1]}' if shed else ''}",
                         "", ""))
        rows.append(((f"  CPU cores; RSS MiB; 1-min load max ({' | '.join(labels[m] for m in pair)})"),
                     " | ".join(f"{f2(r['cpu_cores'])}; {r['rss_mb']}; {r['load_max_1min']:.1f}" for r in pair.values()),
                     "(info)", ""))
        if len(pair) == 2:
            ratio = res["streams_sharing"].get(n, {})
            rows.append(("  separate / one process: p95; CPU s with start-up; RSS",
                         " / ".join(f2(ratio.get(k)) for k in ("latency_p95_ms", "cpu_s_with_startup", "rss_mb")),
                         "(info)", ""))
    return rows


def batch_rows(res: dict) -> list[tuple[str, str, str, str]]:
    """The batch_throughput section: the shared scorer fed by N streams, and its batching wait."""
    per = res.get("batch_windows_per_s")
    if not per:
        return []
    bt = res["details"]["batch_throughput"]
    ns = " / ".join(per)
    sweep = bt["wait_sweep"]
    waits = " / ".join(sweep["open"])
    return [
        (f"batch_windows_per_s, N = {ns} streams (max_wait_ms {bt['default_max_wait_ms']})",
         " / ".join(fmt(v) for v in per.values()), "", ""),
        ("  ratio to one stream", " / ".join(f2(v) for v in res["batch_ratio_to_one_stream"].values()), "", ""),
        (f"  N=4, max_wait_ms {waits}: closed windows/s", " / ".join(fmt(r["windows_per_s"])
                                                                    for r in sweep["closed"].values()), "(info)", ""),
        (f"  N=4, max_wait_ms {waits}: open p95 ms", " / ".join(fmt(r["latency_p95_ms"])
                                                              for r in sweep["open"].values()), "(info)", ""),
        ("batch_best_max_wait_ms: for p95 (open) / throughput (closed)",
         f"{res['batch_best_max_wait_ms']['p95']} / {res['batch_best_max_wait_ms']['throughput']}", "", ""),
    ]


def print_table(res: dict) -> None:
    rows: list[tuple[str, str, str, str]] = []
    if res.get("model_load_s") is not None:
        ml = res["details"]["load"]["median"]
        rows.append(("model_load_s: checkpoint -> Scorer, fresh process, offline", fmt(res["model_load_s"]), "<= 5",
                     verdict(res["model_load_s"], TARGETS["model_load_s"])))
        rows.append(("  imports / first score / Whisper / all models ready (s)",
                     f"{fmt(ml['import_s'])} / {fmt(ml['first_score_s'])} / {fmt(ml['whisper_s'])} / {fmt(ml['ready_s'])}",
                     "(info)", ""))
    rtf = res.get("replay_rtf") or {}
    for key, label in (("sample_session", "sample session"), ("mosi_clip", "MOSI clip Oz06ZWiO20M_6"),
                       ("long_session", "long session (RSS run, with MQTT)")):
        if key in rtf:
            rows.append((f"replay_rtf: {label}", fmt(rtf[key]), "<= 0.5", verdict(rtf[key], TARGETS["replay_rtf"])))
    lat = res.get("details", {}).get("latency") or {}
    n = f" ({lat.get('n_scored')}/{lat.get('n_utterances')} utt.)" if lat else ""
    rows.append(("latency_p50_ms" + n, fmt(res.get("latency_p50_ms")), "", ""))
    rows.append(("latency_p95_ms" + n, fmt(res.get("latency_p95_ms")), "<= 1000",
                 verdict(res.get("latency_p95_ms"), TARGETS["latency_p95_ms"])))
    lat_b = res.get("details", {}).get("latency_before")
    if lat_b:
        rows.append(("  before #14 (torch scorer, no adaptive close): p50 / p95",
                     f"{fmt(lat_b['latency_p50_ms'])} / {fmt(lat_b['latency_p95_ms'])}", "(info)",
                     "INVALID" if lat_b.get("invalid") else ""))
        lat_p = res.get("details", {}).get("latency_previous")
        if lat_p:
            rows.append(("  Whisper with segment timestamps, 5 s margin (as before 2026-12-04): p50 / p95",
                         f"{fmt(lat_p['latency_p50_ms'])} / {fmt(lat_p['latency_p95_ms'])}", "(info)",
                         "INVALID" if lat_p.get("invalid") else ""))
        rows.append(("  latency target of #14: p50 / p95", f"{fmt(res.get('latency_p50_ms'))} / "
                     f"{fmt(res.get('latency_p95_ms'))}", "<= 350 / 500",
                     "PASS" if (res.get("latency_p50_ms") or 1e9) <= 350 and (res.get("latency_p95_ms") or 1e9) <= 500
                     else "MISS"))
    lat1 = res.get("details", {}).get("latency_torch_1_thread")
    if lat1:
        rows.append(("  same, torch 1 thread: p50 / p95", f"{fmt(lat1['latency_p50_ms'])} / {fmt(lat1['latency_p95_ms'])}",
                     "(info)", ""))
    lat0 = res.get("details", {}).get("latency_not_speculative")
    if lat0:
        rows.append(("  same, segmenter.speculative off: p50 / p95",
                     f"{fmt(lat0['latency_p50_ms'])} / {fmt(lat0['latency_p95_ms'])}", "(info)", ""))
    rss = next(iter(res.get("details", {}).get("rss", {}).get("runs", {}).values()), None)
    label = f" (2nd half of {rss['media_s'] / 60:.0f} min)" if rss else ""
    rows.append(("rss_growth_mb" + label, fmt(res.get("rss_growth_mb")), "<= 50",
                 "(quick: too short to judge)" if res.get("quick") else
                 verdict(res.get("rss_growth_mb"), TARGETS["rss_growth_mb"])))
    if rss:
        r = rss["rss"]
        rows.append(("  RSS start / 2nd half start / end / peak MiB",
                     f"{r['start_mb']:.0f} / {r['second_half_start_mb']:.0f} / {r['end_mb']:.0f} / {r['peak_mb']:.0f}",
                     "(info)", ""))
        rows.append(("  first-half climb MiB; 2nd-half slope MiB/10 min",
                     f"{r['first_half_growth_mb']:.0f}; {r['slope_mb_per_10min']:.1f}", "(info)", ""))
    st = res.get("stage_ms") or {}
    if st:
        face = st.get("face_detect_per_frame", {})
        rows += [
            ("stage_ms: VAD per s of audio (decisions every 16 / 32 ms)",
             " / ".join(fmt(v) for v in (st.get("vad_per_audio_s_by_hop") or {}).values()) or fmt(st.get("vad_per_audio_s")),
             "", ""),
            ("stage_ms: face detection per frame", " / ".join(f"{v:.1f}" for v in face.values()), "", ""),
            ("stage_ms: featurize per window", fmt(st.get("featurize_per_window")), "", ""),
            ("stage_ms: ASR per utterance", fmt(st.get("asr_per_utterance")), "", ""),
            ("stage_ms: scorer per batch (1 / 8)",
             " / ".join(fmt(v) for v in st.get("scorer_per_batch", {}).values()), "", ""),
            ("slowest stage per utterance", f"{st.get('slowest_stage')} ({fmt(st.get('slowest_stage_ms'))} ms)", "", ""),
        ]
    for dev, per in (res.get("scorer_windows_per_s") or {}).items():
        rows.append((f"scorer_windows_per_s {dev} (b1 / b8 / b32)", " / ".join(fmt(v) for v in per.values()), "", ""))
    for dev, per in (res.get("details", {}).get("scorer", {}).get("onnx_over_torch") or {}).items():
        threads = " 1 thread" if dev.endswith("_1_thread") else ""
        rows.append((f"  onnx / torch{threads}, same run (b1 / b8 / b32)", " / ".join(f"{v:.2f}x" for v in per.values()),
                     "(info)", ""))
    for key, per in (res.get("details", {}).get("scorer", {}).get("batch_over_1") or {}).items():
        rows.append((f"  {key}: batch 8 / 32 over batch 1", " / ".join(f"{v:.2f}x" for v in per.values()), ">= 2x at b8 (#14)",
                     "PASS" if per.get("8", 0) >= 2 else "MISS"))
    rows += streams_rows(res) + batch_rows(res)
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print(f"{'figure':<{w[0]}}  {'value':>{w[1]}}  {'target':<{w[2]}}  status")
    print("-" * (sum(w) + 12))
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
    load = res["machine_load"]
    print(f"\ndevice: {res['device']['summary']}; model: {res['model']['tag']} ({res['model']['source'].split(':')[0]})")
    print(f"load average (1 min) during the run: {load['min_1min']} .. {load['max_1min']} on {res['device']['n_cpus']} CPUs"
          + (" -- the CPU was shared: figures are inflated by contention" if res["contended"] else ""))


def add_streams(res: dict, details: dict, notes: list[str]) -> None:
    """The keys of the streams and batch_throughput sections (bench/README.md)."""
    st = details.get("streams")
    res["streams_max_realtime_n"] = st["streams_max_realtime_n"] if st else None
    keep = ("latency_p50_ms", "latency_p95_ms", "latency_max_ms", "n_events_expected", "n_events_received", "n_missing",
            "n_other_spans", "drops", "drops_total", "shed", "max_behind_s", "realtime", "cpu_cores", "cpu_s",
            "cpu_s_with_startup", "rss_mb", "load_max_1min")
    res["streams"] = ({mode: {n: {k: r[k] for k in keep} for n, r in runs.items()} for mode, runs in st["runs"].items()}
                      if st else None)
    res["streams_sharing"] = st["separate_over_in_process"] if st else None
    if st:
        notes.extend(f"streams: {x}" for x in st["notes"])
    bt = details.get("batch_throughput")
    res["batch_windows_per_s"] = {n: r["windows_per_s"] for n, r in bt["closed"].items()} if bt else None
    res["batch_ratio_to_one_stream"] = bt["ratio_to_one_stream"] if bt else None
    res["batch_best_max_wait_ms"] = ({"p95": bt["wait_sweep"]["best_for_open_p95_ms"],
                                      "throughput": bt["wait_sweep"]["best_for_closed_windows_per_s"]} if bt else None)
    if bt:
        notes.extend(f"batch_throughput: {x}" for x in bt["notes"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short pass (indicative figures only)")
    ap.add_argument("--model", default="auto", help="auto (default model if built, else a full-size stand-in), "
                    "default, or a checkpoint path")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--thread-ab", action="store_true",
                    help="also replay the latency session with torch limited to 1 thread")
    ap.add_argument("--speculation-ab", action="store_true",
                    help="also replay the latency session with segmenter.speculative = false")
    ap.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    loads = [load_avg()]
    model, model_info = resolve_model(args.model)
    repeat = "1" if args.quick else "3"
    notes: list[str] = []
    lat_session = latency_session(args.quick)
    need_long = "rss" in only
    rss_session = long_session(3 if args.quick else 20) if need_long else None
    mosi = MOSI_CLIP if MOSI_CLIP.is_file() else None
    if mosi is None:
        notes.append(f"{MOSI_CLIP} is absent: the MOSI replay_rtf row is skipped")
    details: dict = {}
    sections: dict = {}
    common = ["--model", model]
    with tempfile.TemporaryDirectory(prefix="mmsa-bench-") as tmp_name:
        tmp = Path(tmp_name)

        def section(name: str, script: str, argv: list[str], timeout_s: float) -> dict | None:
            data, meta = run_section(name, script, argv + common, timeout_s, tmp)
            sections[name] = meta
            loads.extend([meta["load_before"], meta["load_after"]])
            if data is not None:
                details[name] = data
            else:
                notes.append(f"the {name} section failed ({meta['error']}); its figures are missing")
            return data

        if "load" in only:
            section("load", "model_load.py", ["--repeat", repeat], 900)
        if "stages" in only:
            section("stages", "stages.py", [str(lat_session), "--repeat", repeat], 900)
        if "scorer" in only:
            section("scorer", "scorer_throughput.py", [str(lat_session), "--repeat", "3" if args.quick else "5"], 900)
        if "replay" in only:
            section("replay", "replay.py", [str(SAMPLE_SESSION), *([str(mosi)] if mosi else []),
                                            "--repeat", repeat], 900)
        if "latency" in only:
            section("latency_before", "latency.py", [str(lat_session), "--before"], 900)  # side by side, one run
            # Whisper as before 2026-12-04: segment timestamps, a 5 s encoder margin (everything else as now)
            section("latency_previous", "latency.py", [str(lat_session), "--segment-timestamps", "--asr-margin-s", "5"],
                    900)
            section("latency", "latency.py", [str(lat_session)], 900)
            if args.thread_ab:
                section("latency_torch_1_thread", "latency.py", [str(lat_session), "--torch-threads", "1"], 900)
            if args.speculation_ab:
                section("latency_not_speculative", "latency.py", [str(lat_session), "--no-speculative"], 900)
        if "rss" in only:
            section("rss", "replay.py", [str(rss_session), "--rss", "--mqtt"], 1800)
        if "streams" in only:
            section("streams", "streams.py", ["--quick"] if args.quick else [], 1800)
        if "batch_throughput" in only:
            section("batch_throughput", "batch_throughput.py", ["--quick"] if args.quick else [], 900)

    res: dict = {}
    res["model_load_s"] = details["load"]["median"]["checkpoint_s"] if "load" in details else None
    res["monitor_ready_s"] = details["load"]["median"]["ready_s"] if "load" in details else None
    replay = details.get("replay", {}).get("runs", {})
    rss_runs = details.get("rss", {}).get("runs", {})
    rtf = {}
    if str(SAMPLE_SESSION) in replay:
        rtf["sample_session"] = replay[str(SAMPLE_SESSION)]["rtf"]
    if mosi is not None and str(mosi) in replay:
        rtf["mosi_clip"] = replay[str(mosi)]["rtf"]
    rss_run = next(iter(rss_runs.values()), None)
    if rss_run is not None:
        rtf["long_session"] = rss_run["rtf"]
    res["replay_rtf"] = rtf or None
    lat = details.get("latency") or {}
    res["latency_p50_ms"] = lat.get("latency_p50_ms")
    res["latency_p95_ms"] = lat.get("latency_p95_ms")
    st = details.get("stages")
    if st:
        res["stage_ms"] = {**st["stage_ms"], "per_utterance": st["per_utterance_ms"],
                           "slowest_stage": st["slowest_stage"],
                           "slowest_stage_ms": st["per_utterance_ms"][st["slowest_stage"]]}
    else:
        res["stage_ms"] = None
    sc = details.get("scorer")
    res["scorer_windows_per_s"] = sc["windows_per_s"] if sc else None
    res["rss_growth_mb"] = rss_run["rss"]["growth_mb"] if rss_run else None
    add_streams(res, details, notes)
    res["device"] = device_info()
    runtime = next((d["runtime"] for d in details.values() if "runtime" in d), {})
    res["device"].update(asr=runtime.get("asr"), scorer=runtime.get("scorer"), scorer_runtime=runtime.get("scorer_runtime"))
    loads.append(load_avg())
    one_min = [x[0] for x in loads]
    n_cpus = os.cpu_count() or 1
    res["machine_load"] = {"start": loads[0], "end": loads[-1], "min_1min": min(one_min), "max_1min": max(one_min),
                           "median_1min": sorted(one_min)[len(one_min) // 2], "sections": sections}
    res["contended"] = max(one_min) > n_cpus
    if res["contended"]:
        notes.append(f"the 1-minute load average reached {max(one_min)} on {n_cpus} CPUs during the run: other work "
                     "shared the CPU and the figures are inflated by contention")
    res["model"] = model_info
    res["quick"] = args.quick
    res["notes"] = notes
    res["started"] = started.isoformat(timespec="seconds")
    res["duration_s"] = round(time.monotonic() - t0, 1)
    res["command"] = "make bench  (.venv/bin/python bench/run.py" + (" --quick" if args.quick else "") + ")"
    res["details"] = details
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print_table(res)
    for note in notes:
        print(f"note: {note}")
    print(f"\n{args.out} written ({res['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
