"""Export ``MMSAModel.forward`` to ONNX, and the cache of exported graphs.

    python -m mmsa.model.export [default|CHECKPOINT] [--bert DIR] [--cache DIR]   # build ahead of use

The whole evaluation forward pass is exported, on collated batch tensors (the inputs of
``onnxrt.GRAPH_INPUTS``), with ``torch.export`` (``torch.onnx.export(dynamo=True)``): every
branch, head and fusion of whatever architecture the checkpoint has, so a changed model exports
without changes here. Batch, token, audio-frame and face-crop axes are dynamic. The model code
keeps two rules for this (``mmsa.model.runtime.has_rows``): a branch's "no rows, skip it" test is an
eager-mode shortcut, and no size passes through ``int()``. A graph whose axes came out fixed is
refused (:class:`GraphError`).

**Split graphs** (:func:`splits_faces`: the default model's layout, the CNN on the Face Mesh trunk's map
beside the expression network): the frozen face networks are exported as a graph of their own, the
*faces graph* (crops -> the trunk's features and map and the expression network's features, each crop
averaged with its mirror), and the rest takes their outputs per crop (``onnxrt.MESH_INPUTS``) in place of
the crops. ``OnnxModel`` runs the two in turn, with the same scores as one graph; the monitor runs the
faces graph on a window's crops as soon as they are cut (``[scorer] faces_ahead``), while Whisper
transcribes, and the pass at the close runs the rest only (docs/performance.md, "The face networks
ahead"). The faces graph is written beside the graph, ``<graph>.faces.onnx``, with the same key.

Cache: one graph per checkpoint in ``cache`` (``[scorer] graph_cache``; default
``$MMSA_GRAPH_CACHE``, else ``$XDG_CACHE_HOME/mmsa-monitor/graphs``, else
``~/.cache/mmsa-monitor/graphs``), named ``<checkpoint name>-<key digest>.onnx``. The key
(:func:`graph_key`, stored in the graph's metadata) is the checkpoint file's sha256, a digest of
every weight the model holds (so also the base BERT of a delta checkpoint and the face-mesh file),
a digest of this package's source and of the modules outside it that the forward pass reads
(:data:`FORWARD_OUTSIDE`: ``mmsa.common.scale``), the exporter version and torch's version. A graph is built at
first use (the default model: 21 to 74 s on the 2-core machine, 0.9 GB peak memory) or ahead with the command above
(``make install`` does it for the default model); a graph of another key is rebuilt, or refused with
one line where building at run time is off (``[scorer] graph_build = false``) or the cache folder
is read-only. Building needs the ``onnx`` and ``onnxscript`` packages
(pinned in pyproject.toml), imported lazily by torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint import LoadedModel
from .encoders import MeshFeatures
from .features import FACE_SIZE, MODALITIES, ModelInputs, TextInputs
from .network import MMSAModel
from .onnxrt import (
    FACES_INPUTS,
    FACES_OUTPUTS,
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    KEY_FIELD,
    MESH_INPUTS,
    GraphError,
    OnnxModel,
    RuntimeMissingError,
    faces_graph,
    import_onnxruntime,
)
from .resources import file_digest

log = logging.getLogger(__name__)

EXPORTER_VERSION = 2
"""Bumped whenever this module exports a different graph for the same model."""
_PACKAGE = Path(__file__).resolve().parent


class _Flat(torch.nn.Module):
    """MMSAModel on flat tensors (what the graph's inputs are), returning the scores only."""

    def __init__(self, model: MMSAModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, text_present, audio, audio_mask, audio_present,
                faces, face_mask, vision_present):
        x = ModelInputs(TextInputs(input_ids, attention_mask, token_type_ids, None, None), text_present,
                        audio, audio_mask, audio_present, faces, face_mask, vision_present)
        out = self.model(x)
        return (out.score, *(out.unimodal[m] for m in MODALITIES))


class _FlatMesh(torch.nn.Module):
    """The split graph: MMSAModel on flat tensors with the frozen face networks' outputs per crop (B, K, ...)
    in place of the crops (:func:`splits_faces`), returning the scores only."""

    def __init__(self, model: MMSAModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, text_present, audio, audio_mask, audio_present,
                mesh_vec, mesh_map, mesh_expr, face_mask, vision_present):
        faces = face_mask[:, :, None, None, None].to(mesh_vec.dtype)  # stands in for the crops: only its shape is read
        x = ModelInputs(TextInputs(input_ids, attention_mask, token_type_ids, None, None), text_present,
                        audio, audio_mask, audio_present, faces, face_mask, vision_present,
                        MeshFeatures(mesh_vec, mesh_map, mesh_expr))
        out = self.model(x)
        return (out.score, *(out.unimodal[m] for m in MODALITIES))


class _FlatFaces(torch.nn.Module):
    """The faces graph of a split model: crops (N, 1, S, S) -> the frozen networks' outputs (each crop's averaged
    with its mirror's, as the model uses them in evaluation)."""

    def __init__(self, model: MMSAModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, faces):
        mesh = self.model.vision.mesh_features(faces)
        return mesh.vec, mesh.map, mesh.expr


def splits_faces(model: MMSAModel) -> bool:
    """Whether the model's graph is split in two (``OnnxModel.split``): the frozen face networks (Face Mesh trunk
    and expression network) in a faces graph of their own, so that the monitor can run them on a window's crops
    while Whisper transcribes it (``OnnxModel.prepare``). Models whose CNN reads the trunk's map and which have
    the expression network (the default's layout); others export one graph, as before."""
    v = model.vision
    return v.mesh is not None and v.cnn_input == "mesh" and v.expression is not None


def graph_inputs(model: MMSAModel) -> tuple[str, ...]:
    if not splits_faces(model):
        return GRAPH_INPUTS
    return (*GRAPH_INPUTS[: GRAPH_INPUTS.index("faces")], *MESH_INPUTS, *GRAPH_INPUTS[GRAPH_INPUTS.index("faces") + 1:])


def _example(model: MMSAModel) -> tuple[torch.Tensor, ...]:
    """A batch to trace with: every axis a size of its own and above 1 (export fixes sizes 0 and 1),
    and every input a tensor of its own (export would take two inputs given one tensor for one)."""
    g = torch.Generator().manual_seed(0)
    B, L, T, K, S, n_freq = 3, 7, 41, 2, FACE_SIZE, model.cfg.features().audio_dim
    faces = torch.rand(B, K, 1, S, S, generator=g)
    if splits_faces(model):  # the crops' frozen outputs, laid out per window
        with torch.no_grad():
            mesh = model.vision.mesh_features(faces.reshape(B * K, 1, S, S))
        face_inputs = tuple(t.reshape(B, K, *t.shape[1:]).clone() for t in (mesh.vec, mesh.map, mesh.expr))
    else:
        face_inputs = (faces,)
    return (torch.randint(1000, 2000, (B, L), generator=g), torch.ones(B, L, dtype=torch.long),
            torch.zeros(B, L, dtype=torch.long), torch.ones(B, dtype=torch.bool), torch.randn(B, n_freq, T, generator=g),
            torch.ones(B, T, dtype=torch.bool), torch.ones(B, dtype=torch.bool), *face_inputs,
            torch.ones(B, K, dtype=torch.bool), torch.ones(B, dtype=torch.bool))


def _dynamic_shapes(model: MMSAModel) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    positions = getattr(getattr(model.text.bert, "config", None), "max_position_embeddings", None)
    B, L, T, K = Dim("batch"), Dim("tokens", max=positions or 512), Dim("frames"), Dim("crops")
    axes = {"input_ids": {0: B, 1: L}, "attention_mask": {0: B, 1: L}, "token_type_ids": {0: B, 1: L},
            "audio": {0: B, 2: T}, "audio_mask": {0: B, 1: T}, "faces": {0: B, 1: K}, "face_mask": {0: B, 1: K},
            **{name: {0: B, 1: K} for name in MESH_INPUTS}}
    return {name: axes.get(name, {0: B}) for name in graph_inputs(model)}


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, deprecation notices and logged warnings stay out of the user's way."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lvl in zip(loggers, levels):
                lg.setLevel(lvl)


def _save(module: torch.nn.Module, example: tuple[torch.Tensor, ...], shapes: dict[str, Any],
          inputs: tuple[str, ...], outputs: tuple[str, ...], path: Path, key: dict[str, Any] | None) -> None:
    """Export ``module`` on ``example`` with the dynamic ``shapes`` to ``path`` (one file, ``key`` in its metadata)."""
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                module, example, dynamo=True, dynamic_shapes=shapes, input_names=list(inputs),
                output_names=list(outputs), external_data=False, verbose=False,
            )
    except Exception as exc:  # torch.export raises many kinds; the first line says which op and why
        raise GraphError(f"exporting the model to ONNX failed: {str(exc).strip().splitlines()[0]}") from exc
    fixed = [f"{v.name} {v.shape}" for v in program.model.graph.inputs if isinstance(v.shape[0], int)]
    if fixed:
        raise GraphError(f"the exported graph has a fixed batch size ({', '.join(fixed)}): a size went through int()")
    program.model.metadata_props[KEY_FIELD] = json.dumps(key or {}, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        program.save(str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def export_graph(model: MMSAModel, path: str | Path, key: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s evaluation forward pass to ``path`` (ONNX, one file), ``key`` in its metadata; a split
    model (:func:`splits_faces`) also its faces graph, beside it (``onnxrt.faces_graph``), written first."""
    path = Path(path)
    try:  # torch imports them itself; checked first for a one-line error
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise RuntimeMissingError(
            f"building the ONNX graph needs the onnx and onnxscript packages ({exc}): pip install onnx onnxscript"
        ) from exc
    if next(model.parameters()).device.type != "cpu":
        raise GraphError("export a model on the CPU (the ONNX graph is for the CPU runtime)")
    was_training = model.training
    model.eval()
    try:
        if splits_faces(model):
            from torch.export import Dim

            crops = torch.rand(6, 1, FACE_SIZE, FACE_SIZE, generator=torch.Generator().manual_seed(0))
            _save(_FlatFaces(model), (crops,), {"faces": {0: Dim("crops")}}, FACES_INPUTS, FACES_OUTPUTS,
                  faces_graph(path), key)
            flat: torch.nn.Module = _FlatMesh(model)
        else:
            flat = _Flat(model)
        _save(flat, _example(model), _dynamic_shapes(model), graph_inputs(model), GRAPH_OUTPUTS, path, key)
    finally:
        model.train(was_training)
    return path


FORWARD_OUTSIDE = ("mmsa.common.scale",)
"""Modules outside this package that the exported forward pass reads (the polarity band ``NEUTRAL_BAND`` of
``network.valence_class`` / ``score_probs`` / ``valence_score``, the order of ``MODALITIES``); hashed with the
package's source. The other ``mmsa.common`` modules the package imports (errors, settings, packages, cli)
never shape a graph."""


def source_files() -> list[Path]:
    """The source files whose digest is part of a graph's key: this package's modules (but the runtime's,
    ``onnxrt.py``, which does not shape the graph) and :data:`FORWARD_OUTSIDE`."""
    import importlib

    own = [f for f in sorted(_PACKAGE.glob("*.py")) if f.name != "onnxrt.py"]
    return own + [Path(importlib.import_module(m).__file__).resolve() for m in FORWARD_OUTSIDE]


def _source_digest() -> str:
    """A digest of :func:`source_files`: a code change that could change the graph rebuilds it."""
    h = hashlib.sha256()
    for f in source_files():
        name = f.name if f.parent == _PACKAGE else f"{f.parent.name}/{f.name}"
        h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _weights_digest(model: MMSAModel) -> str:
    """Every tensor the model holds (parameters and buffers, the frozen ones too), in order."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(name.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def graph_key(loaded: LoadedModel) -> dict[str, Any]:
    """What a graph is built from; equal keys mean the same graph."""
    return {
        "exporter": EXPORTER_VERSION,
        "checkpoint": loaded.info.name,
        "checkpoint_sha256": file_digest(loaded.info.path, 64),
        "weights": _weights_digest(loaded.model),
        "code": _source_digest(),
        "torch": torch.__version__.split("+")[0],
    }


def default_cache() -> Path:
    if os.environ.get("MMSA_GRAPH_CACHE"):
        return Path(os.environ["MMSA_GRAPH_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "mmsa-monitor" / "graphs"


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "model"


def graph_path(loaded: LoadedModel, cache: str | Path | None = None, key: dict[str, Any] | None = None) -> Path:
    """``<cache>/<checkpoint name>-<key digest>.onnx``; a model scoring with fewer face branches than its
    checkpoint holds (``[scorer] face_members``) is named ``<name>-faces<N>-...``, so that its graph and the
    whole model's live side by side (a new graph replaces only the older graphs of its own name)."""
    key = key or graph_key(loaded)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = loaded.info.name
    if loaded.model.cfg.vision_members != loaded.info.model_config.vision_members:
        name = f"{name}-faces{loaded.model.cfg.vision_members}"
    return Path(cache or default_cache()).expanduser() / f"{_stem(name)}-{digest}.onnx"


def _writable(folder: Path) -> bool:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def _old_graphs(path: Path) -> list[Path]:
    """Graphs of earlier keys of the same checkpoint name in the same cache (replaced by ``path``), and their
    faces graphs."""
    prefix = path.name.rsplit("-", 1)[0] + "-"
    old = [p for p in path.parent.glob(f"{prefix}*.onnx") if p != path and len(p.name) == len(path.name)]
    return old + [faces_graph(p) for p in old if faces_graph(p).is_file()]


def load_graph(
    loaded: LoadedModel, cache: str | Path | None = None, threads: int | None = None, build: bool = True
) -> OnnxModel:
    """The ONNX runtime of a loaded checkpoint: its cached graph, built first where there is none.

    A graph whose recorded key differs (another checkpoint, weights, code or exporter) is rebuilt.
    With ``build`` false (graphs built ahead, at install), or where the cache folder is read-only, a
    missing or stale graph is a :class:`GraphError` naming the command that builds it.
    """
    import_onnxruntime()  # before any work: a missing runtime is one line, not a graph built in vain
    key = graph_key(loaded)
    path = graph_path(loaded, cache, key)
    problem = ""  # what is wrong with the graph found, for the refusal below
    if path.is_file():
        try:
            model = OnnxModel(path, threads)
            if model.key == key:
                return model
            why = f"{path}: built from other weights or code (key {model.key})"
        except GraphError as exc:
            why = problem = str(exc)
        log.warning("%s; rebuilding it", why)
    if not build or not _writable(path.parent):
        stale = [p.name for p in _old_graphs(path)] + ([path.name] if path.is_file() else [])
        found = f"{problem}: " if problem else f"{stale[0]} is stale (built from another checkpoint, weights or code), " if stale else ""
        why = "building at run time is off" if not build else "the folder is read-only"
        raise GraphError(
            f"{path.parent}: {found}no graph for {loaded.info.tag} and {why}; build it with "
            f"python -m mmsa.model.export {loaded.info.path} --cache {path.parent}, or use the torch runtime"
        )
    log.info("exporting %s to ONNX (once per checkpoint): %s", loaded.info.tag, path)
    export_graph(loaded.model, path, key)
    for old in _old_graphs(path):
        old.unlink(missing_ok=True)
    return OnnxModel(path, threads)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from mmsa.common.cli import run_cli

    from .checkpoint import load_checkpoint

    def run(args_in):
        p = argparse.ArgumentParser(prog="python -m mmsa.model.export", description=__doc__.splitlines()[0])
        p.add_argument("model", nargs="?", default="default", help="default or a checkpoint path")
        p.add_argument("--bert", help="local BERT folder when the checkpoint's is elsewhere on this machine")
        p.add_argument("--cache", help=f"graph folder (default: {default_cache()})")
        args = p.parse_args(args_in)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        graph = load_graph(load_checkpoint(args.model, bert=args.bert), args.cache)
        print(graph.path)
        return 0

    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
