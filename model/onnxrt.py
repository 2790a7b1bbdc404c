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
* **Split graphs** (the default model's layout; ``mmsa.model.export.splits_faces``): the frozen face
  networks, most of a window's pass (45 of 59 ms of one window here), are a graph of their own, and
  :meth:`OnnxModel.prepare` runs it on a window's crops ahead of the scoring, on one thread, keeping the
  outputs of the :data:`MEMO_CROPS` latest crops (keyed by the crop's bytes). Scoring looks them up and
  runs the faces graph on the others only. One graph or two, the same scores (0 difference measured) and
  the same time when nothing was prepared (58.0 against 59.0 ms); prepared, the pass is 26 ms
  (``bench/faces_ahead.py``, docs/performance.md, "The face networks ahead").
* Denormal floats are flushed to zero, as the torch path does (``flush_denormals``).
* Idle intra-op threads sleep instead of spinning: the scorer shares the CPU with Whisper and
  featurization. On the busy 2-core machine a batch of 8 windows took 983 ms with spinning
  threads against 498 ms without (2 threads; 510 ms on one).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
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
MESH_INPUTS = ("mesh_vec", "mesh_map", "mesh_expr")
"""A split graph's inputs in place of ``faces``: the frozen face networks' outputs per crop (B, K, ...)."""
GRAPH_OUTPUTS = ("score", *(f"score_{m}" for m in MODALITIES))
FACES_INPUTS = ("faces",)
FACES_OUTPUTS = MESH_INPUTS
"""The faces graph: crops (N, 1, S, S) -> the frozen networks' outputs (N, ...) (``mmsa.model.export``)."""
KEY_FIELD = "mmsa_graph_key"
"""The graph's metadata entry that records what it was built from (``export.graph_key``)."""
FACES_PER_RUN = 4
"""Face crops per run of the graph at most (one window of the monitor's; see the module's docstring)."""
MEMO_CROPS = 128
"""Crops whose frozen outputs :meth:`OnnxModel.prepare` keeps (about 79 KB each with the default model)."""


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


def faces_graph(path: Path) -> Path:
    """The faces graph beside a split graph: ``<name>-<key>.faces.onnx``."""
    return path.with_name(f"{path.stem}.faces.onnx")


def crop_key(crop: np.ndarray) -> bytes:
    """A crop's digest (its float32 values): the key of the frozen outputs kept by :meth:`OnnxModel.prepare`."""
    return hashlib.blake2b(np.ascontiguousarray(crop, np.float32).tobytes(), digest_size=16).digest()


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
    g["audio"] = g["audio"][:, :, :T]
    for k in ("faces", *MESH_INPUTS):
        if k in g:
            g[k] = g[k][:, :K]
    return {k: np.ascontiguousarray(v) for k, v in g.items()}


class OnnxModel:
    """An exported graph run by ONNX Runtime on the CPU, called like an MMSAModel in evaluation.

    ``threads``: CPU threads (default: the CPUs the process may use, :func:`~mmsa.model.runtime.cpu_threads`):
    runs of the graph at once, each on one thread (``parallel_runs``), or the intra-op threads of one run
    at a time. ``model(batch)``
    returns a :class:`ModelOutput` with ``score``, ``unimodal`` and ``presence``; ``views`` and
    ``logits`` are empty (training-only outputs).

    A **split** graph (``split``: inputs :data:`MESH_INPUTS` instead of ``faces``) comes with its faces graph
    (:func:`faces_graph`): the frozen face networks, run first on the batch's crops. :meth:`prepare` runs them
    ahead on a window's crops (the monitor does it as soon as the crops exist, while Whisper transcribes) and
    keeps their outputs for the :data:`MEMO_CROPS` latest crops, so that scoring the window runs the rest only.
    """

    training = False

    def __init__(self, path: str | Path, threads: int | None = None, faces_per_run: int = FACES_PER_RUN,
                 parallel_runs: bool = True) -> None:
        self.path = Path(path)
        self.faces_per_run = faces_per_run
        self.threads = threads or cpu_threads()
        self.parallel_runs = parallel_runs and self.threads > 1
        self.session = self._session(self.path, self.threads)
        names = tuple(i.name for i in self.session.get_inputs())
        outs = tuple(o.name for o in self.session.get_outputs())
        split_inputs = tuple(n for n in GRAPH_INPUTS if n != "faces") + MESH_INPUTS
        if sorted(names) not in (sorted(GRAPH_INPUTS), sorted(split_inputs)) or outs != GRAPH_OUTPUTS:
            raise GraphError(f"{self.path}: not a scorer graph (inputs {names}, outputs {outs})")
        self.key = self._key(self.session)
        self.split = "faces" not in names
        self.faces: Any = None  # the faces graph's session of a split graph
        if self.split:
            fpath = faces_graph(self.path)
            if not fpath.is_file():
                raise GraphError(f"{self.path}: its faces graph {fpath.name} is missing")
            self.faces = self._session(fpath, self.threads)
            got = (tuple(i.name for i in self.faces.get_inputs()), tuple(o.name for o in self.faces.get_outputs()))
            if got != (FACES_INPUTS, FACES_OUTPUTS):
                raise GraphError(f"{fpath}: not a faces graph (inputs {got[0]}, outputs {got[1]})")
            if self._key(self.faces) != self.key:
                raise GraphError(f"{fpath}: built from other weights or code than {self.path.name}")
        # batches of several runs (parallel_runs): one-thread sessions and a pool, made at first need
        self._single: Any = None
        self._single_faces: Any = None
        self._prepare_faces: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._memo: OrderedDict[bytes, tuple[np.ndarray, ...]] = OrderedDict()  # crop -> frozen outputs (prepare)
        self._memo_lock = threading.Lock()
        self.memo_hits = 0  # crops whose frozen outputs scoring found prepared

    @staticmethod
    def _key(session: Any) -> dict[str, Any] | None:
        raw = session.get_modelmeta().custom_metadata_map.get(KEY_FIELD)
        return json.loads(raw) if raw else None

    def _session(self, path: Path, threads: int) -> Any:
        """An ONNX Runtime session of the graph at ``path`` with ``threads`` intra-op threads."""
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # its warnings are about unused initializers; errors still raise
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise GraphError(f"{path}: not a readable ONNX graph ({str(exc).splitlines()[0]})") from exc

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise RuntimeError("an exported graph cannot train; use the torch model")
        return self

    def _singles(self) -> ThreadPoolExecutor:
        """The one-thread sessions and the pool of ``threads`` runs at once (made at first need)."""
        with self._lock:
            if self._pool is None:
                self._single = self._session(self.path, 1)
                if self.faces is not None:
                    self._single_faces = self._session(faces_graph(self.path), 1)
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx-run")
        return self._pool

    def _runs(self, feeds: list[dict[str, np.ndarray]], faces: bool = False) -> list[list[np.ndarray]]:
        """Each feed through the graph (``faces``: the faces graph), side by side where there are several."""
        if self.parallel_runs and len(feeds) > 1:
            self._singles()
            assert self._pool is not None
            session = self._single_faces if faces else self._single
            return list(self._pool.map(lambda feed: session.run(None, feed), feeds))
        session = self.faces if faces else self.session
        return [session.run(None, feed) for feed in feeds]

    def _faces_one_thread(self) -> Any:
        """The faces graph on one intra-op thread (:meth:`prepare`'s; made at first need)."""
        with self._lock:
            if self._prepare_faces is None:
                self._prepare_faces = self._session(faces_graph(self.path), 1)
        return self._prepare_faces

    def face_outputs(self, crops: np.ndarray, keep: bool = False) -> list[np.ndarray]:
        """(N, 1, S, S) crops -> the faces graph's outputs (N, ...) each; crops :meth:`prepare` saw are looked up.
        ``keep``: run on one thread, in the caller's (:meth:`prepare`), and keep the outputs."""
        keys = [crop_key(c) for c in crops]
        with self._memo_lock:
            found = [self._memo.get(k) for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        if not keep:  # scoring's lookups only: a crop prepared twice is no hit
            self.memo_hits += len(keys) - len(todo)
        if todo:
            n = self.faces_per_run
            feeds = [{"faces": np.ascontiguousarray(crops[todo[j: j + n]])} for j in range(0, len(todo), n)]
            if keep:
                session = self._faces_one_thread()
                runs = [session.run(None, feed) for feed in feeds]
            else:
                runs = self._runs(feeds, faces=True)
            outs = [np.concatenate([r[o] for r in runs]) for o in range(len(FACES_OUTPUTS))]  # once per output
            rows = [tuple(out[j] for out in outs) for j in range(len(todo))]
            for i, row in zip(todo, rows):
                found[i] = row
            if keep:
                with self._memo_lock:
                    for i, row in zip(todo, rows):
                        self._memo[keys[i]] = row
                    while len(self._memo) > MEMO_CROPS:
                        self._memo.popitem(last=False)
        return [np.stack([f[o] for f in found]) for o in range(len(FACES_OUTPUTS))]  # type: ignore[index]

    def prepare(self, crops: np.ndarray | torch.Tensor) -> None:
        """Run the frozen face networks on a window's (N, 1, S, S) crops now, on one thread (the caller's: the
        monitor's featurize thread, beside Whisper on the other core), and keep their outputs: scoring the window
        later skips them. Nothing to do for a graph that is not split. Safe beside a scoring thread."""
        if self.faces is not None and len(crops):
            self.face_outputs(crops.numpy() if isinstance(crops, torch.Tensor) else np.asarray(crops, np.float32), keep=True)

    def _with_mesh(self, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch's arrays with its crops replaced by their frozen outputs, laid out per window (B, K, ...)."""
        mask = a["face_mask"]
        crops = a.pop("faces")[mask]
        outs = self.face_outputs(crops) if len(crops) else [None] * len(MESH_INPUTS)
        shapes = {o.name: o.shape[2:] for o in self.session.get_inputs() if o.name in MESH_INPUTS}
        for name, out in zip(MESH_INPUTS, outs):
            full = np.zeros((*mask.shape, *shapes[name]), np.float32)
            if out is not None:
                full[mask] = out
            a[name] = full
        return a

    def __call__(self, x: ModelInputs) -> ModelOutput:
        a = graph_arrays(x)
        if self.split:
            a = self._with_mesh(a)
        feeds = [_trim(a, rows) for rows in run_groups(a["face_mask"].sum(1), self.faces_per_run)]
        runs = self._runs(feeds)
        out = [torch.from_numpy(np.concatenate([r[j] for r in runs])) for j in range(len(GRAPH_OUTPUTS))]
        return ModelOutput(score=out[0], unimodal=dict(zip(MODALITIES, out[1:])), presence=x.presence(), views={})
