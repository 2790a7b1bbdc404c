"""The real packaged Whisper and VAD load offline."""

import pytest

from mmsa.common.packages import ResourceError
from mmsa.monitor.resources import resolve_vad, resolve_whisper


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


def test_other_whisper_directories_are_checked(tmp_path):
    with pytest.raises(ResourceError, match="no model.bin"):
        resolve_whisper(tmp_path)
