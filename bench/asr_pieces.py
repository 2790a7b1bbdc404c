"""Whisper on long utterances whole or in pieces cut at their pauses (``[asr] piece_min_s``): words and time.

    .venv/bin/python bench/asr_pieces.py [--piece-min-s 0,2.5,4] [--quick]

The utterances are those of bench/early_close.py (the latency bench's 24 generated utterances, the two
MOSI clips, RAVDESS clips; ``--quick``: 3 RAVDESS clips per actor) as the monitor's segmenter closes them
(the long wait, real Silero VAD), each with the pauses the segmenter recorded in it (``Segment.pauses``).
Per setting: the word error rate of the final windows' transcripts against the reference text, how many
utterances were cut, and the Whisper time left at the close: the last piece (the others were transcribed
ahead, at the pauses, as the monitor does) or the whole utterance. Results in docs/monitor.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from benchlib import edit_distance, say
from early_close import clip_sets, words

from mmsa.monitor.asr import Transcriber  # noqa: E402 - after benchlib (the repository's path)
from mmsa.monitor.config import AsrConfig, SegmenterConfig  # noqa: E402
from mmsa.monitor.vad import Segmenter, SileroVAD  # noqa: E402

SR = 16_000


def finals(audio: np.ndarray, vad: SileroVAD):
    vad.reset()
    seg = Segmenter(SegmenterConfig(early_close_ms=0), vad)
    out = []
    for i in range(0, audio.size, 1024):
        seg.push(audio[i : i + 1024])
        out += [s for s in seg.ready() if s.final]
    return out + [s for s in seg.flush() if s.final]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--piece-min-s", default="0,2.5,4")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sets, vad = clip_sets(args.quick), SileroVAD.for_config(SegmenterConfig())  # the monitor's VAD
    windows = {name: [(s, texts) for audio, texts in clips.values() for s in finals(audio, vad)]
               for name, clips in sets.items()}
    for value in (float(v) for v in args.piece_min_s.split(",")):
        tr = Transcriber(dataclasses.replace(AsrConfig(), piece_min_s=value), "cpu")
        for name, items in windows.items():
            n_words = errors = cut = 0
            at_close = []
            for s, texts in items:
                pauses = s.asr_pauses
                cuts = tr.cuts(s.asr_audio.size, pauses)
                if cuts:  # the pieces before the last, transcribed ahead at the pauses
                    tr.transcribe(s.asr_audio[: cuts[-1]], tuple(p for p in pauses if p < cuts[-1]))
                t = time.perf_counter()
                text = tr.transcribe(s.asr_audio, pauses).text
                at_close.append(time.perf_counter() - t)
                cut += bool(cuts)
                t0, t1 = s.start / SR, s.end / SR
                ref = [w for a, b, txt in texts if a < t1 and b > t0 for w in words(txt)]
                n_words += len(ref)
                errors += edit_distance(ref, words(text))
            say(f"piece_min_s {value:g}: {name} {len(items)} utterances, {cut} cut, WER {errors / max(n_words, 1):.3f}, "
                f"Whisper at the close {1000 * np.mean(at_close):.0f} ms mean, {1000 * max(at_close):.0f} ms max")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
