"""The training loop behind ``mmsa-train`` (one process, or one per GPU under torchrun).

Per epoch: draw rows from the mixed training sources (``weight`` per source, optionally
class-balanced, length-grouped batches), optimise the joint loss of the paper (Eq. 12;
``mmsa.model.joint_loss``) with Adam or AdamW (one learning rate for BERT, one for the rest;
optional warm-up and linear or cosine decay), clip gradients, log the mean gradient norm of
each modality branch (the paper's Figure 5), then score every validation set (fused and
unimodal heads, Table 5) and keep the checkpoint that is best on ``train.select``, a metric of
a validation set, never of a test split (or, with ``select = "last"``, the last epoch).

Chained builds: ``init_from`` starts from an earlier run's checkpoint and ``trainable`` trains
only some parts (the rest frozen and in eval mode); the checkpoint's metadata lists every
stage of the chain (``training.stages``). The parts a stage trains may change shape in
``[model]`` (e.g. a new vision head): their new or reshaped tensors start fresh; every other
tensor must fit the earlier checkpoint exactly.

The loop is split into steps: :func:`_setup` (seeds, data, model, optimizer, loader),
:func:`_train_epoch` / :func:`_train_step`, :func:`_select` (validation, selection, the
checkpoint of a new best: ``chain.save_run``) and :func:`_finish` (metrics, plots, predictions).
Batches come from ``sampling.py``, the optimizer, schedule and frozen parts from ``optim.py``.

Run folder: ``model.safetensors``, ``metrics.json``, ``curves.png``, ``grad_norms.png``,
``config.toml`` (the resolved config), ``valid_<name>.csv|png`` (predictions of the selected
model) and ``train.log``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmsa.model import MODALITIES, MMSAModel, resolve_bert
from mmsa.model.errors import ConfigError
from mmsa.model.features import DEFAULT_FEATURES, FeatureConfig
from mmsa.model.losses import joint_loss

from .cache import SampleStore
from .chain import init_from, save_run
from .config import SELECT_LAST, TrainConfig, to_toml
from .data import SourceData
from .errors import TrainingError
from .evaluate import Predictions, autocast, score_sources, write_json, write_predictions
from .metrics import REGRESSION_METRICS, VALENCE_METRICS, aggregate, better, format_table, lookup
from .optim import WeightAverage, build_optimizer, build_scheduler, freeze, grad_norms, train_mode
from .plots import plot_curves, plot_grad_norms, plot_source
from .sampling import Collator, MixedDataset, MixtureBatchSampler, load_sources

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def setup_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device_pref != "cpu"
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda asked for, but CUDA is not available (use auto or cpu)")
    if world <= 1:
        return Dist(), torch.device("cuda" if cuda else "cpu")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, local), torch.device(f"cuda:{local}" if cuda else "cpu")


# --------------------------------------------------------------------------- training


def train(cfg: TrainConfig, out_dir: str | Path, command: list[str] | None = None,
          features: FeatureConfig = DEFAULT_FEATURES) -> dict[str, Any]:
    """Train one seed into ``out_dir``; return the contents of ``metrics.json``."""
    t_start = time.perf_counter()
    dist, device = setup_distributed(cfg.train.device)
    out_dir = Path(out_dir)
    handler = None
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.toml").write_text(to_toml(cfg))
        handler = logging.FileHandler(out_dir / "train.log", mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("mmsa").addHandler(handler)
    try:  # the model's audio input decides the audio features ([model] audio_input)
        return _train(cfg, out_dir, command or sys.argv, cfg.model.features(features), dist, device, t_start)
    finally:
        if handler is not None:
            logging.getLogger("mmsa").removeHandler(handler)
            handler.close()
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@dataclass
class Run:
    """What one training run holds from its setup to its last epoch."""

    cfg: TrainConfig
    out_dir: Path
    command: list[str]
    features: FeatureConfig
    dist: Dist
    device: torch.device
    train_sets: list[tuple[SourceData, SampleStore]]
    valid_sets: list[tuple[SourceData, SampleStore]]
    tokenizer: Any
    model: MMSAModel
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    eval_modules: list[torch.nn.Module]
    earlier: dict[str, Any] | None  # the stages of the checkpoint it started from (init_from)
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: Any = field(init=False)
    scaler: Any = field(init=False)
    sampler: MixtureBatchSampler = field(init=False)
    loader: DataLoader = field(init=False)
    ema: WeightAverage | None = field(init=False)
    use_amp: bool = False
    step: int = 0

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "model.safetensors"


@dataclass
class Best:
    """The best epoch so far on ``train.select`` (with ``last``: the latest)."""

    value: float | None = None
    epoch: int = 0
    step: int = 0
    state: dict[str, torch.Tensor] | None = None
    valid: dict[str, Any] = field(default_factory=dict)
    preds: dict[str, Predictions] = field(default_factory=dict)
    stale: int = 0  # epochs since the last improvement (patience)


def _train(cfg: TrainConfig, out_dir: Path, command: list[str], features: FeatureConfig, dist: Dist,
           device: torch.device, t_start: float) -> dict[str, Any]:
    run = _setup(cfg, out_dir, command, features, dist, device)
    best, history = Best(), []
    for epoch in range(1, cfg.train.epochs + 1):
        entry = _train_epoch(run, epoch)
        stop = False
        if dist.main:
            _select(run, entry, best)
            history.append(entry)
            _log_epoch(run, entry)
            stop = bool(cfg.train.max_steps and run.step >= cfg.train.max_steps) or bool(
                cfg.train.patience and best.stale >= cfg.train.patience)
        if dist.enabled:
            flag = [stop]
            torch.distributed.broadcast_object_list(flag, src=0)
            stop = flag[0]
        if stop:
            break
    if not dist.main:
        return {}
    return _finish(run, history, best, t_start)


# --------------------------------------------------------------------------- setup steps


def _setup(cfg: TrainConfig, out_dir: Path, command: list[str], features: FeatureConfig, dist: Dist,
           device: torch.device) -> Run:
    """Seeds, data, model (from ``init_from``, parts frozen), optimizer, schedule and loader."""
    opts = cfg.train
    if opts.batch_size % dist.world:
        raise ConfigError(f"train.batch_size: {opts.batch_size} is not divisible by the {dist.world} processes")
    if opts.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    seed_everything(opts.seed)
    log.info("seed %d, device %s, %d process(es), select on %s", opts.seed, device, dist.world, cfg.select)
    train_sets = load_sources(cfg.data.train, cfg, features, dist, training=True)
    valid_sets = load_sources(cfg.data.valid, cfg, features, dist, training=False)
    model, tokenizer, earlier, eval_modules = _build_model(cfg, device, train_sets + valid_sets)
    net: torch.nn.Module = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # rows without a modality leave its branch unused
        )
    run = Run(cfg, out_dir, command, features, dist, device, train_sets, valid_sets, tokenizer, model, net,
              eval_modules, earlier, use_amp=opts.amp and device.type == "cuda")
    run.optimizer = build_optimizer(model, cfg)
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.use_amp and not torch.cuda.is_bf16_supported())
    run.sampler, run.loader = _build_loader(cfg, train_sets, tokenizer, features, dist, device)
    run.scheduler = build_scheduler(run.optimizer, cfg, len(run.sampler))
    run.ema = WeightAverage(model, opts.ema) if opts.ema > 0 else None
    # seed the augmentation / dropout stream per rank (weights were initialised identically above)
    torch.manual_seed(opts.seed * 7919 + dist.rank)
    return run


def _build_model(cfg: TrainConfig, device: torch.device, sets: list):
    """The model on ``device`` (its weights from ``init_from`` where given; the face memo only where
    ``sets``, the data, have faces), the tokenizer, the stages it started from and the eval-mode modules."""
    from transformers import AutoTokenizer

    opts = cfg.train
    bert_dir = resolve_bert(cfg.model.bert)
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    seed_everything(opts.seed)  # the same initial weights whatever the data loading consumed
    model = MMSAModel.build(cfg.model, bert_dir)
    earlier = init_from(model, opts.init_from, opts.trainable) if opts.init_from else None
    n_frozen, eval_modules = freeze(model, opts)
    model.for_training(cfg.augment, faces=any("vision" in data.modalities for data, _ in sets))  # [augment]; memo
    model.to(device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: %d trainable parameters, %d frozen%s", n_train, n_frozen,
             f" (training only {', '.join(opts.trainable)})" if opts.trainable else "")
    return model, tokenizer, earlier, eval_modules


def _build_loader(cfg: TrainConfig, train_sets, tokenizer, features: FeatureConfig, dist: Dist, device: torch.device):
    """The mixture sampler of the training sources and the DataLoader over it."""
    opts = cfg.train
    dataset = MixedDataset([store for _, store in train_sets])
    sampler = MixtureBatchSampler(
        dataset, [d.cfg.weight for d, _ in train_sets], opts.batch_size // dist.world, opts.seed,
        opts.epoch_samples, opts.group_by_length, dist.rank, dist.world,
        balance=[d.cfg.balance for d, _ in train_sets],
    )
    if opts.num_workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=Collator(tokenizer, features), num_workers=opts.num_workers,
        generator=torch.Generator().manual_seed(opts.seed), worker_init_fn=_worker_init,
        pin_memory=device.type == "cuda",
    )
    return sampler, loader


# --------------------------------------------------------------------------- epoch steps


def _train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One pass over the drawn batches; the epoch's entry of the history (losses, gradient norms)."""
    cfg, opts = run.cfg, run.cfg.train
    t_epoch = time.perf_counter()
    run.sampler.set_epoch(epoch)
    train_mode(run.net, run.eval_modules)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    gsum: dict[str, float] = defaultdict(float)
    gcount: dict[str, int] = defaultdict(int)
    text_views = cfg.loss.text > 0
    views = tuple(m for m in ("audio", "vision") if getattr(cfg.loss, m) > 0)  # second views only for InfoNCE
    for batch, labels in _progress(run.loader, f"epoch {epoch}", run.dist.main):
        parts, norms = _train_step(run, batch.to(run.device), labels.to(run.device), text_views, views)
        for m, g in norms.items():
            gsum[m] += g
            gcount[m] += 1
        for k, v in parts.items():
            sums[k] += v
            counts[k] += 1
        if opts.max_steps and run.step >= opts.max_steps:
            break
    return {
        "epoch": epoch, "step": run.step, "t_start": t_epoch,
        "train_loss": {k: sums[k] / counts[k] for k in sums},
        "grad_norm": {m: (gsum[m] / gcount[m] if gcount[m] else None) for m in MODALITIES},
    }


def _train_step(run: Run, batch, labels: torch.Tensor, text_views: bool, views: tuple[str, ...]):
    """One optimizer step on a batch: the loss parts and each present branch's gradient norm."""
    with autocast(run.device, run.use_amp):
        out = run.net(batch, text_views=text_views, views=views)
    loss = joint_loss(_float_output(out), labels, run.cfg.loss)
    if not math.isfinite(loss.parts["total"]):
        raise TrainingError(f"the loss became {loss.parts['total']} at step {run.step + 1}; lower the learning rates")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss.total).backward()
    run.scaler.unscale_(run.optimizer)
    norms = grad_norms(run.model, batch.presence().any(0))
    if run.cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], run.cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.scheduler is not None:
        run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.step += 1
    return loss.parts, norms


def _select(run: Run, entry: dict[str, Any], best: Best) -> None:
    """Validate (the averaged weights with ``ema``), compare on ``train.select``, save a new best."""
    model, select = run.model, run.cfg.select
    raw_state = run.ema.swap_in(model) if run.ema is not None else None  # validate/save the averaged weights
    entry["valid"], preds = score_sources(model, run.valid_sets, run.tokenizer, run.features,
                                          run.cfg.train.eval_batch_size, run.device, run.use_amp)
    if select == SELECT_LAST:
        value = float(entry["epoch"])  # every epoch replaces the one before
    else:
        try:
            value = lookup(entry["valid"], select)
        except KeyError as exc:
            raise TrainingError(
                f"train.select: {select} is not among the validation metrics (no {exc.args[0]!r}; "
                "a unimodal head is scored only where its modality is present)"
            ) from None
    entry["select_value"] = value
    entry["best"] = select == SELECT_LAST or better(select, value, best.value)
    if entry["best"]:
        best.value, best.epoch, best.step, best.valid, best.preds = value, entry["epoch"], run.step, entry["valid"], preds
        best.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        best.stale = 0
        save_run(model, run.ckpt_path, run.cfg, run.command, best, run.features, run.earlier)
    else:
        best.stale += 1
    if raw_state is not None:
        model.load_state_dict(raw_state, strict=False)  # training goes on from the raw weights
    entry["seconds"] = time.perf_counter() - entry.pop("t_start")


def _log_epoch(run: Run, entry: dict[str, Any]) -> None:
    select = run.cfg.select
    if select == SELECT_LAST:  # nothing is selected: report each validation set's main figure
        shown = ", ".join(f"{name}.{k} = {m[k]:.4f}" for name, m in entry["valid"].items()
                          for k in ("valence_uar3" if "valence_uar3" in m else "mae",))
    else:
        shown = f"{select} = {entry['select_value']:.4f}{' (best)' if entry['best'] else ''}"
    log.info("epoch %d (step %d, %.0f s): loss %.4f | %s | grad norm %s", entry["epoch"], entry["step"],
             entry["seconds"], entry["train_loss"].get("total", math.nan), shown,
             ", ".join(f"{m} {g:.3g}" for m, g in entry["grad_norm"].items() if g is not None))


def _finish(run: Run, history: list[dict[str, Any]], best: Best, t_start: float) -> dict[str, Any]:
    """Load the best weights; write metrics.json, the plots and the validation predictions."""
    cfg, select = run.cfg, run.cfg.select
    if best.state is None:
        raise TrainingError(f"no epoch gave a finite {select}; nothing to save")
    run.model.load_state_dict(best.state)
    metrics = {
        "name": cfg.checkpoint.name, "seed": cfg.train.seed, "select": select, "best_epoch": best.epoch,
        "best_step": best.step, "best_value": best.value, "valid": best.valid,
        "epochs_run": len(history), "steps": run.step, "runtime_s": time.perf_counter() - t_start,
        "device": str(run.device), "world_size": run.dist.world, "checkpoint": str(run.ckpt_path),
        "data": {group: {d.name: {"n": len(d.records), "skipped": d.skipped, "modalities": list(d.modalities)}
                         for d, _ in sets}
                 for group, sets in (("train", run.train_sets), ("valid", run.valid_sets))},
        "command": " ".join(run.command),
        "history": history,
    }
    write_json(run.out_dir / "metrics.json", metrics)
    plot_curves(history, select, run.out_dir / "curves.png")
    plot_grad_norms(history, run.out_dir / "grad_norms.png")
    for data, _ in run.valid_sets:
        preds = best.preds[data.name]
        write_predictions(run.out_dir / f"valid_{data.name}.csv", data, preds)
        plot_source(data, preds, run.out_dir / f"valid_{data.name}.png")
    if select == SELECT_LAST:
        log.info("kept the last epoch, %d; run folder %s", best.epoch, run.out_dir)
    else:
        log.info("best epoch %d: %s = %.4f; run folder %s", best.epoch, select, best.value, run.out_dir)
    for name, m in best.valid.items():  # the paper's Table 5: each head on its own
        key = "valence_uar3" if "valence_uar3" in m else "acc2_non0"
        log.info("%s %s: fused %.3f | %s", name, key, m[key],
                 ", ".join(f"{mod} {h[key]:.3f}" for mod, h in m["unimodal"].items()))
    return metrics


def _float_output(out):
    """Scores and views in float32 for the loss (autocast may hand back bfloat16)."""
    out.score = out.score.float()
    out.unimodal = {m: s.float() for m, s in out.unimodal.items()}
    out.views = {m: (a.float(), b.float()) for m, (a, b) in out.views.items()}
    out.logits = {m: z.float() for m, z in out.logits.items()}
    return out


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % (1 << 32)
    random.seed(seed)
    np.random.seed(seed)


def _progress(loader, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if show else True)


# --------------------------------------------------------------------------- seeds


def train_seeds(cfg: TrainConfig, seeds: list[int], out_dir: str | Path, command: list[str] | None = None) -> dict[str, Any]:
    """Train one run per seed into ``out_dir/seed<k>`` and write ``aggregate.json`` (mean +- std)."""
    out_dir = Path(out_dir)
    runs = []
    for s in seeds:
        scfg = replace(cfg, train=replace(cfg.train, seed=s))
        runs.append(train(scfg, out_dir / f"seed{s}", command))
    if not runs or not runs[0]:
        return {}
    agg = aggregate([r["valid"] for r in runs])
    result = {"seeds": list(seeds), "select": cfg.select, "runs": [str(out_dir / f"seed{s}") for s in seeds],
              "best_epochs": [r["best_epoch"] for r in runs], **agg}
    write_json(out_dir / "aggregate.json", result)
    keys = list(dict.fromkeys((*REGRESSION_METRICS, *VALENCE_METRICS)))
    for name in agg["mean"]:
        log.info("%s over seeds %s (mean +- std):\n%s", name, seeds,
                 format_table({"mean": agg["mean"][name], "std": agg["std"][name]}, keys))
    return result
