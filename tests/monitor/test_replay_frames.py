"""A replay's frames on their way to the windows: gaps in the video, a late camera, a stop, fast video, memory.

Real media: clips cut from ``examples/sample-session`` (espeak speech, the astronaut's face) with ffmpeg,
replayed through the real pipeline with the tiny checkpoint and Whisper tiny.
"""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mmsa.media import load_audio, read_frames
from mmsa.model.features import spread_indices
from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.frames import AudioChunk, VideoFrame
from mmsa.monitor.processing import Processor
from mmsa.monitor.scorer import Scorer
from mmsa.monitor.session import SESSION_FORMAT
from mmsa.monitor.source import AUDIO, VIDEO, SourceState, StateChange
from tests.conftest import REPO
from tests.monitor.conftest import replay_sources
from tests.monitor.helpers import word_recall
from tests.monitor.test_parity import WHOLE_CLIP, offline_sample
from tests.monitor.test_pipeline import Collector

SAMPLE = REPO / "examples" / "sample-session"
SCRIPT = json.loads((SAMPLE / "script.json").read_text())
FIRST_THREE = SCRIPT[:3]  # the utterances of the first 14 s: 0.6-3.9, 5.1-8.9, 10.1-13.5 s
RUN_TIMEOUT_S = 180.0


def ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


async def replay(make_pipeline, path, cfg: MonitorConfig | None = None):
    """Replay ``path`` --fast through a real pipeline; its events (the run must end within RUN_TIMEOUT_S)."""
    pipe, bus, _ = make_pipeline(replay_sources(path), cfg=cfg)
    seen = Collector(bus)
    await asyncio.wait_for(pipe.run(), RUN_TIMEOUT_S)  # a replay that deadlocks fails here
    await seen.closed.wait()
    return pipe, seen.events


def check_three(events, framed: list[bool]) -> None:
    assert len(events) == 3
    for ev, line, has_frames in zip(events, FIRST_THREE, framed):
        assert word_recall(line["text"], ev.text) >= 0.6, (line["text"], ev.text)
        assert ev.modalities["audio"].present and ev.modalities["text"].present
        v = ev.modalities["vision"]
        if has_frames:
            assert v.present and v.face_frames > 0
        else:  # scored without faces: the vision modality masked
            assert (v.present, v.score, v.face_frames) == (False, None, 0)


async def test_a_replay_whose_video_has_a_gap_finishes_and_scores_every_utterance(make_pipeline, tmp_path):
    """No frame from 3.0 to 9.5 s (a camera lost for 6.5 s): the second utterance has no frames. Before the
    fix the first window waited for a frame at its end, which the replay only delivers after 5.7 s more audio."""
    clip = tmp_path / "gap.mp4"
    ffmpeg("-i", str(SAMPLE / "session.mp4"), "-t", "14", "-vf", "select='not(between(t,3,9.5))'",
           "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))
    times = [t for t, _ in read_frames(clip)]
    assert max(b - a for a, b in zip(times, times[1:])) > 5.0  # the gap is in the file
    _, events = await replay(make_pipeline, clip)
    check_three(events, [True, False, True])


def late_camera_session(folder: Path, first_frame_s: float, end_s: float = 14.0) -> Path:
    """A recorded session whose camera delivered its first frame ``first_frame_s`` after the microphone."""
    folder.mkdir()
    ffmpeg("-i", str(SAMPLE / "session.mp4"), "-t", str(end_s), "-vn", "-ac", "1", "-ar", "16000",
           str(folder / "audio.wav"))
    ffmpeg("-ss", str(first_frame_s), "-i", str(SAMPLE / "session.mp4"), "-t", str(end_s - first_frame_s), "-an",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(folder / "video.mkv"))
    n = sum(1 for _ in read_frames(folder / "video.mkv"))
    with (folder / "frames.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "t"])
        w.writerows([i, round(first_frame_s + i / 10, 3)] for i in range(n))
    (folder / "metadata.json").write_text(json.dumps({
        "format": SESSION_FORMAT, "session": "late-camera", "audio": "audio.wav", "audio_t0": 0.0,
        "video": "video.mkv", "frame_times": "frames.csv"}))
    return folder


async def test_a_recorded_session_whose_camera_started_late_finishes_and_scores_every_utterance(make_pipeline,
                                                                                                 tmp_path):
    """The camera's first frame came 6 s after the microphone's first block: the first utterance has no frames."""
    session = late_camera_session(tmp_path / "late", first_frame_s=6.0)
    _, events = await replay(make_pipeline, session)
    check_three(events, [False, True, True])


async def test_a_media_file_whose_video_starts_after_its_audio_is_in_sync(make_pipeline, tmp_path):
    """The video stream starts 6 s into the audio (its ``start_time``): its frames are on the audio's clock, so
    the first utterance has none, and the replay neither waits for them nor takes frames from 6 s later."""
    video, clip = tmp_path / "video.mp4", tmp_path / "late.mp4"
    ffmpeg("-ss", "6", "-i", str(SAMPLE / "session.mp4"), "-t", "8", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(video))
    ffmpeg("-i", str(SAMPLE / "session.mp4"), "-itsoffset", "6", "-i", str(video), "-map", "0:a", "-map", "1:v",
           "-t", "14", "-c:a", "aac", "-c:v", "copy", str(clip))
    times = [t for t, _ in read_frames(clip)]
    assert abs(times[0] - 6.0) < 0.05 and times[-1] > 13.0
    _, events = await replay(make_pipeline, clip)
    check_three(events, [False, True, True])


class VideoWithoutMarks:
    """A recording (not live, as fast as read) of real speech whose video delivers one frame and then nothing,
    without ever saying how far its video was read or that it ended: its windows wait for frames without limit."""

    label, live, paced, dropped = "recording (video stalls)", False, False, 0
    kinds = frozenset({AUDIO, VIDEO})

    def __init__(self, audio: np.ndarray, image: np.ndarray, block: int = 512) -> None:
        self.audio, self.image, self.block = audio, image, block
        self.state = SourceState.STARTING
        self.sent_s = 0.0  # media time of the audio yielded so far
        self._stopped = False

    async def start(self) -> None:
        self.state = SourceState.LIVE

    def stop(self) -> None:
        self._stopped = True

    async def __aiter__(self):
        yield VideoFrame(0.0, self.image)
        for i in range(0, self.audio.size, self.block):
            if self._stopped:
                break
            yield AudioChunk(i / 16000, self.audio[i : i + self.block], 0.0)
            self.sent_s = (i + self.block) / 16000
        self.state = SourceState.ENDED
        yield StateChange(self.label, SourceState.ENDED)


async def test_a_stop_frees_a_window_waiting_for_frames(make_pipeline):
    """The assembler waits for frames that never come while the source waits for room for its audio: a stop
    request must end the run (before the fix it hung: nothing woke the window waiting for the frames)."""
    audio = load_audio(SAMPLE / "session.mp4")[: 10 * 16000]
    (_, image), *_ = read_frames(SAMPLE / "session.mp4", 0.0, 0.2)
    src = VideoWithoutMarks(audio, image)
    pipe, bus, _ = make_pipeline([src])
    seen = Collector(bus)
    run = asyncio.ensure_future(pipe.run())

    async def stalled() -> None:  # the source stopped delivering: its audio waits for room
        while True:
            before = src.sent_s
            await asyncio.sleep(0.5)
            if before > 4.0 and src.sent_s == before:
                return

    await asyncio.wait_for(stalled(), 60)
    assert src.sent_s < 8.0 and pipe.ring.watermark.value < pipe._assembler.position_s  # noqa: SLF001
    pipe.request_stop()
    await asyncio.wait_for(run, 60)
    await seen.closed.wait()
    assert len(seen.events) >= 1 and seen.statuses[-1].finished
    assert word_recall(SCRIPT[0]["text"], seen.events[0].text) >= 0.6
    assert not seen.events[0].modalities["vision"].present  # the one frame (0 s) is before the utterance


async def test_waiting_windows_and_results_hold_only_the_frames_faces_are_searched_in(make_pipeline, speech_clip,
                                                                                      monkeypatch):
    """A window keeps the frames the featurizer searches for faces (faces_per_window, 4), not the ~35 frames of
    its seconds; once featurized, its result keeps none."""
    seen_windows, results = [], []
    process = Processor.process

    async def spy(self, w):
        seen_windows.append(len(w.frames))
        r = await process(self, w)
        results.append(r)
        return r

    monkeypatch.setattr(Processor, "process", spy)
    cfg = MonitorConfig()
    pipe, bus, _ = make_pipeline(replay_sources(speech_clip), cfg=cfg)
    seen = Collector(bus)
    await asyncio.wait_for(pipe.run(), RUN_TIMEOUT_S)
    await seen.closed.wait()
    k = cfg.scorer.faces_per_window
    assert len(seen.events) == 3 and seen_windows and max(seen_windows) == k
    assert all(r is not None and r.window.frames == [] for r in results)
    assert all(ev.modalities["vision"].face_frames == k for ev in seen.events)


def test_a_window_keeps_the_frames_spread_indices_picks():
    """The assembler's choice is the featurizer's: spread_indices(k, k) of the kept frames is all of them."""
    from mmsa.monitor.assembler import FrameTake, WindowAssembler
    from mmsa.monitor.config import SegmenterConfig
    from mmsa.monitor.frames import FrameRing
    from mmsa.monitor.vad import Segment

    ring = FrameRing(13.0, 420)
    images = [np.full((2, 2, 3), i, np.uint8) for i in range(37)]
    for i, img in enumerate(images):
        ring.add(VideoFrame(i / 10, img))
    asm = WindowAssembler(SegmenterConfig(), ring, None, lambda: FrameTake(0.0, 4))
    seg = Segment(0, 37 * 1600, np.zeros(37 * 1600, np.float32), True, 0)
    window = asyncio.run(asm.collect(seg, 0.0, 0.0))
    assert [f[0, 0, 0] for f in window.frames] == [images[i][0, 0, 0] for i in spread_indices(37, 4)]
    assert spread_indices(len(window.frames), 4) == [0, 1, 2, 3]


async def test_a_60_fps_replay_scores_a_10_s_window_like_mmsa_eval(make_pipeline, tmp_path, loaded_tiny, monkeypatch):
    """600 frames in one 10 s window (more than the ring's count cap for a camera, 420): the replay keeps them all,
    so its window searches the same frames for faces as clip_sample (before, the first 180 were evicted)."""
    clip = tmp_path / "sixty.mp4"
    ffmpeg("-i", str(SAMPLE / "session.mp4"), "-t", "10", "-vf", "fps=60,noise=alls=40:allf=t",
           "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))
    frames = [f for _, f in read_frames(clip)]
    assert len(frames) == 600
    windows = []
    process = Processor.process

    async def spy(self, w):
        windows.append(w)
        return await process(self, w)

    monkeypatch.setattr(Processor, "process", spy)
    pipe, events = await replay(make_pipeline, clip, WHOLE_CLIP)
    (event,) = events
    (window,) = windows
    k = WHOLE_CLIP.scorer.faces_per_window
    expected = [frames[i] for i in spread_indices(600, k)]  # the frames clip_sample searches for faces
    assert len(window.frames) == k and all(np.array_equal(a, b) for a, b in zip(window.frames, expected))
    assert pipe.ring.dropped == 0 and "frame_ring" not in pipe.drops()
    sample = offline_sample(clip, event.text, loaded_tiny)
    (offline,) = Scorer(loaded_tiny, "cpu").score([sample])
    assert event.modalities["vision"].face_frames == len(sample.faces) == k
    assert event.score == pytest.approx(offline.score, abs=1e-4)
    assert event.modalities["vision"].score == pytest.approx(offline.unimodal["vision"], abs=1e-4)


async def test_a_replay_faster_than_replay_max_fps_is_thinned(make_pipeline, tmp_path):
    """A 120 fps video with replay_max_fps 60: every other frame reaches the ring (its memory stays ring_s x 60)."""
    clip = tmp_path / "fast.mp4"
    ffmpeg("-i", str(SAMPLE / "session.mp4"), "-t", "4", "-vf", "fps=120", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", str(clip))
    cfg = WHOLE_CLIP.replace("frames", replay_max_fps=60.0)
    pipe, events = await replay(make_pipeline, clip, cfg)
    assert len(events) == 1 and pipe.ring.dropped == 0
    assert 235 <= len(pipe.ring) <= 245  # 4 s at 60 fps (the ring keeps 13 s)
