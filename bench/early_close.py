"""The end-of-utterance wait (``segmenter.early_close_ms``, ``min_silence_ms``): time saved vs utterances cut too early.

    python bench/early_close.py [--quick] [--settings 500/0,500/300,500/300/400,...] [--asr-pad-ms 64] [--json OUT]

Each setting is ``min_silence_ms/early_close_ms[/phrase_close_ms]``. Each clip's audio is pushed through the
monitor's :class:`~mmsa.monitor.vad.Segmenter` (real Silero VAD, 1024-sample chunks as a
microphone delivers them). Whenever the segmenter offers what Whisper will hear of a closing
utterance (:meth:`Segmenter.heard`: ``asr_pad_ms`` of its silence has run), Whisper transcribes it,
as the live pipeline does, and if the transcript ends a sentence the utterance may close after
``early_close_ms`` of silence (:meth:`Segmenter.allow_early_close`); if it ends a phrase without end
punctuation (``phrase_close_ms``, :func:`~mmsa.monitor.asr.ends_phrase`), after ``phrase_close_ms``; else after
``min_silence_ms``.
This assumes the transcript is ready before the short silence has passed (on this machine Whisper
takes about 100-250 ms on an utterance of up to 5 s, 400-500 ms on 9 s): an upper bound on how
often the early close happens, so also on how often it cuts.

Per setting and data set:

* ``utterances``: final windows (500/0 = the long wait of the default ``min_silence_ms``, the reference);
* ``split``: reference utterances that came out as two or more (cut too early: the speaker had
  paused after what Whisper heard as the end of a sentence, and went on); ``split_rate`` of the
  reference utterances;
* ``early``: utterances closed early (after ``early_close_ms`` or ``phrase_close_ms``);
  ``mean_wait_ms``: the silence each utterance that was not cut waited before it closed, mean.

And per data set, what hearing less of the closing silence costs in words: the word error rate
of Whisper on each reference window's audio up to ``asr_pad_ms`` after the speech (``wer_heard``,
what the monitor transcribes) and on the whole window (``wer_whole``, up to ``end_pad_ms`` after the
speech, as Whisper heard it before ``asr_pad_ms``, when that pad was 200 ms), against the reference
text (lower case, no punctuation); ``changed``: windows whose words differ.

Data: the latency bench's 24 generated utterances (espeak-ng, one per sentence, 1 s pauses), the sample
session's 8 (``examples/sample-session``: espeak-ng, some of two or three sentences with short pauses), the two
real MOSI clips (reference: their MOSI transcript), and RAVDESS speech (actors 01-20, 12 clips each, ``--quick``: 3 each; one acted
sentence per clip: "Kids/Dogs are talking/sitting by the door"). ../shared/data absent: only the
generated utterances.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
from benchlib import REPO, edit_distance, latency_session, read_script, say, write_json

from mmsa.media import load_audio
from mmsa.model.features import SAMPLE_RATE_HZ
from mmsa.monitor.asr import Transcriber
from mmsa.monitor.config import AsrConfig, SegmenterConfig
from mmsa.monitor.speculation import close_after_ms
from mmsa.monitor.vad import Segmenter, SileroVAD

DATA = REPO.parent / "shared" / "data"
BLOCK = 1024
Clip = tuple[np.ndarray, list[tuple[float, float, str]]]  # audio, [(t0, t1, reference text)]


def segment(audio: np.ndarray, cfg: SegmenterConfig, vad: SileroVAD, transcriber: Transcriber,
            cache: dict[tuple[int, int], str]) -> list[tuple[int, int, int | None]]:
    """(start, end, the silence it closed after if it closed early, else None) of each final window of ``audio``."""
    vad.reset()
    seg = Segmenter(cfg, vad)
    out: list[tuple[int, int, int | None]] = []
    granted: int | None = None  # the early close allowed for the silence now running
    for i in range(0, audio.size, BLOCK):
        before = seg.n_early
        seg.push(audio[i : i + BLOCK])
        ready = seg.ready()
        early = seg.n_early > before
        h = seg.heard()
        if cfg.early_close_ms and h is not None:
            key = (h.start, h.end)
            if key not in cache:
                cache[key] = transcriber.transcribe(h.audio).text
            after_ms = close_after_ms(cache[key], cfg)
            if after_ms is not None and seg.allow_early_close(h, after_ms):
                granted = after_ms
                early = early or seg.n_early > before
                ready += seg.ready()
        out += [(s.start, s.end, granted if early else None) for s in ready if s.final]
    out += [(s.start, s.end, None) for s in seg.flush() if s.final]
    return out


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()


def word_cost(clips: dict[str, Clip], ref: dict[str, list], cfg: SegmenterConfig, transcriber: Transcriber) -> dict:
    """Whisper on each reference window up to asr_pad_ms after the speech vs on the whole window."""
    cut = (cfg.end_pad_ms - cfg.asr_pad_ms) * SAMPLE_RATE_HZ // 1000
    errors, n_words, changed = {"heard": 0, "whole": 0}, 0, 0
    for name, (audio, texts) in clips.items():
        hyp: dict[str, list[str]] = {"heard": [], "whole": []}
        for start, end, _ in ref[name]:
            heard = words(transcriber.transcribe(audio[start : end - cut]).text)
            whole = words(transcriber.transcribe(audio[start:end]).text)
            hyp["heard"] += heard
            hyp["whole"] += whole
            changed += heard != whole
        truth = [w for t0, t1, text in texts
                 if any(s / SAMPLE_RATE_HZ < t1 and e / SAMPLE_RATE_HZ > t0 for s, e, _ in ref[name]) for w in words(text)]
        n_words += len(truth)
        for k in errors:
            errors[k] += edit_distance(truth, hyp[k])
    return {"reference_words": n_words, "wer_heard": round(errors["heard"] / max(n_words, 1), 4),
            "wer_whole": round(errors["whole"] / max(n_words, 1), 4), "changed": changed}


def evaluate(clips: dict[str, Clip], settings: list[tuple[int, ...]], vad: SileroVAD,
             transcriber: Transcriber, asr_pad_ms: int) -> dict:
    base = SegmenterConfig(asr_pad_ms=asr_pad_ms, vad_hop_ms=vad.hop * 1000 // SAMPLE_RATE_HZ)
    cache: dict[str, dict] = {name: {} for name in clips}
    ref = {name: segment(a, dataclasses.replace(base, early_close_ms=0), vad, transcriber, cache[name])
           for name, (a, _) in clips.items()}
    n_ref = sum(len(v) for v in ref.values())
    rows = {}
    for setting in settings:
        min_silence, early_ms, phrase_ms = (*setting, 0)[:3]
        cfg = dataclasses.replace(base, min_silence_ms=min_silence, early_close_ms=early_ms, phrase_close_ms=phrase_ms)
        n, split, early, waits = 0, 0, 0, []
        for name, (audio, _) in clips.items():
            got = segment(audio, cfg, vad, transcriber, cache[name])
            n += len(got)
            for r0, r1, _ in ref[name]:  # a reference utterance covered by two or more windows was cut
                inside = [g for g in got if g[0] < r1 and g[1] > r0]
                split += len(inside) >= 2
                if len(inside) == 1 and inside[0][1] == r1:  # the same utterance: how long its close waited
                    waits.append(inside[0][2] or min_silence)
            early += sum(1 for g in got if g[2])
        key = "/".join(map(str, setting))
        rows[key] = {"utterances": n, "split": split, "split_rate": round(split / max(n_ref, 1), 4),
                     "early": early, "mean_wait_ms": round(float(np.mean(waits)), 1) if waits else None}
        say(f"{key}: {n} utterances ({n_ref} with the long wait), {split} split, {early} closed early, "
            f"mean wait {rows[key]['mean_wait_ms']} ms")
    cost = word_cost(clips, ref, base, transcriber)
    say(f"words, Whisper hearing {asr_pad_ms} ms of the silence / the whole window: WER {cost['wer_heard']} / "
        f"{cost['wer_whole']}, {cost['changed']} of {n_ref} transcripts changed")
    return {"reference_utterances": n_ref, "clips": len(clips), "by_setting_ms": rows, "words": cost}


def clip_sets(quick: bool) -> dict[str, dict[str, Clip]]:
    """name -> {clip: (audio, [(t0, t1, reference text)])}."""
    sets: dict[str, dict[str, Clip]] = {}
    session = latency_session(quick=False)
    script = [(u["t_start"], u["speech_end"], u["text"]) for u in read_script(session)]
    sets["generated"] = {"latency-session": (load_audio(next(session.glob("*.mp4"))), script)}
    sample = REPO / "examples" / "sample-session"
    script = [(u["t_start"], u["speech_end"], u["text"]) for u in read_script(sample)]
    sets["sample"] = {"sample-session": (load_audio(sample / "session.mp4"), script)}
    mosi = DATA / "mosi" / "clips"
    if mosi.is_dir():
        texts = {f"{r['video_id']}_{r['clip_id']}": r["text"] for r in csv.DictReader((DATA / "mosi" / "label.csv").open())}
        sets["mosi"] = {p.name: (load_audio(p), [(0.0, math.inf, texts.get(p.stem, ""))])
                        for p in sorted(mosi.iterdir()) if p.suffix in (".wav", ".mp4")}
    labels = DATA / "ravdess" / "labels.csv"
    if labels.is_file():
        per_actor = 3 if quick else 12
        rows = list(csv.DictReader(labels.open()))
        chosen: dict[str, list[dict]] = {}
        for r in rows:
            chosen.setdefault(r.get("actor", ""), []).append(r)
        picked = [r for actor in sorted(chosen) for r in chosen[actor][:: max(1, 60 // per_actor)]]
        sets["ravdess"] = {r["path"]: (load_audio(labels.parent / r["path"]), [(0.0, math.inf, r["statement"])])
                           for r in picked if (labels.parent / r["path"]).is_file()}
    return sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--settings", default="500/0,500/200,500/250,500/300,500/400,400/0,400/200,400/250,400/300",
                    help="min_silence_ms/early_close_ms[/phrase_close_ms] (0: off)")
    ap.add_argument("--asr-pad-ms", type=int, default=SegmenterConfig().asr_pad_ms)
    ap.add_argument("--asr-prompt", help="override [asr] prompt (Whisper's initial prompt; '' for none)")
    ap.add_argument("--vad-hop-ms", type=int, default=SegmenterConfig().vad_hop_ms,
                    help="[segmenter] vad_hop_ms (16: the VAD decides every 16 ms)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings = [tuple(int(v) for v in x.split("/")) for x in args.settings.split(",")]
    transcriber, vad = Transcriber(AsrConfig(prompt=AsrConfig().prompt if args.asr_prompt is None else args.asr_prompt),
                                   "cpu"), SileroVAD.for_config(SegmenterConfig(vad_hop_ms=args.vad_hop_ms))
    out = {"settings_ms": ["/".join(map(str, x)) for x in settings], "asr_pad_ms": args.asr_pad_ms,
           "vad_hop_ms": args.vad_hop_ms, "sets": {}}
    for name, clips in clip_sets(args.quick).items():
        say(f"{name}: {len(clips)} clips")
        out["sets"][name] = evaluate(clips, settings, vad, transcriber, args.asr_pad_ms)
    print(json.dumps(out["sets"], indent=1))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
