"""Audio decoding through ffmpeg: any container/codec -> 16 kHz mono float32."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsa.model.features import SAMPLE_RATE_HZ

from .errors import MediaError


def _ffmpeg(tool: str = "ffmpeg") -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise MediaError(f"{tool} is not installed (apt-get install ffmpeg)")
    return exe


def _last_line(stderr: bytes, path: Path | None = None) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    line = lines[-1] if lines else "unknown error"
    if path is not None and line.startswith(f"{path}: "):
        line = line[len(f"{path}: "):]
    return line


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, expected a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float
    has_audio: bool
    has_video: bool
    fps: float | None
    width: int | None
    height: int | None
    video_start_s: float = 0.0
    """Where the video stream starts on the audio's clock (its ``start_time`` minus the audio's; 0 without
    both): a file whose video starts 3 s after its audio has its first frame at 3 s (``read_frames``)."""


def _start_time(stream: dict | None) -> float | None:
    """A stream's ``start_time`` in seconds (None: no such stream, or none given)."""
    raw = stream.get("start_time") if stream else None
    try:
        return float(raw) if raw not in (None, "N/A") else None
    except ValueError:
        return None


def probe(path: str | Path) -> MediaInfo:
    """Streams and duration of a media file (ffprobe); raises MediaError if it cannot be read."""
    path = Path(path)
    _check_file(path)
    cmd = [_ffmpeg("ffprobe"), "-v", "error", "-show_entries",
           "format=duration:stream=codec_type,width,height,avg_frame_rate,duration,start_time", "-of", "json", str(path)]
    res = subprocess.run(cmd, capture_output=True, check=False)
    if res.returncode != 0:
        raise MediaError(f"{path}: cannot read media ({_last_line(res.stderr, path)})")
    data = json.loads(res.stdout or b"{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise MediaError(f"{path}: no audio or video stream")
    durations = [float(x) for x in [data.get("format", {}).get("duration")] + [s.get("duration") for s in streams]
                 if x not in (None, "N/A")]
    fps = None
    if video is not None and video.get("avg_frame_rate", "0/0") != "0/0":
        num, den = video["avg_frame_rate"].split("/")
        fps = float(num) / float(den) if float(den) else None
    starts = [_start_time(s) for s in (video, audio)]
    return MediaInfo(
        video_start_s=starts[0] - starts[1] if None not in starts else 0.0,  # type: ignore[operator]
        duration_s=max(durations) if durations else 0.0,
        has_audio=audio is not None,
        has_video=video is not None,
        fps=fps,
        width=int(video["width"]) if video and video.get("width") else None,
        height=int(video["height"]) if video and video.get("height") else None,
    )


def load_audio(
    path: str | Path,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    start_s: float | None = None,
    end_s: float | None = None,
) -> np.ndarray:
    """Decode the audio track of ``path`` (optionally [start_s, end_s)) -> (n_samples,) float32 mono.

    Raises MediaError naming the file for a missing file, a file without audio, or one that
    ffmpeg cannot decode (corrupt or truncated).
    """
    path = Path(path)
    _check_file(path)
    cmd = [_ffmpeg(), "-nostdin", "-v", "error"]
    if start_s is not None:
        cmd += ["-ss", f"{max(start_s, 0.0):.4f}"]
    if end_s is not None:
        cmd += ["-to", f"{end_s:.4f}"]
    cmd += ["-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate_hz), "-f", "f32le", "-"]
    res = subprocess.run(cmd, capture_output=True, check=False)
    if res.returncode != 0:
        msg = _last_line(res.stderr, path)
        if b"matches no streams" in res.stderr:
            raise MediaError(f"{path}: has no audio track")
        raise MediaError(f"{path}: cannot decode audio ({msg})")
    if res.stderr.strip():
        # ffmpeg decoded but complained (e.g. a truncated stream): refuse rather than score half a clip
        raise MediaError(f"{path}: damaged audio ({_last_line(res.stderr, path)})")
    return np.frombuffer(res.stdout, dtype=np.float32).copy()
