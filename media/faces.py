"""Face detection (OpenCV Haar cascade on a downscaled gray frame) and tracking between detections.

The detector returns the frontal face the cascade is most sure of (the highest level weight of
``detectMultiScale3``), not the largest box: on real photos the largest box is often a
textured patch beside the face. The Haar cascade ships with
``opencv-python-headless`` 4.x (``cv2.data.haarcascades``), so nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import cv2.data
import numpy as np

from .errors import MediaError

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the full frame


@dataclass(frozen=True)
class DetectorOptions:
    detect_width: int = 320
    """Frames are downscaled to this width before detection (speed)."""
    min_face_frac: float = 0.12
    """Smallest face side as a fraction of the frame height."""
    scale_factor: float = 1.1
    """Haar cascade pyramid step."""
    min_neighbors: int = 5
    """Haar cascade acceptance threshold (higher: fewer false faces)."""
    near_margin: float = 0.5
    """A search near an earlier box covers that box enlarged by this fraction of its size per side."""


class FaceDetector:
    """The most confident frontal face in a BGR or gray frame, or None."""

    def __init__(self, options: DetectorOptions = DetectorOptions()) -> None:
        self.options = options
        if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the Haar detector out of the main wheel
            raise MediaError(f"OpenCV {cv2.__version__} has no Haar face detector (install opencv-python-headless 4.x)")
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise MediaError(f"{path}: cannot load the Haar face cascade (install opencv-python-headless 4.x)")

    def detect(self, frame: np.ndarray, near: Box | None = None) -> Box | None:
        """The face in ``frame``; with ``near``, search only around that box.

        ``near`` (a face found in an earlier frame of the same window) restricts the search to
        the box enlarged by ``near_margin`` of its size on each side, at the same scale as a
        full-frame search and for faces of 0.7x to 1.5x its size: several times cheaper for the
        frames of one utterance.
        """
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        H, W = gray.shape[:2]
        scale = min(1.0, self.options.detect_width / max(W, 1))
        min_side = max(12, int(self.options.min_face_frac * H * scale))
        ox = oy = 0
        max_side = 0  # 0: no upper bound
        if near is not None:
            x, y, w, h = near
            # a face does not change size much between frames of one utterance: search 0.7x..1.5x
            min_side = max(min_side, int(0.7 * min(w, h) * scale))
            max_side = int(1.5 * max(w, h) * scale) + 1
            m = self.options.near_margin
            ox, oy = max(0, int(x - m * w)), max(0, int(y - m * h))
            gray = gray[oy : min(H, int(y + h + m * h)), ox : min(W, int(x + w + m * w))]
        h_, w_ = gray.shape[:2]
        if min(h_, w_) * scale < min_side:
            return None
        small = cv2.resize(gray, (max(1, int(w_ * scale)), max(1, int(h_ * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else gray
        small = cv2.equalizeHist(small)
        faces, _, weights = self._cascade.detectMultiScale3(
            small, scaleFactor=self.options.scale_factor, minNeighbors=self.options.min_neighbors,
            minSize=(min_side, min_side), maxSize=(max_side, max_side), outputRejectLevels=True,
        )
        if len(faces) == 0:
            return None
        x, y, w, h = faces[int(np.argmax(np.asarray(weights).reshape(-1)))]
        return (int(round(x / scale)) + ox, int(round(y / scale)) + oy, int(round(w / scale)), int(round(h / scale)))


class FaceTracker:
    """Runs the detector every ``detect_every`` frames and keeps the last box in between.

    A face not re-detected for ``max_misses`` detections in a row is dropped. Boxes are
    smoothed (exponential moving average) so crops do not jitter.
    """

    def __init__(self, detector: FaceDetector, detect_every: int = 3, max_misses: int = 2, smoothing: float = 0.5) -> None:
        self.detector = detector
        self.detect_every = max(1, detect_every)
        self.max_misses = max_misses
        self.smoothing = smoothing
        self.box: Box | None = None
        self._n = 0
        self._misses = 0

    def update(self, frame: np.ndarray) -> Box | None:
        if self._n % self.detect_every == 0:
            found = self.detector.detect(frame)
            if found is None:
                self._misses += 1
                if self._misses > self.max_misses:
                    self.box = None
            else:
                self._misses = 0
                if self.box is None:
                    self.box = found
                else:
                    a = self.smoothing
                    self.box = tuple(int(round(a * o + (1 - a) * n)) for o, n in zip(self.box, found))  # type: ignore[assignment]
        self._n += 1
        return self.box
