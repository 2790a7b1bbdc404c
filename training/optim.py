"""The optimisation parts of a run: which parameters train, the optimizer, the learning-rate
schedule, per-branch gradient norms and the weight average (``train.ema``).

``train.trainable`` names parts of :class:`mmsa.model.MMSAModel` (text, audio, vision, fusion);
the other parts are frozen and kept in eval mode, so a later stage of a chained build never
changes an earlier branch. ``train.optimizer``: ``adam`` (the paper), ``adamw`` or ``sgd`` (the
paper's Table 4 comparison; momentum ``train.momentum``).
"""

from __future__ import annotations

import math

import torch

from mmsa.model import MMSAModel
from mmsa.model.errors import ConfigError

from .config import TrainConfig

BRANCHES = {"text": "text", "text_proj": "text", "audio": "audio", "vision": "vision", "vision_members": "vision"}


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
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
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


def grad_norms(model: MMSAModel, present: torch.Tensor) -> dict[str, float]:
    """L2 norm of the gradient of each modality branch (encoder + unimodal head), for present modalities."""
    out = {}
    for j, (m, params) in enumerate(model.modality_parameters().items()):
        grads = [p.grad.detach().float() for p in params if p.grad is not None]
        if grads and bool(present[j]):
            out[m] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    return out


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
