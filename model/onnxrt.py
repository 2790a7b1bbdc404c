"""ONNX Runtime for scoring on the CPU: the exported graph of ``MMSAModel.forward`` (``mmsa.model.export``).

:class:`OnnxModel` stands in for an :class:`~mmsa.model.MMSAModel` in evaluation mode:
``model(batch) -> ModelOutput`` with the same fused and unimodal scores (NaN where a modality is
absent), so the monitor's ``Scorer`` and ``mmsa-eval`` call it as they call torch. torch stays the
training path and the reference: ``tests/model/test_export.py`` holds the two together.

``onnxruntime`` is imported lazily, here only (tests/test_import_rule.py): ``mmsa.model`` keeps
importing with torch alone, and a missing package is one line (:class:`RuntimeMissingError`).

Choices (measured on the 2-core CPU, docs/performance.md):

* A batch runs in groups of consecutive rows with at most :data:`FACES_PER_RUN` face crops
  (rows without faces cost nothing against it), each group trimmed to its own longest text, audio
  and face count. The face mesh network works on 192x192 maps of every crop and its mirror, and
  per crop it ran 1.5 ms in runs of 8 crops against 2.7 ms in one run of 128 (the maps of a large
  run no longer fit the CPU's caches), so a batch of 8 windows runs fastest as 8 runs of one.
  Since the monitor searches 4 frames per window (``[scorer] faces_per_window``) the budget is 4,
  one such window per run: with 8 (two windows a run) batches of 8 scored 10-17 % fewer windows/s
  in two interleaved pairs on 2026-12-05 (docs/performance.md, "Batches on the same windows").
* **Threads: one per CPU, and a batch's runs at once** (``threads``, default every CPU the process may
  use; ``parallel_runs``). A batch of one run (one window) runs on a session with ``threads`` intra-op
  threads; a batch of several runs goes on a second session of one intra-op thread, made at the first
  such batch (about 95 MB more for the default model), ``threads`` runs at a time. On the 2-core machine
  (bench/scorer_throughput.py, two runs, 2026-12-05): one window 17 windows/s on one thread, 27-28 on
  two; batches of 8 and 32 26-28 windows/s on two intra-op threads one run after another, 28-30 with
  the runs side by side. ``parallel_runs=False`` keeps every batch on the first session, one run after another.
  Before 2026-12-05 the default was torch's thread count, which loading Whisper sets to 1
  (:func:`~mmsa.model.runtime.cpu_threads`), so the monitor's scorer ran on one thread.
* Denormal floats are flushed to zero, as the torch path does (``flush_denormals``).
* Idle intra-op threads sleep instead of spinning: the scorer shares the CPU with Whisper and
  featurization. On the busy 2-core machine a batch of 8 windows took 983 ms with spinning
  threads against 498 ms without (2 threads; 510 ms on one).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ResourceError
from .features import MODALITIES, ModelInputs
from .network import ModelOutput
from .runtime import cpu_threads

GRAPH_INPUTS = (
    "input_ids", "attention_mask", "token_type_ids", "text_present",
    "audio", "audio_mask", "audio_present", "faces", "face_mask", "vision_present",
)
GRAPH_OUTPUTS = ("score", *(f"score_{m}" for m in MODALITIES))
KEY_FIELD = "mmsa_graph_key"
"""The graph's metadata entry that records what it was built from (``export.graph_key``)."""
FACES_PER_RUN = 4
"""Face crops per run of the graph at most (one window of the monitor's; see the module's docstring)."""


class RuntimeMissingError(ResourceError):
    """``runtime = "onnx"`` without the packages it needs."""


class GraphError(ResourceError):
    """An exported graph is unreadable, stale (built from other weights or code) or cannot be built."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissingError(
            f"the onnx runtime needs the onnxruntime package ({exc}): pip install onnxruntime, "
            "or choose the torch runtime ([scorer] runtime = \"torch\", mmsa-eval --runtime torch)"
        ) from exc
    return onnxruntime


def graph_arrays(x: ModelInputs) -> dict[str, np.ndarray]:
    """A collated batch -> the graph's inputs (seg1/seg2 are not inputs: the scores never read them)."""
    t = x.text
    tensors = (t.input_ids, t.attention_mask, t.token_type_ids, x.text_present,
               x.audio, x.audio_mask, x.audio_present, x.faces, x.face_mask, x.vision_present)
    return {name: v.detach().cpu().numpy() for name, v in zip(GRAPH_INPUTS, tensors)}


def run_groups(n_faces: np.ndarray, budget: int = FACES_PER_RUN) -> list[slice]:
    """Consecutive rows in groups of at most ``budget`` face crops (a row with more runs alone)."""
    groups, start, used = [], 0, 0
    for i, n in enumerate(n_faces.tolist()):
        if i > start and used + n > budget:
            groups.append(slice(start, i))
            start, used = i, 0
        used += n
    groups.append(slice(start, len(n_faces)))
    return groups


def _trim(a: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    """The rows of a group, without the padding that only longer rows of other groups needed."""
    g = {k: v[rows] for k, v in a.items()}
    L = max(int(g["attention_mask"].sum(1).max()), 1)
    T = max(int(g["audio_mask"].sum(1).max()), 1)
    K = max(int(g["face_mask"].sum(1).max()), 1)
    for k in ("input_ids", "attention_mask", "token_type_ids", "audio_mask", "face_mask"):
        g[k] = g[k][:, : {"audio_mask": T, "face_mask": K}.get(k, L)]
    g["audio"], g["faces"] = g["audio"][:, :, :T], g["faces"][:, :K]
    return {k: np.ascontiguousarray(v) for k, v in g.items()}


class OnnxModel:
    """An exported graph run by ONNX Runtime on the CPU, called like an MMSAModel in evaluation.

    ``threads``: CPU threads (default: the CPUs the process may use, :func:`~mmsa.model.runtime.cpu_threads`):
    runs of the graph at once, each on one thread (``parallel_runs``), or the intra-op threads of one run
    at a time. ``model(batch)``
    returns a :class:`ModelOutput` with ``score``, ``unimodal`` and ``presence``; ``views`` and
    ``logits`` are empty (training-only outputs).
    """

    training = False

    def __init__(self, path: str | Path, threads: int | None = None, faces_per_run: int = FACES_PER_RUN,
                 parallel_runs: bool = True) -> None:
        self.path = Path(path)
        self.faces_per_run = faces_per_run
        self.threads = threads or cpu_threads()
        self.parallel_runs = parallel_runs and self.threads > 1
        self.session = self._session(self.threads)
        names = tuple(i.name for i in self.session.get_inputs())
        outs = tuple(o.name for o in self.session.get_outputs())
        if sorted(names) != sorted(GRAPH_INPUTS) or outs != GRAPH_OUTPUTS:
            raise GraphError(f"{self.path}: not a scorer graph (inputs {names}, outputs {outs})")
        raw = self.session.get_modelmeta().custom_metadata_map.get(KEY_FIELD)
        self.key: dict[str, Any] | None = json.loads(raw) if raw else None
        # batches of several runs (parallel_runs): a one-thread session and a pool, made at first need
        self._single: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _session(self, threads: int) -> Any:
        """An ONNX Runtime session of the graph with ``threads`` intra-op threads."""
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # its warnings are about unused initializers; errors still raise
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise GraphError(f"{self.path}: not a readable ONNX graph ({str(exc).splitlines()[0]})") from exc

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise RuntimeError("an exported graph cannot train; use the torch model")
        return self

    def __call__(self, x: ModelInputs) -> ModelOutput:
        a = graph_arrays(x)
        feeds = [_trim(a, rows) for rows in run_groups(a["face_mask"].sum(1), self.faces_per_run)]
        if self.parallel_runs and len(feeds) > 1:
            with self._lock:
                if self._pool is None:
                    self._single = self._session(1)
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx-run")
            runs = list(self._pool.map(lambda feed: self._single.run(None, feed), feeds))
        else:
            runs = [self.session.run(None, feed) for feed in feeds]
        out = [torch.from_numpy(np.concatenate([r[j] for r in runs])) for j in range(len(GRAPH_OUTPUTS))]
        return ModelOutput(score=out[0], unimodal=dict(zip(MODALITIES, out[1:])), presence=x.presence(), views={})
