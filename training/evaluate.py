"""Scoring a source with a model, its metrics, and the prediction / metrics files of ``mmsa-eval``.

Shared by the trainer (validation every epoch) and ``mmsa-eval`` (ARCHITECTURE section 8), so
the numbers in a run folder and those of a later evaluation are computed the same way.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsa.model import MODALITIES, MMSAModel
from mmsa.model.features import DEFAULT_FEATURES, FeatureConfig, collate
from mmsa.model.onnxrt import OnnxModel

from .cache import SampleStore
from .data import SourceData
from .metrics import json_safe, regression_metrics, valence_metrics


@dataclass
class Predictions:
    score: np.ndarray  # (N,) fused score
    unimodal: dict[str, np.ndarray]  # modality -> (N,) score, NaN where the modality is absent
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # classifying heads: (N, 3), NaN where absent


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when asked (and supported), a no-op elsewhere."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.inference_mode()
def predict(
    model: MMSAModel | OnnxModel,
    store: SampleStore,
    tokenizer: Any,
    features: FeatureConfig = DEFAULT_FEATURES,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> Predictions:
    """Scores of every row of ``store`` (batched by text length: less padding; order restored).

    ``model``: the torch model, or its exported graph (``mmsa-eval --runtime onnx``)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n = len(store)
    order = sorted(range(n), key=store.text_length)
    score = np.full(n, np.nan, dtype=np.float64)
    uni = {m: np.full(n, np.nan, dtype=np.float64) for m in MODALITIES}
    logits = {m: np.full((n, 3), np.nan, dtype=np.float64) for m in getattr(model, "classes", {})}
    try:
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            batch = collate([store[i] for i in idx], tokenizer, features).to(device)
            with autocast(device, amp):
                out = model(batch)
            score[idx] = out.score.float().cpu().numpy()
            for m in MODALITIES:
                uni[m][idx] = out.unimodal[m].float().cpu().numpy()
            for m, z in out.logits.items():
                logits[m][idx] = z.float().cpu().numpy()
    finally:
        model.train(was_training)
    return Predictions(score, uni, logits)


def score_sources(model: MMSAModel, sources: list[tuple[SourceData, SampleStore]], tokenizer: Any,
                  features: FeatureConfig, batch_size: int, device: torch.device | str, amp: bool = False):
    """Predict and score every (data, store) pair: ({name: metrics}, {name: Predictions})."""
    metrics, preds = {}, {}
    for data, store in sources:
        p = predict(model, store, tokenizer, features, batch_size, device, amp)
        metrics[data.name] = score_source(data, p)
        preds[data.name] = p
    return metrics, preds


def score_source(data: SourceData, preds: Predictions) -> dict[str, Any]:
    """Metrics of one source: fused (top level), each unimodal head on its present rows, skipped rows."""
    if data.kind == "emotion":
        valences = [r.valence for r in data.records]

        def metric(mask: np.ndarray, p: np.ndarray) -> dict[str, float]:
            return valence_metrics([v for v, k in zip(valences, mask) if k], p[mask])
    else:
        labels = np.array([r.label for r in data.records], dtype=np.float64)

        def metric(mask: np.ndarray, p: np.ndarray) -> dict[str, float]:
            return regression_metrics(labels[mask], p[mask])

    all_rows = np.ones(len(data.records), dtype=bool)
    out: dict[str, Any] = metric(all_rows, preds.score)
    out["unimodal"] = {}
    for m in MODALITIES:
        present = ~np.isnan(preds.unimodal[m])
        if present.any():
            out["unimodal"][m] = metric(present, preds.unimodal[m])
    out["n_skipped"] = int(sum(data.skipped.values()))
    out["skipped"] = dict(data.skipped)
    if data.kind == "emotion":
        out["n_no_valence"] = sum(r.valence is None for r in data.records)
    return out


def write_predictions(path: str | Path, data: SourceData, preds: Predictions) -> Path:
    """The predictions CSV of ARCHITECTURE section 8 (plus per-modality columns for MOSI/MOSEI/MMSA)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fmt(x: float) -> str:
        return "" if math.isnan(x) else f"{x:.6f}"

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        if data.kind == "emotion":
            w.writerow(["path", "emotion", "valence", "pred"])
            for r, p in zip(data.records, preds.score):
                w.writerow([r.id, r.emotion, r.valence or "", fmt(p)])
        else:
            mods = [m for m in MODALITIES if not np.isnan(preds.unimodal[m]).all()]
            w.writerow(["id", "label", "pred", *(f"pred_{m}" for m in mods)])
            for i, r in enumerate(data.records):
                w.writerow([r.id, f"{r.label:g}", fmt(preds.score[i]), *(fmt(preds.unimodal[m][i]) for m in mods)])
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (NaN -> null), pretty-printed, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
