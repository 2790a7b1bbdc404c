"""The training config: TOML -> frozen dataclasses (strict: unknown keys and wrong types name the key).

Sections (see docs/training.md for a full example)::

    [model]       mmsa.model.ModelConfig (architecture, stored in the checkpoint)
    [loss]        mmsa.model.LossConfig (weights of the joint loss, Eq. 12)
    [augment]     mmsa.model.augment.AugmentConfig (strength of the random training views)
    [train]       TrainOptions below (epochs, max_steps, batch_size, seed, learning rates, ...)
    [[data.train]] one table per training source (SourceConfig)
    [[data.valid]] one table per validation set, evaluated every epoch (never a test split)
    [cache]       preprocessing cache (dir, workers)
    [checkpoint]  name, bert_delta, half

Paths in the config are relative to the working directory (run from the repo root);
``~`` and ``$VARS`` are expanded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmsa.common.settings import apply_overrides, from_dict, parse_override, read_toml, to_dict
from mmsa.model import ConfigError, LossConfig, ModelConfig
from mmsa.model.augment import AugmentConfig
from mmsa.model.features import MODALITIES

from .data import RAVDESS_ACTORS, READERS, resolve_path
from .metrics import REGRESSION_METRICS, VALENCE_METRICS

Reader = Literal[tuple(READERS)]  # type: ignore[valid-type]  # the names of training/data.py's READERS
EMOTION_READERS = frozenset(name for name, spec in READERS.items() if spec.kind == "emotion")


@dataclass(frozen=True)
class SourceConfig:
    """One dataset: a reader, its label file, a media root and a row filter."""

    reader: Reader = "mosi"
    """Label format: a name of ``training/data.py``'s READERS (mosi, mosei, mmsa-raw, ravdess, fer2013, vader)."""
    labels: str = ""
    """Label file (vader: one ``*_GroundTruth.txt`` or the folder holding them)."""
    split: str = ""
    """Rows to use: the ``mode`` value (train/valid/test) for mosi/mosei/mmsa-raw; the built-in
    deterministic splits train/valid/test for ravdess (by actor), fer2013 and vader (by hash);
    ``all`` for every row."""
    name: str = ""
    """Name in logs and metrics keys, e.g. ``mosi_valid`` (default: ``<reader>_<split>``)."""
    root: str = ""
    """Media root. mosi/mosei: folder of the full videos (empty: text only). mmsa-raw: folder
    holding ``Raw/`` (default: the label file's folder). ravdess/fer2013: base of the relative
    paths (default: the label file's folder)."""
    modalities: tuple[str, ...] = ()
    """Use only these of text/audio/vision (default: all the source has)."""
    actors: tuple[int, ...] = ()
    """ravdess: use these actor numbers instead of the split's actors."""
    text_column: str = "text"
    """mosei: column with the transcript (``text`` human, ``asr_text`` ASR)."""
    weight: float = 1.0
    """Relative chance of each of this source's rows to be drawn (1 everywhere: plain concatenation)."""
    label_scale: float = 1.0
    """Multiply this source's targets (after the reader's own mapping to the MOSI scale)."""
    limit: int = 0
    """Keep only the first N rows after filtering (0: all); for quick runs."""
    balance: bool = False
    """ravdess/fer2013 training sources: draw every valence class (negative, neutral, positive)
    equally often (rows drawn with replacement, the source's total share unchanged)."""
    videos: Literal["", "train", "heldout"] = ""
    """mosi/mosei/mmsa-raw: keep only the split's rows whose video falls in the ``train`` (70 %) or
    ``heldout`` (30 %) part of a fixed salted hash of ``video_id`` (``data.video_part``); e.g. MOSEI
    valid split by speaker into training rows and a held-out cross-check. Empty: every video."""
    fold: str = ""
    """Cross-validation, ``"k/n"``: keep only fold k of n of the split's rows (a salted hash of the row's
    video for mosi/mosei/mmsa-raw, its actor for ravdess, its id for fer2013/vader: ``data.hash_fold``),
    e.g. the held-out part of FER2013 train; empty: every row."""
    exclude_fold: str = ""
    """``"k/n"``: keep every fold of n but k (the training part of that fold); not with ``fold``."""

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("labels: the label file is required")
        if not self.split:
            raise ValueError("split: required (train, valid, test or all), so that a test split is never used by accident")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise ValueError(f"modalities: unknown modality {bad[0]!r} (known: {', '.join(MODALITIES)})")
        if self.weight <= 0:
            raise ValueError("weight: must be > 0")
        if self.limit < 0:
            raise ValueError("limit: must be >= 0")
        if self.videos and READERS[self.reader].split_by != "mode":
            raise ValueError(f"videos: only for sources split by a mode column (mosi, mosei, mmsa-raw), not {self.reader}")
        if self.balance and self.reader not in EMOTION_READERS:
            raise ValueError(f"balance: only for emotion sources ({', '.join(sorted(EMOTION_READERS))}), not {self.reader}")
        if self.fold and self.exclude_fold:
            raise ValueError("fold, exclude_fold: give one of them (a fold, or every fold but one)")
        _ = self.folds_kept  # validates "k/n"

    @property
    def folds_kept(self) -> tuple[frozenset[int], int] | None:
        """(the folds kept, n) from ``fold`` / ``exclude_fold``; None: no cross-validation filter."""
        text = self.fold or self.exclude_fold
        if not text:
            return None
        key = "fold" if self.fold else "exclude_fold"
        k, sep, n = text.partition("/")
        if not (sep and k.strip().isdigit() and n.strip().isdigit() and 2 <= int(n) and 1 <= int(k) <= int(n)):
            raise ValueError(f"{key}: {text!r} must be \"k/n\" with 1 <= k <= n and n >= 2, e.g. \"3/5\"")
        k_, n_ = int(k), int(n)
        return (frozenset({k_}) if self.fold else frozenset(range(1, n_ + 1)) - {k_}), n_

    @property
    def key(self) -> str:
        return self.name or f"{self.reader}_{self.split}".replace("-", "_")

    @property
    def kind(self) -> Literal["regression", "emotion"]:
        return READERS[self.reader].kind


@dataclass(frozen=True)
class DataConfig:
    train: tuple[SourceConfig, ...] = ()
    """Training sources, mixed in every epoch (each with its own modalities)."""
    valid: tuple[SourceConfig, ...] = ()
    """Validation sets, evaluated every epoch; none may be a test split."""


PARTS = ("text", "audio", "vision", "fusion")
"""What ``train.trainable`` can name: a modality branch (encoder, projection, unimodal head) or the fusion layers."""


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 10
    """Passes over the training data."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: no limit)."""
    batch_size: int = 48
    """Global batch size (split over the processes under torchrun)."""
    seed: int = 1
    """Seeds Python, numpy, torch and the sampler."""
    lr: float = 1e-4
    """Learning rate of every non-BERT parameter."""
    bert_lr: float = 1e-5
    """Learning rate of the BERT encoder (paper: 1e-5)."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    """``adam`` (weight decay as an L2 term in the gradient, the paper's Eq. 11), ``adamw``
    (decoupled weight decay, as BERT fine-tuning usually does) or ``sgd`` (stochastic gradient
    descent with ``momentum``: the paper's Table 4 compares it with Adam)."""
    momentum: float = 0.9
    """``sgd`` only: momentum (0: plain SGD). The paper does not give one; 0.9 is the usual choice."""
    weight_decay: float = 0.0
    """L2 term lambda ||theta|| of Eq. 11 (adam), or the decoupled decay (adamw)."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule over the run's steps after the warm-up: constant, or a linear or
    cosine decay to 0 at the last step (epochs x batches per epoch, or max_steps if smaller)."""
    warmup: float = 0.0
    """Fraction of the run's steps with a linear warm-up from 0 (0: none)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    freeze_bert_layers: int = 0
    """Freeze BERT's embeddings and lowest N layers (>= the layer count freezes all of BERT)."""
    freeze_bert_embeddings: bool = False
    """Freeze BERT's embeddings (word, position, type, LayerNorm) and run them in eval mode (no
    dropout); a ``bert_delta`` checkpoint then never stores them."""
    trainable: tuple[str, ...] = ()
    """Train only these parts (text, audio, vision, fusion); every other part is frozen and kept
    in eval mode (no dropout, BatchNorm statistics unchanged), so a later stage of a chained
    build (``init_from``) never changes an earlier branch. Empty: everything trains."""
    select: str = ""
    """Model selection: ``<valid name>.<metric>`` (e.g. ``mosi_valid.mae``; nested ``mosi_valid.unimodal.text.mae``),
    or ``last``: keep the last epoch, so the validation sets are only reported and stay unseen by
    selection. Default: the first validation set's mae (regression) or valence_uar3 (emotion)."""
    patience: int = 0
    """Stop when the selection metric has not improved for this many epochs (0: never)."""
    eval_batch_size: int = 64
    """Batch size for validation."""
    group_by_length: bool = True
    """Batch rows of similar text length (less padding, much faster BERT on CPU); order stays random."""
    epoch_samples: int = 0
    """Rows drawn per epoch (0: the number of training rows)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when present."""
    amp: bool = True
    """Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling)."""
    num_workers: int = 0
    """DataLoader worker processes (features come from the cache, so 0 is usually enough)."""
    init_from: str = ""
    """Start from the weights of this checkpoint (same architecture), e.g. a branch trained before."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms (slower; CPU runs are reproducible without it)."""
    ema: float = 0.0
    """Keep an exponential moving average of the trained weights with this decay per step
    (e.g. 0.99) and validate, select and save the averaged weights (0: off, the raw weights)."""
    soup: tuple[int, ...] = ()
    """Train one run per seed listed here (``OUT/seed<k>``, each selected as ``select`` says) and save the
    average of their trained weights, a uniform model soup, as ``OUT/model.safetensors`` (:mod:`mmsa.training.soup`);
    empty: one run of ``seed``."""
    ensemble: tuple[int, ...] = ()
    """Train one run per seed listed here, as ``soup`` does, and keep every run's face branch: the saved model
    averages their class probabilities (``[model] vision_members``; ``trainable = ["vision"]`` only); empty: off."""

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1")
        for key in ("max_steps", "patience", "freeze_bert_layers", "num_workers", "epoch_samples"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be >= 0")
        if self.lr <= 0 or self.bert_lr < 0:
            raise ValueError("lr and bert_lr: must be > 0 (bert_lr 0 freezes BERT)")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError("warmup: must be a fraction of the steps in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError("weight_decay: must be >= 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError("momentum: must be in [0, 1)")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError("ema: must be in [0, 1) (0: off)")
        bad = [p for p in self.trainable if p not in PARTS]
        if bad:
            raise ValueError(f"trainable: unknown part {bad[0]!r} (known: {', '.join(PARTS)})")
        if len(set(self.trainable)) != len(self.trainable):
            raise ValueError("trainable: a part is named twice")
        for key in ("soup", "ensemble"):
            seeds = getattr(self, key)
            if len(seeds) == 1 or len(set(seeds)) != len(seeds):
                raise ValueError(f"{key}: needs two different seeds or more (empty: off)")
        if self.soup and self.ensemble:
            raise ValueError("soup and ensemble: use one (a soup averages the runs' weights, an ensemble keeps them all)")
        if self.ensemble and tuple(self.trainable) != ("vision",):
            raise ValueError('ensemble: only of face branches (trainable = ["vision"]), got trainable = '
                             f"{list(self.trainable)}")


@dataclass(frozen=True)
class CacheConfig:
    dir: str = ".cache/mmsa"
    """Per-sample feature cache; a subfolder per feature fingerprint."""
    workers: int = 4
    """Parallel decoding threads (each runs ffmpeg and the face detector)."""


@dataclass(frozen=True)
class CheckpointOptions:
    name: str = ""
    """Checkpoint name (ScoreEvent ``model`` field); default: the config file's stem."""
    bert_delta: bool = False
    """Store only the BERT tensors that differ from the base BERT (small with freeze_bert_layers)."""
    half: bool = False
    """Store float tensors as float16."""


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainOptions = field(default_factory=TrainOptions)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    checkpoint: CheckpointOptions = field(default_factory=CheckpointOptions)

    @property
    def select(self) -> str:
        if self.train.select:
            return self.train.select
        first = self.data.valid[0]
        return f"{first.key}.{'valence_uar3' if first.kind == 'emotion' else 'mae'}"


SELECT_LAST = "last"
"""``train.select`` that keeps the last epoch instead of the best one on a validation metric."""


def validate(cfg: TrainConfig) -> TrainConfig:
    """Cross-field checks: sources present, unique names, no test rows (a test split, RAVDESS test actors) in
    validation unless nothing is selected on it, no ``all`` in validation, no train/valid overlap, a valid select."""
    if not cfg.data.train:
        raise ConfigError("data.train: at least one training source ([[data.train]]) is required")
    if not cfg.data.valid:
        raise ConfigError("data.valid: at least one validation set ([[data.valid]]) is required for model selection")
    if cfg.train.ensemble and cfg.model.vision_head != "valence3":
        raise ConfigError('train.ensemble: averages class probabilities: needs model.vision_head = "valence3"')
    for group, sources in (("train", cfg.data.train), ("valid", cfg.data.valid)):
        names = [s.key for s in sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"data.{group}: two sources are named {sorted(dup)[0]!r}; give each a distinct name")
    for i, s in enumerate(cfg.data.valid):
        if s.split.lower() == "test" and cfg.select != SELECT_LAST:
            raise ConfigError(
                f"data.valid[{i}] ({s.key}): split 'test' cannot be used to select a model; "
                "validate on 'valid' and evaluate test splits once, with mmsa-eval, after training "
                "(or keep the last epoch with train.select = \"last\": validation sets are then only reported)"
            )
        if s.split.lower() == "all" and not (s.actors and READERS[s.reader].split_by == "actor"):
            raise ConfigError(f"data.valid[{i}] ({s.key}): split 'all' would include test rows; name the split")
        held = sorted(set(s.actors) & set(RAVDESS_ACTORS["test"])) if READERS[s.reader].split_by == "actor" else []
        if held and cfg.select != SELECT_LAST:
            raise ConfigError(
                f"data.valid[{i}] ({s.key}): actors {', '.join(map(str, held))} are RAVDESS test actors "
                f"({', '.join(map(str, RAVDESS_ACTORS['test']))}) and cannot be used to select a model; validate on "
                "other actors (or keep the last epoch with train.select = \"last\": validation sets are then only reported)"
            )
        for t in cfg.data.train:
            if _overlap(t, s):
                raise ConfigError(
                    f"data.valid[{i}] ({s.key}): shares rows with training source {t.key} (same label file, "
                    f"splits {_rows(t)} and {_rows(s)}); validation figures would be inflated"
                )
    select = cfg.select
    if select == SELECT_LAST:
        return cfg
    name, _, metric = select.partition(".")
    valid = {s.key: s for s in cfg.data.valid}
    if name not in valid or not metric:
        raise ConfigError(
            f"train.select: {select!r} must be <valid name>.<metric> with a name from data.valid ({', '.join(valid)})"
        )
    allowed = VALENCE_METRICS if valid[name].kind == "emotion" else REGRESSION_METRICS
    last = metric.rsplit(".", 1)[-1]
    parts = metric.split(".")
    nested_ok = len(parts) == 1 or (len(parts) == 3 and parts[0] == "unimodal" and parts[1] in MODALITIES)
    if last not in allowed or last == "n" or not nested_ok:
        raise ConfigError(
            f"train.select: unknown metric {metric!r} for {name} (use one of {', '.join(allowed[1:])}, "
            "optionally as unimodal.<text|audio|vision>.<metric>)"
        )
    return cfg


def override(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set`` overrides; a number picks an item of a table list: ``data.train.0.labels=PATH``."""
    out = apply_overrides(data, [])  # a deep copy
    for text in overrides:
        path, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                node = _item(node, part, text)
            else:
                nxt = node.setdefault(part, {} if not path[i + 1].isdigit() else [])
                if not isinstance(nxt, (dict, list)):
                    raise ConfigError(f"--set {text!r}: {part} is not a table")
                node = nxt
        if isinstance(node, list):
            raise ConfigError(f"--set {text!r}: give a key after the list index, e.g. data.train.0.labels=...")
        node[path[-1]] = value
    return out


def _item(items: list[Any], part: str, text: str) -> Any:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {text!r}: {part!r} is not an index of a list of {len(items)} tables")
    return items[int(part)]


def _rows(s: SourceConfig) -> str:
    """A source's row filter in words, e.g. ``'train' fold 2/5`` (for the overlap error)."""
    return repr(s.split) + (f" fold {s.fold}" if s.fold else f" without fold {s.exclude_fold}" if s.exclude_fold else "")


def _same_file(a: str, b: str) -> bool:
    """Do two config paths name one file (``..``, symlinks and hard links seen through)?"""
    pa, pb = resolve_path(a), resolve_path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist (yet): their resolved paths differ, so not the same file
        return False


def _overlap(a: SourceConfig, b: SourceConfig) -> bool:
    """Could two sources hold the same rows? (same reader and label file, overlapping splits)"""
    if a.reader != b.reader or not _same_file(a.labels, b.labels):
        return False
    if READERS[a.reader].split_by == "actor":

        def actors(s: SourceConfig) -> set[int]:
            if s.actors:
                return set(s.actors)
            return set(range(1, 100)) if s.split.lower() == "all" else set(RAVDESS_ACTORS.get(s.split.lower(), ()))

        return bool(actors(a) & actors(b))
    if a.videos and b.videos and a.videos != b.videos:
        return False  # the two parts of the videos never share a row
    fa, fb = a.folds_kept, b.folds_kept
    if fa and fb and fa[1] == fb[1] and not fa[0] & fb[0]:
        return False  # other folds of one cross-validation never share a row
    return a.split.lower() == b.split.lower() or "all" in (a.split.lower(), b.split.lower())


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """Read a TOML config, apply ``--set`` overrides, build and validate it; also return the raw dict."""
    raw = override(read_toml(path), overrides or [])
    cfg = from_dict(TrainConfig, raw)
    if not cfg.checkpoint.name:
        from dataclasses import replace

        cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, name=Path(path).stem))
    return validate(cfg), raw


# --------------------------------------------------------------------------- TOML writer


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_table(prefix: str, table: dict[str, Any], out: list[str], array: bool = False) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_list(v)}
    out.append(f"[[{prefix}]]" if array else f"[{prefix}]")
    out.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
    out.append("")
    for k, v in table.items():
        if isinstance(v, dict):
            _toml_table(f"{prefix}.{k}", v, out)
        elif _is_table_list(v):
            for item in v:
                _toml_table(f"{prefix}.{k}", item, out, array=True)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(cfg: TrainConfig) -> str:
    """The resolved config as TOML (every key, defaults included): ``mmsa-train`` can rerun it."""
    data = to_dict(cfg)
    out: list[str] = ["# resolved config written by mmsa-train", ""]
    for section, table in data.items():
        _toml_table(section, table, out)
    return "\n".join(out)
