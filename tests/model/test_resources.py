"""The real packaged BERT, Whisper and VAD load offline."""

import os

import pytest
import torch

from mmsa.model import ResourceError, resolve_bert, resolve_vad, resolve_whisper
from mmsa.model.encoders import TextEncoder
from mmsa.model.features import tokenize


def test_packaged_bert_loads_offline_and_encodes(tokenizer):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    enc = TextEncoder.from_dir(resolve_bert()).eval()
    assert enc.dim == 384
    with torch.inference_mode():
        f = enc(tokenize(["i loved this movie", "i hated this movie", "i loved this film"], tokenizer))
    sims = torch.nn.functional.cosine_similarity(f.h_c[0:1], f.h_c[1:])
    assert sims[1] > 0.9  # near-synonyms land close in the pretrained space


def test_packaged_whisper_transcribes_spoken_words_offline(tmp_path):
    import shutil
    import subprocess

    from faster_whisper import WhisperModel

    from mmsa.media import load_audio

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make install adds it)")
    wav = tmp_path / "speech.wav"
    sentence = "the weather is lovely today and i am very happy"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), sentence], check=True)
    model = WhisperModel(str(resolve_whisper()), device="cpu", compute_type="int8", local_files_only=True)
    segments, _ = model.transcribe(load_audio(wav), language="en", vad_filter=False, beam_size=1)
    heard = set(" ".join(s.text for s in segments).lower().replace(".", " ").replace(",", " ").split())
    assert len(set(sentence.split()) & heard) >= 7
    assert resolve_vad().stat().st_size > 100_000


def test_other_directories_are_checked(tmp_path):
    with pytest.raises(ResourceError, match="not a BERT directory"):
        resolve_bert(tmp_path)
    with pytest.raises(ResourceError, match="no model.bin"):
        resolve_whisper(tmp_path)
