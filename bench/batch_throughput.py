"""The shared scorer fed by N streams: windows/s of the ScoreService for N = 1, 2, 4, 8, and its batching wait.

    python bench/batch_throughput.py [--model auto|default|PATH] [--n 1 2 4 8] [--waits 0 5 10 20 50]
                                     [--seconds 3] [--rounds 3] [--quick] [--json OUT]

The windows are real: the sample session's 8 utterances (its script's spans, 200 ms of padding
before each) and the MOSI clip Oz06ZWiO20M_6 as one window (its transcript from
../shared/data/mosi/label.csv; left out where absent), featurized with mmsa.media.window_sample
(text, STFT, 8 face crops), as the monitor's engine does. The service is the monitor's own
:class:`~mmsa.monitor.scoring.ScoreService` (``max_batch`` 8) on a Scorer built as ``mmsa-monitor``
builds it, in a process in the monitor's state (Whisper loaded and run once; see bench/README.md,
Contention). Each configuration is measured ``--rounds`` times (``--quick``: once), round-robin over
all of them so that a change in the machine's load falls on each; a measurement is a fresh service,
a warm-up batch of N windows, then ``--seconds`` of:

* ``closed``: N streams each submit a window as soon as their previous one is scored (one window
  in flight per stream: as fast as they can). windows/s = windows scored / wall seconds; the
  ratio to N = 1 is what batching across streams buys. Run with the default ``max_wait_ms``
  (``[scorer] max_wait_ms``, 0 since 2026-12-04; 10 before).
* the wait sweep at N = 4, ``max_wait_ms`` 0 / 5 / 10 / 20 / 50: ``closed`` as above, and
  ``open``: each of the 4 streams submits windows at random (Poisson) times, together 80 % of the
  N = 1 closed rate (seed 0), which is how utterances of several speakers arrive; windows/s there
  is what was scored / the time until the last one was (about the offered rate when it keeps up).
  Both report windows/s (the median of the rounds), the mean batch and each window's latency
  (submit -> scored) p50 / p95 over every round.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import MOSI_CLIP, SAMPLE_SESSION, Monitor, load_avg, resolve_model, say, write_json
from latency import pct

from mmsa.monitor.config import SegmenterConfig  # noqa: E402 - after benchlib, which puts the repository on the path

PAD_S = SegmenterConfig().speech_pad_ms / 1000  # the window's pad before the speech, as the monitor cuts it
SEED = 0


def mosi_text(clip: Path) -> str | None:
    labels = clip.parents[1] / "label.csv"
    video, _, n = clip.stem.rpartition("_")
    if not labels.is_file():
        return None
    with labels.open(newline="") as fh:
        return next((r["text"] for r in csv.DictReader(fh) if r["video_id"] == video and r["clip_id"] == n), None)


def featurized_windows(notes: list[str], features) -> tuple[list, list[float]]:
    """The real windows as the monitor featurizes them for a model of ``features`` (module docstring), and
    their seconds."""
    from mmsa.media import FaceDetector, load_audio, read_frames, window_sample

    det = FaceDetector()
    samples, seconds = [], []
    video = SAMPLE_SESSION / "session.mp4"
    audio, frames = load_audio(video), list(read_frames(video))
    for u in json.loads((SAMPLE_SESSION / "script.json").read_text()):
        t0, t1 = max(0.0, u["t_start"] - PAD_S), u["t_end"]
        samples.append(window_sample(audio[int(t0 * 16000) : int(t1 * 16000)],
                                     [f for t, f in frames if t0 <= t < t1], u["text"], det, features))
        seconds.append(round(t1 - t0, 2))
    text = mosi_text(MOSI_CLIP) if MOSI_CLIP.is_file() else None
    if text is None:
        notes.append(f"{MOSI_CLIP} (or its label.csv) is absent: the sample session's windows only")
    else:
        clip = load_audio(MOSI_CLIP)
        samples.append(window_sample(clip, [f for _, f in read_frames(MOSI_CLIP)], text, det, features))
        seconds.append(round(clip.size / 16000, 2))
    return samples, seconds


def figures(service, wall_s: float, lat_s: list[float], n0: tuple[int, int]) -> dict:
    scored, batches = service.n_scored - n0[0], service.n_batches - n0[1]
    return {"windows_per_s": round(scored / wall_s, 2), "windows": scored, "batches": batches, "latency_s": lat_s}


async def closed(service, samples: list, n: int, seconds: float) -> dict:
    """N streams, one window in flight each, for ``seconds``."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    stop = loop.time() + seconds

    async def stream(i: int) -> None:
        j = i
        while loop.time() < stop:
            t = time.perf_counter()
            await service.submit(samples[j % len(samples)], stream=f"s{i}")
            lat.append(time.perf_counter() - t)
            j += n

    n0 = (service.n_scored, service.n_batches)
    t0 = time.perf_counter()
    await asyncio.gather(*(stream(i) for i in range(n)))
    return figures(service, time.perf_counter() - t0, lat, n0)


async def open_loop(service, samples: list, n: int, rate: float, seconds: float) -> dict:
    """N streams submitting at Poisson times, ``rate`` windows/s together, for ``seconds``; then drained."""
    rng = np.random.default_rng(SEED)
    lat: list[float] = []
    pending: list[asyncio.Task] = []

    async def one(sample, stream: str) -> None:
        t = time.perf_counter()
        await service.submit(sample, stream=stream)
        lat.append(time.perf_counter() - t)

    async def stream(i: int, gaps: np.ndarray) -> None:
        for j, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            pending.append(asyncio.create_task(one(samples[(i + j * n) % len(samples)], f"s{i}")))

    per_stream = rate / n
    schedules = []
    for _ in range(n):
        gaps = rng.exponential(1 / per_stream, size=int(per_stream * seconds * 3) + 10)
        schedules.append(gaps[: int(np.searchsorted(np.cumsum(gaps), seconds))])
    n0 = (service.n_scored, service.n_batches)
    t0 = time.perf_counter()
    await asyncio.gather(*(stream(i, g) for i, g in enumerate(schedules)))
    await asyncio.gather(*pending)
    out = figures(service, time.perf_counter() - t0, lat, n0)
    out["offered_per_s"] = round(rate, 2)
    return out


async def measure(scorer, samples, *, n: int, wait_ms: int, seconds: float, mode: str, rate: float = 0.0) -> dict:
    """A fresh ScoreService (max_batch 8, ``wait_ms``) serving one measurement, after a warm-up at batch N."""
    from mmsa.monitor.config import ScorerConfig
    from mmsa.monitor.scoring import ScoreService

    service = ScoreService(scorer, max_batch=ScorerConfig().max_batch, max_wait_ms=wait_ms)
    serving = asyncio.create_task(service.serve())
    try:
        await asyncio.gather(*(service.submit(samples[i % len(samples)], stream=f"w{i}") for i in range(n)))
        if mode == "closed":
            return await closed(service, samples, n, seconds)
        return await open_loop(service, samples, n, rate, seconds)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


def pooled(rounds: list[dict]) -> dict:
    """One configuration over its rounds: the median windows/s, the mean batch and latency percentiles of all."""
    lat_ms = [x * 1000 for r in rounds for x in r["latency_s"]]
    out = {"windows_per_s": round(statistics.median(r["windows_per_s"] for r in rounds), 2),
           "windows_per_s_rounds": [r["windows_per_s"] for r in rounds],
           "mean_batch": round(sum(r["windows"] for r in rounds) / max(1, sum(r["batches"] for r in rounds)), 2),
           "latency_p50_ms": pct(lat_ms, 50), "latency_p95_ms": pct(lat_ms, 95),
           "windows": sum(r["windows"] for r in rounds)}
    if "offered_per_s" in rounds[0]:
        out["offered_per_s"] = rounds[0]["offered_per_s"]
    return out


async def run(scorer, samples, ns: list[int], waits: list[int], seconds: float, rounds: int) -> dict:
    """Every configuration ``rounds`` times, round-robin (a change in the machine's load falls on all of them)."""
    from mmsa.monitor.config import ScorerConfig

    default_wait = ScorerConfig().max_wait_ms
    configs = [("closed", n, default_wait) for n in ns] + [(m, 4, w) for w in waits for m in ("closed", "open")]
    got: dict[tuple, list[dict]] = {c: [] for c in configs}
    one = await measure(scorer, samples, n=1, wait_ms=default_wait, seconds=seconds, mode="closed")
    rate = 0.8 * one["windows_per_s"]  # the open loop's offered rate, fixed for every round
    if ("closed", 1, default_wait) in got:
        got[("closed", 1, default_wait)].append(one)
    for i in range(rounds):
        for mode, n, w in configs:
            if len(got[(mode, n, w)]) > i:
                continue
            r = await measure(scorer, samples, n=n, wait_ms=w, seconds=seconds, mode=mode, rate=rate)
            got[(mode, n, w)].append(r)
            say(f"batch_throughput round {i + 1} {mode} N={n} max_wait_ms={w}: {r['windows_per_s']} windows/s, "
                f"mean batch {r['windows'] / max(1, r['batches']):.2f}")
    out: dict = {"default_max_wait_ms": default_wait, "max_batch": ScorerConfig().max_batch, "rounds": rounds,
                 "closed": {str(n): pooled(got[("closed", n, default_wait)]) for n in ns}}
    base = out["closed"].get("1")
    out["ratio_to_one_stream"] = ({n: round(r["windows_per_s"] / base["windows_per_s"], 2)
                                   for n, r in out["closed"].items()} if base else {})
    sweep: dict = {"n": 4, "open_offered_per_s": round(rate, 2)}
    for mode in ("closed", "open"):
        sweep[mode] = {str(w): pooled(got[(mode, 4, w)]) for w in waits}
    closed_rate, open_rate = sweep["closed"], sweep["open"]
    sweep["best_for_open_p95_ms"] = int(min(open_rate, key=lambda w: open_rate[w]["latency_p95_ms"]))
    sweep["best_for_closed_windows_per_s"] = int(max(closed_rate, key=lambda w: closed_rate[w]["windows_per_s"]))
    sweep["best_for_open_windows_per_s"] = int(max(open_rate, key=lambda w: open_rate[w]["windows_per_s"]))
    out["wait_sweep"] = sweep
    for n, r in out["closed"].items():
        say(f"batch_throughput closed N={n}: {r['windows_per_s']} windows/s (x{out['ratio_to_one_stream'].get(n)}), "
            f"mean batch {r['mean_batch']}, p95 {r['latency_p95_ms']} ms")
    for mode in ("closed", "open"):
        for w, r in sweep[mode].items():
            say(f"batch_throughput N=4 {mode} max_wait_ms={w}: {r['windows_per_s']} windows/s, mean batch "
                f"{r['mean_batch']}, p50 / p95 {r['latency_p50_ms']} / {r['latency_p95_ms']} ms")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--waits", type=int, nargs="+", default=[0, 5, 10, 20, 50])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    ap.add_argument("--rounds", type=int, default=3, help="measurements of each configuration (the median is reported)")
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--json")
    args = ap.parse_args()
    load0 = load_avg()
    notes: list[str] = []
    model, model_info = resolve_model(args.model)
    mon = Monitor.load(model, "cpu")  # the monitor's state: Whisper loaded and run once before the scorer
    samples, window_s = featurized_windows(notes, mon.features)
    mon.warm_up()
    rounds = 1 if args.quick else args.rounds
    out = asyncio.run(run(mon.scorer, samples, args.n, args.waits, args.seconds, rounds))
    out.update(model=model_info, runtime=mon.describe(), seconds_per_measurement=args.seconds, seed=SEED, notes=notes,
               windows={"n": len(samples), "seconds": window_s,
                        "with_faces": sum(s.faces is not None for s in samples)},
               load_before=load0, load_after=load_avg())
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
