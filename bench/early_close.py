"""The adaptive end-of-utterance wait (``segmenter.early_close_ms``): time saved vs utterances cut too early.

    python bench/early_close.py [--quick] [--settings 0,200,250,300,350,400] [--json OUT]

Each clip's audio is pushed through the monitor's :class:`~mmsa.monitor.vad.Segmenter` (real Silero
VAD, 1024-sample chunks as a microphone delivers them). Whenever the segmenter offers a tentative
window (the closing silence of an utterance has run ``speech_pad_ms``), Whisper transcribes it,
as the speculative run of the live pipeline does, and if the transcript ends a sentence the
utterance may close after ``early_close_ms`` of silence (:meth:`Segmenter.allow_early_close`).
This assumes the speculative run is done before the short silence has passed (on this machine
Whisper takes about 80-150 ms per utterance; the silence runs 200 ms before the tentative window
exists): an upper bound on how often the early close happens, so also on how often it cuts.

Per setting and data set:

* ``utterances``: final windows (0 = the long wait, ``min_silence_ms`` = 500 ms, the reference);
* ``split``: reference utterances that came out as two or more (cut too early: the speaker had
  paused after what Whisper heard as the end of a sentence, and went on); ``split_rate`` of the
  reference utterances;
* ``early``: utterances closed early, and ``saved_ms``: the mean time by which they closed earlier
  than the long wait would have (500 - early_close_ms for each, when the silence ran on).

Data: the latency bench's 24 generated utterances (espeak-ng, one per sentence, 1 s pauses), the two
real MOSI clips, and RAVDESS speech (actors 01-20, 12 clips each, ``--quick``: 3 each; one acted
sentence per clip: "Kids/Dogs are talking/sitting by the door"). ../shared/data absent: only the
generated utterances.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from benchlib import REPO, latency_session, say, write_json

from mmsa.media import load_audio
from mmsa.monitor.asr import Transcriber
from mmsa.monitor.config import AsrConfig, SegmenterConfig
from mmsa.monitor.speculation import ends_sentence
from mmsa.monitor.vad import Segmenter, SileroVAD

DATA = REPO.parent / "shared" / "data"
BLOCK = 1024


def segment(audio: np.ndarray, cfg: SegmenterConfig, vad: SileroVAD, transcriber: Transcriber,
            cache: dict[tuple[int, int], bool]) -> list[tuple[int, int, bool]]:
    """(start, end, closed early) of each final window of ``audio``."""
    vad.reset()
    seg = Segmenter(cfg, vad)
    out: list[tuple[int, int, bool]] = []
    for i in range(0, audio.size, BLOCK):
        before = seg.n_early
        seg.push(audio[i : i + BLOCK])
        ready = seg.ready()
        early = seg.n_early > before
        t = seg.tentative()
        if cfg.early_close_ms and t is not None:
            key = (t.start, t.end)
            if key not in cache:
                cache[key] = ends_sentence(transcriber.transcribe(t.audio).text)
            if cache[key]:
                seg.allow_early_close(t)
                early = early or seg.n_early > before
                ready += seg.ready()
        out += [(s.start, s.end, early) for s in ready if s.final]
    out += [(s.start, s.end, False) for s in seg.flush() if s.final]
    return out


def evaluate(clips: dict[str, np.ndarray], settings: list[int], vad: SileroVAD, transcriber: Transcriber) -> dict:
    base = SegmenterConfig()
    cache: dict[str, dict] = {name: {} for name in clips}
    ref = {name: segment(a, dataclasses.replace(base, early_close_ms=0), vad, transcriber, cache[name])
           for name, a in clips.items()}
    n_ref = sum(len(v) for v in ref.values())
    rows = {}
    for ms in settings:
        cfg = dataclasses.replace(base, early_close_ms=ms)
        n, split, early, saved = 0, 0, 0, []
        for name, audio in clips.items():
            got = segment(audio, cfg, vad, transcriber, cache[name]) if ms else ref[name]
            n += len(got)
            for r0, r1, _ in ref[name]:  # a reference utterance covered by two or more windows was cut
                inside = [g for g in got if g[0] < r1 and g[1] > r0]
                split += len(inside) >= 2
            for g0, g1, was_early in got:
                if was_early:
                    early += 1
                    later = [r1 for r0, r1, _ in ref[name] if r0 <= g0 < r1]
                    if later and later[0] >= g1:
                        saved.append(1000 * (base.min_silence_ms - ms) / 1000)
        rows[str(ms)] = {"utterances": n, "split": split, "split_rate": round(split / max(n_ref, 1), 4),
                         "early": early, "saved_ms": round(float(np.mean(saved)), 1) if saved else 0.0}
        say(f"early_close_ms={ms}: {n} utterances ({n_ref} with the long wait), {split} split, {early} closed early")
    return {"reference_utterances": n_ref, "clips": len(clips), "by_setting_ms": rows}


def clip_sets(quick: bool) -> dict[str, dict[str, np.ndarray]]:
    sets: dict[str, dict[str, np.ndarray]] = {}
    session = latency_session(quick=False)
    sets["generated"] = {"latency-session": load_audio(next(session.glob("*.mp4")))}
    mosi = DATA / "mosi" / "clips"
    if mosi.is_dir():
        sets["mosi"] = {p.name: load_audio(p) for p in sorted(mosi.iterdir()) if p.suffix in (".wav", ".mp4")}
    labels = DATA / "ravdess" / "labels.csv"
    if labels.is_file():
        per_actor = 3 if quick else 12
        rows = list(csv.DictReader(labels.open()))
        chosen: dict[str, list[dict]] = {}
        for r in rows:
            chosen.setdefault(r.get("actor", ""), []).append(r)
        paths = [labels.parent / r["path"] for actor in sorted(chosen) for r in chosen[actor][:: max(1, 60 // per_actor)]]
        sets["ravdess"] = {p.name: load_audio(p) for p in paths if p.is_file()}
    return sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--settings", default="0,200,250,300,350,400")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings = [int(x) for x in args.settings.split(",")]
    transcriber, vad = Transcriber(AsrConfig(), "cpu"), SileroVAD()
    out = {"settings_ms": settings, "sets": {}}
    for name, clips in clip_sets(args.quick).items():
        say(f"{name}: {len(clips)} clips")
        out["sets"][name] = evaluate(clips, settings, vad, transcriber)
    print(json.dumps(out["sets"], indent=1))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
