"""Replay as a :class:`~mmsa.monitor.source.Source`: a video with its audio track, an audio file,
or a recorded session folder, fed through the same pipeline as a live camera and microphone.

:class:`ReplaySource` yields the audio in blocks and the frames in media-time order: an audio block
is due when its last sample would have arrived from a microphone (its end time), a frame at its
time stamp. Paced (the default) releases each item when it is due, as a device would deliver it;
``fast`` releases them as fast as the pipeline takes them. Either way every frame earlier than an
audio block's end comes before that block, so when the pipeline cuts a window out of the audio it
already holds the window's frames. Before an audio block the replay also says how far its video has
been read (:class:`~mmsa.monitor.frames.VideoMark`: the time of its next frame), so a window never
waits for a frame that only comes after audio it has not read: a gap in the video (a recorded
camera lost for a while), or a video that starts after its audio, cannot stall the stream. A
replay never drops anything: it waits for the pipeline. Video is decoded by ffmpeg in a thread of
the source's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsa.media import load_audio, probe, read_frames
from mmsa.model.features import SAMPLE_RATE_HZ

from .channels import Channel, ChannelClosed
from .config import AudioConfig
from .errors import SourceError
from .frames import AudioChunk, VideoFrame, VideoMark
from .session import EVENTS_FILE, METADATA, SESSION_FORMAT
from .source import AUDIO, VIDEO, MediaItem, SourceState, StateChange

log = logging.getLogger(__name__)

FRAME_BUFFER = 8  # decoded frames waiting between the decoder thread and the iteration


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


def is_session_folder(path: str | Path) -> bool:
    return (Path(path) / METADATA).is_file()


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
    events = folder / meta.get("events", EVENTS_FILE)
    return ReplayMedia(folder, audio, float(meta.get("audio_t0", 0.0)), video, times, meta,
                       events if events.is_file() else None)


def _read_frame_times(path: Path) -> list[float]:
    try:
        with path.open(newline="") as fh:
            return [float(row["t"]) for row in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(f"{path}: damaged frame times ({exc})") from exc


class ReplaySource:
    """A :class:`ReplayMedia` as a source (see the module docstring)."""

    live = False

    def __init__(self, media: ReplayMedia, *, fast: bool, block: int = AudioConfig().block_samples) -> None:
        self.media = media
        self.fast = fast
        self.paced = not fast
        self.block = block
        self.label = media.label + (" (fast)" if fast else "")
        self.kinds = frozenset({AUDIO} | ({VIDEO} if media.video is not None else set()))
        self.state = SourceState.STARTING
        self.dropped = 0  # a replay waits for the pipeline: never anything
        self._stop = threading.Event()
        self._origin: float | None = None  # time.monotonic() of media time audio_t0
        self._frames: Channel[VideoFrame] | None = None
        self._decoder: threading.Thread | None = None
        self._decode_error = ""

    @property
    def origin(self) -> float | None:
        """The ``time.monotonic()`` at which media time ``media.audio_t0`` was due (media time t is due at
        ``origin + t - audio_t0``); fixed when a paced replay releases its first item, None before and in ``fast``."""
        return self._origin

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.media.video is not None:
            self._frames = Channel("replay-frames", FRAME_BUFFER, loop)
            self._decoder = threading.Thread(target=self._decode, args=(loop,), name="replay-video", daemon=True)
            self._decoder.start()
        self.state = SourceState.LIVE

    def stop(self) -> None:
        self._stop.set()
        if self._frames is not None:
            self._frames.close()

    async def __aiter__(self) -> AsyncIterator[MediaItem]:
        audio, t0 = self.media.audio, self.media.audio_t0
        i = 0
        frame = await self._next_frame()
        if frame is None and self._frames is not None and not self._stop.is_set():  # a video without a frame
            yield StateChange(self.label, SourceState.ENDED, self._decode_error, kind=VIDEO)
        marked = -math.inf  # the last VideoMark yielded
        while not self._stop.is_set():
            audio_due = t0 + min(i + self.block, audio.size) / SAMPLE_RATE_HZ if i < audio.size else math.inf
            frame_due = frame.t if frame is not None else math.inf
            if audio_due == math.inf and frame_due == math.inf:
                break
            if not self.fast:
                await self._wait_until(min(audio_due, frame_due))
            if frame is not None and frame_due <= audio_due:
                yield frame
                frame = await self._next_frame()
                if frame is None:  # windows past the last frame need not wait for more
                    yield StateChange(self.label, SourceState.ENDED, self._decode_error, kind=VIDEO)
            else:
                if frame is not None and frame_due > marked:  # no frame before the next one: nothing to wait for
                    marked = frame_due
                    yield VideoMark(frame_due)
                yield AudioChunk(t0 + i / SAMPLE_RATE_HZ, audio[i : i + self.block], time.monotonic())
                i += self.block
        self.state = SourceState.ENDED
        yield StateChange(self.label, SourceState.ENDED)

    async def _wait_until(self, media_t: float) -> None:
        if self._origin is None:
            self._origin = time.monotonic()
        delay = self._origin + (media_t - self.media.audio_t0) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _next_frame(self) -> VideoFrame | None:
        if self._frames is None:
            return None
        try:
            return await self._frames.get()
        except ChannelClosed:
            return None

    def _times(self) -> Iterator[tuple[float, np.ndarray]]:
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

    def _decode(self, loop: asyncio.AbstractEventLoop) -> None:
        """The decoder thread: frames into the channel, waiting for room (a replay loses nothing)."""
        assert self._frames is not None
        try:
            for t, image in self._times():
                fut = asyncio.run_coroutine_threadsafe(self._frames.put(VideoFrame(t, image)), loop)
                while True:
                    try:
                        fut.result(timeout=0.2)
                        break
                    except concurrent.futures.TimeoutError:
                        if self._stop.is_set():
                            fut.cancel()
                            return
        except (ChannelClosed, concurrent.futures.CancelledError):
            return
        except Exception as exc:  # a damaged video ends the video, not the replay: audio goes on
            self._decode_error = f"video decoding stopped: {exc}"
            log.error("%s: %s", self.media.video, self._decode_error)
        finally:
            self._frames.close()
