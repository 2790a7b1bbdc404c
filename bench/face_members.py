"""What an ensemble's face branches cost the scorer: all of them against the first alone, in rounds.

    python bench/face_members.py SESSION [--model default] [--members 1] [--batch 1 8] [--rounds 15] [--json OUT]

The default model's face branch is three runs kept as an ensemble (``[model] vision_members = 3``; the
frozen face networks run once, then three small branches); ``[scorer] face_members = N`` scores with
the first N (``Scorer(face_members=N)``, its own ONNX graph). Both scorers are loaded in one process
(the ONNX runtime, the monitor's threads) and score the same featurized windows of SESSION (the
monitor's ``faces_per_window``), **alternating round by round**: each round times one pass over the
pool in batches of each size with one scorer, then with the other, so that a machine whose speed
drifts (a shared or virtual one) slows both alike. Figures: the median seconds per window over the
rounds, windows/s, and the ratio (``speedup``: the fewer members over all of them). The face
scores of the two are compared too (mean and largest difference), since they differ by design.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from benchlib import load_avg, resolve_model, say, write_json
from stages import monitor_pool, monitor_scorer, rounds_parser


def main() -> int:
    ap = rounds_parser(__doc__)
    ap.add_argument("--members", type=int, default=1, help="the face branches of the cheaper scorer")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    load0 = load_avg()
    model, info = resolve_model(args.model)
    every = monitor_scorer(model)
    if not 0 < args.members < every.face_members:
        print(f"face_members: {info['tag']} has {every.face_members} face branch(es); --members {args.members} "
              "leaves nothing to compare", file=sys.stderr)
        return 2
    fewer = monitor_scorer(model, face_members=args.members)
    pool = monitor_pool(args.session, every.features, args.pool)
    scorers = {f"members{every.face_members}": every, f"members{args.members}": fewer}
    times: dict[str, dict[int, list[float]]] = {k: {n: [] for n in args.batch} for k in scorers}
    for s in scorers.values():  # warm-up
        for n in args.batch:
            s.score(pool[:n])
    for _ in range(args.rounds):
        for k, s in scorers.items():
            for n in args.batch:
                t0 = time.perf_counter()
                for i in range(0, len(pool), n):
                    s.score(pool[i : i + n])
                times[k][n].append((time.perf_counter() - t0) / len(pool))
    out: dict = {"model": info, "rounds": args.rounds, "pool": len(pool), "ms_per_window": {}, "windows_per_s": {}}
    for k in scorers:
        out["ms_per_window"][k] = {str(n): round(float(np.median(v)) * 1000, 2) for n, v in times[k].items()}
        out["windows_per_s"][k] = {str(n): round(1 / float(np.median(v)), 1) for n, v in times[k].items()}
        say(f"face branches {k}: " + " / ".join(f"batch {n} {out['windows_per_s'][k][str(n)]} windows/s"
                                                 for n in args.batch))
    a, b = (out["windows_per_s"][k] for k in scorers)
    out["speedup"] = {n: round(b[n] / a[n], 2) for n in a}
    faces = [(x.unimodal["vision"], y.unimodal["vision"]) for x, y in zip(every.score(pool), fewer.score(pool))
             if x.unimodal["vision"] is not None]
    diff = np.abs(np.array([x - y for x, y in faces])) if faces else np.zeros(1)
    out["face_score_diff"] = {"mean": round(float(diff.mean()), 3), "max": round(float(diff.max()), 3), "n": len(faces)}
    say(f"speedup of {args.members} over {every.face_members} branches: {out['speedup']}; face scores differ by "
        f"{out['face_score_diff']['mean']} on average (largest {out['face_score_diff']['max']}, {len(faces)} windows)")
    out["load_before"], out["load_after"] = load0, load_avg()
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
