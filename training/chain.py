"""Chained builds: a run that starts from an earlier run's checkpoint (``train.init_from``) and
the checkpoint a run saves, whose metadata lists every stage of the chain (``training.stages``:
name, command, data, selection, best epoch), the first one first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsa.common.settings import to_dict
from mmsa.model import MMSAModel, load_checkpoint, save_checkpoint
from mmsa.model.errors import ConfigError

from .config import TrainConfig
from .optim import part_of

if TYPE_CHECKING:
    from .trainer import Best

log = logging.getLogger(__name__)


def _stage(cfg: TrainConfig, command: list[str], best: Best) -> dict[str, Any]:
    """What one run (one stage of a chained build) trained on, and how it was selected."""
    return {
        "name": cfg.checkpoint.name,
        "command": " ".join(command),
        "data": [to_dict(s) for s in cfg.data.train],
        "valid": [s.key for s in cfg.data.valid],
        "trainable": list(cfg.train.trainable) or ["all"],
        "seed": cfg.train.seed,
        "select": cfg.select,
        "best_epoch": best.epoch,
        "best_value": best.value,
    }


def save_run(model: MMSAModel, path: Path, cfg: TrainConfig, command: list[str], best: Best, features,
          earlier: dict[str, Any] | None = None) -> None:
    training = {
        "data": [to_dict(s) for s in cfg.data.train],
        "valid": [to_dict(s) for s in cfg.data.valid],
        "command": " ".join(command),
        "config": to_dict(cfg),
        "seed": cfg.train.seed,
        "best_epoch": best.epoch,
        "select": cfg.select,
        # every run of a chained build (init_from), the first one first, this one last
        "stages": [*(earlier["stages"] if earlier else []), _stage(cfg, command, best)],
    }
    if earlier:
        training["init_from"] = {"checkpoint": earlier["checkpoint"], "model": earlier["model"]}
    valid = {k: {m: v for m, v in d.items() if m != "skipped"} for k, d in best.valid.items()}
    save_checkpoint(path, model, name=cfg.checkpoint.name, features=features, training=training,
                    metrics=valid, bert_delta=cfg.checkpoint.bert_delta, half=cfg.checkpoint.half)


def init_from(model: MMSAModel, path: str, trainable: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``; return what it was trained on (its stages).

    Tensors of the ``trainable`` parts that are new or reshaped in ``model`` start fresh; any
    other difference between the checkpoint and the model is a ConfigError.
    """
    loaded = load_checkpoint(path)
    state = loaded.model.state_dict()
    own = model.state_dict()
    differ = [k for k in sorted(set(state) | set(own)) if k not in state or k not in own or own[k].shape != state[k].shape]
    bad = [k for k in differ if part_of(k) not in trainable]
    if bad:
        raise ConfigError(f"train.init_from: {path} does not fit this model (e.g. tensor {bad[0]}); use the same [model] settings")
    model.load_state_dict({k: v for k, v in state.items() if k not in differ}, strict=False)
    fresh = [k for k in differ if k in own]
    log.info("initialised from %s (%s)%s", path, loaded.info.tag,
             f"; {len(fresh)} tensors of {', '.join(sorted({part_of(k) for k in fresh}))} start fresh" if fresh else "")
    info = loaded.info.training
    stages = info.get("stages") or ([{
        "name": loaded.info.name, "command": info.get("command", ""), "data": info.get("data", []),
        "select": info.get("select", ""), "best_epoch": info.get("best_epoch"),
    }] if info else [])
    return {"checkpoint": str(path), "model": loaded.info.tag, "stages": stages}
