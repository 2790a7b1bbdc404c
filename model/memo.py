"""A memo of a frozen network's outputs per input row, for training (``ImageEncoder.remember``).

The face branch's frozen networks (the Face Mesh trunk and the expression network) cost most of a
face-training step, and in training they see the same crops every epoch (FER2013's 2,036 training
faces, stage 4 of the default model) and every validation. Their outputs depend on the crop alone
(frozen weights, eval mode, no randomness), so the trainer keeps them: the first epoch computes them,
the later ones look them up.

Choices, written down here:

* **The key is the crop's bytes** (a 16-byte BLAKE2b digest of its values, dtype and shape), not its
  index in a data set: whatever reads, pads or batches the rows, the same pixels give the same outputs.
* **Misses are computed together**, in the order they came, by one call of the wrapped function: a
  batch whose crops are all new is computed exactly as without the memo.
* **A byte budget**: rows are kept until the stored outputs reach it, then new rows are computed and
  not stored (a video corpus with eight crops per clip may not fit; stage 4's FER2013 faces take about 370 MB).
* Stored rows are detached copies (a row does not keep its batch's storage alive) and stay on the
  device they were computed on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

Outputs = tuple[torch.Tensor | None, ...]
"""The wrapped function's result: tensors whose first axis is the input's rows (or None)."""

BUDGET_BYTES = 2 << 30
"""The default budget: 2 GiB of stored outputs."""


def row_key(row: torch.Tensor) -> bytes:
    """One input row -> the digest of its values, dtype and shape."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{row.dtype} {tuple(row.shape)}".encode())
    h.update(row.detach().contiguous().cpu().numpy().tobytes())
    return h.digest()


class RowMemo:
    """Outputs of a deterministic, gradient-free function of independent rows, kept per row."""

    def __init__(self, budget_bytes: int = BUDGET_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError("budget_bytes: must be >= 0")
        self.budget = budget_bytes
        self.rows: dict[bytes, Outputs] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __call__(self, fn: Callable[[torch.Tensor], Outputs], x: torch.Tensor) -> Outputs:
        """``fn(x)``, with the rows seen before looked up and only the others computed."""
        keys = [row_key(r) for r in x]
        new = [i for i, k in enumerate(keys) if k not in self.rows]
        self.misses += len(new)
        self.hits += len(keys) - len(new)
        if len(new) == len(keys):
            computed = fn(x)
        elif new:
            computed = fn(x[new])
        else:
            computed = None
        fresh: dict[bytes, Outputs] = {}
        for j, i in enumerate(new):
            row = tuple(None if t is None else t[j] for t in computed)  # type: ignore[union-attr]  # views
            fresh[keys[i]] = row
            size = sum(t.numel() * t.element_size() for t in row if t is not None)
            if self.bytes + size <= self.budget and keys[i] not in self.rows:
                self.rows[keys[i]] = tuple(None if t is None else t.detach().clone() for t in row)  # copied only when kept
                self.bytes += size
        if len(new) == len(keys):
            return computed  # type: ignore[return-value]
        rows = [fresh.get(k) or self.rows[k] for k in keys]
        return tuple(None if rows[0][j] is None else torch.stack([r[j] for r in rows]) for j in range(len(rows[0])))
