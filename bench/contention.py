"""What the work at an utterance's close costs when it runs at once: Whisper beside the window's features.

    python bench/contention.py SESSION [--model auto|default|PATH] [--min-s 3] [--max-s 5.5] [--repeat 2] [--json OUT]

At an utterance's close the monitor runs two things at once (docs/monitor.md, "Latency"): Whisper's
transcription of what it heard (on its thread, from ``asr_pad_ms`` into the closing silence) and the
window's features (on another thread, from ``end_pad_ms``: the face crops of ``faces_per_window`` frames
and Whisper's encoder statistics for the audio branch). Each is timed here alone and then the two
together, the features started 36 ms after Whisper (100 - 64 ms, the pads' difference), on the
utterance windows of SESSION (a generated session folder: benchlib.make_session) between ``--min-s`` and
``--max-s`` seconds, where the latency bench's close waits for Whisper. Also each part of the features
(faces, audio) beside Whisper alone. Medians; ``slowdown`` = together / alone (noise-free enough as a
ratio within one run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import Monitor, load_avg, resolve_model, say, write_json
from stages import session_windows

LAG_S = 0.036  # the features start this long after Whisper (end_pad_ms 100 - asr_pad_ms 64)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def beside(first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """(seconds of ``first``, seconds of ``second``) with ``second`` started LAG_S after ``first`` on another thread."""
    got: dict[str, float] = {}

    def run_second() -> None:
        time.sleep(LAG_S)
        got["second"] = timed(second)

    th = threading.Thread(target=run_second)
    th.start()
    t_first = timed(first)
    th.join()
    return t_first, got["second"]


def med_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--min-s", type=float, default=3.0)
    ap.add_argument("--max-s", type=float, default=5.5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    from mmsa.media import FaceDetector, window_sample
    from mmsa.media.clip import window_faces
    from mmsa.model.features import audio_features

    load0 = load_avg()
    model, model_info = resolve_model(args.model)
    mon = Monitor.load(model)
    mon.warm_up()
    feats = mon.features
    det = FaceDetector()
    _, _, windows = session_windows(args.session)
    windows = [w for w in windows if args.min_s <= w["seconds"] <= args.max_s]
    if not windows:
        raise SystemExit(f"bench: no utterance window of {args.min_s}-{args.max_s} s in {args.session}")
    say(f"contention: {len(windows)} windows of {args.min_s}-{args.max_s} s, {args.repeat} passes ...")

    def asr(w):
        return lambda: mon.transcriber.transcribe(w["audio"])

    def features(w):
        return lambda: window_sample(w["audio"], w["frames"], None, det, feats)

    def faces(w):
        return lambda: window_faces(w["frames"], det, feats)

    def audio(w):
        return lambda: audio_features(w["audio"], feats)

    alone: dict[str, list[float]] = {k: [] for k in ("asr", "features", "faces", "audio")}
    together: dict[str, list[float]] = {k: [] for k in ("asr", "features", "asr_faces", "faces", "asr_audio", "audio")}
    for _ in range(args.repeat):
        for w in windows:
            for name, fn in (("asr", asr), ("features", features), ("faces", faces), ("audio", audio)):
                alone[name].append(timed(fn(w)))
            a, f = beside(asr(w), features(w))
            together["asr"].append(a)
            together["features"].append(f)
            for part, fn in (("faces", faces), ("audio", audio)):
                a, f = beside(asr(w), fn(w))
                together[f"asr_{part}"].append(a)
                together[part].append(f)
    a_ms = {k: med_ms(v) for k, v in alone.items()}
    t_ms = {k: med_ms(v) for k, v in together.items()}
    out = {
        "model": model_info, "runtime": mon.describe(), "session": str(args.session),
        "n_windows": len(windows), "window_s_median": round(statistics.median(w["seconds"] for w in windows), 2),
        "alone_ms": a_ms,
        "together_ms": t_ms,
        "slowdown": {
            "asr_beside_features": round(t_ms["asr"] / a_ms["asr"], 2),
            "features_beside_asr": round(t_ms["features"] / a_ms["features"], 2),
            "asr_beside_faces": round(t_ms["asr_faces"] / a_ms["asr"], 2),
            "faces_beside_asr": round(t_ms["faces"] / a_ms["faces"], 2),
            "asr_beside_audio": round(t_ms["asr_audio"] / a_ms["asr"], 2),
            "audio_beside_asr": round(t_ms["audio"] / a_ms["audio"], 2),
        },
        # both done, from Whisper's start: together against one after the other
        "both_done_ms": {"together": round(max(t_ms["asr"], LAG_S * 1000 + t_ms["features"]), 1),
                         "one_after_the_other": round(a_ms["asr"] + a_ms["features"], 1)},
        "load_before": load0, "load_after": load_avg(),
    }
    say(f"contention: Whisper {a_ms['asr']} ms alone, {t_ms['asr']} beside the features "
        f"({out['slowdown']['asr_beside_features']}x); features {a_ms['features']} -> {t_ms['features']} ms")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
