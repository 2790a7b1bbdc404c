"""The scorer's pass with the frozen face networks run ahead: what is left at the close, in rounds.

    python bench/faces_ahead.py SESSION [--model default] [--pool 16] [--rounds 15] [--json OUT]

The default model's ONNX graph is split in two (``mmsa.model.export.splits_faces``): a faces graph (the
Face Mesh trunk and the expression network on each crop and its mirror) and the rest. The monitor runs
the faces graph on a window's crops as soon as they are cut (``[scorer] faces_ahead``: on the featurize
thread, one ONNX thread, while Whisper transcribes), so that the pass at the close runs the rest only.
Rows, each timed over the same featurized windows of SESSION (the monitor's ``faces_per_window``), one
window at a time (batch 1, as at a close), **alternating round by round** (a machine whose speed drifts
slows all alike); the median ms per window over the rounds:

* ``one_graph``: the whole model in one graph, as exported before the split (built here, in a temporary
  folder);
* ``split``: the split graphs, the faces graph run in the pass (``faces_ahead = false``; ``mmsa-eval``);
* ``split_ahead``: the pass at the close when the crops were prepared ahead (``faces_ahead = true``);
* ``ahead``: the work moved off the close, ``Scorer.prepare`` on the window's crops (one thread).

``close_speedup`` is ``one_graph`` over ``split_ahead``. The scores of the split graphs are checked
against the single graph's (largest difference printed).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from benchlib import load_avg, resolve_model, say, write_json
from stages import monitor_pool, monitor_scorer, rounds_parser


def main() -> int:
    args = rounds_parser(__doc__).parse_args()
    from mmsa.model import export, load_checkpoint
    from mmsa.model.onnxrt import MEMO_CROPS, OnnxModel

    load0 = load_avg()
    model, info = resolve_model(args.model)
    split = monitor_scorer(model)
    if not getattr(split.model, "split", False):
        print(f"faces_ahead: {info['tag']}'s graph is not split (export.splits_faces): nothing to compare", file=sys.stderr)
        return 2
    pool = monitor_pool(args.session, split.features, args.pool)
    crops = sum(len(s.faces) for s in pool if s.faces is not None)
    if crops > MEMO_CROPS:
        print(f"faces_ahead: {crops} crops in the pool, more than the {MEMO_CROPS} kept: use a smaller --pool", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mmsa-one-graph-") as tmp:
        path = Path(tmp) / "one.onnx"
        with mock.patch.object(export, "splits_faces", lambda _m: False):
            export.export_graph(load_checkpoint(model).model, path)
        one = copy.copy(split)
        one.model = OnnxModel(path)
        assert not one.model.split
        graph = split.model

        def ahead_round() -> float:
            graph._memo.clear()
            t0 = time.perf_counter()
            for s in pool:
                if s.faces is not None:
                    split.prepare(s.faces)
            return (time.perf_counter() - t0) / len(pool)

        def pass_round(scorer, prepared: bool) -> float:
            if prepared:
                ahead_round()
            else:
                graph._memo.clear()
            t0 = time.perf_counter()
            for s in pool:
                scorer.score([s])
            return (time.perf_counter() - t0) / len(pool)

        rows = {"one_graph": lambda: pass_round(one, False), "split": lambda: pass_round(split, False),
                "split_ahead": lambda: pass_round(split, True), "ahead": ahead_round}
        for fn in rows.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.rounds):
            for k, fn in rows.items():
                times[k].append(fn())
        graph._memo.clear()
        want = [r.score for r in one.score(pool)]
        got = [r.score for r in split.score(pool)]
    out: dict = {"model": info, "rounds": args.rounds, "pool": len(pool), "crops": crops,
                 "ms_per_window": {k: round(float(np.median(v)) * 1000, 2) for k, v in times.items()}}
    ms = out["ms_per_window"]
    out["close_speedup"] = round(ms["one_graph"] / ms["split_ahead"], 2)
    out["split_cost"] = round(ms["split"] / ms["one_graph"], 2)
    out["max_score_diff"] = float(np.abs(np.array(want) - np.array(got)).max())
    say(f"ms per window at batch 1: one graph {ms['one_graph']}, split {ms['split']}, split with the faces ahead "
        f"{ms['split_ahead']} (+ {ms['ahead']} ahead, one thread): the close's pass {out['close_speedup']}x faster; "
        f"scores within {out['max_score_diff']:.1e}")
    out["load_before"], out["load_after"] = load0, load_avg()
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
