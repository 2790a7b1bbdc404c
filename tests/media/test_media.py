"""mmsa.media: real files decoded by ffmpeg/OpenCV, a real photo through the face detector."""

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from mmsa.media import FaceDetector, FaceTracker, MediaError, clip_sample, load_audio, probe, read_frames
from mmsa.model.features import DEFAULT_FEATURES

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (make install adds it)")

ASTRONAUT_FACE = (174, 64, 99, 99)  # x, y, w, h of the face in skimage's astronaut.png


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory):
    """2 s of a 440 Hz tone over the astronaut photo, 10 fps, as mp4 (h264 + aac)."""
    d = tmp_path_factory.mktemp("clip")
    img = d / "face.png"
    cv2.imwrite(str(img), astronaut_bgr())
    out = d / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-loop", "1", "-i", str(img), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", "2", "-r", "10", "-vf", "scale=320:320", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)],
        check=True,
    )
    return out


def test_detector_finds_the_real_face_not_the_largest_box():
    box = FaceDetector().detect(astronaut_bgr())
    assert box is not None and iou(box, ASTRONAUT_FACE) > 0.6


def test_detector_returns_none_without_a_face():
    assert FaceDetector().detect(np.full((240, 320, 3), 127, np.uint8)) is None


def test_tracker_keeps_the_box_between_detections_and_drops_a_lost_face():
    tracker = FaceTracker(FaceDetector(), detect_every=2, max_misses=1)
    face, blank = astronaut_bgr(), np.zeros((512, 512, 3), np.uint8)
    first = tracker.update(face)
    assert first is not None
    assert tracker.update(blank) == first  # not a detection frame: kept
    tracker.update(blank)  # miss 1: kept
    assert tracker.box == first
    tracker.update(blank)
    tracker.update(blank)  # miss 2 > max_misses: dropped
    assert tracker.box is None


def test_probe_load_audio_and_frames(talking_clip):
    info = probe(talking_clip)
    assert info.has_audio and info.has_video and info.width == 320 and abs(info.duration_s - 2.0) < 0.1
    audio = load_audio(talking_clip)
    assert audio.dtype == np.float32 and abs(len(audio) / 16000 - 2.0) < 0.05
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # 1 Hz bins: the tone survives decoding and resampling
    part = load_audio(talking_clip, start_s=0.5, end_s=1.5)
    assert abs(len(part) / 16000 - 1.0) < 0.05
    frames = list(read_frames(talking_clip, 0.5, 1.5))
    assert 9 <= len(frames) <= 11 and all(0.45 <= t < 1.5 for t, _ in frames)


def test_clip_sample_has_audio_and_faces(talking_clip):
    s = clip_sample(talking_clip, "hello there", FaceDetector())
    assert s.text == "hello there"
    assert s.audio.shape[0] == DEFAULT_FEATURES.n_freq
    assert s.faces.shape == (DEFAULT_FEATURES.frames_per_window, 1, 48, 48)


def test_audio_only_file_has_no_vision(tmp_path):
    wav = tmp_path / "tone.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300", "-t", "1", str(wav)], check=True)
    s = clip_sample(wav, None, FaceDetector())
    assert s.faces is None and s.audio is not None and s.text is None


def test_bad_media_gives_one_clear_error(tmp_path, talking_clip):
    with pytest.raises(MediaError, match="file not found"):
        load_audio(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        probe(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match="cannot read media"):
        probe(junk)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(talking_clip.read_bytes()[: talking_clip.stat().st_size // 3])
    with pytest.raises(MediaError):
        clip_sample(truncated, None, FaceDetector())
    silent = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(talking_clip), "-an", "-c:v", "copy", str(silent)], check=True)
    with pytest.raises(MediaError, match="no audio track"):
        load_audio(silent)


def test_search_near_an_earlier_face_finds_it_again_and_nothing_elsewhere():
    det, img = FaceDetector(), astronaut_bgr()
    full = det.detect(img)
    again = det.detect(img, near=full)
    assert again is not None and iou(again, full) > 0.8
    assert det.detect(img, near=(400, 400, 60, 60)) is None  # the rocket corner holds no face


def test_frames_of_a_video_that_starts_after_its_audio_are_on_the_audios_clock(tmp_path):
    """OpenCV counts from the video stream's own start; a video starting 3 s after the audio is moved by 3 s."""
    from mmsa.media import load_audio, probe, read_frames

    first, late = tmp_path / "first.mp4", tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=4", "-f",
                    "lavfi", "-i", "sine=frequency=440:duration=8", "-c:v", "libx264", "-c:a", "aac", str(first)],
                   check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-itsoffset", "3", "-i", str(first), "-i", str(first), "-map", "0:v",
                    "-map", "1:a", "-c", "copy", str(late)], check=True)
    assert probe(late).video_start_s == pytest.approx(3.0) and probe(first).video_start_s == 0.0
    times = [t for t, _ in read_frames(late)]
    assert len(times) == 40 and times[0] == pytest.approx(3.0) and times[-1] == pytest.approx(6.9)
    assert [round(t, 2) for t, _ in read_frames(late, 4.0, 4.5)] == [4.0, 4.1, 4.2, 4.3, 4.4]  # seeking too
    assert load_audio(late).size / 16000 == pytest.approx(8.0, abs=0.05)
