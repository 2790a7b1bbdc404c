"""The fleet view's costs: how fast ``mmsa-monitor watch`` starts, and what a stream costs the watcher.

    .venv/bin/python bench/fleet.py [--streams 50] [--events 200]

Prints (never asserts): the start-up time of ``mmsa-monitor watch --help`` against ``mmsa-monitor
--help`` (fresh interpreters, median of 5: watch imports no torch), then FleetModel's rate on
ScoreEvent payloads as the publisher sends them and the memory its per-stream history holds (tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc

from mmsa.monitor.events import ModalityScore, ScoreEvent
from mmsa.monitor.fleet import STREAM_HISTORY_MAX, FleetModel


def startup_s(*args: str, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmsa.monitor.cli", *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def payloads(n: int) -> list[bytes]:
    """``n`` ScoreEvents of one session as the publisher sends them (~40 characters of text each)."""
    mods = {"text": ModalityScore(True, 1.2), "audio": ModalityScore(True, 0.4), "vision": ModalityScore(True, 0.9, 24)}
    return [
        ScoreEvent(session="bench", seq=i, t_start=3.0 * i, t_end=3.0 * i + 2.5, text="the special effects were amazing",
                   score=1.1, modalities=mods, latency_ms={"asr": 300.0, "model": 20.0, "total": 420.0},
                   model="default@bench", confidence=0.8).to_json().encode()
        for i in range(n)
    ]


def feed(n_streams: int, msgs: list[bytes]) -> FleetModel:
    model = FleetModel()
    for s in range(n_streams):
        for p in msgs:
            model.apply(f"mmsa-monitor/node{s}/score", p)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--events", type=int, default=STREAM_HISTORY_MAX)
    args = ap.parse_args()
    print(f"start-up, median of 5: mmsa-monitor watch --help {startup_s('watch', '--help'):.2f} s, "
          f"mmsa-monitor --help {startup_s('--help'):.2f} s")
    msgs = payloads(args.events)
    t0 = time.perf_counter()
    feed(args.streams, msgs)
    dt = time.perf_counter() - t0
    tracemalloc.start()  # a second pass, since tracing slows the first one down
    model = feed(args.streams, msgs)
    held, _ = tracemalloc.get_traced_memory()
    assert len(model.streams) == args.streams
    n = args.streams * args.events
    print(json.dumps({"streams": args.streams, "events_per_stream": args.events, "messages_per_s": round(n / dt),
                      "history_mb": round(held / 1e6, 1), "bytes_per_event": round(held / n)}))


if __name__ == "__main__":
    main()
