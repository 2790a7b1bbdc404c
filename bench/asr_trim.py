"""Whisper word accuracy and time: faster-whisper's padded 30 s encoder input vs the trimmed one.

    .venv/bin/python bench/asr_trim.py [--n-espeak 40] [--n-ravdess 40] [--beam 1] [--margins 3,5,8]
        [--word-timestamps off,on] [--timestamps off,on] [--threads 1] [--no-padded] [--prompts "|Hello. ..."]

Corpus: espeak-ng speech of VADER movie-review sentences (synthetic voice, varied words),
RAVDESS clips (real actors, two fixed sentences, eight emotions) and the two MOSI clips,
all from ../shared/data. Prints word error rate, word recall and seconds per utterance for
both paths, with Whisper timing each word or not (``[asr] word_timestamps``). Results are in
docs/monitor.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import edit_distance  # noqa: E402 - bench/ is on the path of a script run from it

from mmsa.media import load_audio  # noqa: E402
from mmsa.model.features import normalize_text  # noqa: E402
from mmsa.monitor.asr import Transcriber  # noqa: E402
from mmsa.monitor.config import AsrConfig  # noqa: E402
from tests.conftest import find_data_dir  # noqa: E402


def words(text: str) -> list[str]:
    return normalize_text(text).split()


def recall(ref: list[str], hyp: list[str]) -> float:
    have = Counter(hyp)
    hit = 0
    for w in ref:
        if have[w] > 0:
            have[w] -= 1
            hit += 1
    return hit / max(len(ref), 1)


def corpus(data: Path, n_espeak: int, n_ravdess: int, tmp: Path) -> list[tuple[str, str, np.ndarray]]:
    items: list[tuple[str, str, np.ndarray]] = []
    rows = [r.split("\t") for r in (data / "vader" / "movieReviewSnippets_GroundTruth.txt").read_text(
        encoding="utf-8", errors="replace").splitlines() if r.strip()]
    sentences = [r[2] for r in rows if len(r) == 3 and 6 <= len(r[2].split()) <= 18 and r[2].isascii()]
    for i, text in enumerate(sentences[:: max(1, len(sentences) // max(n_espeak, 1))][:n_espeak]):
        wav = tmp / f"e{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        items.append(("espeak", text, load_audio(wav)))
    with (data / "ravdess" / "labels.csv").open() as fh:
        rav = list(csv.DictReader(fh))
    for r in rav[:: max(1, len(rav) // max(n_ravdess, 1))][:n_ravdess]:
        items.append(("ravdess", r["statement"], load_audio(data / "ravdess" / r["path"])))
    with (data / "mosi" / "label.csv").open() as fh:
        mosi = {f"{r['video_id']}_{r['clip_id']}": r["text"] for r in csv.DictReader(fh)}
    for clip in sorted((data / "mosi" / "clips").iterdir()):
        if clip.stem in mosi:
            items.append(("mosi", mosi[clip.stem], load_audio(clip)))
    return items


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-espeak", type=int, default=40)
    ap.add_argument("--n-ravdess", type=int, default=40)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--margins", default="1,3,5,8", help="trim margins to try, seconds")
    ap.add_argument("--word-timestamps", default="off", help="on, off or both (on,off): [asr] word_timestamps")
    ap.add_argument("--no-padded", action="store_true", help="skip faster-whisper's padded 30 s input (slow)")
    ap.add_argument("--timestamps", default="off", help="on, off or both (on,off): [asr] timestamps")
    ap.add_argument("--threads", type=int, default=AsrConfig().cpu_threads, help="[asr] cpu_threads")
    ap.add_argument("--prompts", default=AsrConfig().prompt,
                    help="[asr] prompt values to try, separated by | (an empty one: no prompt)")
    args = ap.parse_args()
    data = find_data_dir()
    if data is None:
        print("needs ../shared/data (or MMSA_DATA)", file=sys.stderr)
        return 2
    asr = Transcriber(AsrConfig(beam_size=args.beam, cpu_threads=args.threads), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        items = corpus(data, args.n_espeak, args.n_ravdess, Path(tmp))
    asr.transcribe(items[0][2])  # warm-up
    print(f"{len(items)} utterances, {sum(len(a) for _, _, a in items) / 16000:.0f} s of audio, beam {args.beam}, "
          f"{asr.device} {asr.compute_type}, {args.threads} thread(s)")
    timed = [w.strip() == "on" for w in args.word_timestamps.split(",")]
    stamps = [w.strip() == "on" for w in args.timestamps.split(",")]
    prompts = args.prompts.split("|")
    for margin, words_timed, stamped, prompt in (
            (m, t, s, p) for m in [None] * (not args.no_padded) + [float(m) for m in args.margins.split(",")]
            for t in timed for s in stamps for p in prompts):
        asr.cfg = dataclasses.replace(asr.cfg, prompt=prompt)
        asr.word_timestamps = words_timed
        asr.timestamps = stamped
        asr.set_trim(margin is not None)
        if margin is not None:
            asr.model.trim_margin_frames = int(round(margin * 100))
        per: dict[str, list[tuple[int, int, float, float]]] = {}
        for kind, ref_text, audio in items:
            t = time.perf_counter()
            hyp = words(asr.transcribe(audio).text)
            dt = time.perf_counter() - t
            ref = words(ref_text)
            per.setdefault(kind, []).append((edit_distance(ref, hyp), len(ref), recall(ref, hyp), dt))
            per.setdefault("all", []).append(per[kind][-1])
        name = ("padded (30 s)   " if margin is None else f"trimmed +{margin:4.1f} s") + (
            ", words timed  " if asr.word_timestamps else ", words untimed") + (
            ", segments timed  " if asr.timestamps else ", segments untimed") + (f", prompt {prompt!r}" if prompt else "")
        for kind, rows in sorted(per.items()):
            errs, n, rec, dt = (np.array(x, dtype=float) for x in zip(*rows))
            print(f"{name} {kind:8s} n={len(rows):3d}  WER {errs.sum() / n.sum():.3f}  recall {rec.mean():.3f}  "
                  f"{dt.mean():.3f} s/utterance (median {np.median(dt):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
