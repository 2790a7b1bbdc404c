"""Speculative processing (``segmenter.speculative``): the same events as without it, only earlier.

Both runs replay the same clip paced (in real time, as a microphone delivers audio), so the
silence that closes each utterance takes real time and the speculative work has it to run in.
The first sentence has two pauses shorter than the 500 ms that close an utterance: the
segmenter offers a tentative window at each, then withdraws it when speech resumes.
"""

from __future__ import annotations

import dataclasses

import pytest

from mmsa.monitor.asr import ends_phrase, ends_sentence
from mmsa.monitor.config import MonitorConfig
from mmsa.monitor.speculation import SpeculationStats, close_after_ms
from tests.monitor.conftest import replay_sources
from tests.monitor.test_pipeline import Collector

PAUSED_SENTENCES = [
    ("neutral", "Well... I am not sure. Maybe, maybe not."),
    ("positive", "I really love this movie, it made me so happy."),
]


def spoken_clip(tmp_path_factory, make_sample, name: str, sentences):
    """A 10 fps clip of the sentences spoken by espeak-ng, 1 s apart."""
    out = tmp_path_factory.mktemp(name) / f"{name}.mp4"
    make_sample.make_clip(out, sentences, gap_s=1.0, lead_s=0.5, fps=10.0)
    return out


@pytest.fixture(scope="module")
def paused_clip(tmp_path_factory, make_sample):
    return spoken_clip(tmp_path_factory, make_sample, "paused", PAUSED_SENTENCES)


async def paced_run(make_pipeline, path, speculative: bool, early_close_ms: int = 0, phrase_close_ms: int = 0):
    cfg = MonitorConfig().replace("segmenter", speculative=speculative, early_close_ms=early_close_ms,
                                  phrase_close_ms=phrase_close_ms)
    pipe, bus, _ = make_pipeline(replay_sources(path, fast=False), cfg=cfg)
    seen = Collector(bus)
    await pipe.run()
    await seen.closed.wait()
    return pipe, seen.events


def without_timing(event) -> dict:
    d = event.to_dict()
    for key in ("latency_ms", "wall_time", "session"):
        del d[key]
    return d


async def test_speculative_run_publishes_exactly_the_events_of_a_plain_run(make_pipeline, paused_clip):
    plain_pipe, plain = await paced_run(make_pipeline, paused_clip, speculative=False)
    spec_pipe, spec = await paced_run(make_pipeline, paused_clip, speculative=True)
    # no speculative work (the open-window partials, which a plain run has too, may have been skipped)
    assert not plain_pipe.speculative
    assert dataclasses.replace(plain_pipe.speculation, partials_skipped=0) == SpeculationStats()
    assert len(plain) == len(PAUSED_SENTENCES)
    # windows, texts, scores (bit for bit), modalities, face frames, confidence, seq
    assert [without_timing(e) for e in spec] == [without_timing(e) for e in plain]
    stats = spec_pipe.speculation
    assert spec_pipe.speculative
    # one tentative window per pause in the first sentence (withdrawn) and one per utterance end
    assert stats.tentative >= len(PAUSED_SENTENCES) + 2
    assert stats.used + stats.wasted <= stats.ran
    # the ASR task is idle when the first utterance's silence begins: its window is computed ahead, and its
    # transcript ahead of that (asr_pad_ms into the silence: at every pause too), which the window takes
    assert stats.used >= 1
    assert stats.heard >= stats.tentative >= stats.heard_used >= 1
    assert spec_pipe.sources[0].origin is not None


async def test_fast_replays_do_not_speculate(make_pipeline, paused_clip):
    pipe, bus, _ = make_pipeline(replay_sources(paused_clip, fast=True))
    seen = Collector(bus)
    await pipe.run()
    await seen.closed.wait()
    assert len(seen.events) == len(PAUSED_SENTENCES)
    assert not pipe.speculative and pipe.speculation == SpeculationStats()
    assert pipe.sources[0].origin is None


async def test_the_adaptive_close_publishes_the_same_events_once_a_sentence_has_ended(make_pipeline, speech_clip,
                                                                                     speech_script):
    """With ``early_close_ms``, each sentence (its speculative transcript ends with a period) closes after 300 ms
    of silence instead of 500: the same windows, transcripts and scores, published earlier."""
    plain_pipe, plain = await paced_run(make_pipeline, speech_clip, speculative=True)
    early_pipe, early = await paced_run(make_pipeline, speech_clip, speculative=True, early_close_ms=300)
    assert len(early) == len(speech_script)
    assert [without_timing(e) for e in early] == [without_timing(e) for e in plain]
    assert plain_pipe.speculation.early == 0
    # every sentence end is seen; it closes early unless Whisper (on a loaded machine) took longer than the short
    # silence, and the utterance then closed with the long wait as it would without the adaptive close
    stats = early_pipe.speculation
    assert stats.early + stats.late == len(speech_script) and stats.early <= stats.allowed


SHORT_SENTENCES = [  # Whisper tiny.en transcribes these without a full stop (the latency bench's session)
    ("positive", "I love it."),
    ("negative", "Terrible service."),
    ("neutral", "It is raining today."),
]


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, make_sample):
    return spoken_clip(tmp_path_factory, make_sample, "short", SHORT_SENTENCES)


async def test_a_phrase_without_end_punctuation_closes_after_phrase_close_ms(make_pipeline, short_clip):
    """``phrase_close_ms``: a transcript without . ! ? that ends on a word closing a phrase gets its own early
    close (without it, the long wait); the same windows, transcripts and scores."""
    plain_pipe, plain = await paced_run(make_pipeline, short_clip, speculative=True, early_close_ms=288)
    pipe, events = await paced_run(make_pipeline, short_clip, speculative=True, early_close_ms=288, phrase_close_ms=350)
    assert [without_timing(e) for e in events] == [without_timing(e) for e in plain]
    texts = [e.text for e in events]
    unpunctuated = sum(not ends_sentence(t) for t in texts)
    assert len(texts) == len(SHORT_SENTENCES) and unpunctuated >= 1, texts
    assert all(ends_sentence(t) or ends_phrase(t) for t in texts), texts
    # without the phrase tier only the punctuated ones get an early close; with it every utterance does (or is
    # decided too late on a loaded machine, and closes with the long wait)
    assert plain_pipe.speculation.allowed + plain_pipe.speculation.late == len(texts) - unpunctuated
    stats = pipe.speculation
    assert stats.allowed + stats.late == len(texts) and stats.phrase <= unpunctuated
    assert stats.phrase + stats.late >= unpunctuated


def test_close_after_ms_takes_the_early_close_for_sentences_and_the_phrase_close_for_phrases():
    cfg = MonitorConfig().segmenter
    assert close_after_ms("I love it.", cfg) == cfg.early_close_ms
    assert close_after_ms("I love it", cfg) == cfg.phrase_close_ms > cfg.early_close_ms
    assert close_after_ms("I love the", cfg) is None  # mid-sentence: the long wait
    assert close_after_ms("I love it", dataclasses.replace(cfg, phrase_close_ms=0)) is None
    assert close_after_ms("I love it.", dataclasses.replace(cfg, early_close_ms=0)) is None  # adaptive close off
    # a phrase never closes sooner than a sentence
    assert close_after_ms("I love it", dataclasses.replace(cfg, early_close_ms=400, phrase_close_ms=350)) == 400
