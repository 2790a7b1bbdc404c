"""PNG figures: training curves, per-modality gradient norms (the paper's Figure 5), evaluation plots.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), so
this works headless and never touches the state of a program that imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsa.model import MODALITIES

from .emotion import VALENCES
from .metrics import acc7_confusion, valence_confusion

if TYPE_CHECKING:
    from .data import SourceData
    from .evaluate import Predictions

COLORS = {"text": "tab:blue", "audio": "tab:orange", "vision": "tab:green"}
LABELS = {"text": "Text", "audio": "Audio", "vision": "Video"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _grad_axes(ax, history: Sequence[Mapping[str, Any]]) -> None:
    for m in MODALITIES:
        pts = [(h["epoch"], h["grad_norm"][m]) for h in history if h["grad_norm"].get(m) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="o", color=COLORS[m], label=LABELS[m])
    _epoch_axis(ax)
    ax.set_ylabel("gradient norm (mean per step)")
    ax.set_title("Per-modality gradient norm (cf. paper Fig. 5)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_curves(history: Sequence[Mapping[str, Any]], select: str, path: str | Path) -> Path:
    """Three panels: training losses, validation metrics, per-modality gradient norms, per epoch."""
    fig = _figure(15, 4.2)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    epochs = [h["epoch"] for h in history]
    parts = sorted({k for h in history for k in h["train_loss"]})
    for k in parts:
        ax1.plot(epochs, [h["train_loss"].get(k, np.nan) for h in history], marker=".", label=k,
                 linewidth=2.5 if k == "total" else 1.2)
    _epoch_axis(ax1)
    ax1.set_ylabel("mean loss")
    ax1.set_title("Training loss (joint loss and its parts)")
    ax1.legend(fontsize=7)
    sel_name, _, sel_metric = select.partition(".")
    for name in history[0]["valid"] if history else []:
        metric = sel_metric if name == sel_name else _main_metric(history[0]["valid"][name])
        ys = [_get(h["valid"][name], metric) for h in history]
        ax2.plot(epochs, ys, marker="o", label=f"{name}.{metric}" + (" (select)" if name == sel_name else ""))
    best = [h for h in history if h.get("best")]
    if best:
        ax2.axvline(best[-1]["epoch"], color="gray", linestyle="--", linewidth=1)
    _epoch_axis(ax2)
    ax2.set_title("Validation")
    ax2.legend(fontsize=7)
    _grad_axes(ax3, history)
    return _save(fig, path)


def plot_grad_norms(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    fig = _figure(6, 4)
    _grad_axes(fig.subplots(), history)
    return _save(fig, path)


def _main_metric(metrics: Mapping[str, Any]) -> str:
    return "valence_uar3" if "valence_uar3" in metrics else "mae"


def _get(metrics: Mapping[str, Any], dotted: str) -> float:
    node: Any = metrics
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return np.nan if node is None else float(node)


def _matrix(ax, m: np.ndarray, ticks: Sequence[str], title: str) -> None:
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    hi = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if hi and m[i, j] > hi / 2 else "black")


def plot_regression(labels: Sequence[float], preds: Sequence[float], title: str, path: str | Path) -> Path:
    """Predicted vs true scatter and the Acc-7 confusion matrix."""
    y, p = np.asarray(labels, dtype=float), np.asarray(preds, dtype=float)
    fig = _figure(11, 4.8)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(y, p, s=10, alpha=0.5)
    ax1.plot([-3, 3], [-3, 3], color="gray", linewidth=1)
    ax1.set_xlim(-3.2, 3.2)
    ax1.set_ylim(-3.2, 3.2)
    ax1.set_xlabel("true sentiment")
    ax1.set_ylabel("predicted")
    ax1.set_title(f"{title}: predicted vs true (n={len(y)})")
    _matrix(ax2, acc7_confusion(y, p), [str(k) for k in range(-3, 4)], "Acc-7 confusion")
    return _save(fig, path)


def plot_emotion(emotions: Sequence[str], valences: Sequence[str | None], preds: Sequence[float], title: str,
                 path: str | Path) -> Path:
    """Predicted score per emotion (box plot) and the 3-class valence confusion matrix."""
    p = np.asarray(preds, dtype=float)
    fig = _figure(11, 4.8)
    ax1, ax2 = fig.subplots(1, 2)
    names = sorted(set(emotions))
    ax1.boxplot([p[[e == n for e in emotions]] for n in names], tick_labels=names)
    ax1.axhline(0.5, color="gray", linestyle=":", linewidth=1)
    ax1.axhline(-0.5, color="gray", linestyle=":", linewidth=1)
    ax1.set_ylabel("predicted score")
    ax1.set_title(f"{title}: score per emotion (n={len(p)})")
    _matrix(ax2, valence_confusion(valences, p), VALENCES, "Valence confusion (surprise left out)")
    return _save(fig, path)


def plot_source(data: SourceData, preds: Predictions, path: Path) -> Path:
    """The evaluation PNG of one source: emotion (score per emotion, valence confusion) or regression."""
    if data.kind == "emotion":
        return plot_emotion([r.emotion or "" for r in data.records], [r.valence for r in data.records], preds.score,
                            data.name, path)
    return plot_regression([r.label for r in data.records], preds.score, data.name, path)
