"""What the trainer draws its batches from: the mixed training sources, their sampler and collator.

* :class:`MixedDataset`: the training sources as one indexable dataset.
* :class:`MixtureBatchSampler`: per-source weights, optional class balance, length-grouped
  batches, seeded by (seed, epoch) and identical on every rank before sharding.
* :func:`load_sources`: read and featurize the sources (rank 0 fills the cache first).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mmsa.model.features import FeatureConfig, collate

from .cache import SampleStore, featurize
from .config import TrainConfig
from .data import SourceData, read_source

if TYPE_CHECKING:
    from .trainer import Dist


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
