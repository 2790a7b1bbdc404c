"""Device stand-ins that feed real media through the live code path.

``FileCamera`` is a ``cv2.VideoCapture`` over a real video file that behaves like a camera:
frames come at the file's frame rate, and it can stop delivering (a camera unplugged).
``FileMicStream`` has the shape of ``sounddevice.InputStream`` and calls the monitor's
callback from its own thread with real audio in real time (then silence, like a quiet room).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np


class FileCamera:
    """VideoCapture-shaped camera over a video file, paced like a device."""

    def __init__(self, path: Path, *, paced: bool = True, stop_after: int | None = None,
                 loop: bool = False, block_after: threading.Event | None = None) -> None:
        self._cap = cv2.VideoCapture(str(path))
        self._fps = self._cap.get(cv2.CAP_PROP_FPS) or 10.0
        self._path = path
        self._paced = paced
        self._stop_after = stop_after
        self._loop = loop
        self._block_after = block_after  # set once stop_after frames were delivered; then read() blocks
        self._released = threading.Event()
        self.n_read = 0
        self._t0: float | None = None

    def isOpened(self) -> bool:  # noqa: N802 - the VideoCapture API
        return self._cap.isOpened()

    def get(self, prop: int) -> float:
        return self._cap.get(prop)

    def read(self):
        if self._stop_after is not None and self.n_read >= self._stop_after:
            if self._block_after is not None:
                self._block_after.set()
                self._released.wait()  # a stalled device: nothing more until released
            return False, None
        if self._t0 is None:
            self._t0 = time.monotonic()
        if self._paced:
            delay = self._t0 + self.n_read / self._fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the device's frame clock
        ok, frame = self._cap.read()
        if not ok and self._loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if ok:
            self.n_read += 1
        return ok, frame

    def release(self) -> None:
        self._released.set()
        self._cap.release()


class FileMicStream:
    """``sounddevice.InputStream``-shaped: calls ``callback(indata, frames, time, status)`` from a thread."""

    def __init__(self, audio: np.ndarray, *, samplerate: int, blocksize: int, channels: int, dtype: str,
                 device, callback, paced: bool = True, tail_s: float = 30.0) -> None:
        assert samplerate == 16000 and channels == 1 and dtype == "float32"
        self._audio = np.concatenate([audio, np.zeros(int(tail_s * samplerate), np.float32)])
        self._block = blocksize
        self._callback = callback
        self._paced = paced
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0  # samples

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        status = SimpleNamespace(input_overflow=False)
        for i in range(0, self._audio.size - self._block + 1, self._block):
            if self._paced:
                delay = t0 + (i + self._block) / 16000 - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            elif self._stop.is_set():
                return
            block = self._audio[i : i + self._block].reshape(-1, 1)
            self._callback(block, self._block, None, status)
            self.delivered += self._block

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self._stop.set()


def mic_factory(audio: np.ndarray, **kw):
    """An ``open_stream`` for MicSource that plays ``audio``."""
    made: list[FileMicStream] = []

    def open_stream(**stream_kw):
        stream = FileMicStream(audio, **stream_kw, **kw)
        made.append(stream)
        return stream

    open_stream.made = made  # type: ignore[attr-defined]
    return open_stream
