"""Video frames through OpenCV, with their media timestamps."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import cv2
import cv2.data  # imported here, once: a first import of cv2 from several threads at once can lose cv2.data
import numpy as np

from .audio import _check_file, probe
from .errors import MediaError


@functools.lru_cache(maxsize=256)
def _video_start_cached(path: str, mtime_ns: int, size: int) -> float:
    return probe(path).video_start_s


def _video_start(path: Path) -> float:
    """Where the video starts on the audio's clock (``MediaInfo.video_start_s``), probed once per file version;
    0 where ffprobe cannot say (OpenCV then reads what it can, or says it cannot)."""
    st = path.stat()
    try:
        return _video_start_cached(str(path), st.st_mtime_ns, st.st_size)
    except MediaError:
        return 0.0


def read_frames(
    path: str | Path, start_s: float | None = None, end_s: float | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t_seconds, BGR frame) for the frames of ``path`` with start_s <= t < end_s.

    ``t`` is on the audio's clock (sample 0 of ``load_audio`` is 0 s): OpenCV counts from the video stream's
    own start, so a file whose video starts later than its audio (``MediaInfo.video_start_s``) has its
    frames moved by that much (before 2026-12-05 a video starting 3 s late was 3 s early against the audio).
    """
    path = Path(path)
    _check_file(path)
    offset = _video_start(path)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: cannot open video")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        seek = (start_s or 0.0) - offset  # on the video's own clock
        if seek > 0:
            cap.set(cv2.CAP_PROP_POS_MSEC, seek * 1000.0)
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t <= 0.0 and index > 0 and fps:
                t = max(seek, 0.0) + index / fps
            t += offset
            index += 1
            if start_s is not None and t < start_s - 1e-6:
                continue
            if end_s is not None and t >= end_s:
                break
            yield t, frame
    finally:
        cap.release()
