"""Real-time factor of ``--fast`` replay, and RSS growth over a long replay.

    python bench/replay.py MEDIA [MEDIA ...] [--model auto|default|PATH] [--repeat 3] [--json OUT]
    python bench/replay.py LONG_SESSION --rss [--mqtt] [--json OUT]

MEDIA is a session folder or a media file, replayed as ``mmsa-monitor --replay MEDIA --fast
--headless`` does (same wiring, in this process so model loading stays out of the timing).
The models are warmed up first (one transcription, one forward pass). real-time factor =
wall seconds of the replay (first chunk to the last event written, log closed) / seconds of
media; the median of ``--repeat`` runs. ``--rss`` samples this process's resident memory
every 0.5 s during one run and reports its growth over the second half of the run
(benchlib.rss_growth); ``--mqtt`` also
publishes every event to a local mosquitto, as a deployed monitor would.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    Broker,
    Monitor,
    RssSampler,
    load_avg,
    read_events,
    resolve_model,
    rss_growth,
    run_monitor,
    say,
    set_torch_threads,
    thin,
    write_json,
)


def replay_once(mon: Monitor, media: Path, workdir: Path, mqtt: tuple[str, int, str] | None = None,
                rss: bool = False, block_ms: int | None = None) -> dict:
    pipe, publisher = mon.pipeline(media, workdir, fast=True, mqtt=mqtt, block_ms=block_ms)
    duration_s = pipe.sources[0].media.duration_s
    sampler = RssSampler(0.5) if rss else None
    t = time.perf_counter()
    if sampler is not None:
        with sampler:
            asyncio.run(run_monitor(pipe, publisher))
    else:
        asyncio.run(run_monitor(pipe, publisher))
    wall_s = time.perf_counter() - t
    events = read_events(pipe)
    asr_ms = [e["latency_ms"]["asr"] for e in events]
    out = {
        "media_s": round(duration_s, 2),
        "wall_s": round(wall_s, 2),
        "rtf": round(wall_s / duration_s, 3),
        "n_events": len(events),
        "asr_s_total": round(sum(asr_ms) / 1000, 2),
        "asr_share": round(sum(asr_ms) / 1000 / wall_s, 3),
        "drops": pipe.drops(),
    }
    if publisher is not None:
        out["mqtt_delivered"] = publisher.n_delivered
        out["mqtt_undelivered"] = publisher.undelivered
    if sampler is not None:
        out["rss"] = rss_growth(sampler.samples, duration_s)
        out["rss_series"] = thin(sampler.samples)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("media", nargs="+", type=Path)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rss", action="store_true", help="sample RSS during one run of the first MEDIA")
    ap.add_argument("--mqtt", action="store_true", help="publish to a local mosquitto during the run")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default, as the monitor runs)")
    ap.add_argument("--block-ms", type=int, help="override [audio] block_ms (the replay's audio block)")
    ap.add_argument("--json")
    args = ap.parse_args()
    set_torch_threads(args.torch_threads)
    model, model_info = resolve_model(args.model)
    mon = Monitor.load(model)
    mon.warm_up()
    results: dict = {"model": model_info, "runtime": mon.describe(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="mmsa-bench-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir) if args.mqtt else None
        mqtt = (broker.host, broker.port, "bench/replay") if broker is not None else None
        try:
            for media in args.media:
                load0 = load_avg()
                if args.rss:
                    say(f"RSS: fast replay of {media.name} ...")
                    results["runs"][str(media)] = {**replay_once(mon, media, workdir, mqtt, rss=True, block_ms=args.block_ms),
                                                   "load_before": load0, "load_after": load_avg()}
                    break
                runs = []
                for i in range(args.repeat):
                    runs.append(replay_once(mon, media, workdir, mqtt, block_ms=args.block_ms))
                    say(f"replay {media.name} #{i + 1}: {runs[-1]['wall_s']:.1f} s for {runs[-1]['media_s']:.1f} s "
                        f"of media (RTF {runs[-1]['rtf']:.3f}, {runs[-1]['n_events']} events)")
                best = dict(runs[0])
                best["rtf"] = round(statistics.median(r["rtf"] for r in runs), 3)
                best["wall_s"] = round(statistics.median(r["wall_s"] for r in runs), 2)
                best["rtf_runs"] = [r["rtf"] for r in runs]
                results["runs"][str(media)] = {**best, "load_before": load0, "load_after": load_avg()}
        finally:
            if broker is not None:
                broker.stop()
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
