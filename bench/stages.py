"""Per-stage cost of the monitor, each stage timed alone on real windows, so the slowest is visible.

    python bench/stages.py SESSION [--model auto|default|PATH] [--mosi CLIP] [--repeat 3] [--json OUT]

SESSION is a generated session folder (its script.json gives the utterances). Every stage is
the monitor's own code, called the way the pipeline calls it:

* ``decode``: ffmpeg audio decoding (ms per media second) and OpenCV frame decoding (ms per frame)
* ``vad``: the segmenter with the streaming Silero VAD as ``[segmenter] vad_hop_ms`` makes it, fed 64 ms blocks (ms per
  second of audio; ``vad_per_audio_s_by_hop``: with decisions every 16 and every 32 ms)
* ``face``: FaceDetector.detect on one frame (session frames 320x240; the MOSI clip's 480x360)
* ``featurize``: mmsa.media.window_sample of an utterance window (STFT + faces of the monitor's ``[scorer] faces_per_window`` frames, 4)
* ``asr``: Transcriber.transcribe of an utterance window (ms per utterance and per audio second)
* ``scorer``: Scorer.score of a batch of 1 and of 8 featurized windows (collate + forward)

Utterance windows are what the segmenter cuts: 200 ms before the speech to 200 ms after it.
``cold_ms`` is the first call of each model in a fresh process (not in the medians).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import (
    MOSI_CLIP,
    Monitor,
    load_avg,
    median_time,
    read_script,
    resolve_model,
    say,
    write_json,
)

from mmsa.monitor.config import SegmenterConfig  # noqa: E402 - after benchlib, which puts the repository on the path

SEG = SegmenterConfig()
PAD_S, END_PAD_S = SEG.speech_pad_ms / 1000, SEG.end_pad_ms / 1000  # the window's pads, as the monitor cuts it


def session_windows(folder: Path) -> tuple[np.ndarray, list[tuple[float, np.ndarray]], list[dict]]:
    """(audio, [(t, frame)], windows) of a session; a window = {audio, frames, text, seconds}."""
    from mmsa.media import load_audio, read_frames

    audio = load_audio(folder / "session.mp4")
    frames = list(read_frames(folder / "session.mp4"))
    windows = []
    for u in read_script(folder):
        t0, t1 = max(0.0, u["t_start"] - PAD_S), u["speech_end"] + END_PAD_S
        windows.append({"audio": audio[int(t0 * 16000) : int(t1 * 16000)],
                        "frames": [f for t, f in frames if t0 <= t < t1], "text": u["text"], "seconds": t1 - t0})
    return audio, frames, windows



def rounds_parser(doc: str):
    """The arguments of the benches that time scorers in alternating rounds on a session's pool of windows
    (face_members.py, faces_ahead.py); each adds its own."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--pool", type=int, default=16, help="windows per pass (the session's first, cycled)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json")
    return ap


def monitor_scorer(model: str, **kw):
    """The fusion scorer as the monitor loads it on the CPU (``[scorer]`` defaults; ``kw``: Scorer's other keywords)."""
    from mmsa.model import load_checkpoint
    from mmsa.monitor.config import ScorerConfig
    from mmsa.monitor.scorer import Scorer

    sc = ScorerConfig()
    return Scorer(load_checkpoint(model), "cpu", runtime=sc.runtime, graph_cache=sc.graph_cache or None, **kw)


def monitor_pool(folder: Path, features, n: int) -> list:
    """A session's windows featurized as the monitor does (``[scorer] faces_per_window`` frames searched for
    faces; ``features``: the scorer's), the first ones cycled to ``n``: the pool the scorer benches score."""
    from mmsa.media import FaceDetector, window_sample
    from mmsa.monitor.config import ScorerConfig
    from mmsa.monitor.engine import window_features

    _, _, windows = session_windows(folder)
    det = FaceDetector()
    feats = window_features(features, ScorerConfig().faces_per_window or None)
    samples = [window_sample(w["audio"], w["frames"], w["text"], det, feats) for w in windows]
    return (samples * (n // len(samples) + 1))[:n]

def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def pct_ms(values_s: list[float], q: float) -> float:
    return round(float(np.percentile(values_s, q)) * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--mosi", type=Path, default=MOSI_CLIP)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--faces-per-window", type=int, help="override [scorer] faces_per_window (8: as before it was 4)")
    ap.add_argument("--json")
    args = ap.parse_args()
    from mmsa.media import FaceDetector, load_audio, read_frames, window_sample
    from mmsa.model.features import audio_features
    from mmsa.monitor.config import SegmenterConfig
    from mmsa.monitor.vad import Segmenter, SileroVAD

    load0 = load_avg()
    model, model_info = resolve_model(args.model)
    mon = Monitor.load(model, faces_per_window=args.faces_per_window)
    audio, frames, windows = session_windows(args.session)
    media_s = audio.size / 16000
    out: dict = {"model": model_info, "runtime": mon.describe(), "session": str(args.session), "n_windows": len(windows),
                 "window_s_median": round(statistics.median(w["seconds"] for w in windows), 2)}

    # cold: the first call of each model in this process
    t = time.perf_counter()
    mon.transcriber.transcribe(windows[0]["audio"])
    cold_asr = time.perf_counter() - t
    det = FaceDetector()
    feats = mon.features
    sample0 = window_sample(windows[0]["audio"], windows[0]["frames"], windows[0]["text"], det, feats)
    t = time.perf_counter()
    mon.scorer.score([sample0])
    out["cold_ms"] = {"asr_first_utterance": ms(cold_asr), "scorer_first_batch": ms(time.perf_counter() - t)}

    say("stages: decoding, VAD, faces ...")
    dec_s, _ = median_time(lambda: load_audio(args.session / "session.mp4"), args.repeat)
    t = time.perf_counter()
    n_frames = sum(1 for _ in read_frames(args.session / "session.mp4"))
    frame_dec_s = (time.perf_counter() - t) / max(n_frames, 1)

    block = 1024

    def vad_pass(cfg: SegmenterConfig, vad: SileroVAD) -> None:
        vad.reset()
        seg = Segmenter(cfg, vad)
        for i in range(0, audio.size, block):
            seg.push(audio[i : i + block])
            seg.ready()
        seg.flush()

    vad_by_hop = {}
    for hop_ms in (16, 32):  # the ONNX session made outside the timing
        cfg = SegmenterConfig(vad_hop_ms=hop_ms)
        vad = SileroVAD.for_config(cfg)
        vad_by_hop[hop_ms], _ = median_time(lambda c=cfg, v=vad: vad_pass(c, v), args.repeat)
    vad_s = vad_by_hop[SegmenterConfig().vad_hop_ms]

    face_frames = [f for _, f in frames[:: max(1, len(frames) // 100)]]
    face_times = []
    for f in face_frames:
        t = time.perf_counter()
        det.detect(f)
        face_times.append(time.perf_counter() - t)
    face = {"session_320x240": round(statistics.median(face_times) * 1000, 2)}
    if args.mosi.is_file():
        mosi_times = []
        for _, f in read_frames(args.mosi):
            t = time.perf_counter()
            det.detect(f)
            mosi_times.append(time.perf_counter() - t)
        face["mosi_480x360"] = round(statistics.median(mosi_times) * 1000, 2)

    say("stages: featurize, ASR, scorer ...")
    feat_times, audio_times, samples = [], [], []
    for w in windows:
        t = time.perf_counter()
        s = window_sample(w["audio"], w["frames"], None, det, feats)
        feat_times.append(time.perf_counter() - t)
        samples.append(dataclasses.replace(s, text=w["text"]))
        t = time.perf_counter()
        audio_features(w["audio"], feats)
        audio_times.append(time.perf_counter() - t)
    asr_times = []
    for w in windows:
        t = time.perf_counter()
        mon.transcriber.transcribe(w["audio"])
        asr_times.append(time.perf_counter() - t)
    asr_per_s = [dt / w["seconds"] for dt, w in zip(asr_times, windows)]
    scorer = {}
    for n in (1, 8):
        batch = (samples * (n // len(samples) + 1))[:n]
        sec, _ = median_time(lambda b=batch: mon.scorer.score(b), max(args.repeat, 5))
        scorer[str(n)] = ms(sec)

    out["stage_ms"] = {
        "decode_audio_per_media_s": ms(dec_s / media_s),
        "decode_frame": ms(frame_dec_s),
        "vad_per_audio_s": ms(vad_s / media_s),
        "vad_per_audio_s_by_hop": {str(h): ms(v / media_s) for h, v in vad_by_hop.items()},
        "face_detect_per_frame": face,
        "featurize_per_window": pct_ms(feat_times, 50),
        "featurize_per_window_p95": pct_ms(feat_times, 95),
        "featurize_audio_stft_per_window": pct_ms(audio_times, 50),
        "asr_per_utterance": pct_ms(asr_times, 50),
        "asr_per_utterance_p95": pct_ms(asr_times, 95),
        "asr_per_audio_s": pct_ms(asr_per_s, 50),
        "scorer_per_batch": scorer,
    }
    # one typical utterance (the median window), stage by stage; ASR and featurize run in parallel
    st = out["stage_ms"]
    win_s = out["window_s_median"]
    per = {
        "vad": round(st["vad_per_audio_s"] * win_s, 1),
        "decode_frames": round(st["decode_frame"] * win_s * 10, 1),  # 10 fps session video
        "featurize": st["featurize_per_window"],
        "asr": st["asr_per_utterance"],
        "scorer_batch1": scorer["1"],
    }
    out["per_utterance_ms"] = dict(sorted(per.items(), key=lambda kv: -kv[1]))
    out["slowest_stage"] = max(per, key=per.get)
    out["load_before"], out["load_after"] = load0, load_avg()
    say(f"stages: slowest {out['slowest_stage']} ({per[out['slowest_stage']]} ms per {win_s} s utterance)")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
