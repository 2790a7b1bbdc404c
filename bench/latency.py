"""End-to-end latency: the end of an utterance's speech -> its ScoreEvent at an MQTT subscriber.

    python bench/latency.py SESSION [--model auto|default|PATH] [--json OUT]

SESSION is a generated session folder (benchlib.make_session: script.json gives each
sentence's ``speech_end``). It is replayed paced (in real time, as a live microphone delivers
audio: each ``[audio] block_ms`` block is released when its media time comes) through the monitor's wiring
with MQTT on, to a mosquitto started on a free 127.0.0.1 port. ``mosquitto_sub`` (a separate
process) stamps each message's arrival (``-F %U``: Unix time, ns).

Latency of an utterance = arrival of its event - the wall time at which the replay reached
the utterance's ``speech_end`` (the replay's origin, i.e. the monotonic time of media time 0,
plus ``speech_end``, mapped to Unix time). An utterance's event is the last event whose window
overlaps its speech (an utterance of <= 9.3 s of speech has exactly one). The models are warmed
up before the replay starts, as they are in a monitor that has been running for a while.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
from benchlib import (
    Broker,
    Monitor,
    load_avg,
    read_events,
    read_script,
    resolve_model,
    run_monitor,
    say,
    set_torch_threads,
    wall_offset,
    write_json,
)


def wait_subscribed(host: str, port: int, prefix: str, out: Path, timeout_s: float = 10.0) -> None:
    """Publish probes until the subscriber has written one (mosquitto_sub has no 'subscribed' signal)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-t", f"{prefix}/probe", "-m", "ready"],
                       check=True, timeout=5)
        time.sleep(0.1)
        if f" {prefix}/probe ready" in out.read_text():
            return
    raise RuntimeError("mosquitto_sub did not receive the probe")


def parse_arrivals(out: Path, topic: str) -> list[tuple[float, dict]]:
    """(Unix arrival time, event) of each message on ``topic``."""
    arrivals = []
    for line in out.read_text().splitlines():
        stamp, _, rest = line.partition(" ")
        t, _, payload = rest.partition(" ")
        if t == topic:
            arrivals.append((float(stamp), json.loads(payload)))
    return arrivals


def iso_to_unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default, as the monitor runs)")
    ap.add_argument("--no-speculative", action="store_true",
                    help="segmenter.speculative = false (process each window only once its utterance closed)")
    ap.add_argument("--ct2-threads", type=int,
                    help="CTranslate2 threads of Whisper and of the audio branch's encoder (0: CTranslate2's default, "
                         "as before 2026-12-03; default: the monitor's, 1 each)")
    ap.add_argument("--word-timestamps", action="store_true",
                    help="[asr] word_timestamps = true (Whisper times each word, as before 2026-12-03)")
    ap.add_argument("--before", action="store_true",
                    help="the monitor before issue #14: the torch scorer, no adaptive close (early_close_ms 0), "
                         "Whisper started 200 ms into the silence, on the whole window (end_pad_ms and asr_pad_ms "
                         "200), CTranslate2's default threads, words timed, 8 faces per window")
    ap.add_argument("--asr-pad-ms", type=int, help="override [segmenter] asr_pad_ms (200: as before this setting)")
    ap.add_argument("--early-close-ms", type=int, help="override [segmenter] early_close_ms")
    ap.add_argument("--min-silence-ms", type=int, help="override [segmenter] min_silence_ms")
    ap.add_argument("--phrase-close-ms", type=int, help="override [segmenter] phrase_close_ms (0: off)")
    ap.add_argument("--end-pad-ms", type=int, help="override [segmenter] end_pad_ms (the window's closing silence)")
    ap.add_argument("--block-ms", type=int, help="override [audio] block_ms (the microphone's block)")
    ap.add_argument("--vad-hop-ms", type=int, help="override [segmenter] vad_hop_ms (16: the VAD decides every 16 ms)")
    ap.add_argument("--no-partials", action="store_true", help="[segmenter] partials = false")
    ap.add_argument("--partial-asr-ms", type=int,
                    help="override [segmenter] partial_asr_ms (0: open-utterance partials whatever Whisper's speed, "
                         "as before 2026-12-05 evening)")
    ap.add_argument("--faces-per-window", type=int,
                    help="override [scorer] faces_per_window (8: as before this setting; --before implies 8)")
    ap.add_argument("--asr-margin-s", type=float, help="override [asr] trim_margin_s (5: as before 2026-12-04)")
    ap.add_argument("--segment-timestamps", action="store_true",
                    help="[asr] timestamps = true (Whisper's segment timestamps, as before 2026-12-04)")
    ap.add_argument("--asr-prompt", help="override [asr] prompt (Whisper's initial prompt; '' for none)")
    ap.add_argument("--asr-piece-min-s", type=float, help="override [asr] piece_min_s (0: whole utterances)")
    ap.add_argument("--scorer-threads", type=int,
                    help="the ONNX scorer's threads (1: as the monitor ran before 2026-12-05, when loading Whisper "
                         "left it torch's one thread; default: one per CPU)")
    ap.add_argument("--no-faces-ahead", action="store_true",
                    help="[scorer] faces_ahead = false (the frozen face networks run when the window is scored, "
                         "as before 2026-12-05 evening)")
    ap.add_argument("--json")
    args = ap.parse_args()
    set_torch_threads(args.torch_threads)
    if shutil.which("mosquitto_sub") is None:
        raise SystemExit("bench: the latency benchmark needs mosquitto_sub (apt-get install mosquitto-clients)")
    script = read_script(args.session)
    model, model_info = resolve_model(args.model)
    mon = Monitor.load(model, runtime="torch" if args.before else None,
                       cpu_threads=0 if args.before else args.ct2_threads,
                       word_timestamps=True if args.before or args.word_timestamps else None,
                       timestamps=True if args.before or args.segment_timestamps else None,
                       trim_margin_s=5.0 if args.before else args.asr_margin_s,
                       prompt="" if args.before else args.asr_prompt,
                       piece_min_s=0.0 if args.before else args.asr_piece_min_s,
                       faces_per_window=8 if args.before else args.faces_per_window)
    if args.scorer_threads and mon.scorer.runtime == "onnx":
        from mmsa.model.onnxrt import OnnxModel

        mon.scorer.model = OnnxModel(mon.scorer.model.path, args.scorer_threads)
    mon.faces_ahead = not args.no_faces_ahead
    mon.warm_up()
    load0 = load_avg()
    with tempfile.TemporaryDirectory(prefix="mmsa-bench-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir)
        prefix = f"bench/{uuid.uuid4().hex[:8]}"
        out = workdir / "arrivals.txt"
        with out.open("w") as fh:
            sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                                    "-t", f"{prefix}/#", "-F", "%U %t %p"], stdout=fh)
        try:
            wait_subscribed(broker.host, broker.port, prefix, out)
            pipe, publisher = mon.pipeline(args.session, workdir, fast=False, mqtt=(broker.host, broker.port, prefix),
                                           speculative=False if args.no_speculative else None,
                                           early_close_ms=0 if args.before else args.early_close_ms,
                                           asr_pad_ms=200 if args.before else args.asr_pad_ms,
                                           min_silence_ms=args.min_silence_ms, phrase_close_ms=args.phrase_close_ms,
                                           end_pad_ms=200 if args.before else args.end_pad_ms, block_ms=args.block_ms,
                                           partials=False if args.no_partials else None,
                                           partial_asr_ms=args.partial_asr_ms, vad_hop_ms=args.vad_hop_ms)
            replay = pipe.sources[0]
            say(f"latency: paced replay of {args.session.name} ({replay.media.duration_s:.0f} s, "
                f"{len(script)} utterances) ...")
            asyncio.run(run_monitor(pipe, publisher))
            offset = wall_offset()
            # the replay's clock: the monotonic time at which media time audio_t0 was due
            # (media time t is due at origin + t - audio_t0)
            assert replay.origin is not None, "a paced replay fixes its origin"
            origin_unix = replay.origin + offset - replay.media.audio_t0
            events = read_events(pipe)
            deadline = time.monotonic() + 5
            while len(parse_arrivals(out, f"{prefix}/score")) < len(events) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sub.terminate()
            sub.wait(5)
            broker.stop()
        arrivals = parse_arrivals(out, f"{prefix}/score")
    load1 = load_avg()

    pad_s = pipe.cfg.segmenter.end_pad_ms / 1000
    rows = []
    for u in script:
        s0, s1 = u["t_start"], u["speech_end"]
        mine = [(t, e) for t, e in arrivals if min(e["t_end"], s1) - max(e["t_start"], s0) > 0]
        if not mine:
            rows.append({"speech_s": round(s1 - s0, 2), "event": False})
            continue
        t_arr, ev = max(mine, key=lambda x: x[1]["t_end"])
        due = origin_unix + s1
        published = iso_to_unix(ev["wall_time"])
        rows.append({
            "speech_s": round(s1 - s0, 2),
            "event": True,
            "n_windows": len(mine),
            "latency_ms": round((t_arr - due) * 1000, 1),
            # where the time goes: speech end -> the block that closed the window arrived (VAD: 500 ms of
            # silence, block size); that block -> event published (ASR, features, model, log: latency_ms.total);
            # published -> received (outbox, broker, subscriber; wall_time has 1 ms resolution)
            "close_ms": round((published - ev["latency_ms"]["total"] / 1000 - due) * 1000, 1),
            "pipeline_ms": ev["latency_ms"]["total"],
            "asr_ms": ev["latency_ms"]["asr"],
            "model_ms": ev["latency_ms"]["model"],
            "mqtt_ms": round((t_arr - published) * 1000, 1),
            "vad_end_lag_ms": round((ev["t_end"] - pad_s - s1) * 1000, 1),
        })
    got = [r for r in rows if r["event"]]
    lat = [r["latency_ms"] for r in got]
    matched = sum(r.get("n_windows", 0) for r in got)
    results = {
        "model": model_info,
        "session": str(args.session),
        "media_s": round(replay.media.duration_s, 1),
        "n_utterances": len(script),
        "n_scored": len(got),
        "n_events": len(arrivals),
        "n_events_unmatched": len(arrivals) - matched,
        "speech_s": {"min": min(r["speech_s"] for r in rows), "median": float(np.median([r["speech_s"] for r in rows])),
                     "max": max(r["speech_s"] for r in rows)},
        "latency_p50_ms": pct(lat, 50),
        "latency_p95_ms": pct(lat, 95),
        "latency_max_ms": max(lat) if lat else None,
        "components_p50_ms": {k: pct([r[k] for r in got], 50)
                              for k in ("close_ms", "pipeline_ms", "asr_ms", "model_ms", "mqtt_ms", "vad_end_lag_ms")},
        "components_p95_ms": {k: pct([r[k] for r in got], 95)
                              for k in ("close_ms", "pipeline_ms", "asr_ms", "model_ms", "mqtt_ms")},
        "speculative": pipe.speculative,
        "early_close_ms": pipe.cfg.segmenter.early_close_ms,
        "asr_pad_ms": pipe.cfg.segmenter.asr_pad_ms,
        "min_silence_ms": pipe.cfg.segmenter.min_silence_ms,
        "phrase_close_ms": pipe.cfg.segmenter.phrase_close_ms,
        "end_pad_ms": pipe.cfg.segmenter.end_pad_ms,
        "block_ms": pipe.cfg.audio.block_ms,
        "vad_hop_ms": pipe.cfg.segmenter.vad_hop_ms,
        "partials": pipe.partials, "partial_asr_ms": pipe.cfg.segmenter.partial_asr_ms,
        "speculation": dataclasses.asdict(pipe.speculation),
        "utterances": rows,
        "runtime": mon.describe(),
        "load_before": load0,
        "load_after": load1,
    }
    # an event cannot reach the subscriber before the speech it scores has been played: if one does,
    # the replay's clock origin was misread and every figure of this run is wrong (seen once, not explained)
    early = sum(1 for r in got if r["close_ms"] < 0)
    if early:
        results["invalid"] = f"{early} utterances closed before their speech ended: clock origin wrong, rerun"
    say(f"latency: {len(got)}/{len(script)} utterances scored, p50 {results['latency_p50_ms']} ms, "
        f"p95 {results['latency_p95_ms']} ms" + (f" -- INVALID: {results['invalid']}" if early else ""))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
