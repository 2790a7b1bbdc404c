"""RAVDESS as the monitor cuts it: each clip through the monitor's segmenter (Silero VAD, 1024-sample chunks
as a microphone delivers them), its final window written as a WAV with a ``labels.csv`` beside it.

    .venv/bin/python examples/ravdess_windows.py OUT [--data ../shared/data/ravdess] [--actors 17 18 19 20]
        [--speech-pad-ms 200] [--end-pad-ms 100]
    mmsa-eval --model default --dataset ravdess --labels OUT/labels.csv --root OUT --split all --modalities audio ...

A RAVDESS file has about a second of silence around its speech; the monitor scores a window with
``speech_pad_ms`` of it before the speech and ``end_pad_ms`` after. Scoring these windows instead of the
files measures the audio branch (and Whisper) on what the live monitor feeds them (docs/performance.md,
"One CTranslate2 thread each ..."). A clip in which the segmenter finds no utterance is left out (counted);
of several, the longest is kept. The pads default to the monitor's ``[segmenter]``; the VAD's step to 32 ms, with
which ``make default-model``'s windows were cut (the monitor decides every 16 ms since 2026-12-06: ``--vad-hop-ms
16`` cuts them as it does now).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

CHUNK = 1024  # samples per push, as the microphone's 64 ms block delivers them


def main(argv: list[str] | None = None) -> int:
    from mmsa.model.features import SAMPLE_RATE_HZ
    from mmsa.monitor.config import SegmenterConfig

    seg_cfg = SegmenterConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write (WAVs and labels.csv)")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess")
    p.add_argument("--actors", type=int, nargs="+", help="only these actors (default: all)")
    p.add_argument("--speech-pad-ms", type=int, default=seg_cfg.speech_pad_ms)
    p.add_argument("--end-pad-ms", type=int, default=seg_cfg.end_pad_ms)
    p.add_argument("--vad-hop-ms", type=int, choices=(16, 32), default=32,
                   help="the VAD's step (default 32: the windows the shipped model's audio branch trained on were cut "
                        "so, before the monitor's VAD decided every 16 ms; 16: as the monitor cuts them now)")
    args = p.parse_args(argv)
    labels = args.data / "labels.csv"
    if not labels.is_file():
        print(f"ravdess_windows: missing {labels}", file=sys.stderr)
        return 2
    from mmsa.media.audio import load_audio
    from mmsa.monitor.recorder import FloatWav
    from mmsa.monitor.vad import Segmenter, SileroVAD

    try:
        cfg = SegmenterConfig(speech_pad_ms=args.speech_pad_ms, end_pad_ms=args.end_pad_ms,
                              asr_pad_ms=min(seg_cfg.asr_pad_ms, args.end_pad_ms),
                              early_close_ms=max(seg_cfg.early_close_ms, args.end_pad_ms), vad_hop_ms=args.vad_hop_ms)
    except ValueError as exc:
        print(f"ravdess_windows: {exc}", file=sys.stderr)
        return 2
    with labels.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if not args.actors or int(r["actor"]) in set(args.actors)]
    args.out.mkdir(parents=True, exist_ok=True)
    vad, kept, missed = SileroVAD.for_config(cfg), [], 0
    for row in rows:
        audio = load_audio(args.data / row["path"])
        vad.reset()
        seg = Segmenter(cfg, vad)
        windows = []
        for i in range(0, audio.size, CHUNK):
            seg.push(audio[i : i + CHUNK])
            windows += seg.ready()
        seg.push(np.zeros(SAMPLE_RATE_HZ, np.float32))  # a second of silence closes the last utterance
        windows = [w for w in windows + seg.flush() if w.final]
        if not windows:
            missed += 1
            continue
        name = Path(row["path"]).stem + ".wav"
        wav = FloatWav(args.out / name)  # the window's samples exactly, as a session's audio.wav
        wav.write(max(windows, key=lambda w: w.audio.size).audio)
        wav.close()
        kept.append({**row, "path": name})
    if not kept:
        print("ravdess_windows: the segmenter found no utterance in any clip", file=sys.stderr)
        return 1
    with (args.out / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(kept[0]))
        w.writeheader()
        w.writerows(kept)
    print(f"{args.out}: {len(kept)} windows of {len(rows)} clips ({missed} without an utterance); "
          f"pads {cfg.speech_pad_ms} ms before the speech, {cfg.end_pad_ms} ms after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
