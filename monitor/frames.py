"""Recent video frames for window assembly, and a watermark that stages wait on.

The pipeline keeps the frames of the last ``ring_s`` seconds (downscaled to at most
``max_width``) in a :class:`FrameRing`. When a window closes, its frames are taken from the
ring and handed to :func:`mmsa.media.window_sample` together with the window's audio and
transcript, exactly as ``mmsa-eval`` does with the frames of a clip.

The ring's :class:`Watermark` says up to when the ring holds every frame: a window waits until it
reaches the window's end. Each frame added advances it to the frame's time; a recording also
advances it with :class:`VideoMark` items (a replay knows when its next frame is, so a gap in its
video, or a video that starts after its audio, does not hold windows back), and the end of the
video (or a stop) ends it.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoFrame:
    t: float  # seconds since session start (media time in replay)
    image: np.ndarray  # (H, W, 3) uint8 BGR


@dataclass(frozen=True)
class VideoMark:
    """A recording's video has no frame earlier than ``t`` left to deliver (its next frame is at ``t``): the
    frames of a window ending by ``t`` are all in the ring. A replay yields it before the audio it leads."""

    t: float


@dataclass(frozen=True)
class AudioChunk:
    t0: float  # session time of the first sample
    samples: np.ndarray  # (n,) float32 at 16 kHz
    arrived: float  # time.monotonic() when the chunk reached the pipeline (latency reference)


def fit_width(image: np.ndarray, max_width: int) -> np.ndarray:
    """Downscale (area interpolation, aspect kept) so the width is at most ``max_width`` (0: as is)."""
    h, w = image.shape[:2]
    if max_width <= 0 or w <= max_width:
        return image
    import cv2

    return cv2.resize(image, (max_width, max(1, int(round(h * max_width / w)))), interpolation=cv2.INTER_AREA)


class Watermark:
    """A time that only moves forward; tasks wait until it reaches a value (or the stream ends)."""

    def __init__(self) -> None:
        self.value = -math.inf
        self.ended = False
        self._changed = asyncio.Event()

    def advance(self, t: float) -> None:
        if t > self.value:
            self.value = t
            self._changed.set()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    async def wait(self, t: float, timeout_s: float | None = None) -> bool:
        """True once the watermark is >= t; False when the stream ended or the timeout passed first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self.value < t and not self.ended:
            self._changed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return self.value >= t


class Thinner:
    """Frames at most ``max_fps`` a second (0: every frame): a replay faster than the ring is sized for."""

    def __init__(self, max_fps: float) -> None:
        self.min_dt = 0.9 / max_fps if max_fps > 0 else 0.0  # 0.9: a file's rate that jitters around max_fps passes
        self.last = -math.inf

    def keep(self, t: float) -> bool:
        if self.min_dt and t - self.last < self.min_dt:
            return False
        self.last = t
        return True


class FrameRing:
    """Frames of the last ``ring_s`` seconds, at most ``ring_max`` of them (oldest evicted first).

    The count cap bounds what a live camera can pile up (a flood); a recording's frames are added
    ``capped=False``: they come at the file's own rate (the pipeline thins a replay to
    ``frames.replay_max_fps``), so ``ring_s`` bounds them and the cap never cuts the start off a window.
    """

    def __init__(self, ring_s: float, ring_max: int) -> None:
        self.ring_s = ring_s
        self.ring_max = max(1, ring_max)
        self.dropped = 0  # frames evicted by the count cap while younger than ring_s
        self.watermark = Watermark()
        self._frames: deque[VideoFrame] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: VideoFrame, *, capped: bool = True) -> None:
        """Keep ``frame``; ``capped``: evict (and count) the oldest beyond ``ring_max`` (a live camera's frames)."""
        self._frames.append(frame)
        while self._frames and self._frames[0].t < frame.t - self.ring_s:
            self._frames.popleft()
        while capped and len(self._frames) > self.ring_max:
            self._frames.popleft()
            self.dropped += 1
        self.watermark.advance(frame.t)

    def between(self, t0: float, t1: float | None) -> list[np.ndarray]:
        """Frames with t0 <= t < t1 (t1 None: to the newest), oldest first."""
        return [f.image for f in self._frames if f.t >= t0 and (t1 is None or f.t < t1)]
