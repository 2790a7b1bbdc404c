"""Metrics of ARCHITECTURE section 8: the MMSA definitions for MOSI/MOSEI, valence metrics for emotion data.

MOSI / MOSEI / MMSA raw (fractions in 0..1), as in MMSA's ``metricsTop.py``:

* ``acc2_has0`` / ``f1_has0``: (pred >= 0) vs (label >= 0) over all rows.
* ``acc2_non0`` / ``f1_non0``: (pred > 0) vs (label > 0) over the rows with label != 0.
* F1 is sklearn ``f1_score(y_true, y_pred, average="weighted")`` with the truth first (the order
  matters for the weights); ``zero_division=0`` only silences the warning sklearn gives for a
  class that is never predicted, the value is the same.
* ``acc7``: ``round(clip(pred, -3, 3)) == round(clip(label, -3, 3))`` with numpy's
  round-half-to-even (0.5 -> 0, 1.5 -> 2, -2.5 -> -2); ``acc5`` the same with clip to +-2.
* ``mae`` and Pearson ``corr`` on the unclipped values.

RAVDESS / FER2013: ``valence_uar3`` = mean recall over the valence classes present in the truth
(negative, neutral, positive; see :mod:`mmsa.training.emotion` for the mapping and thresholds);
``valence_acc2`` = sign accuracy over the negative and positive rows: right when pred > 0 for a
positive row and pred < 0 for a negative one (a prediction of exactly 0 is wrong for both).

Undefined values (Corr of a constant prediction, Non0 metrics without a non-zero label) are
NaN here and ``null`` in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .emotion import VALENCES, predicted_valence

REGRESSION_METRICS = ("n", "mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7")
VALENCE_METRICS = ("n", "valence_uar3", "valence_acc2")
LOWER_IS_BETTER = frozenset({"mae"})


def _f1_weighted(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(labels: Sequence[float], preds: Sequence[float]) -> dict[str, float]:
    """MMSA metrics of predictions against labels on the MOSI scale (see the module docstring)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(preds, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and preds must be 1-D of equal length, got {y.shape} and {p.shape}")
    n = len(y)
    if n == 0:
        return {"n": 0, **{k: math.nan for k in REGRESSION_METRICS[1:]}}
    has0_true, has0_pred = y >= 0, p >= 0
    non0 = y != 0
    out: dict[str, float] = {
        "n": n,
        "mae": float(np.mean(np.abs(p - y))),
        "corr": _pearson(p, y),
        "acc2_has0": float(np.mean(has0_true == has0_pred)),
        "f1_has0": _f1_weighted(has0_true, has0_pred),
    }
    if non0.any():
        t, q = y[non0] > 0, p[non0] > 0
        out["acc2_non0"] = float(np.mean(t == q))
        out["f1_non0"] = _f1_weighted(t, q)
    else:
        out["acc2_non0"] = out["f1_non0"] = math.nan
    out["acc5"] = float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2))))
    out["acc7"] = float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3))))
    return out


def valence_metrics(valences: Sequence[str | None], preds: Sequence[float]) -> dict[str, float]:
    """Valence metrics; rows whose valence is None (surprise) are left out."""
    keep = [(v, float(p)) for v, p in zip(valences, preds) if v is not None]
    out: dict[str, float] = {"n": len(keep)}
    if not keep:
        return {**out, "valence_uar3": math.nan, "valence_acc2": math.nan}
    recalls = []
    for cls in VALENCES:
        rows = [p for v, p in keep if v == cls]
        if rows:
            recalls.append(sum(predicted_valence(p) == cls for p in rows) / len(rows))
    out["valence_uar3"] = float(np.mean(recalls))
    signed = [(v, p) for v, p in keep if v != "neutral"]
    if signed:
        out["valence_acc2"] = float(np.mean([(p > 0) if v == "positive" else (p < 0) for v, p in signed]))
    else:
        out["valence_acc2"] = math.nan
    return out


def valence_confusion(valences: Sequence[str | None], preds: Sequence[float]) -> np.ndarray:
    """3x3 counts, rows = true valence, columns = predicted, in the order of VALENCES."""
    m = np.zeros((3, 3), dtype=np.int64)
    for v, p in zip(valences, preds):
        if v is not None:
            m[VALENCES.index(v), VALENCES.index(predicted_valence(float(p)))] += 1
    return m


def acc7_confusion(labels: Sequence[float], preds: Sequence[float]) -> np.ndarray:
    """7x7 counts of the Acc-7 classes -3..3, rows = truth, columns = prediction."""
    y = np.round(np.clip(np.asarray(labels, dtype=np.float64), -3, 3)).astype(int) + 3
    p = np.round(np.clip(np.asarray(preds, dtype=np.float64), -3, 3)).astype(int) + 3
    m = np.zeros((7, 7), dtype=np.int64)
    np.add.at(m, (y, p), 1)
    return m


def better(metric: str, new: float, old: float | None) -> bool:
    """Is ``new`` an improvement over ``old`` for this metric name? NaN never improves."""
    if new is None or math.isnan(new):
        return False
    if old is None or math.isnan(old):
        return True
    return new < old if metric.rsplit(".", 1)[-1] in LOWER_IS_BETTER else new > old


def lookup(metrics: Mapping[str, Any], path: str) -> float:
    """``metrics["a"]["b"]["c"]`` for the dotted path ``a.b.c``; KeyError names the missing part."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(part)
        node = node[part]
    return float(node) if node is not None else math.nan


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of every numeric metric over several runs (seeds).

    The standard deviation is numpy's population std (ddof=0), as MMSA reports seeds; nested
    dictionaries (unimodal heads, several validation sets) are aggregated key by key.
    """
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    keys = [k for k in runs[0] if all(k in r for r in runs)] if runs else []
    for k in keys:
        vals = [r[k] for r in runs]
        if all(isinstance(v, Mapping) for v in vals):
            sub = aggregate(vals)
            mean[k], std[k] = sub["mean"], sub["std"]
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in vals):
            arr = np.array([math.nan if v is None else float(v) for v in vals])
            if np.isnan(arr).all():
                mean[k] = std[k] = math.nan
            else:
                mean[k], std[k] = float(np.nanmean(arr)), float(np.nanstd(arr))
    return {"n_runs": len(runs), "mean": mean, "std": std}


def _fmt(key: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key == "n":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.3f}" if key in ("mae", "corr") else f"{100 * value:.1f}"


def format_metrics(metrics: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``mae 0.812`` lines (fractions as percent) for the given metric keys."""
    return "\n".join(f"{k:14s} {_fmt(k, metrics[k])}" for k in keys if k in metrics)


def format_table(agg: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``mae 0.812 +- 0.010`` lines for the given top-level metric keys (fractions as percent)."""
    lines = []
    for k in keys:
        if k not in agg["mean"] or isinstance(agg["mean"][k], Mapping):
            continue
        lines.append(f"{k:14s} {_fmt(k, agg['mean'][k])} +- {_fmt(k, agg['std'][k])}")
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    return obj
