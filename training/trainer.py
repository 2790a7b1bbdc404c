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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mmsa.common.settings import to_dict
from mmsa.model import MODALITIES, MMSAModel, load_checkpoint, resolve_bert, save_checkpoint
from mmsa.model.errors import ConfigError
from mmsa.model.features import DEFAULT_FEATURES, FeatureConfig, collate
from mmsa.model.losses import joint_loss

from .cache import SampleStore, featurize
from .config import SELECT_LAST, TrainConfig, to_toml
from .data import SourceData, read_source
from .errors import TrainingError
from .evaluate import Predictions, autocast, predict, score_source, write_json, write_predictions
from .metrics import REGRESSION_METRICS, VALENCE_METRICS, aggregate, better, format_table, lookup
from .plots import plot_curves, plot_emotion, plot_grad_norms, plot_regression

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


# --------------------------------------------------------------------------- data


class MixedDataset(Dataset):
    """The training sources as one indexable dataset: item -> (Sample, target)."""

    def __init__(self, stores: list[SampleStore]) -> None:
        self.stores = stores
        self.offsets = np.cumsum([0] + [len(s) for s in stores])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return s, i - int(self.offsets[s])

    def __getitem__(self, i: int):
        s, j = self.locate(i)
        return self.stores[s][j], self.stores[s].records[j].label

    def text_length(self, i: int) -> int:
        s, j = self.locate(i)
        return self.stores[s].text_length(j)


class Collator:
    def __init__(self, tokenizer: Any, features: FeatureConfig) -> None:
        self.tokenizer, self.features = tokenizer, features

    def __call__(self, items):
        samples, labels = zip(*items)
        return collate(list(samples), self.tokenizer, self.features), torch.tensor(labels, dtype=torch.float32)


class MixtureBatchSampler(Sampler[list[int]]):
    """Batches of row indices drawn from the mixed sources, the same on every rank, then sharded.

    Equal source weights: a fresh permutation per epoch (plain concatenation). Otherwise each
    row is drawn with probability proportional to its source's weight, with replacement.
    ``group_by_length``: rows are sorted by text length inside chunks of 50 global batches and
    the batches shuffled, so padding shrinks while the order stays random. Seeded by
    (seed, epoch): reproducible, and identical on all ranks before sharding.
    """

    def __init__(self, dataset: MixedDataset, weights: list[float], batch_size: int, seed: int,
                 epoch_samples: int = 0, group_by_length: bool = True, rank: int = 0, world: int = 1,
                 balance: list[bool] | None = None) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world, self.group = rank, world, group_by_length
        balance = balance or [False] * len(dataset.stores)
        self.row_weights = torch.cat([
            _row_weights(store, float(w), bal) for store, w, bal in zip(dataset.stores, weights, balance)
        ])
        self.uniform = len(set(weights)) == 1 and not any(balance)
        self.n_draw = epoch_samples or len(dataset)
        self.epoch = 0
        self._lengths: list[int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.dataset)
        if self.uniform:
            reps = -(-self.n_draw // n)
            idx = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[: self.n_draw].tolist()
        else:
            idx = torch.multinomial(self.row_weights, self.n_draw, replacement=True, generator=g).tolist()
        gb = self.batch_size * self.world
        if self.group:
            if self._lengths is None:
                self._lengths = [self.dataset.text_length(i) for i in range(n)]
            chunk = 50 * gb
            idx = [i for s in range(0, len(idx), chunk) for i in sorted(idx[s : s + chunk], key=self._lengths.__getitem__)]
        batches = [idx[s : s + gb] for s in range(0, len(idx), gb)]
        if batches and len(batches[-1]) < self.world:
            batches.pop()  # every rank needs at least one row
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in order]

    def __iter__(self):
        for b in self._global_batches():
            yield b[self.rank :: self.world]

    def __len__(self) -> int:
        gb = self.batch_size * self.world
        full, rest = divmod(self.n_draw, gb)
        return full + (1 if rest >= self.world else 0)


def _row_weights(store: SampleStore, weight: float, balance: bool) -> torch.Tensor:
    """Each row's chance of being drawn: its source's weight; with ``balance``, divided among the
    valence classes (targets) of the source so that every class is drawn equally often, while the
    source's total share (weight x rows) stays the same."""
    n = len(store)
    if not balance:
        return torch.full((n,), weight)
    labels = [r.label for r in store.records]
    counts: dict[float, int] = defaultdict(int)
    for y in labels:
        counts[y] += 1
    return torch.tensor([weight * n / (len(counts) * counts[y]) for y in labels], dtype=torch.float32)


def load_sources(sources, cfg: TrainConfig, features: FeatureConfig, dist: Dist, training: bool):
    """Read and featurize sources. Training sources: on every rank (rank 0 fills the cache first,
    the others then read it). Validation sets: on rank 0 only, which validates."""
    out: list[tuple[SourceData, SampleStore]] = []
    for src in sources:
        if not training and not dist.main:
            continue
        data = read_source(src, keep_unrated=not training)
        if dist.main:
            store = featurize(data, cfg.cache, features)
        if training:
            dist.barrier()
        if not dist.main:
            store = featurize(data, cfg.cache, features, progress=False)
        out.append((data, store))
    return out


# --------------------------------------------------------------------------- model


BRANCHES = {"text": "text", "text_proj": "text", "audio": "audio", "vision": "vision"}


def part_of(name: str) -> str:
    """The ``train.trainable`` part of a parameter or module name of MMSAModel."""
    top, _, rest = name.partition(".")
    if top == "heads":
        return rest.partition(".")[0]
    return BRANCHES.get(top, "fusion")


def freeze(model: MMSAModel, opts) -> tuple[int, list[torch.nn.Module]]:
    """Apply ``trainable``, ``freeze_bert_embeddings``, ``freeze_bert_layers`` and ``bert_lr = 0``.

    Returns the number of frozen parameters and the modules to keep in eval mode during
    training: the parts left out of ``trainable`` and BERT's embeddings when
    ``freeze_bert_embeddings`` is set (layers frozen by ``freeze_bert_layers`` keep running in
    train mode, as they always have, so existing presets train as before).
    """
    eval_modules: list[torch.nn.Module] = []
    if opts.trainable:
        for name, p in model.named_parameters():
            if part_of(name) not in opts.trainable:
                p.requires_grad_(False)
        for name, child in model.named_children():
            if name == "heads":
                eval_modules += [h for m, h in child.items() if m not in opts.trainable]
            elif part_of(name) not in opts.trainable:
                eval_modules.append(child)
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"train.trainable: {list(opts.trainable)} leaves nothing to train in this model")
    bert = model.text.bert
    if opts.bert_lr == 0:
        for p in bert.parameters():
            p.requires_grad_(False)
    elif opts.freeze_bert_layers or opts.freeze_bert_embeddings:
        embeddings = getattr(bert, "embeddings", None)
        layers = getattr(getattr(bert, "encoder", None), "layer", None)
        if embeddings is None or (opts.freeze_bert_layers and layers is None):
            raise ConfigError("train.freeze_bert_layers / freeze_bert_embeddings: this text encoder is not a BERT "
                              "(no embeddings and encoder.layer)")
        for mod in [embeddings, *list(layers or [])[: opts.freeze_bert_layers]]:
            for p in mod.parameters():
                p.requires_grad_(False)
        if opts.freeze_bert_embeddings:
            eval_modules.append(embeddings)
    n = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return n, eval_modules


def train_mode(net: torch.nn.Module, eval_modules: list[torch.nn.Module]) -> None:
    """``net.train()``, then the frozen parts back in eval mode (no dropout, BatchNorm statistics kept)."""
    net.train()
    for mod in eval_modules:
        mod.eval()


def build_optimizer(model: MMSAModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    bert_ids = {id(p) for p in model.text.bert.parameters()}
    bert = [p for p in model.parameters() if p.requires_grad and id(p) in bert_ids]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in bert_ids]
    groups = [{"params": rest, "lr": cfg.train.lr, "name": "model"}]
    if bert:
        groups.append({"params": bert, "lr": cfg.train.bert_lr, "name": "bert"})
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return opt(groups, weight_decay=cfg.train.weight_decay)


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the learning rates at optimizer step ``step`` (0-based) of ``total``."""
    warm = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    frac = min(1.0, (step - warm) / max(1, total - warm))
    if schedule == "linear":
        return 1.0 - frac
    return 0.5 * (1.0 + math.cos(math.pi * frac))  # cosine


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Warm-up and decay over the run's steps (None for a constant rate without warm-up)."""
    opts = cfg.train
    if opts.schedule == "constant" and opts.warmup == 0:
        return None
    total = opts.epochs * steps_per_epoch
    if opts.max_steps:
        total = min(total, opts.max_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, opts.warmup, opts.schedule)
    )


def _grad_norms(model: MMSAModel, present: torch.Tensor) -> dict[str, float]:
    """L2 norm of the gradient of each modality branch (encoder + unimodal head), for present modalities."""
    out = {}
    for j, (m, params) in enumerate(model.modality_parameters().items()):
        grads = [p.grad.detach().float() for p in params if p.grad is not None]
        if grads and bool(present[j]):
            out[m] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    return out


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
    try:
        return _train(cfg, out_dir, command or sys.argv, features, dist, device, t_start)
    finally:
        if handler is not None:
            logging.getLogger("mmsa").removeHandler(handler)
            handler.close()
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, out_dir: Path, command: list[str], features: FeatureConfig, dist: Dist,
           device: torch.device, t_start: float) -> dict[str, Any]:
    opt_cfg = cfg.train
    if opt_cfg.batch_size % dist.world:
        raise ConfigError(f"train.batch_size: {opt_cfg.batch_size} is not divisible by the {dist.world} processes")
    if opt_cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    seed_everything(opt_cfg.seed)
    log.info("seed %d, device %s, %d process(es), select on %s", opt_cfg.seed, device, dist.world, cfg.select)

    train_sets = load_sources(cfg.data.train, cfg, features, dist, training=True)
    valid_sets = load_sources(cfg.data.valid, cfg, features, dist, training=False)

    from transformers import AutoTokenizer

    bert_dir = resolve_bert(cfg.model.bert)
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    seed_everything(opt_cfg.seed)  # the same initial weights whatever the data loading consumed
    model = MMSAModel.build(cfg.model, bert_dir)
    earlier = _init_from(model, opt_cfg.init_from, opt_cfg.trainable) if opt_cfg.init_from else None
    n_frozen, eval_modules = freeze(model, opt_cfg)
    model.augment_cfg = cfg.augment  # training-only view strengths ([augment])
    model.to(device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: %d trainable parameters, %d frozen%s", n_train, n_frozen,
             f" (training only {', '.join(opt_cfg.trainable)})" if opt_cfg.trainable else "")
    net: torch.nn.Module = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # rows without a modality leave its branch unused
        )
    optimizer = build_optimizer(model, cfg)
    use_amp = opt_cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())

    dataset = MixedDataset([store for _, store in train_sets])
    sampler = MixtureBatchSampler(
        dataset, [d.cfg.weight for d, _ in train_sets], opt_cfg.batch_size // dist.world, opt_cfg.seed,
        opt_cfg.epoch_samples, opt_cfg.group_by_length, dist.rank, dist.world,
        balance=[d.cfg.balance for d, _ in train_sets],
    )
    scheduler = build_scheduler(optimizer, cfg, len(sampler))
    if opt_cfg.num_workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader_gen = torch.Generator().manual_seed(opt_cfg.seed)
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=Collator(tokenizer, features), num_workers=opt_cfg.num_workers,
        generator=loader_gen, worker_init_fn=_worker_init, pin_memory=device.type == "cuda",
    )
    text_views = cfg.loss.text > 0
    views = tuple(m for m in ("audio", "vision") if getattr(cfg.loss, m) > 0)  # second views only for InfoNCE
    select = cfg.select
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"value": None, "epoch": 0, "state": None, "valid": {}, "preds": {}}
    step, stale = 0, 0
    ckpt_path = out_dir / "model.safetensors"
    ema = WeightAverage(model, opt_cfg.ema) if opt_cfg.ema > 0 else None
    # seed the augmentation / dropout stream per rank (weights were initialised identically above)
    torch.manual_seed(opt_cfg.seed * 7919 + dist.rank)

    for epoch in range(1, opt_cfg.epochs + 1):
        t_epoch = time.perf_counter()
        sampler.set_epoch(epoch)
        train_mode(net, eval_modules)
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        gsum: dict[str, float] = defaultdict(float)
        gcount: dict[str, int] = defaultdict(int)
        for batch, labels in _progress(loader, f"epoch {epoch}", dist.main):
            batch, labels = batch.to(device), labels.to(device)
            with autocast(device, use_amp):
                out = net(batch, text_views=text_views, views=views)
            loss = joint_loss(_float_output(out), labels, cfg.loss)
            if not math.isfinite(loss.parts["total"]):
                raise TrainingError(f"the loss became {loss.parts['total']} at step {step + 1}; lower the learning rates")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss.total).backward()
            scaler.unscale_(optimizer)
            for m, g in _grad_norms(model, batch.presence().any(0)).items():
                gsum[m] += g
                gcount[m] += 1
            if opt_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], opt_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            if ema is not None:
                ema.update(model)
            for k, v in loss.parts.items():
                sums[k] += v
                counts[k] += 1
            step += 1
            if opt_cfg.max_steps and step >= opt_cfg.max_steps:
                break
        entry: dict[str, Any] = {
            "epoch": epoch, "step": step,
            "train_loss": {k: sums[k] / counts[k] for k in sums},
            "grad_norm": {m: (gsum[m] / gcount[m] if gcount[m] else None) for m in MODALITIES},
        }
        stop = False
        if dist.main:
            raw_state = ema.swap_in(model) if ema is not None else None  # validate/save the averaged weights
            entry["valid"], preds = _validate(model, valid_sets, tokenizer, features, cfg, device, use_amp)
            if select == SELECT_LAST:
                value = float(epoch)  # every epoch replaces the one before
            else:
                try:
                    value = lookup(entry["valid"], select)
                except KeyError as exc:
                    raise TrainingError(
                        f"train.select: {select} is not among the validation metrics (no {exc.args[0]!r}; "
                        "a unimodal head is scored only where its modality is present)"
                    ) from None
            entry["select_value"] = value
            entry["best"] = select == SELECT_LAST or better(select, value, best["value"])
            if entry["best"]:
                best.update(value=value, epoch=epoch, step=step, valid=entry["valid"], preds=preds,
                            state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
                stale = 0
                _save(model, ckpt_path, cfg, command, best, features, earlier)
            else:
                stale += 1
            if raw_state is not None:
                model.load_state_dict(raw_state, strict=False)  # training goes on from the raw weights
            entry["seconds"] = time.perf_counter() - t_epoch
            history.append(entry)
            if select == SELECT_LAST:  # nothing is selected: report each validation set's main figure
                shown = ", ".join(f"{name}.{k} = {m[k]:.4f}" for name, m in entry["valid"].items()
                                  for k in ("valence_uar3" if "valence_uar3" in m else "mae",))
            else:
                shown = f"{select} = {value:.4f}{' (best)' if entry['best'] else ''}"
            log.info("epoch %d (step %d, %.0f s): loss %.4f | %s | grad norm %s", epoch, step, entry["seconds"],
                     entry["train_loss"].get("total", math.nan), shown,
                     ", ".join(f"{m} {g:.3g}" for m, g in entry["grad_norm"].items() if g is not None))
            stop = bool(opt_cfg.max_steps and step >= opt_cfg.max_steps) or bool(opt_cfg.patience and stale >= opt_cfg.patience)
        if dist.enabled:
            flag = [stop]
            torch.distributed.broadcast_object_list(flag, src=0)
            stop = flag[0]
        if stop:
            break

    if not dist.main:
        return {}
    if best["state"] is None:
        raise TrainingError(f"no epoch gave a finite {select}; nothing to save")
    model.load_state_dict(best["state"])
    metrics = {
        "name": cfg.checkpoint.name, "seed": opt_cfg.seed, "select": select, "best_epoch": best["epoch"],
        "best_step": best["step"], "best_value": best["value"], "valid": best["valid"],
        "epochs_run": len(history), "steps": step, "runtime_s": time.perf_counter() - t_start,
        "device": str(device), "world_size": dist.world, "checkpoint": str(ckpt_path),
        "data": {
            "train": {d.name: {"n": len(d.records), "skipped": d.skipped, "modalities": list(d.modalities)} for d, _ in train_sets},
            "valid": {d.name: {"n": len(d.records), "skipped": d.skipped, "modalities": list(d.modalities)} for d, _ in valid_sets},
        },
        "command": " ".join(command),
        "history": history,
    }
    write_json(out_dir / "metrics.json", metrics)
    plot_curves(history, select, out_dir / "curves.png")
    plot_grad_norms(history, out_dir / "grad_norms.png")
    for data, _ in valid_sets:
        preds = best["preds"][data.name]
        write_predictions(out_dir / f"valid_{data.name}.csv", data, preds)
        plot_source(data, preds, out_dir / f"valid_{data.name}.png")
    if select == SELECT_LAST:
        log.info("kept the last epoch, %d; run folder %s", best["epoch"], out_dir)
    else:
        log.info("best epoch %d: %s = %.4f; run folder %s", best["epoch"], select, best["value"], out_dir)
    for name, m in best["valid"].items():  # the paper's Table 5: each head on its own
        key = "valence_uar3" if "valence_uar3" in m else "acc2_non0"
        log.info("%s %s: fused %.3f | %s", name, key, m[key],
                 ", ".join(f"{mod} {h[key]:.3f}" for mod, h in m["unimodal"].items()))
    return metrics


class WeightAverage:
    """Exponential moving average of the trained tensors (``train.ema``): after every step
    ``avg = decay * avg + (1 - decay) * weight`` for the float parameters and buffers of the
    parts that train (BatchNorm statistics included); integer buffers are copied."""

    def __init__(self, model: MMSAModel, decay: float) -> None:
        self.decay = decay
        trained = {part_of(n) for n, p in model.named_parameters() if p.requires_grad}
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if part_of(k) in trained}

    @torch.no_grad()
    def update(self, model: MMSAModel) -> None:
        state = model.state_dict()
        for k, a in self.avg.items():
            v = state[k].detach()
            if a.is_floating_point():
                a.mul_(self.decay).add_(v.to(a.dtype), alpha=1.0 - self.decay)
            else:
                a.copy_(v)

    def swap_in(self, model: MMSAModel) -> dict[str, torch.Tensor]:
        """Load the averaged tensors into ``model``; return the raw ones to restore afterwards."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.avg}
        model.load_state_dict(self.avg, strict=False)
        return raw


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


def _validate(model, valid_sets, tokenizer, features, cfg: TrainConfig, device, amp):
    metrics, preds = {}, {}
    for data, store in valid_sets:
        p = predict(model, store, tokenizer, features, cfg.train.eval_batch_size, device, amp)
        metrics[data.name] = score_source(data, p)
        preds[data.name] = p
    return metrics, preds


def _stage(cfg: TrainConfig, command: list[str], best: dict) -> dict[str, Any]:
    """What one run (one stage of a chained build) trained on, and how it was selected."""
    return {
        "name": cfg.checkpoint.name,
        "command": " ".join(command),
        "data": [to_dict(s) for s in cfg.data.train],
        "valid": [s.key for s in cfg.data.valid],
        "trainable": list(cfg.train.trainable) or ["all"],
        "seed": cfg.train.seed,
        "select": cfg.select,
        "best_epoch": best["epoch"],
        "best_value": best["value"],
    }


def _save(model: MMSAModel, path: Path, cfg: TrainConfig, command: list[str], best: dict, features,
          earlier: dict[str, Any] | None = None) -> None:
    training = {
        "data": [to_dict(s) for s in cfg.data.train],
        "valid": [to_dict(s) for s in cfg.data.valid],
        "command": " ".join(command),
        "config": to_dict(cfg),
        "seed": cfg.train.seed,
        "best_epoch": best["epoch"],
        "select": cfg.select,
        # every run of a chained build (init_from), the first one first, this one last
        "stages": [*(earlier["stages"] if earlier else []), _stage(cfg, command, best)],
    }
    if earlier:
        training["init_from"] = {"checkpoint": earlier["checkpoint"], "model": earlier["model"]}
    valid = {k: {m: v for m, v in d.items() if m != "skipped"} for k, d in best["valid"].items()}
    save_checkpoint(path, model, name=cfg.checkpoint.name, features=features, training=training,
                    metrics=valid, bert_delta=cfg.checkpoint.bert_delta, half=cfg.checkpoint.half)


def _init_from(model: MMSAModel, path: str, trainable: tuple[str, ...] = ()) -> dict[str, Any]:
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


def plot_source(data: SourceData, preds: Predictions, path: Path) -> Path:
    if data.kind == "emotion":
        return plot_emotion([r.emotion or "" for r in data.records], [r.valence for r in data.records], preds.score,
                            data.name, path)
    return plot_regression([r.label for r in data.records], preds.score, data.name, path)


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
