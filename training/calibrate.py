"""Fitting the ``calibrated`` fusion (``mmsa-fit-fusion``): one temperature per head, on that head's
own held-out data, and the calibration figures of the model card.

Each head's output becomes negative / neutral / positive probabilities (``mmsa.model.network``:
``score_probs`` for a regressing head, a softmax of the logits for a classifying one). Its
temperature T minimises the negative log-likelihood of the true polarity class (the polarity
rule on a sentiment label; the valence of an emotion) over a held-out source of its modality:
a golden-section search over log T in [1/50, 50] (the NLL is smooth and unimodal in T). The
report gives, before (T = 1) and after: NLL, the top-label expected calibration error (ECE, 15
equal-width confidence bins, weighted by their rows) and the arg-max accuracy (T does not move it).
"""

from __future__ import annotations

import logging
import math
import shlex
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmsa.model.errors import CheckpointError, ConfigError
from mmsa.model.network import score_probs, valence_class

from .data import SourceData
from .emotion import VALENCES
from .errors import DataError
from .evaluate import Predictions

if TYPE_CHECKING:
    from mmsa.model import LoadedModel, MMSAModel

    from .config import SourceConfig

log = logging.getLogger(__name__)

ECE_BINS = 15
T_RANGE = (1 / 50, 50.0)
MIN_ROWS = 8
"""Fewer held-out rows than this cannot calibrate a head."""


def true_classes(data: SourceData) -> np.ndarray:
    """(N,) class index 0 negative, 1 neutral, 2 positive of each row (-1: no valence, e.g. surprise)."""
    if data.kind == "emotion":
        return np.array([VALENCES.index(r.valence) if r.valence else -1 for r in data.records])
    return valence_class(torch.tensor([r.label for r in data.records])).numpy()


def head_probs(values: np.ndarray, temperature: float) -> np.ndarray:
    """Scores (N,) or logits (N, 3) -> (N, 3) polarity probabilities at ``temperature``."""
    x = torch.as_tensor(values, dtype=torch.float64)
    if x.ndim == 1:
        return score_probs(x, temperature).numpy()
    return torch.softmax(x / temperature, -1).numpy()


def nll(probs: np.ndarray, classes: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(classes)), classes], 1e-12, None))))


def ece(probs: np.ndarray, classes: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error: sum over confidence bins of |accuracy - confidence| x share."""
    conf = probs.max(1)
    right = probs.argmax(1) == classes
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.mean() * abs(right[rows].mean() - conf[rows].mean())
    return float(total)


def fit_temperature(values: np.ndarray, classes: np.ndarray, steps: int = 60) -> float:
    """The temperature in :data:`T_RANGE` that minimises the NLL (golden-section search on log T)."""
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    g = (math.sqrt(5) - 1) / 2

    def f(log_t: float) -> float:
        return nll(head_probs(values, math.exp(log_t)), classes)

    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(steps):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    return math.exp((lo + hi) / 2)


def head_values(preds: Predictions, modality: str) -> np.ndarray:
    """A head's raw output per row: its logits where it classifies, else its score."""
    return preds.logits[modality] if modality in preds.logits else preds.unimodal[modality]


def calibrate_head(data: SourceData, preds: Predictions, modality: str) -> dict[str, Any]:
    """Fit one head's temperature on a held-out source; the figures before and after."""
    values = head_values(preds, modality)
    classes = true_classes(data)
    present = ~np.isnan(values.reshape(len(values), -1)).any(1) & (classes >= 0)
    values, classes = values[present], classes[present]
    if len(classes) < MIN_ROWS:
        raise DataError(f"{data.cfg.labels}: {len(classes)} rows of {data.name} have a {modality} prediction and a "
                        f"polarity class; calibrating needs {MIN_ROWS} or more")
    t = fit_temperature(values, classes)
    before, after = head_probs(values, 1.0), head_probs(values, t)
    return {
        "source": data.name, "n": int(len(classes)), "temperature": t,
        "nll_before": nll(before, classes), "nll_after": nll(after, classes),
        "ece_before": ece(before, classes), "ece_after": ece(after, classes),
        "accuracy": float((after.argmax(1) == classes).mean()),
        "class_counts": np.bincount(classes, minlength=3).tolist(),
    }


def heldout_sources(heldout: list[tuple[str, str, str, str]], twins: dict[str, str]) -> list[SourceConfig]:
    """The held-out source of each ``--heldout MODALITY DATASET LABELS SPLIT``, checked before any work: a known
    modality and dataset, a label file and a split, one source per head, and a twin (``--heldout-model``) only
    for a head that has a held-out source. Bad input is one :class:`ConfigError` naming the option."""
    from mmsa.model import MODALITIES

    from .config import SourceConfig
    from .data import READERS

    known = [name for name, spec in READERS.items() if spec.evaluable]
    sources: dict[str, tuple[str, SourceConfig]] = {}
    for modality, dataset, labels, split in heldout:
        where = shlex.join(["--heldout", modality, dataset, labels, split])
        if modality not in MODALITIES:
            raise ConfigError(f"{where}: unknown modality {modality!r} ({', '.join(MODALITIES)})")
        if dataset not in known:
            raise ConfigError(f"{where}: unknown dataset {dataset!r} ({', '.join(known)})")
        if modality in sources:
            raise ConfigError(f"{where}: a second held-out source for the {modality} head (the first: "
                              f"{sources[modality][0]}); give one --heldout per modality")
        try:
            src = SourceConfig(reader=dataset, labels=labels, split=split, modalities=(modality,),
                               name=f"{modality}_{dataset}_{split}".replace("-", "_"))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        sources[modality] = (where, src)
    for modality, path in twins.items():
        if modality not in sources:
            raise ConfigError(f"{shlex.join(['--heldout-model', modality, path])}: no --heldout {modality} ... for "
                              "the twin to score; add one, or leave the twin out")
    return [src for _, src in sources.values()]


def calibrated_model(loaded: LoadedModel) -> MMSAModel:
    """The loaded model rebuilt with ``fusion = "calibrated"``: its encoders and unimodal heads, the same
    weights, without the tensors of its own fusion (``concat``: ``fusion.*``; ``attention``: ``tokens.*``,
    ``cls``, ``fusion_encoder.*``, ``fusion.*``), which a calibrated model has not, so that its checkpoint
    loads. Refused in one line where the checkpoint lacks a tensor the calibrated model needs."""
    from mmsa.model import MMSAModel

    old = loaded.model
    new = MMSAModel(replace(old.cfg, fusion="calibrated"), old.text)  # shares the loaded text encoder
    own, state = new.state_dict(), old.state_dict()
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if missing:
        raise CheckpointError(f"{loaded.info.path}: its {old.cfg.fusion} fusion cannot become the calibrated one: "
                              f"no tensor {missing[0]} of the shape the calibrated model needs (its unimodal heads)")
    dropped = sorted({k.split(".")[0] for k in state if k not in own})
    if dropped:
        log.info("%s: the calibrated fusion replaces the %s fusion (its tensors %s are left out)",
                 loaded.info.tag, old.cfg.fusion, ", ".join(f"{d}*" for d in dropped))
    new.load_state_dict({k: v for k, v in state.items() if k in own})
    return new.eval()


def _score_heads(sources: list[SourceConfig], loaded: LoadedModel, twins: dict[str, str], cache,
                 batch_size: int) -> dict[str, dict[str, Any]]:
    """Fit each held-out source's head (its modality, the only one it reads): modality -> its figures."""
    from mmsa.model import load_checkpoint

    from .cache import featurize
    from .data import read_source
    from .evaluate import predict

    heads = {}
    for src in sources:
        modality = src.modalities[0]
        data = read_source(src)
        scorer = load_checkpoint(twins[modality]) if modality in twins else loaded
        store = featurize(data, cache, scorer.features)
        preds = predict(scorer.model, store, scorer.tokenizer, scorer.features, batch_size)
        heads[modality] = {**calibrate_head(data, preds, modality), "dataset": src.reader, "labels": src.labels,
                           "split": src.split, "scored_by": scorer.info.tag}
    return heads


def fit_fusion(model_spec: str, out: str, heldout: list[tuple[str, str, str, str]], twins: dict[str, str],
               cache, command: list[str], batch_size: int = 64, gate: str = "none",
               divide_text_prior: bool = False) -> dict[str, Any]:
    """Fit the temperature of each head named in ``heldout`` ((modality, dataset, labels, split)),
    write the checkpoint ``out`` with ``fusion = "calibrated"`` and those temperatures (1.0 for the
    others), and return the report. ``twins``: modality -> a checkpoint whose head of that
    modality scores its held-out source instead (a twin trained with the same recipe without
    those rows, where the model itself was trained on every row). ``gate``: the model's
    ``fusion_gate``. ``divide_text_prior``: set the model's ``text_prior`` to the class frequencies
    of the text head's held-out rows (needs a ``text`` entry in ``heldout``).

    The checkpoint keeps its ``metrics`` (the validation figures the checkpoint contract asks for), measured
    with the fusion replaced here: the fusion stage names that fusion (``metrics_fusion``), and
    ``mmsa-eval`` measures the calibrated one."""
    sources = heldout_sources(heldout, twins)
    if divide_text_prior and not any(h[0] == "text" for h in heldout):
        raise DataError("--divide-text-prior: the text head's class prior comes from its held-out data; add --heldout text ...")
    from mmsa.model import MODALITIES, load_checkpoint, save_checkpoint
    from mmsa.model.checkpoint import stored_half

    loaded = load_checkpoint(model_spec)
    model = calibrated_model(loaded)  # before the work: a model that cannot be calibrated is refused first
    report: dict[str, Any] = {"model": loaded.info.tag, "heads": _score_heads(sources, loaded, twins, cache, batch_size)}
    temps = tuple(report["heads"][m]["temperature"] if m in report["heads"] else 1.0 for m in MODALITIES)
    prior: tuple[float, ...] = ()
    if divide_text_prior:
        counts = report["heads"]["text"]["class_counts"]
        if min(counts) == 0:
            raise DataError(f"--divide-text-prior: the text head's held-out rows miss a class (counts {counts})")
        prior = tuple(c / sum(counts) for c in counts)
    model.cfg = replace(model.cfg, calibration=temps, fusion_gate=gate, text_prior=prior)
    training = dict(loaded.info.training)
    stage = {"name": f"{loaded.info.name}-fusion", "command": " ".join(command), "trainable": ["fusion"],
             "calibration": {m: h["temperature"] for m, h in report["heads"].items()},
             "fusion_gate": gate, "text_prior": list(prior),
             "heldout": [{"modality": m, "dataset": d, "labels": lab, "split": s} for m, d, lab, s in heldout],
             "twins": twins, "replaced_fusion": loaded.info.model_config.fusion,
             "metrics_fusion": loaded.info.model_config.fusion}
    training["stages"] = [*training.get("stages", []), stage]
    training["fusion"] = {k: v for k, v in stage.items() if k != "name"}
    save_checkpoint(out, model, name=loaded.info.name, features=loaded.features, training=training,
                    metrics=loaded.info.metrics,
                    bert_delta=loaded.info.bert_base is not None, half=stored_half(loaded.info.path))
    report["checkpoint"] = str(out)
    report["calibration"] = dict(zip(MODALITIES, temps))
    report["fusion_gate"], report["text_prior"] = gate, list(prior)
    return report
