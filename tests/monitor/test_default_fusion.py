"""The embedded default model through the whole monitor on the sample session (an espeak-ng voice over a
photo that smiles throughout): the fusion's text gate lets clear words carry the score against the face
and the voice, and leaves neutral sentences neutral (the model card's "Data with more than one real
modality")."""

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
    right = sum(h == s for h, s in zip(heard, said))
    assert right >= 7, list(zip(said, heard))  # the card: 7 of 8 (the plain product: 4)
    for e, s in zip(events, said):
        if s == "negative":  # clear negative words against a smiling face
            assert e["polarity"] == "negative", e
