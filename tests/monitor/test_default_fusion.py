"""The embedded default model through the whole monitor on the sample session (an espeak-ng voice over a
photo that smiles throughout): the fusion's text gate lets clear words carry the score against the face
and the voice (the model card's "Data with more than one real modality"). Where the words are neutral the
voice and the face decide, and this face smiles: the two neutral facts come out positive."""

from __future__ import annotations

import json

from mmsa.common.scale import polarity_of
from mmsa.monitor.sessionlog import read_lines
from tests.conftest import REPO
from tests.monitor.conftest import run_cli

SAMPLE = REPO / "examples" / "sample-session"


def test_clear_words_carry_the_fused_score_on_the_sample_session(tmp_path):
    res = run_cli("--replay", str(SAMPLE), "--fast", "--headless", "--model", "default",
                  "--jsonl", str(tmp_path / "e.jsonl"), cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    events = read_lines(tmp_path / "e.jsonl")
    script = json.loads((SAMPLE / "script.json").read_text())
    assert len(events) == len(script) == 8
    said = [s["polarity"] for s in script]
    heard = [e["polarity"] for e in events]
    faces = [e["modalities"]["vision"]["score"] for e in events]
    assert all(f is not None and polarity_of(f) == "positive" for f in faces)  # the photo smiles throughout
    assert all(e["modalities"]["audio"]["present"] and e["modalities"]["text"]["present"] for e in events)
    # every clear sentence right, the negative ones against a smiling face (the card: 6 of 8 in all, the
    # plain product 4); the neutral facts follow the face
    clear = [(s, h) for s, h in zip(said, heard) if s != "neutral"]
    assert len(clear) == 6 and all(s == h for s, h in clear), list(zip(said, heard))
    texts = [e["modalities"]["text"]["score"] for e, s in zip(events, said) if s == "neutral"]
    assert all(abs(t) < 0.5 for t in texts), texts  # the words of the neutral facts are neutral
