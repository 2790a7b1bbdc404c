"""The real MOSI clips of ../shared/data through the replay pipeline."""

from __future__ import annotations

import csv

import pytest

from mmsa.monitor.events import validate_event
from mmsa.monitor.scorer import Scorer
from tests.monitor.conftest import replay_sources
from tests.monitor.helpers import word_recall
from tests.monitor.test_parity import offline_sample, score_whole_clip
from tests.monitor.test_pipeline import Collector

pytestmark = pytest.mark.data

CLIP = "Oz06ZWiO20M_6"


@pytest.fixture(scope="module")
def mosi(data_dir):
    clip = data_dir / "mosi" / "clips" / f"{CLIP}.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is not in ../shared/data")
    with (data_dir / "mosi" / "label.csv").open() as fh:
        text = next(r["text"] for r in csv.DictReader(fh) if f"{r['video_id']}_{r['clip_id']}" == CLIP)
    return clip, text


async def test_mosi_clip_transcript_faces_and_score(make_pipeline, mosi):
    clip, text = mosi
    pipe, bus, _ = make_pipeline(replay_sources(clip))
    seen = Collector(bus)
    await pipe.run()
    await seen.closed.wait()
    assert seen.events, "no score was published"
    for ev in seen.events:
        validate_event(ev.to_dict())
    transcript = " ".join(ev.text for ev in seen.events)
    assert word_recall(text, transcript) >= 0.6, transcript
    assert sum(ev.modalities["vision"].face_frames for ev in seen.events) > 0


async def test_mosi_clip_scored_live_equals_offline(make_pipeline, mosi, loaded_tiny):
    clip, _ = mosi
    event = await score_whole_clip(make_pipeline, clip)
    sample = offline_sample(clip, event.text, loaded_tiny)
    (offline,) = Scorer(loaded_tiny, "cpu").score([sample])
    assert sample.faces is not None and event.modalities["vision"].face_frames == len(sample.faces)
    assert event.score == pytest.approx(offline.score, abs=1e-4)
