"""The recorder: a sink that writes the media the pipeline consumed into the session folder.

It writes ``audio.wav``, ``video.mkv`` and ``frames.csv`` (layout: ``mmsa.monitor.session``), so
``--replay DIR`` feeds them back with the recorded times and a session recorded from its start
replays to the same windows, transcripts and scores. As a :class:`~mmsa.monitor.bus.Sink` it takes
media (``takes_media``): every audio chunk and kept frame reaches :meth:`Recorder.media`, which
queues it for a writer thread. Live (a camera, a microphone) it never blocks: if the writer falls
behind, items are dropped and counted (``drops()``). Recording a replay (``lossless``, set by the
pipeline for a stream without live sources) it waits for room instead: a ``--fast`` replay runs
tens of times faster than real time, and the writer (lossless H.264) fell behind it on a busy
machine, so audio was dropped and the recording no longer replayed to the same windows. It finishes
the files when the bus closes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import shutil
import struct
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

from mmsa.model.features import SAMPLE_RATE_HZ

from .bus import Sink
from .errors import PublisherError
from .frames import AudioChunk, VideoFrame
from .session import AUDIO_FILE, FRAMES_FILE, VIDEO_FILE, SessionFolder

log = logging.getLogger(__name__)


class FloatWav:
    """A mono IEEE-float WAV written incrementally (the stdlib ``wave`` only writes integer PCM)."""

    def __init__(self, path: Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self._fh: IO[bytes] = path.open("wb")
        self._rate = sample_rate_hz
        self.n_samples = 0
        self._header()

    def _header(self) -> None:
        n_bytes = self.n_samples * 4
        fmt = struct.pack("<HHIIHH", 3, 1, self._rate, self._rate * 4, 4, 32)  # IEEE float, mono, 32 bit
        self._fh.write(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + n_bytes) + b"WAVE")
        self._fh.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        self._fh.write(b"data" + struct.pack("<I", n_bytes))

    def write(self, samples: np.ndarray) -> None:
        self._fh.write(np.asarray(samples, dtype="<f4").tobytes())
        self.n_samples += len(samples)

    def close(self) -> None:
        self._fh.seek(0)
        self._header()
        self._fh.close()


LOSSLESS_WAIT_S = 30.0  # recording a replay: the longest wait for the writer before an item counts as dropped


class Recorder(Sink):
    """Writes audio chunks and frames to the session folder from a background thread."""

    name = "recorder"
    takes_media = True

    def __init__(self, folder: SessionFolder, crf: int = 0, nominal_fps: float = 15.0, max_items: int = 512,
                 lossless: bool = False) -> None:
        if shutil.which("ffmpeg") is None:
            raise PublisherError("recording needs ffmpeg (apt-get install ffmpeg)")
        self.folder = folder
        self.crf = crf
        self.nominal_fps = nominal_fps or 15.0
        self.recording = False
        self.dropped = 0  # items the writer thread could not keep up with
        self._q: queue.Queue[tuple[str, Any] | None] = queue.Queue(max_items)
        self._thread: threading.Thread | None = None
        self._wav: FloatWav | None = None
        self._audio_t0: float | None = None
        self._ffmpeg: subprocess.Popen | None = None
        self._size: tuple[int, int] | None = None
        self._times: IO[str] | None = None
        self.n_frames = 0
        self.error: str | None = None
        self.lossless = lossless  # wait for the writer instead of dropping (a replay's media: see the module docstring)

    def start(self) -> None:
        """Start (or resume) recording; a pause is filled with silence in audio.wav."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()
        self.recording = True

    def pause(self) -> None:
        self.recording = False

    def media(self, item: AudioChunk | VideoFrame) -> None:
        self.audio(item) if isinstance(item, AudioChunk) else self.frame(item)

    def drops(self) -> dict[str, int]:
        return {"recorder": self.dropped} if self.dropped else {}

    async def run(self) -> None:
        """Finish the files once the bus closed."""
        await self.closed()
        await asyncio.to_thread(self.close)

    def audio(self, chunk: AudioChunk) -> None:
        if self.recording:
            self._put(("a", chunk))

    def frame(self, frame: VideoFrame) -> None:
        if self.recording:
            self._put(("v", frame))

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            if self.lossless and self._thread is not None and self._thread.is_alive():  # the writer makes room
                self._q.put(item, timeout=LOSSLESS_WAIT_S)
            else:
                self._q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Flush everything and finalise the files and metadata (blocking)."""
        self.recording = False
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None
        entries: dict[str, Any] = {}
        if self._wav is not None:
            entries.update(audio=AUDIO_FILE, audio_t0=self._audio_t0, audio_samples=self._wav.n_samples)
        if self._ffmpeg is not None:
            entries.update(video=VIDEO_FILE, frame_times=FRAMES_FILE, video_frames=self.n_frames,
                           video_crf=self.crf, video_size=list(self._size or ()))
        if self.dropped or self.error:
            entries.update(record_dropped=self.dropped, record_error=self.error)
        if entries:
            self.folder.update(**entries)

    def _run(self) -> None:
        try:
            while (item := self._q.get()) is not None:
                kind, value = item
                if self.error is None:
                    self._write_audio(value) if kind == "a" else self._write_frame(value)
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            log.error("recording stopped: %s", exc)
            while self._q.get() is not None:
                pass
        finally:
            self._finish()

    def _write_audio(self, chunk: AudioChunk) -> None:
        if self._wav is None:
            self._wav = FloatWav(self.folder.path / AUDIO_FILE)
            self._audio_t0 = chunk.t0
        assert self._audio_t0 is not None
        at = int(round((chunk.t0 - self._audio_t0) * SAMPLE_RATE_HZ))
        if at > self._wav.n_samples:  # recording was paused, or audio was dropped: keep the timeline
            self._wav.write(np.zeros(at - self._wav.n_samples, dtype=np.float32))
        self._wav.write(chunk.samples)

    def _write_frame(self, frame: VideoFrame) -> None:
        image = frame.image
        if self._ffmpeg is None:
            h, w = image.shape[:2]
            self._size = (w, h)
            self._ffmpeg = subprocess.Popen(self._ffmpeg_cmd(w, h), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            self._times = (self.folder.path / FRAMES_FILE).open("w", encoding="utf-8")
            self._times.write("frame,t\n")
        if (image.shape[1], image.shape[0]) != self._size:
            import cv2

            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        assert self._ffmpeg.stdin is not None and self._times is not None
        self._ffmpeg.stdin.write(np.ascontiguousarray(image).tobytes())
        self._times.write(f"{self.n_frames},{frame.t!r}\n")
        self.n_frames += 1

    def _ffmpeg_cmd(self, w: int, h: int) -> list[str]:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
               "-framerate", f"{self.nominal_fps:g}", "-i", "-"]
        if self.crf <= 0:  # lossless RGB: the replayed frames are bit-identical to the live ones
            cmd += ["-c:v", "libx264rgb", "-preset", "ultrafast", "-qp", "0"]
        else:
            cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(self.crf), "-pix_fmt", "yuv444p"]
        return cmd + [str(self.folder.path / VIDEO_FILE)]

    def _finish(self) -> None:
        if self._wav is not None:
            self._wav.close()
        if self._times is not None:
            self._times.close()
        if self._ffmpeg is not None:
            assert self._ffmpeg.stdin is not None
            try:
                self._ffmpeg.stdin.close()
            except OSError:
                pass
            assert self._ffmpeg.stderr is not None
            err = self._ffmpeg.stderr.read().decode(errors="replace").strip()
            self._ffmpeg.stderr.close()
            if self._ffmpeg.wait() != 0 and self.error is None:
                self.error = f"ffmpeg: {(err.splitlines() or ['failed'])[-1]}"
