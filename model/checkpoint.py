"""Checkpoints: safetensors tensors + JSON metadata (ARCHITECTURE section 7). No pickle.

Metadata keys (all JSON strings): ``format`` (``mmsa-monitor/1``), ``name``, ``model_config``,
``feature_config``, ``feature_fingerprint``, ``label_scale``, ``training`` (data, command,
config), ``metrics`` (validation split), ``bert_base``, ``face_mesh``.

BERT weights may be stored as a *delta*: only the tensors that differ from the base BERT
directory are written, and ``bert_base`` records that directory's name and weight digest.
This keeps the embedded default model small (it fine-tunes only BERT's top layers) while a
load rebuilds the full network from the packaged BERT. Loading refuses a checkpoint whose
feature fingerprint differs from the running code, naming the differing setting, a delta
checkpoint whose base BERT has different weights, and one whose face branch was trained on
another face-mesh file than the one shipped (``face_mesh``: its name and digest; the frozen
network is never stored in checkpoints).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mmsa.common.settings import from_dict

from .config import ModelConfig
from .errors import CheckpointError, ConfigError
from .features import DEFAULT_FEATURES, FeatureConfig
from .network import MMSAModel
from .resources import bert_weights_digest, file_digest, resolve_bert, resolve_checkpoint

FORMAT = "mmsa-monitor/1"
BERT_PREFIX = "text.bert."


@dataclass
class CheckpointInfo:
    """Everything a checkpoint says about itself (read without loading its tensors)."""

    path: Path
    name: str
    model_config: ModelConfig
    feature_config: dict[str, Any]
    feature_fingerprint: str
    label_scale: list[float]
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    bert_base: dict[str, Any] | None = None
    face_mesh: dict[str, str] | None = None  # the packaged face-mesh file the vision branch was trained on
    digest: str = ""

    @property
    def tag(self) -> str:
        """``<name>@<short sha256>``: the ``model`` field of every ScoreEvent."""
        return f"{self.name}@{self.digest}"


@dataclass
class LoadedModel:
    model: MMSAModel
    tokenizer: Any
    info: CheckpointInfo
    features: FeatureConfig


def save_checkpoint(
    path: str | Path,
    model: MMSAModel,
    *,
    name: str,
    features: FeatureConfig = DEFAULT_FEATURES,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    bert_delta: bool = False,
    half: bool = False,
) -> Path:
    """Write ``model`` to ``path`` (.safetensors). ``bert_delta``: store only changed BERT tensors.

    ``half`` stores floating tensors as float16 (they are loaded back as float32). ``features`` are
    recorded with the model's own audio input (``[model] audio_input``).
    """
    features = model.cfg.features(features)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bert_dir = resolve_bert(model.cfg.bert)
    bert_base = None
    if bert_delta:
        base = _base_bert_state(bert_dir)
        for key, base_t in base.items():
            full = BERT_PREFIX + key
            if full in state and state[full].shape == base_t.shape and torch.equal(state[full], base_t):
                del state[full]
        bert_base = {"name": model.cfg.bert, "digest": bert_weights_digest(str(bert_dir))}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {
        "format": FORMAT,
        "name": name,
        "model_config": model.cfg.to_json(),
        "feature_config": features.to_json(),
        "feature_fingerprint": features.fingerprint(),
        "label_scale": json.dumps([-model.cfg.score_range, model.cfg.score_range]),
        "training": json.dumps(training or {}, sort_keys=True, default=str),
        "metrics": json.dumps(metrics or {}, sort_keys=True, default=str),
        "bert_base": json.dumps(bert_base),
        "face_mesh": json.dumps(_face_mesh_info(model.cfg)),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def stored_half(path: str | Path) -> bool:
    """Were the float tensors of the checkpoint at ``path`` stored in float16 (``save_checkpoint(half=True)``)?"""
    with safe_open(str(path), framework="pt") as fh:
        key = next((k for k in fh.keys() if not k.endswith("num_batches_tracked")), None)
        return key is not None and fh.get_slice(key).get_dtype() == "F16"


def _face_mesh_info(cfg: ModelConfig) -> dict[str, str] | None:
    """The packaged face-mesh network a checkpoint's vision branch was trained on (not stored in it)."""
    if cfg.face_mesh != "packaged":
        return None
    from . import expression, facemesh

    info = {"file": facemesh.ASSET.name, "digest": file_digest(facemesh.ASSET)}
    if cfg.face_expression == "packaged":  # the second frozen network, recorded beside the first
        info |= {"expression_file": expression.ASSET.name, "expression_digest": file_digest(expression.ASSET)}
    return info


def _base_bert_state(bert_dir: Path) -> dict[str, torch.Tensor]:
    from .encoders import TextEncoder

    return {k: v.detach() for k, v in TextEncoder.from_dir(bert_dir, pretrained=True).bert.state_dict().items()}


def read_info(name_or_path: str | Path) -> CheckpointInfo:
    """Read a checkpoint's metadata; raises CheckpointError for files that are not ours."""
    path = resolve_checkpoint(name_or_path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mmsa-monitor checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        model_cfg = from_dict(ModelConfig, json.loads(meta["model_config"]), "model_config")
        info = CheckpointInfo(
            path=path,
            name=meta["name"],
            model_config=model_cfg,
            feature_config=json.loads(meta["feature_config"]),
            feature_fingerprint=meta["feature_fingerprint"],
            label_scale=json.loads(meta["label_scale"]),
            training=json.loads(meta.get("training", "{}")),
            metrics=json.loads(meta.get("metrics", "{}")),
            bert_base=json.loads(meta.get("bert_base", "null")),
            face_mesh=json.loads(meta.get("face_mesh", "null")),
            digest=file_digest(path),
        )
    except (KeyError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from exc
    return info


def check_features(info: CheckpointInfo, features: FeatureConfig = DEFAULT_FEATURES) -> None:
    """Refuse a checkpoint made with other features, naming the settings that differ."""
    if info.feature_fingerprint == features.fingerprint():
        return
    diffs = features.differences(info.feature_config) or ["fingerprint only"]
    raise CheckpointError(
        f"{info.path}: checkpoint features differ from this code's: {'; '.join(diffs)}; "
        "retrain it or run the version of mmsa-monitor that made it"
    )


def load_checkpoint(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    bert: str | Path | None = None,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> LoadedModel:
    """Rebuild the model of a checkpoint (``default`` or a path) in eval mode on ``device``.

    ``bert`` points at a local BERT directory when the one recorded in the checkpoint is
    elsewhere on this machine.
    """
    info = read_info(name_or_path)
    cfg = info.model_config
    features = cfg.features(features)  # the model's audio input ([model] audio_input) is its own choice
    check_features(info, features)
    bert_dir = resolve_bert(bert if bert is not None else cfg.bert)
    delta = info.bert_base is not None
    if delta:
        have = bert_weights_digest(str(bert_dir))
        if have != info.bert_base.get("digest"):
            raise CheckpointError(
                f"{info.path}: stores only the fine-tuned BERT weights relative to a base BERT with digest "
                f"{info.bert_base.get('digest')}, but {bert_dir} has digest {have}; point --bert at the base it was trained from"
            )
    if info.face_mesh and info.face_mesh != _face_mesh_info(cfg):
        raise CheckpointError(
            f"{info.path}: its face branch was trained on the face-mesh network {info.face_mesh}, but this "
            f"installation ships {_face_mesh_info(cfg)}; run the version of mmsa-monitor that made it"
        )
    model = MMSAModel.build(cfg, bert_dir, pretrained_bert=delta)
    try:
        state = load_file(str(info.path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{info.path}: cannot read tensors ({exc})") from exc
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            raise CheckpointError(f"{info.path}: tensor {key} does not belong to this model")
        if own[key].shape != value.shape:
            raise CheckpointError(
                f"{info.path}: tensor {key} has shape {tuple(value.shape)}, the model built from its config has "
                f"{tuple(own[key].shape)} (is --bert the same architecture?)"
            )
        state[key] = value.to(own[key].dtype)
    missing = [k for k in own if k not in state and not (delta and k.startswith(BERT_PREFIX))]
    if missing:
        raise CheckpointError(f"{info.path}: missing tensors, e.g. {missing[0]}")
    model.load_state_dict(state, strict=False)
    model.to(device).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, features=features)


def describe(info: CheckpointInfo) -> dict[str, Any]:
    """JSON-friendly summary of a checkpoint (for ``--help``-style listings and logs)."""
    d = asdict(info)
    d["path"] = str(info.path)
    d["model_config"] = json.loads(info.model_config.to_json())
    d["tag"] = info.tag
    return d
