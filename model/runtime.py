"""Process settings for fast inference."""

from __future__ import annotations

import os

import torch


def flush_denormals() -> bool:
    """Flush denormal floats (below about 1.2e-38) to zero on this thread's CPU math.

    With some trained weights the face encoder's activations fall into the denormal range, and
    x86 CPUs compute on denormals many times slower: the scorer ran 1.6x slower on 8 windows
    (bench/scorer_throughput.py, default@c4548b9d1e14). Flushing them changes no score
    measurably. The flag belongs to a thread, and threads inherit it from the thread that
    starts them (torch's OpenMP workers included), so call this at process start and on each
    thread that runs the model. Returns False where the CPU has no such mode.
    """
    return bool(torch.set_flush_denormal(True))


def cpu_threads() -> int:
    """The CPUs this process may run on (its affinity), the default thread count of the ONNX scorer.

    Not ``torch.get_num_threads()``: loading a CTranslate2 model (Whisper, the audio branch's encoder)
    sets the process's OpenMP thread count to that model's threads, and torch reads it back (measured:
    2 -> 1 on the 2-core machine once Whisper is loaded with ``cpu_threads = 1``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def has_rows(idx: torch.Tensor) -> bool:
    """Whether a branch of the model has work: ``idx`` (the rows it runs on, from ``nonzero``) is
    not empty. An eager-mode shortcut: while ``torch.export`` traces the model (the ONNX export,
    :mod:`mmsa.model.export`) it is True, so that the graph computes the branch on however many
    rows it gets at run time instead of failing on a data-dependent ``if``. The tracer is told the
    rows are not empty (a convolution would branch on it otherwise); the ONNX graph keeps no such
    check and runs a branch on zero rows as well (``tests/model/test_export.py`` checks every
    presence pattern, a branch without rows included)."""
    if torch.compiler.is_exporting():
        torch._check(idx.shape[0] > 0)
        return True
    return idx.numel() > 0


def put_rows(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> None:
    """``dst[idx] = src`` in ``dst``'s dtype. Under autocast (mixed-precision training on CUDA, where a
    branch's output is bfloat16 or float16) a branch's rows differ in dtype from the float32 batch
    tensor they land in, and an index put does not cast (``tests/model/test_network.py`` trains under
    CPU autocast). Without autocast the cast is a no-op, and the exported graph has no node for it."""
    dst[idx] = src.to(dst.dtype)
