"""A uniform model soup, or an ensemble of face branches: several runs of one recipe as one checkpoint.

Runs that differ only in their seed and start from the same checkpoint (``train.init_from``) end in
nearby minima of one basin; the average of their weights (Wortsman et al. 2022, "Model soups")
usually scores like the ensemble of the runs at the cost of one model, and varies less with the seed
than any one run. ``[train] soup = [1, 2, 3]`` makes ``mmsa-train`` train one run per seed into
``OUT/seed<k>`` and write their soup to ``OUT/model.safetensors`` (docs/training.md). On the default
model's stage 2 (three seeds) the soup did not beat the runs' mean on MOSI valid: docs/default-model.md,
"Tried, not shipped: a soup of three stage-2 seeds".

Choices, written down here:

* **What is averaged:** the floating-point tensors of the parts the runs trained (``train.trainable``)
  that differ between the runs; every other tensor is the first run's, bit for bit (frozen tensors, such
  as BERT's embeddings, are equal in every run; an average of equal values may round differently, and a
  BERT-delta checkpoint would then store them). Integer tensors (BatchNorm's step counters) are the first
  run's.
* **Uniform, not greedy:** every run weighs the same. A greedy soup would add runs in the order of
  their validation score and keep those that help, i.e. select on the validation set a second time.
* **The ensemble** (``[train] ensemble = [1, 2, 3]``, face branches only): where weights do not average
  well (stage 4 of the default model: the soup of three seeds scored like one seed in a 5-fold
  cross-validation, the mean of their class probabilities 1.1 points above it; docs/default-model.md),
  every run's face branch and head is kept (``[model] vision_members``) and their class probabilities are
  averaged; the frozen networks run once for all. It costs the face branch's trainable part once more per
  member at inference (about 4.6 ms per window of 4 faces with ONNX Runtime on the 2-core machine).
* **Selection:** none. The soup is scored on the recipe's validation sets and that score is recorded
  (``soup.json``, the checkpoint's metrics); each run's own epoch was selected as its recipe says.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mmsa.model import MMSAModel, load_checkpoint, save_checkpoint
from mmsa.model.checkpoint import LoadedModel, stored_half
from mmsa.model.errors import ConfigError

from .config import TrainConfig
from .evaluate import score_sources, write_json, write_predictions
from .metrics import REGRESSION_METRICS, VALENCE_METRICS, format_metrics
from .optim import part_of
from .sampling import load_sources
from .trainer import Dist, train_seeds

log = logging.getLogger(__name__)


def average_state(states: list[dict[str, torch.Tensor]], parts: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The first state with every floating-point tensor of ``parts`` (all parts when empty) averaged over ``states``."""
    first = states[0]
    for i, other in enumerate(states[1:], 2):
        if set(other) != set(first) or any(other[k].shape != first[k].shape for k in first):
            raise ConfigError(f"soup: run {i} does not have the same tensors as run 1 (use one [model] for every run)")
    out = dict(first)
    for k, v in first.items():
        if not v.is_floating_point() or (parts and part_of(k) not in parts):
            continue
        if all(torch.equal(v, s[k]) for s in states[1:]):
            continue  # frozen in every run (BERT's embeddings): kept bit for bit, so a BERT-delta checkpoint omits it
        out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
    return out


def make_soup(paths: list[Path], parts: tuple[str, ...], command: list[str]) -> tuple[LoadedModel, dict[str, Any]]:
    """The checkpoints ``paths`` (one recipe, several seeds) averaged: the first one's model with the averaged
    weights, and the training metadata of the soup (its last stage lists the runs)."""
    if len(paths) < 2:
        raise ConfigError("soup: needs two runs or more")
    loaded = [load_checkpoint(str(p), device="cpu") for p in paths]
    if len({m.model.cfg.to_json() for m in loaded}) > 1:
        raise ConfigError("soup: the runs have different [model] settings")
    first = loaded[0]
    first.model.load_state_dict(average_state([m.model.state_dict() for m in loaded], parts))
    return first, _combined(paths, loaded, command, "soup")


def _combined(paths: list[Path], loaded: list[LoadedModel], command: list[str], how: str) -> dict[str, Any]:
    """The training metadata of a soup or ensemble of ``loaded``: the first run's, its last stage listing the runs."""
    first = loaded[0]
    ingredients = [{"checkpoint": str(p), "model": m.info.tag, "seed": m.info.training.get("seed"),
                    "best_epoch": m.info.training.get("best_epoch")} for p, m in zip(paths, loaded)]
    seeds, epochs = [i["seed"] for i in ingredients], [i["best_epoch"] for i in ingredients]
    training = dict(first.info.training)
    stages: list[dict[str, Any]] = list(training.get("stages", []))
    last = dict(stages[-1]) if stages else {"name": first.info.name}
    stages[-1:] = [{**last, "command": " ".join(command), "seed": seeds, "best_epoch": epochs, how: ingredients}]
    training.update(stages=stages, seed=seeds, best_epoch=epochs, command=" ".join(command), **{how: ingredients})
    log.info("%s of %d runs: %s", how, len(paths), ", ".join(i["model"] for i in ingredients))
    return training


def make_ensemble(paths: list[Path], command: list[str]) -> tuple[LoadedModel, dict[str, Any]]:
    """The checkpoints ``paths`` (one face recipe, several seeds) as one model whose face branch is their
    ensemble (``[model] vision_members``): the first run's model, and the face branch and head of each
    further run as a member. Every tensor outside the face branch is the first run's."""
    if len(paths) < 2:
        raise ConfigError("ensemble: needs two runs or more")
    loaded = [load_checkpoint(str(p), device="cpu") for p in paths]
    cfgs = {replace(m.model.cfg, calibration=(1.0, 1.0, 1.0)).to_json() for m in loaded}
    first = loaded[0]
    if len(cfgs) > 1 or first.model.cfg.vision_members != 1:
        raise ConfigError("ensemble: the runs have different [model] settings (or are ensembles already)")
    if first.model.cfg.vision_head != "valence3":
        raise ConfigError('ensemble: averages class probabilities: needs model.vision_head = "valence3"')
    model = MMSAModel(replace(first.model.cfg, vision_members=len(paths)), first.model.text)
    state = dict(first.model.state_dict())
    for j, other in enumerate(loaded[1:]):
        for k, v in other.model.state_dict().items():
            if k.startswith("vision."):
                state[f"vision_members.{j}.encoder.{k.removeprefix('vision.')}"] = v
            elif k.startswith("heads.vision."):
                state[f"vision_members.{j}.head.{k.removeprefix('heads.vision.')}"] = v
    model.load_state_dict(state)
    first.model = model.eval()
    return first, _combined(paths, loaded, command, "ensemble")


def save_soup(soup: LoadedModel, training: dict[str, Any], out: Path, metrics: dict[str, Any]) -> Path:
    """Write the soup as a checkpoint stored like its first run (BERT delta, float16)."""
    return save_checkpoint(out, soup.model, name=soup.info.name, features=soup.features, training=training,
                           metrics=metrics, bert_delta=soup.info.bert_base is not None, half=stored_half(soup.info.path))


def train_soup(cfg: TrainConfig, out_dir: str | Path, command: list[str] | None = None) -> dict[str, Any]:
    """``train.soup`` / ``train.ensemble``: one run per seed (:func:`train_seeds`), then their uniform soup or
    their ensemble in ``out_dir/model.safetensors``, scored on the validation sets (``soup.json`` /
    ``ensemble.json``: its figures and the runs')."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    command = command or sys.argv
    how = "ensemble" if cfg.train.ensemble else "soup"
    seeds = list(cfg.train.ensemble or cfg.train.soup)
    runs = train_seeds(cfg, seeds, out_dir, command)
    if not runs:  # not the main process of a torchrun
        return {}
    paths = [out_dir / f"seed{s}" / "model.safetensors" for s in seeds]
    soup, training = make_ensemble(paths, command) if how == "ensemble" else make_soup(paths, cfg.train.trainable, command)
    features = soup.features
    valid_sets = load_sources(cfg.data.valid, cfg, features, Dist(), training=False)
    valid, preds = score_sources(soup.model, valid_sets, soup.tokenizer, features, cfg.train.eval_batch_size,
                                 torch.device("cpu"), False)
    valid = {k: {m: v for m, v in d.items() if m != "skipped"} for k, d in valid.items()}
    path = save_soup(soup, training, out_dir / "model.safetensors", valid)
    for data, _ in valid_sets:
        write_predictions(out_dir / f"valid_{data.name}.csv", data, preds[data.name])
    result = {"name": cfg.checkpoint.name, how: seeds, "checkpoint": str(path), "valid": valid,
              "runs": runs, "runtime_s": time.perf_counter() - t_start, "command": " ".join(command)}
    write_json(out_dir / f"{how}.json", result)
    keys = list(dict.fromkeys((*REGRESSION_METRICS, *VALENCE_METRICS)))
    for name, m in valid.items():
        log.info("%s, the %s of seeds %s:\n%s", name, how, seeds, format_metrics(m, keys))
    return result

