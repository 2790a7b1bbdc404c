"""Which sources a stream gets: a camera and a microphone, or a replay (one place for the CLI and streams).

The classes live in :mod:`.devices` (camera, microphone) and :mod:`.replay`; all of them are
:class:`~mmsa.monitor.source.Source`. :func:`open_sources` builds them from what the user asked for
and opens the devices at once, so a missing camera or microphone fails in one line before any
model loads.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import MonitorConfig
from .devices import CameraSource, MicSource
from .errors import MonitorError
from .replay import ReplayMedia, ReplaySource, open_replay
from .source import Source


def open_sources(
    cfg: MonitorConfig,
    clock: Callable[[], float],
    *,
    camera: str | None = None,
    mic: str | None = None,
    replay: str | None = None,
    fast: bool = False,
    with_mic: bool = True,
) -> tuple[list[Source], ReplayMedia | None]:
    """The sources of one stream (and the replay's media, for its parity report).

    A replay is one source (audio and, when the file has it, video); live, the microphone
    (unless ``with_mic`` is False: a camera-only stream cannot be scored, so the CLI always asks for
    one) and optionally a camera. Devices are opened here; SourceError names the one that failed.
    """
    block = cfg.audio.block_samples
    if replay:
        media = open_replay(replay)
        return [ReplaySource(media, fast=fast, block=block)], media
    if fast:
        raise MonitorError("--fast only applies to a replay (--replay PATH)")
    sources: list[Source] = []
    opened: list[CameraSource | MicSource] = []
    try:
        if camera is not None:
            f = cfg.frames
            cam = CameraSource(camera, clock, max_fps=f.camera_max_fps, lost_s=f.camera_lost_s,
                               retry_s=f.camera_retry_s, queue=f.queue)
            cam.open()
            opened.append(cam)
            sources.append(cam)
        if with_mic:
            m = MicSource(mic, clock, block=block, queue_s=cfg.audio.queue_s)
            m.open()
            opened.append(m)
            sources.append(m)
    except BaseException:
        for dev in opened:
            dev.stop()
        raise
    return sources, None
