import json

import numpy as np
import pytest

from mmsa.media import load_audio, read_frames
from mmsa.monitor.frames import AudioChunk, VideoFrame
from mmsa.monitor.recorder import FloatWav, Recorder
from mmsa.monitor.replay import open_replay
from mmsa.monitor.session import SessionFolder


def test_float_wav_round_trips_exactly_through_ffmpeg(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, 12345).astype(np.float32)
    wav = FloatWav(tmp_path / "a.wav")
    wav.write(x[:1000])
    wav.write(x[1000:])
    wav.close()
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav"), x)


def test_recorded_session_replays_bit_identical_media(tmp_path, make_sample):
    folder = SessionFolder.create(tmp_path / "rec", "s1")
    rec = Recorder(folder, crf=0)
    rec.start()
    rng = np.random.default_rng(0)
    frames = [np.ascontiguousarray(f) for f in make_sample.face_frames(12, 10.0)]
    chunks = [rng.uniform(-0.5, 0.5, 1024).astype(np.float32) for _ in range(10)]
    t_audio0 = 0.123456789
    for i, c in enumerate(chunks):
        if i == 6:
            rec.pause()  # two chunks are not recorded: the gap becomes silence
        if i == 8:
            rec.start()
        rec.audio(AudioChunk(t_audio0 + i * 1024 / 16000, c, 0.0))
    times = [0.1 + i / 7.3 for i in range(len(frames))]
    for t, f in zip(times, frames):
        rec.frame(VideoFrame(t, f))
    rec.close()
    meta = json.loads((folder.path / "metadata.json").read_text())
    assert meta["audio_t0"] == t_audio0 and meta["video_frames"] == 12 and "record_dropped" not in meta
    media = open_replay(folder.path)
    expected = np.concatenate(chunks[:6] + [np.zeros(2048, np.float32)] + chunks[8:])
    np.testing.assert_array_equal(media.audio, expected)
    assert media.frame_times == times and media.audio_t0 == t_audio0
    decoded = [f for _, f in read_frames(media.video)]
    assert len(decoded) == len(frames) and all(np.array_equal(a, b) for a, b in zip(decoded, frames))


@pytest.mark.parametrize("lossless", [True, False])
def test_recording_a_replay_waits_for_the_writer_live_drops(tmp_path, make_sample, lossless):
    """A queue of 2 items and 200 chunks and 40 frames pushed at once (a --fast replay outruns the writer):
    lossless (a replay), every sample and frame is written; live, the writer's backlog is dropped and counted."""
    folder = SessionFolder.create(tmp_path / "rec", "s1")
    rec = Recorder(folder, crf=0, max_items=2, lossless=lossless)
    rec.start()
    chunks = [np.full(512, i / 400, np.float32) for i in range(200)]
    face = np.ascontiguousarray(next(iter(make_sample.face_frames(1, 10.0))))
    for i, c in enumerate(chunks):
        rec.audio(AudioChunk(i * 512 / 16000, c, 0.0))
        if i % 5 == 0:
            rec.frame(VideoFrame(i * 512 / 16000, face))
    rec.close()
    meta = json.loads((folder.path / "metadata.json").read_text())
    if lossless:
        assert "record_dropped" not in meta and meta["video_frames"] == 40
        np.testing.assert_array_equal(open_replay(folder.path).audio, np.concatenate(chunks))
    else:
        assert meta["record_dropped"] > 0 and rec.drops() == {"recorder": meta["record_dropped"]}


def test_a_folder_holding_a_session_is_not_overwritten(tmp_path):
    SessionFolder.create(tmp_path / "s", "a")
    from mmsa.monitor.errors import PublisherError

    with pytest.raises(PublisherError, match="already holds a session"):
        SessionFolder.create(tmp_path / "s", "b")
