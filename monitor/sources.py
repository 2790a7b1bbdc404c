"""Where frames and audio come from: a camera thread, a microphone callback, or a replay.

Live sources run in device threads and hand data to the pipeline through thread-safe sinks
(``Channel.offer``, which never blocks). A replay (a video with its audio track, an audio
file, or a recorded session folder) feeds the same channels from the event loop and a decoder
thread, paced by media timestamps or as fast as the pipeline takes it (``--fast``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsa.media import load_audio, probe, read_frames
from mmsa.model.features import SAMPLE_RATE_HZ

from .channels import Channel, ChannelClosed
from .errors import SourceError
from .frames import AudioChunk, VideoFrame, Watermark

log = logging.getLogger(__name__)

SESSION_FORMAT = "mmsa-monitor-session/1"
METADATA = "metadata.json"


class SessionClock:
    """Seconds since the session started; the first reading (the first frame or audio block) is 0."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        now = time.monotonic()
        with self._lock:
            if self._t0 is None:
                self._t0 = now
            return now - self._t0


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


class CameraSource:
    """A ``VideoCapture``-like device read in its own thread; every frame goes to the sink.

    The sink is called from the camera thread and must not block (``Channel.offer``: newest
    wins); ``on_state`` gets ``"ok"`` / ``"lost"`` from the thread. A camera that delivers
    nothing for ``lost_s`` is released and reopened every ``retry_s``.
    """

    def __init__(
        self,
        spec: str | int,
        clock: Callable[[], float],
        *,
        max_fps: float = 0.0,
        lost_s: float = 2.0,
        retry_s: float = 3.0,
        open_capture: Callable[[int | str], Any] | None = None,
    ) -> None:
        self.spec = parse_camera(spec)
        self._sink: Callable[[VideoFrame], Any] = lambda _f: None
        self._clock = clock
        self._on_state: Callable[[str], Any] = lambda _s: None
        self._min_dt = 0.9 / max_fps if max_fps > 0 else 0.0
        self._lost_s = lost_s
        self._retry_s = retry_s
        self._open = open_capture or _open_device
        self._cap: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.n_frames = 0  # frames handed to the sink

    @property
    def label(self) -> str:
        return f"camera {self.spec}"

    def open(self) -> None:
        """Open the device now; raise SourceError with one clear line if it is not there."""
        cap = self._open(self.spec)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            what = f"no camera at index {self.spec}" if isinstance(self.spec, int) else f"cannot open {self.spec}"
            raise SourceError(f"camera: {what} (try another --camera, or --replay FILE)")
        self._cap = cap

    def start(self, sink: Callable[[VideoFrame], Any], on_state: Callable[[str], Any] = lambda _s: None) -> None:
        """Read frames in a thread; ``sink`` and ``on_state`` are called from it and must not block."""
        self._sink, self._on_state = sink, on_state
        if self._cap is None:
            self.open()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        elif self._cap is not None:  # opened but never started
            self._cap.release()
            self._cap = None

    def _run(self) -> None:
        cap, lost = self._cap, False
        last_ok = time.monotonic()
        last_emit = -math.inf
        try:
            while not self._stop.is_set():
                if cap is None:  # lost: try to reopen now and then
                    if self._stop.wait(self._retry_s):
                        break
                    cap = self._open(self.spec)
                    if cap is None or not cap.isOpened():
                        cap = None
                    else:
                        last_ok = time.monotonic()
                    continue
                ok, image = cap.read()
                now = time.monotonic()
                if not ok or image is None:
                    if now - last_ok >= self._lost_s:
                        if not lost:
                            lost = True
                            self._on_state("lost")
                        cap.release()
                        cap = None
                    else:
                        self._stop.wait(0.01)
                    continue
                last_ok = now
                if lost:
                    lost = False
                    self._on_state("ok")
                t = self._clock()
                if t - last_emit < self._min_dt:
                    continue  # thinned to max_fps
                last_emit = t
                self.n_frames += 1
                self._sink(VideoFrame(t, image))
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


class MicSource:
    """16 kHz mono capture; the callback copies the block and hands it to the sink (never blocks).

    Chunks are stamped from the sample count, so their times are contiguous: the first
    block fixes the session time of sample 0.
    """

    def __init__(
        self,
        device: str | int | None,
        clock: Callable[[], float],
        *,
        block: int = 1024,
        open_stream: Callable[..., Any] | None = None,
    ) -> None:
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self._sink: Callable[[AudioChunk], Any] = lambda _c: None
        self._clock = clock
        self._block = block
        self._open_stream = open_stream
        self._stream: Any = None
        self._n = 0
        self._t0: float | None = None
        self.overflows = 0  # device-side input overflows reported by PortAudio

    @property
    def label(self) -> str:
        return "mic" if self.device is None else f"mic {self.device}"

    def open(self) -> None:
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

    def start(self, sink: Callable[[AudioChunk], Any]) -> None:
        """Start capturing; ``sink`` gets every chunk from the audio thread and must not block."""
        self._sink = sink
        if self._stream is None:
            self.open()
        self._stream.start()

    def stop(self) -> None:
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
        self._sink(AudioChunk(t0, samples, time.monotonic()))


# --------------------------------------------------------------------------- replay


@dataclass
class ReplayMedia:
    """A decoded replay input: all its audio, and where its frames come from."""

    path: Path
    audio: np.ndarray  # (n,) float32 16 kHz
    audio_t0: float  # session time of the first sample
    video: Path | None
    frame_times: list[float] | None  # per-frame session times (recorded sessions), else the container's
    metadata: dict[str, Any] | None  # metadata.json of a session folder
    events: Path | None  # the recorded events.jsonl of a session folder

    @property
    def label(self) -> str:
        return f"replay {self.path}"

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE_HZ


def open_replay(path: str | Path) -> ReplayMedia:
    """Decode a replay input; raise SourceError / MediaError with one line if unusable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"{path}: not found")
    if path.is_dir():
        return _open_session(path)
    info = probe(path)
    if not info.has_audio:
        raise SourceError(f"{path}: has no audio track (the monitor scores speech)")
    audio = load_audio(path)
    if audio.size == 0:
        raise SourceError(f"{path}: the audio track is empty")
    return ReplayMedia(path, audio, 0.0, path if info.has_video else None, None, None, None)


def _open_session(folder: Path) -> ReplayMedia:
    meta_path = folder / METADATA
    if not meta_path.is_file():
        raise SourceError(f"{folder}: not a session folder (no {METADATA})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{meta_path}: damaged ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != SESSION_FORMAT or not meta.get("audio"):
        raise SourceError(f"{meta_path}: not an mmsa-monitor session with recorded audio")
    audio = load_audio(folder / meta["audio"])
    video = folder / meta["video"] if meta.get("video") else None
    times = None
    if video is not None and meta.get("frame_times"):
        times = _read_frame_times(folder / meta["frame_times"])
    events = folder / meta.get("events", "events.jsonl")
    return ReplayMedia(folder, audio, float(meta.get("audio_t0", 0.0)), video, times, meta,
                       events if events.is_file() else None)


def _read_frame_times(path: Path) -> list[float]:
    try:
        with path.open(newline="") as fh:
            return [float(row["t"]) for row in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(f"{path}: damaged frame times ({exc})") from exc


class ReplaySource:
    """Feeds a :class:`ReplayMedia` into the pipeline's audio and frame channels.

    Paced (default): each chunk and frame is released when its media time comes, as a live
    device would deliver it. ``fast``: as fast as the pipeline takes it; frames then wait
    until the audio (``audio_progress``) is within ``lead_s`` of them, so the frame ring
    always holds the frames of the windows being cut.
    """

    def __init__(self, media: ReplayMedia, *, fast: bool, block: int = 1024, lead_s: float = 1.0) -> None:
        self.media = media
        self.fast = fast
        self.block = block
        self.lead_s = lead_s
        self._stop = threading.Event()
        self._origin: float | None = None  # time.monotonic() of media time audio_t0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="replay-video")

    @property
    def label(self) -> str:
        return self.media.label

    @property
    def origin(self) -> float | None:
        """The ``time.monotonic()`` at which media time ``media.audio_t0`` was due (media time t is due at
        ``origin + t - audio_t0``); fixed when a paced replay releases its first item, None before and in ``fast``."""
        return self._origin

    def stop(self) -> None:
        self._stop.set()

    def _due(self, media_t: float) -> float:
        if self._origin is None:
            self._origin = time.monotonic()
        return self._origin + (media_t - self.media.audio_t0)

    async def run_audio(self, out: Channel[AudioChunk]) -> None:
        audio, t0 = self.media.audio, self.media.audio_t0
        try:
            for i in range(0, audio.size, self.block):
                if self._stop.is_set():
                    break
                samples = audio[i : i + self.block]
                if not self.fast:
                    delay = self._due(t0 + (i + samples.size) / SAMPLE_RATE_HZ) - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await out.put(AudioChunk(t0 + i / SAMPLE_RATE_HZ, samples, time.monotonic()))
        except ChannelClosed:
            pass
        finally:
            out.close()

    async def run_video(self, out: Channel[VideoFrame], audio_progress: Watermark) -> None:
        if self.media.video is None:
            out.close()
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self._video_thread, loop, out, audio_progress)
        finally:
            self._stop.set()
            out.close()
            self._pool.shutdown(wait=False)

    def _frames(self) -> Iterator[tuple[float, np.ndarray]]:
        assert self.media.video is not None
        frames = read_frames(self.media.video)
        if self.media.frame_times is None:
            yield from ((t + self.media.audio_t0, f) for t, f in frames)
            return
        times = iter(self.media.frame_times)
        for _, image in frames:
            t = next(times, None)
            if t is None:
                raise SourceError(f"{self.media.video}: more frames than recorded frame times")
            yield t, image

    def _video_thread(self, loop: asyncio.AbstractEventLoop, out: Channel[VideoFrame], progress: Watermark) -> None:
        def call(coro) -> bool:
            fut = asyncio.run_coroutine_threadsafe(coro, loop)
            while True:
                try:
                    return fut.result(timeout=0.2)
                except concurrent.futures.TimeoutError:
                    if self._stop.is_set():
                        fut.cancel()
                        return False
                except (ChannelClosed, concurrent.futures.CancelledError):
                    return False

        for t, image in self._frames():
            if self._stop.is_set():
                return
            if self.fast:
                call(progress.wait(t - self.lead_s))
            else:
                delay = self._due(t) - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            if call(out.put(VideoFrame(t, image))) is False:
                return
