"""Preprocessing cache: same features as the shared clip pipeline, resumable, keyed by file content and settings."""

import csv
import shutil

import numpy as np
import pytest
import torch

from mmsa.media import FaceDetector, clip_sample
from mmsa.model import DEFAULT_FEATURES
from mmsa.training.cache import featurize
from mmsa.training.config import CacheConfig, SourceConfig
from mmsa.training.data import read_source
from mmsa.training.errors import DataError
from tests.training import synth


def cached_files(root):
    return sorted(root.rglob("*.safetensors"))


def test_cache_equals_the_shared_clip_pipeline_and_resumes(mmsa_raw, tmp_path):
    cache = CacheConfig(dir=str(tmp_path / "cache"), workers=2)
    data = read_source(SourceConfig(reader="mmsa-raw", labels=str(mmsa_raw), split="train"))
    store = featurize(data, cache)
    files = cached_files(tmp_path / "cache")
    assert len(files) == 4 and all(f.parent.parent.name == DEFAULT_FEATURES.fingerprint() for f in files)

    rec = data.records[0]
    direct = clip_sample(rec.media, rec.text, FaceDetector())
    sample = store[0]
    assert sample.text == rec.text
    assert torch.equal(sample.audio, direct.audio) and torch.equal(sample.faces, direct.faces)
    assert sample.faces.shape[0] == DEFAULT_FEATURES.frames_per_window  # a face in every sampled frame

    # an interrupted run: two entries missing, a stale temp file left behind
    before = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()
    files[1].unlink()
    (files[2].parent / "junk.safetensors.123.tmp").write_bytes(b"partial")
    store2 = featurize(read_source(SourceConfig(reader="mmsa-raw", labels=str(mmsa_raw), split="train")), cache)
    after = cached_files(tmp_path / "cache")
    assert after == files
    assert [after_f.stat().st_mtime_ns == before[after_f] for after_f in after] == [False, False, True, True]
    assert all(torch.equal(store[i].audio, store2[i].audio) for i in range(4))


def test_modalities_and_changed_files_get_their_own_entries(mmsa_raw, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(mmsa_raw.parent, root)
    cache = CacheConfig(dir=str(tmp_path / "cache"), workers=1)
    src = SourceConfig(reader="mmsa-raw", labels=str(root / "label.csv"), split="valid")
    featurize(read_source(src), cache)
    audio_only = featurize(read_source(SourceConfig(**{**src.__dict__, "modalities": ("text", "audio")})), cache)
    assert audio_only[0].faces is None and audio_only[0].audio is not None
    assert len(cached_files(tmp_path / "cache")) == 4
    clip = read_source(src).records[0].media
    clip.write_bytes(clip.read_bytes())  # same content, new mtime: the cached features still hold
    featurize(read_source(src), cache)
    assert len(cached_files(tmp_path / "cache")) == 4
    second = tmp_path / "second copy"  # the same data elsewhere (a fresh checkout): nothing featurized again
    shutil.copytree(root, second)
    again = featurize(read_source(SourceConfig(**{**src.__dict__, "labels": str(second / "label.csv")})), cache)
    assert len(cached_files(tmp_path / "cache")) == 4 and torch.equal(again[0].audio, audio_only[0].audio)
    with clip.open("ab") as fh:  # changed content (one more byte): featurized again
        fh.write(b"\0")
    featurize(read_source(src), cache)
    assert len(cached_files(tmp_path / "cache")) == 5


def test_damaged_media_names_the_label_line(tmp_path):
    (tmp_path / "Raw" / "v").mkdir(parents=True)
    (tmp_path / "Raw" / "v" / "1.mp4").write_bytes(b"\x00\x01 not a video at all" * 20)
    with (tmp_path / "label.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["video_id", "clip_id", "text", "label", "mode"], ["v", 1, "hi", 1.0, "test"]])
    data = read_source(SourceConfig(reader="mmsa-raw", labels=str(tmp_path / "label.csv"), split="test"))
    with pytest.raises(DataError, match=r"label\.csv:2: .*1\.mp4: cannot read media"):
        featurize(data, CacheConfig(dir=str(tmp_path / "cache"), workers=1))


def test_rows_without_usable_input_are_skipped_and_counted(tmp_path, media_tools):
    blank = [np.full((synth.SIZE, synth.SIZE, 3), 128, np.uint8)] * 3  # 0.3 s, no face, no audio track
    synth.encode(blank, None, tmp_path / "Raw" / "v" / "1.mp4")
    wav = synth.speak("hello there", tmp_path / "s.wav")
    synth.encode(synth.face_frames(12, 0), wav, tmp_path / "Raw" / "v" / "2.mp4")
    with (tmp_path / "label.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["video_id", "clip_id", "text", "label", "mode"],
                                  ["v", 1, "", 0.5, "test"], ["v", 2, "", -1.0, "test"]])
    data = read_source(SourceConfig(reader="mmsa-raw", labels=str(tmp_path / "label.csv"), split="test"))
    store = featurize(data, CacheConfig(dir=str(tmp_path / "cache"), workers=2))
    assert len(store) == 1 and store.records[0].id == "v_2"
    assert data.skipped == {"no_usable_input": 1}
    assert store[0].text is None and store[0].audio is not None


def test_mosi_raw_release_segments_are_cut_from_the_full_video(tmp_path, media_tools):
    labels = synth.make_mosi_full(tmp_path / "mosi")
    src = SourceConfig(reader="mosi", labels=str(labels), split="valid", root=str(tmp_path / "mosi" / "videos"))
    data = read_source(src)
    assert data.modalities == ("text", "audio", "vision") and data.records[0].media.name == "fullvid.mp4"
    store = featurize(data, CacheConfig(dir=str(tmp_path / "cache"), workers=2))
    fps = DEFAULT_FEATURES.frames_per_second
    for i, rec in enumerate(data.records):
        frames = store[i].audio.shape[1]
        assert abs(frames - (rec.end_s - rec.start_s) * fps) <= 0.1 * fps  # the segment, not the whole video
        assert store[i].faces is not None
    # without a root, the same label file is text only
    assert read_source(SourceConfig(reader="mosi", labels=str(labels), split="valid")).modalities == ("text",)
