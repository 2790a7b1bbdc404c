"""Tiny real-media datasets generated for the tests: speech from espeak-ng, face frames rendered from
scikit-image's astronaut photo, transcripts; in the MMSA raw layout, as a CMU-MOSI style full video
with start/end segments, as RAVDESS-style audio files and as FER2013-style face crops."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np

POSITIVE = ["i really loved this movie it was wonderful", "what a great and happy day", "the acting was brilliant"]
NEGATIVE = ["this was terrible and boring", "i hated every minute of it", "the plot was awful"]
FPS = 10
SIZE = 160


def have_tools() -> str | None:
    """None when espeak-ng, ffmpeg and scikit-image (the face photo) are there, else what is missing."""
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            return f"{tool} (apt-get install {tool})"
    try:
        import skimage  # noqa: F401
    except ImportError:
        return "scikit-image (pip install -e '.[dev]')"
    return None


def speak(text: str, wav: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", "en", "-s", "190", "-w", str(wav), text], check=True, capture_output=True)
    return wav


def face_frames(n: int, seed: int) -> list[np.ndarray]:
    """``n`` BGR frames of the astronaut's face, moving a little (the Haar detector finds it)."""
    import cv2
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        dx = 4 + int(4 * np.sin(i / 3.0)) + int(rng.integers(0, 3))  # 0..10 pixels
        crop = img[0 + dx // 2 : 320 + dx // 2, 88 + dx : 408 + dx]
        frames.append(cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    return frames


def encode(frames: list[np.ndarray], wav: Path | None, out: Path) -> Path:
    """Frames (+ optional audio) -> h264/AAC mp4."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{SIZE}x{SIZE}",
           "-r", str(FPS), "-i", "-"]
    if wav is not None:
        cmd += ["-i", str(wav), "-c:a", "aac", "-shortest"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True, capture_output=True)
    return out


def _duration(wav: Path) -> float:
    import wave

    with wave.open(str(wav)) as w:
        return w.getnframes() / w.getframerate()


def make_mmsa_raw(root: Path) -> Path:
    """MMSA raw layout: label.csv + Raw/<video_id>/<clip_id>.mp4; 4 train, 2 valid, 2 test clips."""
    rows = []
    plan = [("train", POSITIVE[0], 2.2), ("train", NEGATIVE[0], -2.0), ("train", POSITIVE[1], 1.6),
            ("train", NEGATIVE[1], -1.4), ("valid", POSITIVE[2], 1.8), ("valid", NEGATIVE[2], -2.4),
            ("test", POSITIVE[0], 2.0), ("test", NEGATIVE[0], -1.0)]
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for k, (mode, text, label) in enumerate(plan):
        vid, clip = f"vid{k // 2}", str(k % 2 + 1)
        wav = speak(text, tmp / f"{k}.wav")
        frames = face_frames(int(_duration(wav) * FPS) + 2, seed=k)
        encode(frames, wav, root / "Raw" / vid / f"{clip}.mp4")
        rows.append([vid, clip, text, label, "Positive" if label > 0 else "Negative", mode])
    shutil.rmtree(tmp)
    with (root / "label.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        w.writerows(rows)
    return root / "label.csv"


def make_mosi_full(root: Path) -> Path:
    """A CMU-MOSI raw-release style full video (two sentences) and a label.csv with start/end seconds."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    parts = [speak(POSITIVE[0], tmp / "a.wav"), speak(NEGATIVE[0], tmp / "b.wav")]
    bounds, t = [], 0.0
    for p in parts:
        d = _duration(p)
        bounds.append((t, t + d))
        t += d
    joined = tmp / "full.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(parts[0]), "-i", str(parts[1]), "-filter_complex",
                    "[0:a][1:a]concat=n=2:v=0:a=1", str(joined)], check=True, capture_output=True)
    encode(face_frames(int(t * FPS) + 2, seed=9), joined, root / "videos" / "fullvid.mp4")
    shutil.rmtree(tmp)
    with (root / "label.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode", "start", "end", "text_available"])
        w.writerow(["fullvid", 1, POSITIVE[0], 2.0, "Positive", "valid", f"{bounds[0][0]:.3f}", f"{bounds[0][1]:.3f}", 1])
        w.writerow(["fullvid", 2, NEGATIVE[0], -2.0, "Negative", "valid", f"{bounds[1][0]:.3f}", f"{bounds[1][1]:.3f}", 1])
    return root / "label.csv"


def make_ravdess(root: Path) -> Path:
    """RAVDESS-style labels.csv + FLAC speech for actors 1, 2 (train) and 13 (valid)."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for actor in (1, 2, 13):
        for e_code, emotion, text in (("03", "happy", POSITIVE[1]), ("04", "sad", NEGATIVE[1]),
                                      ("01", "neutral", "kids are talking by the door"), ("08", "surprised", "oh")):
            rel = f"Actor_{actor:02d}/03-01-{e_code}-01-01-01-{actor:02d}.flac"
            wav = speak(text, tmp / "x.wav")
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-ar", "16000", "-ac", "1", str(root / rel)],
                           check=True, capture_output=True)
            rows.append([rel, emotion, f"{actor:02d}"])
    shutil.rmtree(tmp)
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "emotion", "actor"])
        w.writerows(rows)
    return root / "labels.csv"


def make_fer(root: Path, n: int = 30) -> Path:
    """FER2013-style 48x48 gray face crops with emotion folders and labels.csv."""
    import cv2

    emotions = ["happy", "sad", "neutral", "angry", "surprise"]
    rows = []
    for i, frame in enumerate(face_frames(n, seed=3)):
        emotion = emotions[i % len(emotions)]
        gray = cv2.cvtColor(frame[20:140, 20:140], cv2.COLOR_BGR2GRAY)
        if emotion == "sad":
            gray = cv2.flip(gray, 0)  # something for the face branch to tell apart
        rel = f"PrivateTest/{emotion}/img_{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), cv2.resize(gray, (48, 48)))
        rows.append([rel, emotion, "PrivateTest"])
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "emotion", "fer2013_usage"])
        w.writerows(rows)
    return root / "labels.csv"
