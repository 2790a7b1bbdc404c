"""RAVDESS as the monitor hears it: a copy of its labels.csv with a ``text`` column, each clip's
Whisper transcript (the monitor's own Transcriber: Whisper tiny.en, greedy, trimmed encoder).

    .venv/bin/python examples/ravdess_asr.py ../shared/data/ravdess/labels.csv runs/ravdess_asr.csv [--actors 17 18 19 20]

The actors read one of two fixed, neutral sentences ("Kids are talking by the door", "Dogs are
sitting by the door") with an acted emotion, so the words carry no valence and the voice does:
``mmsa-eval --dataset ravdess --labels runs/ravdess_asr.csv --root ../shared/data/ravdess`` then
scores text + audio (fused and per head) against the acted valence (docs/default-model.md).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("labels", type=Path, help="RAVDESS labels.csv")
    p.add_argument("out", type=Path, help="CSV to write (the same columns + text)")
    p.add_argument("--actors", type=int, nargs="+", help="only these actors (default: all)")
    args = p.parse_args(argv)
    from mmsa.media.audio import load_audio
    from mmsa.monitor.asr import Transcriber

    asr = Transcriber()
    with args.labels.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if args.actors:
        rows = [r for r in rows if int(r["actor"]) in set(args.actors)]
    t0 = time.perf_counter()
    for i, row in enumerate(rows, 1):
        row["text"] = asr.transcribe(load_audio(args.labels.parent / row["path"])).text
        if i % 100 == 0:
            print(f"{i}/{len(rows)} clips, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{args.out}: {len(rows)} transcripts in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
