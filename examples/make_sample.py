"""Generate the sample session that `make run` replays on a machine without camera or microphone.

    .venv/bin/python examples/make_sample.py [--out examples/sample-session]

Speech: espeak-ng reading positive, negative and neutral sentences, a pause after each.
Face: scikit-image's ``astronaut.png`` (public domain, NASA), a slow pan and zoom over it
so the face detector and tracker have a moving target. The session folder holds one small
H.264 + AAC video (``session.mp4``), ``metadata.json`` (the mmsa-monitor session format, so
``mmsa-monitor --replay examples/sample-session`` plays it) and ``script.json`` (each
sentence with its intended polarity and its time span).

The tests import :func:`make_clip` to build their own clips the same way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

SAMPLE_RATE_HZ = 16_000

SENTENCES: list[tuple[str, str]] = [
    ("positive", "I really love this movie, it made me so happy."),
    ("negative", "This is the worst day of my life, everything went wrong."),
    ("neutral", "The meeting starts at three o'clock in the second room."),
    ("positive", "What a wonderful surprise, thank you so much, this is great."),
    ("negative", "I hate waiting in line, it is boring and it makes me angry."),
    ("neutral", "The report has twelve pages and two tables."),
    ("positive", "The food was delicious and the people were very friendly."),
    ("negative", "The service was terrible and the room was dirty."),
]


def need(tool: str, package: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        sys.exit(f"make_sample: {tool} is not installed (apt-get install {package})")
    return exe


def speak(text: str, workdir: Path, voice: str = "en-us", words_per_min: int = 150) -> np.ndarray:
    """espeak-ng speech of ``text`` -> (n,) float32 at 16 kHz."""
    wav = workdir / "speech.wav"
    subprocess.run([need("espeak-ng", "espeak-ng"), "-v", voice, "-s", str(words_per_min), "-w", str(wav), text],
                   check=True, capture_output=True)
    raw = subprocess.run([need("ffmpeg", "ffmpeg"), "-nostdin", "-v", "error", "-i", str(wav), "-ac", "1", "-ar",
                          str(SAMPLE_RATE_HZ), "-f", "f32le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def face_frames(n: int, fps: float, size: tuple[int, int] = (320, 240)) -> Iterator[np.ndarray]:
    """``n`` BGR frames of a slow pan/zoom over the astronaut's face (Haar finds it in every frame)."""
    import cv2

    img = astronaut_bgr()
    w, h = size
    for i in range(n):
        t = i / fps
        zoom = 1.0 + 0.06 * np.sin(2 * np.pi * t / 7.0)
        cw, ch = 280 / zoom, 210 / zoom
        cx = 223 + 10 * np.sin(2 * np.pi * t / 5.0)
        cy = 113 + 6 * np.sin(2 * np.pi * t / 4.0)
        x0, y0 = int(round(cx - cw / 2)), int(round(cy - ch / 2))
        crop = img[max(0, y0) : y0 + int(ch), max(0, x0) : x0 + int(cw)]
        yield cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def make_clip(
    out: Path,
    sentences: Sequence[tuple[str, str]],
    *,
    gap_s: float = 1.2,
    lead_s: float = 0.6,
    fps: float = 10.0,
    size: tuple[int, int] = (320, 240),
    video: bool = True,
    crf: int = 30,
) -> list[dict]:
    """Write ``out`` (.mp4 with H.264 + AAC, or audio only for .wav/.m4a) and return the script.

    The script is one dict per sentence: polarity, text, t_start, t_end (seconds in the clip).
    """
    script, parts = [], [np.zeros(int(lead_s * SAMPLE_RATE_HZ), np.float32)]
    t = lead_s
    with tempfile.TemporaryDirectory() as tmp:
        for polarity, text in sentences:
            speech = speak(text, Path(tmp))
            script.append({"polarity": polarity, "text": text, "t_start": round(t, 3),
                           "t_end": round(t + speech.size / SAMPLE_RATE_HZ, 3)})
            parts += [speech, np.zeros(int(gap_s * SAMPLE_RATE_HZ), np.float32)]
            t += speech.size / SAMPLE_RATE_HZ + gap_s
        audio = np.concatenate(parts)
        wav = Path(tmp) / "audio.f32"
        audio.astype("<f4").tofile(wav)
        ffmpeg = need("ffmpeg", "ffmpeg")
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(SAMPLE_RATE_HZ), "-ac", "1",
               "-i", str(wav)]
        out.parent.mkdir(parents=True, exist_ok=True)
        if video and out.suffix == ".mp4":
            n_frames = int(audio.size / SAMPLE_RATE_HZ * fps)
            cmd = cmd[:5] + ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}", "-framerate",
                             f"{fps:g}", "-i", "-"] + cmd[5:]
            cmd += ["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "slow", "-crf", str(crf),
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "48k", "-movflags", "+faststart", str(out)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
            assert proc.stdin is not None
            for frame in face_frames(n_frames, fps, size):
                proc.stdin.write(frame.tobytes())
            proc.stdin.close()
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed writing {out}")
        else:
            codec = ["-c:a", "aac", "-b:a", "48k"] if out.suffix in (".m4a", ".mp4") else []
            subprocess.run(cmd + codec + [str(out)], check=True)
    return script


def make_session(folder: Path, sentences: Sequence[tuple[str, str]] = SENTENCES) -> Path:
    """A replayable session folder: session.mp4 + metadata.json + script.json."""
    folder.mkdir(parents=True, exist_ok=True)
    script = make_clip(folder / "session.mp4", sentences)
    meta = {
        "format": "mmsa-monitor-session/1",
        "session": "sample",
        "source": "examples/make_sample.py (espeak-ng speech, scikit-image astronaut.png)",
        "audio": "session.mp4",
        "audio_t0": 0.0,
        "video": "session.mp4",
        "note": "generated; no events.jsonl (run the monitor on it to score it)",
    }
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (folder / "script.json").write_text(json.dumps(script, indent=2) + "\n", encoding="utf-8")
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description="Generate the sample session of examples/.")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "sample-session"))
    args = ap.parse_args()
    folder = make_session(Path(args.out))
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"{folder}: {len(SENTENCES)} sentences, {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
