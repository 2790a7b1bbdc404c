"""Live sources: a camera (webcam index or network stream) and a microphone, each behind :class:`Source`.

Both read their device in a thread and hand items to the pipeline through the bounded buffer of
:class:`~mmsa.monitor.source.DeviceSource`: frames keep the newest ``frames.queue`` (a camera
cannot wait), audio keeps at most ``audio.queue_s`` seconds (the oldest blocks are dropped first).
Drops are counted in ``dropped``; a camera that stops delivering is reported lost and reopened.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmsa.model.features import SAMPLE_RATE_HZ

from .config import AudioConfig
from .errors import SourceError
from .frames import AudioChunk, VideoFrame
from .source import AUDIO, VIDEO, DeviceSource, SourceState

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- camera


def parse_camera(spec: str | int) -> int | str:
    """``"0"`` -> 0 (a device index); anything else is a URL or path for OpenCV."""
    text = str(spec).strip()
    return int(text) if text.isdigit() else text


def _quiet_cv2():
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - older OpenCV
        pass
    return cv2


def camera_present(index: int = 0) -> bool:
    """Whether a camera opens at ``index`` (on Linux without /dev/video* it is not even tried)."""
    if sys.platform.startswith("linux") and not list(Path("/dev").glob("video*")):
        return False
    cv2 = _quiet_cv2()
    cap = cv2.VideoCapture(index)
    try:
        return bool(cap.isOpened())
    finally:
        cap.release()


def _open_device(spec: int | str):
    cv2 = _quiet_cv2()
    cap = cv2.VideoCapture(spec)
    if cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the backend buffers frames, keep only the newest
    return cap


class CameraSource(DeviceSource):
    """A ``VideoCapture``-like device read in its own thread.

    Frames are thinned to ``max_fps`` and kept in a buffer of ``queue`` frames (newest wins). A
    camera that delivers nothing for ``lost_s`` is reported lost, released and reopened every
    ``retry_s``; when it delivers again it is live again.
    """

    kinds = frozenset({VIDEO})

    def __init__(
        self,
        spec: str | int,
        clock: Callable[[], float],
        *,
        max_fps: float = 0.0,
        lost_s: float = 2.0,
        retry_s: float = 3.0,
        queue: int = 4,
        open_capture: Callable[[int | str], Any] | None = None,
    ) -> None:
        super().__init__(queue)
        self.spec = parse_camera(spec)
        self.label = f"camera {self.spec}"
        self._clock = clock
        self._min_dt = 0.9 / max_fps if max_fps > 0 else 0.0
        self._lost_s = lost_s
        self._retry_s = retry_s
        self._open = open_capture or _open_device
        self._cap: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.n_frames = 0  # frames handed to the buffer

    def open(self) -> None:
        """Open the device now; raise SourceError with one clear line if it is not there."""
        if self._cap is not None:
            return
        cap = self._open(self.spec)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            what = f"no camera at index {self.spec}" if isinstance(self.spec, int) else f"cannot open {self.spec}"
            raise SourceError(f"camera: {what} (try another --camera, or --replay FILE)")
        self._cap = cap

    def _start_device(self) -> None:
        self.open()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def _stop_device(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        elif self._cap is not None:  # opened but never started
            self._cap.release()
            self._cap = None

    def _reopen(self) -> Any:
        cap = self._open(self.spec)
        return cap if cap is not None and cap.isOpened() else None

    def _run(self) -> None:
        cap, last_ok, last_emit = self._cap, time.monotonic(), -math.inf
        try:
            while not self._stop.is_set():
                if cap is None:  # lost: try to reopen now and then
                    if self._stop.wait(self._retry_s):
                        break
                    cap = self._reopen()
                    last_ok = time.monotonic()
                    continue
                ok, image = cap.read()
                now = time.monotonic()
                if not ok or image is None:
                    if now - last_ok >= self._lost_s:
                        if self.state is not SourceState.LOST:
                            self._set_state(SourceState.LOST, "camera lost: scoring audio and text")
                        cap.release()
                        cap = None
                    else:
                        self._stop.wait(0.01)
                    continue
                last_ok = now
                if self.state is SourceState.LOST:
                    self._set_state(SourceState.LIVE, "camera back")
                t = self._clock()
                if t - last_emit < self._min_dt:
                    continue  # thinned to max_fps
                last_emit = t
                self.n_frames += 1
                self._emit(VideoFrame(t, image))
        finally:
            if cap is not None:
                cap.release()


# --------------------------------------------------------------------------- microphone


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the module loads PortAudio at import
        raise SourceError("microphone: the PortAudio library is missing (apt-get install libportaudio2)") from exc
    return sounddevice


def microphone_present(device: str | int | None = None) -> bool:
    try:
        sd = _sounddevice()
        sd.query_devices(device, kind="input")
    except (SourceError, ValueError, OSError):
        return False
    except Exception as exc:  # sounddevice.PortAudioError derives from Exception only
        log.debug("no microphone: %s", exc)
        return False
    return True


def _n_samples(item: object) -> int:
    return int(item.samples.size) if isinstance(item, AudioChunk) else 0


class MicSource(DeviceSource):
    """16 kHz mono capture; the callback copies each block into the buffer (never blocks).

    Chunks are stamped from the sample count, so their times are contiguous: the first block
    fixes the session time of sample 0. The buffer holds at most ``queue_s`` seconds of audio.
    """

    kinds = frozenset({AUDIO})

    def __init__(
        self,
        device: str | int | None,
        clock: Callable[[], float],
        *,
        block: int = AudioConfig().block_samples,
        queue_s: float = 5.0,
        open_stream: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(max(int(queue_s * SAMPLE_RATE_HZ), 1), size_of=_n_samples)
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.label = "mic" if self.device is None else f"mic {self.device}"
        self._clock = clock
        self._block = block
        self._open_stream = open_stream
        self._stream: Any = None
        self._n = 0
        self._t0: float | None = None
        self.overflows = 0  # device-side input overflows reported by PortAudio

    @property
    def backlog_s(self) -> float:
        """Seconds of audio captured and not yet taken by the pipeline."""
        return 0.0 if self.buffer is None else self.buffer.size / SAMPLE_RATE_HZ

    def open(self) -> None:
        if self._stream is not None:
            return
        kw = dict(samplerate=SAMPLE_RATE_HZ, blocksize=self._block, channels=1, dtype="float32",
                  device=self.device, callback=self._callback)
        if self._open_stream is not None:
            self._stream = self._open_stream(**kw)
            return
        sd = _sounddevice()
        which = "the default microphone" if self.device is None else f"microphone {self.device!r}"
        try:
            sd.query_devices(self.device, kind="input")
            self._stream = sd.InputStream(**kw)
        except (ValueError, sd.PortAudioError) as exc:
            raise SourceError(f"microphone: cannot open {which} ({exc}); pick one with --mic, or use --replay FILE") from exc

    def _start_device(self) -> None:
        self.open()
        self._stream.start()

    def _stop_device(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception as exc:  # closing a device that vanished must not break shutdown
                log.debug("closing the microphone: %s", exc)

    def _callback(self, indata, frames, time_info, status) -> None:
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        samples = np.array(indata[:, 0], dtype=np.float32)
        if self._t0 is None:
            self._t0 = self._clock() - samples.size / SAMPLE_RATE_HZ
        t0 = self._t0 + self._n / SAMPLE_RATE_HZ
        self._n += samples.size
        self._emit(AudioChunk(t0, samples, time.monotonic()))
