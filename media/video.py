"""Video frames through OpenCV, with their media timestamps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import cv2.data  # imported here, once: a first import of cv2 from several threads at once can lose cv2.data
import numpy as np

from .audio import _check_file
from .errors import MediaError


def read_frames(
    path: str | Path, start_s: float | None = None, end_s: float | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t_seconds, BGR frame) for the frames of ``path`` with start_s <= t < end_s."""
    path = Path(path)
    _check_file(path)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: cannot open video")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        if start_s:
            cap.set(cv2.CAP_PROP_POS_MSEC, start_s * 1000.0)
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t <= 0.0 and index > 0 and fps:
                t = (start_s or 0.0) + index / fps
            index += 1
            if start_s is not None and t < start_s - 1e-6:
                continue
            if end_s is not None and t >= end_s:
                break
            yield t, frame
    finally:
        cap.release()
