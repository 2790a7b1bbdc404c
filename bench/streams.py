"""Many streams on one machine: N paced replays in ONE monitor process against N separate monitor processes.

    python bench/streams.py [--quick] [--n 1 2 4 8] [--model auto|default|PATH] [--json OUT]

For each N, two runs, one after the other:

* ``in_process``: one ``mmsa-monitor --stream s0=MEDIA0 ... --stream sN-1=MEDIAN-1 --headless --mqtt
  127.0.0.1:PORT`` (one engine: Whisper with ``min(N, cores)`` workers, one featurize pool, one
  batched scorer; the load governor);
* ``separate``: N ``mmsa-monitor --replay MEDIAi --headless --mqtt 127.0.0.1:PORT`` started together,
  each with its own models (``[mqtt] node_id`` and ``prefix`` per process).

Every monitor is the real command line run through bench/monitor_proc.py, which warms the models up
before the streams start and reports each replay's origin, the process's CPU time and peak RSS.
Stream i replays the sample session (i even) or the MOSI clip Oz06ZWiO20M_6 (i odd), each looped to
about the same length (40 s; ``--quick``: 20 s) into one file (streamlib.looped_media), paced (real
time), all streams starting together. A mosquitto on a free 127.0.0.1 port takes the events and a
separate ``mosquitto_sub`` stamps their arrival.

* latency of an event = its arrival - the wall time at which its replay reached the end of the
  utterance's speech, taken as the event's ``t_end - segmenter.end_pad_ms`` (where the VAD's
  closing silence began: the wait for it, ``early_close_ms`` after a sentence or
  ``min_silence_ms``, is part of the latency; the replay's origin maps media time to wall time).
  Every event of these media is an utterance's final window (none has more than 10 s of speech);
* expected events = what one ``--fast`` replay of the same looped media gives; an expected event
  is lost when no event of its stream overlaps its span (a replay never drops a window, so that
  would be a lost final; the same speech cut differently, ``n_other_spans``, is not a loss);
  ``realtime`` = p95 <= 1500 ms and none lost; ``streams_max_realtime_n`` = the largest N that
  holds it;
* drops = the sum of each stream's metadata.json ``drops``; shed = the load governor's steps
  (``max_shed``) and the ``degraded`` steps seen in the streams' MQTT ``health``;
* CPU = CPU seconds of the monitor processes while their streams ran / the wall seconds from the
  first stream's start to the last one's end, in cores; ``cpu_s_with_startup`` adds loading the
  models; RSS = each process's peak, summed over the processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import MOSI_CLIP, SAMPLE_SESSION, Broker, load_avg, resolve_model, say, write_json
from latency import wait_subscribed
from streamlib import (
    children_cpu_s,
    looped_media,
    media_seconds,
    need_mosquitto_sub,
    read_events,
    span,
    speech_gap_cut,
    start_monitor,
    start_subscriber,
    stream_figures,
    summarize,
    wait_all,
    write_config,
)

MAX_P95_MS = 1500.0
GAP_S = 1.0
MODES = ("in_process", "separate")


def prepare_media(target_s: float, notes: list[str]) -> list[dict]:
    """The looped sample session and MOSI clip (the sample session alone where the clip is absent)."""
    sample = looped_media(SAMPLE_SESSION, 1, GAP_S, speech_gap_cut(SAMPLE_SESSION, target_s))
    media = [{"name": "sample_session", "source": str(SAMPLE_SESSION), "path": sample, "k": 1}]
    if MOSI_CLIP.is_file():
        k = max(1, round(target_s / (media_seconds(MOSI_CLIP) + GAP_S)))
        media.append({"name": "mosi_clip", "source": str(MOSI_CLIP), "path": looped_media(MOSI_CLIP, k, GAP_S), "k": k})
    else:
        notes.append(f"{MOSI_CLIP} is absent: every stream replays the sample session")
    for m in media:
        m["seconds"] = round(media_seconds(m["path"]), 2)
    return media


def expected_events(media: list[dict], model: str, workdir: Path) -> tuple[dict[str, list[tuple[float, float]]], dict]:
    """Each media's events in one ``--fast`` replay (one process, a stream per media), and the drops of that
    replay (metadata.json: what is dropped with no load at all)."""
    sessions = workdir / "expected"
    cfg = write_config(workdir / "expected.toml", sessions)
    args = [a for i, m in enumerate(media) for a in ("--stream", f"e{i}={m['path']}")]
    proc = start_monitor("expected", [*args, "--fast", "--headless", "--config", str(cfg), "--model", model], workdir)
    wait_all([proc], children_cpu_s(), time.monotonic(), 600)
    folders = {s["name"]: Path(s["folder"]) for s in proc.result()["streams"]}
    events = {m["name"]: [span(ev) for ev in read_events(folders[f"e{i}"])] for i, m in enumerate(media)}
    drops = {m["name"]: json.loads((folders[f"e{i}"] / "metadata.json").read_text()).get("drops", {})
             for i, m in enumerate(media)}
    return events, drops


def run_once(mode: str, n: int, media: list[dict], expected: dict, model: str, broker: Broker, workdir: Path,
             pad_s: float, sections: dict | None = None) -> dict:
    """N streams in one process or in N processes (``sections``: keys of their config, ``streamlib.write_config``);
    -> the run's figures."""
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    run_dir = workdir / f"{mode}-{n}-{uuid.uuid4().hex[:4]}"
    run_dir.mkdir()
    names = [f"s{i}" for i in range(n)]
    mine = [media[i % len(media)] for i in range(n)]
    arrivals = run_dir / "arrivals.txt"
    sub = start_subscriber(broker.host, broker.port, prefix, arrivals)
    mqtt = ["--headless", "--mqtt", f"{broker.host}:{broker.port}", "--model", model]
    try:
        wait_subscribed(broker.host, broker.port, prefix, arrivals)
        load0, cpu0, t0 = load_avg(), children_cpu_s(), time.monotonic()
        if mode == "in_process":
            cfg = write_config(run_dir / "monitor.toml", run_dir / "sessions", prefix, sections=sections)
            streams = [a for name, m in zip(names, mine) for a in ("--stream", f"{name}={m['path']}")]
            procs = [start_monitor(f"n{n}", [*streams, *mqtt, "--config", str(cfg)], run_dir)]
        else:
            procs = []
            for name, m in zip(names, mine):
                cfg = write_config(run_dir / f"{name}.toml", run_dir / "sessions", f"{prefix}/{name}", f"bench-{name}",
                                   sections=sections)
                procs.append(start_monitor(name, ["--replay", str(m["path"]), *mqtt, "--config", str(cfg)], run_dir))
        waited = wait_all(procs, cpu0, t0, timeout_s=3 * max(m["seconds"] for m in mine) + 240)
        time.sleep(0.5)  # the last messages reach the subscriber
    finally:
        sub.terminate()
        sub.wait(5)
    reports = [p.result() for p in procs]
    if mode == "in_process":
        per_stream = {s["name"]: s for s in reports[0]["streams"]}
    else:
        per_stream = {name: r["streams"][0] for name, r in zip(names, reports)}
    streams = {name: {"media": m["name"], **stream_figures(prefix, name, per_stream[name], arrivals,
                                                          expected[m["name"]], pad_s)}
               for name, m in zip(names, mine)}
    start, end = min(r["start_unix"] for r in reports), max(r["end_unix"] for r in reports)
    cpu_s = sum(r["cpu_s"] for r in reports)
    out = {"n": n, "mode": mode, **summarize(streams, MAX_P95_MS),
           "cpu_cores": round(cpu_s / (end - start), 2), "cpu_s": round(cpu_s, 1), "wall_s": round(end - start, 1),
           "cpu_s_with_startup": waited.cpu_s, "wall_s_with_startup": waited.wall_s,
           "start_skew_s": round(max(r["start_unix"] for r in reports) - start, 2),
           "rss_mb": round(sum(r["peak_rss_mb"] for r in reports)), "asr_workers": [r["workers"] for r in reports],
           "load_before": load0, "load_max_1min": waited.load_max_1min, "load_after": load_avg(), "streams": streams}
    say(f"streams {mode} N={n}: p50 {out['latency_p50_ms']} / p95 {out['latency_p95_ms']} / max "
        f"{out['latency_max_ms']} ms, {out['n_events_received']}/{out['n_events_expected']} events, drops "
        f"{out['drops_total']}, shed {out['shed'] or '-'}, {out['cpu_cores']} cores, {out['rss_mb']} MiB, "
        f"load {load0[0]}..{waited.load_max_1min}")
    return out


def ratios(runs: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """separate / in_process per N: what sharing the models saves (> 1: the separate processes cost more)."""
    out = {}
    for n, one in runs["in_process"].items():
        sep = runs["separate"].get(n)
        if sep is None:
            continue
        out[n] = {k: round(sep[k] / one[k], 2) if sep.get(k) and one.get(k) else None
                  for k in ("latency_p50_ms", "latency_p95_ms", "cpu_cores", "cpu_s", "cpu_s_with_startup", "rss_mb")}
    return out


def max_realtime_n(runs: dict[str, dict]) -> int | dict[str, int]:
    """The largest N in real time; with several settings (keys ``N-<label>``, :func:`variants`), per setting."""
    if all("-" not in k for k in runs):
        return max((int(n) for n, r in runs.items() if r["realtime"]), default=0)
    settings = sorted({k.split("-", 1)[1] for k in runs})
    return {s: max((int(k.split("-")[0]) for k, r in runs.items() if k.endswith(s) and r["realtime"]), default=0)
            for s in settings}


def variants(faces_ahead: list[str], block_ms: list[int]) -> list[tuple[str, dict]]:
    """(label, config sections) of each setting compared; the label names only what varies ("" for one setting)."""
    out = []
    for ahead in faces_ahead:
        for block in block_ms:
            parts = ([f"faces-ahead-{ahead}"] if len(faces_ahead) > 1 else []) + ([f"block-{block}"] if len(block_ms) > 1 else [])
            out.append(("-".join(parts), {"scorer": {"faces_ahead": ahead == "on"}, "audio": {"block_ms": block}}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 1, 2, 4 and about 20 s of media per stream")
    ap.add_argument("--n", type=int, nargs="+", help="the stream counts (default 1 2 4 8; --quick 1 2 4)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--model", default="auto")
    ap.add_argument("--faces-ahead", nargs="+", choices=("on", "off"), default=["on"],
                    help="[scorer] faces_ahead of the monitors; both: each run with it off, then on (docs/performance.md)")
    ap.add_argument("--block-ms", type=int, nargs="+",
                    help="[audio] block_ms of the monitors (the microphone's block; default the config's); several: "
                         "each run with each")
    ap.add_argument("--json")
    args = ap.parse_args()
    from mmsa.monitor.config import AudioConfig, SegmenterConfig

    args.block_ms = args.block_ms or [AudioConfig().block_ms]

    need_mosquitto_sub()
    ns = args.n or ([1, 2, 4] if args.quick else [1, 2, 4, 8])
    model, model_info = resolve_model(args.model)
    notes: list[str] = []
    media = prepare_media(20.0 if args.quick else 40.0, notes)
    pad_s = SegmenterConfig().end_pad_ms / 1000
    load0 = load_avg()
    runs: dict[str, dict[str, dict]] = {mode: {} for mode in args.modes}
    with tempfile.TemporaryDirectory(prefix="mmsa-bench-streams-") as tmp:
        workdir = Path(tmp)
        expected, fast_drops = expected_events(media, model, workdir)
        say("streams: expected events per media (--fast): " + ", ".join(f"{k} {len(v)}" for k, v in expected.items()))
        broker = Broker(workdir)
        try:
            for n in ns:  # the modes (and settings) alternate, so a change in the machine's load falls on all
                for mode in args.modes:
                    for label, sections in variants(args.faces_ahead, args.block_ms):
                        key = f"{n}-{label}" if label else str(n)
                        runs[mode][key] = run_once(mode, n, media, expected, model, broker, workdir, pad_s, sections)
        finally:
            broker.stop()
    results = {
        "model": model_info,
        "media": [{k: str(v) if isinstance(v, Path) else v for k, v in m.items()} for m in media],
        "expected_events": {k: len(v) for k, v in expected.items()},
        "fast_replay_drops": fast_drops,
        "end_pad_s": pad_s,
        "max_p95_ms": MAX_P95_MS,
        "runs": runs,
        "streams_max_realtime_n": {mode: max_realtime_n(r) for mode, r in runs.items()},
        "separate_over_in_process": ratios(runs) if len(runs) == 2 else {},
        "notes": notes,
        "load_before": load0,
        "load_after": load_avg(),
    }
    say(f"streams: largest N in real time (p95 <= {MAX_P95_MS:.0f} ms, no final lost): "
        + ", ".join(f"{k} {v}" for k, v in results["streams_max_realtime_n"].items()))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
