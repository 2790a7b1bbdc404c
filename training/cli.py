"""Entry points ``mmsa-train`` and ``mmsa-eval`` (ARCHITECTURE section 8). The only place with argparse."""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from pathlib import Path

from mmsa.common.cli import run_cli
from mmsa.common.errors import ConfigError
from mmsa.model.runtime import flush_denormals


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (it may be replaced, e.g. by a test harness)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logger = logging.getLogger("mmsa")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmsa-train",
        description="Train the fusion model on CMU-MOSI / CMU-MOSEI (and RAVDESS / FER2013 / VADER sources) from a "
        "TOML config. Multi-GPU: torchrun --nproc_per_node N -m mmsa.training.cli CONFIG ...",
    )
    p.add_argument("config", help="training config, e.g. configs/train/mosi_text.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--out", help="run folder (default: runs/<config name>-<date-time>)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="train once per seed into OUT/seed<k> and write OUT/aggregate.json (mean +- std)")
    return p


def _eval_parser() -> argparse.ArgumentParser:
    from .data import READERS

    p = argparse.ArgumentParser(prog="mmsa-eval", description="Evaluate checkpoints with the MMSA metrics.")
    p.add_argument("--model", nargs="+", default=["default"], metavar="default|PATH",
                   help="the embedded default model or checkpoint paths / globs; several are aggregated as mean +- std")
    p.add_argument("--dataset", required=True, choices=[name for name, spec in READERS.items() if spec.evaluable])
    p.add_argument("--labels", required=True, help="label CSV")
    p.add_argument("--root", default="", help="media root (mosi/mosei: full videos; others: base of relative paths)")
    p.add_argument("--split", default="test", help="rows whose mode equals this (default: test); all: every row")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--predictions", required=True, help="predictions CSV to write")
    p.add_argument("--plot", help="PNG to write (default: the --out path with .png)")
    p.add_argument("--modalities", nargs="+", choices=["text", "audio", "vision"], help="use only these modalities")
    p.add_argument("--text-column", default="text", help="mosei: transcript column (text or asr_text)")
    p.add_argument("--videos", default="", choices=["", "train", "heldout"],
                   help="mosi/mosei/mmsa-raw: only the train (70 %%) or heldout (30 %%) part of the videos")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                   help="onnx: the model exported to ONNX and run by ONNX Runtime on the CPU (as the monitor runs it)")
    p.add_argument("--graph-cache", help="folder of exported ONNX graphs (default: the user's cache folder)")
    p.add_argument("--bert", help="local BERT folder when the checkpoint's is elsewhere on this machine")
    p.add_argument("--cache", default=".cache/mmsa", help="feature cache folder (default: .cache/mmsa)")
    p.add_argument("--workers", type=int, default=4, help="parallel decoding threads")
    return p


def _fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmsa-fit-fusion",
        description="Fit the calibrated fusion of a checkpoint: one temperature per head, on held-out data of its "
        "modality; write the checkpoint with fusion = \"calibrated\" and a JSON report (NLL, ECE before and after).",
    )
    p.add_argument("--model", required=True, metavar="default|PATH", help="the checkpoint to calibrate")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--report", required=True, help="JSON report to write")
    p.add_argument("--heldout", nargs=4, action="append", required=True,
                   metavar=("MODALITY", "DATASET", "LABELS", "SPLIT"),
                   help="held-out data of one head, e.g. --heldout vision fer2013 ../shared/data/fer2013/labels.csv valid")
    p.add_argument("--heldout-model", nargs=2, action="append", default=[], metavar=("MODALITY", "PATH"),
                   help="score that modality's held-out data with this checkpoint (a twin trained without it)")
    p.add_argument("--gate", choices=("none", "text"), default="none",
                   help="weigh the heads by how sure the words are (text) or not at all (none, default): [model] fusion_gate")
    p.add_argument("--divide-text-prior", action="store_true",
                   help="divide the class frequencies of the text head's held-out rows out of its probabilities "
                   "in the fused product ([model] text_prior)")
    p.add_argument("--cache", default=".cache/mmsa", help="feature cache folder (default: .cache/mmsa)")
    p.add_argument("--workers", type=int, default=4, help="parallel decoding threads")
    return p


def _fit(argv: list[str] | None) -> int:
    flush_denormals()
    args = _fit_parser().parse_args(argv)
    _setup_logging()
    from mmsa.model.features import MODALITIES

    from .calibrate import fit_fusion
    from .config import CacheConfig
    from .evaluate import write_json

    for modality, *_ in args.heldout + args.heldout_model:
        if modality not in MODALITIES:
            raise ConfigError(f"--heldout: unknown modality {modality!r} (text, audio or vision)")
    _check_output("--out", args.out)
    _check_output("--report", args.report)
    _check_counts(args, "workers")
    command = ["mmsa-fit-fusion", *(argv if argv is not None else sys.argv[1:])]
    report = fit_fusion(args.model, args.out, [tuple(h) for h in args.heldout], dict(args.heldout_model),
                        CacheConfig(dir=args.cache, workers=args.workers), command, gate=args.gate,
                        divide_text_prior=args.divide_text_prior)
    write_json(args.report, report)
    for m, h in report["heads"].items():
        print(f"{m}: T = {h['temperature']:.3f} on {h['source']} (n={h['n']}): NLL {h['nll_before']:.3f} -> "
              f"{h['nll_after']:.3f}, ECE {h['ece_before']:.3f} -> {h['ece_after']:.3f}")
    return 0


def _train(argv: list[str] | None) -> int:
    args = _train_parser().parse_args(argv)
    _setup_logging()
    from .config import load_config
    from .soup import train_soup
    from .trainer import train, train_seeds

    cfg, _ = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = ["mmsa-train", *(argv if argv is not None else sys.argv[1:])]
    if args.seeds and (cfg.train.soup or cfg.train.ensemble):
        raise ConfigError("--seeds and train.soup / train.ensemble: use one (they train their own seeds)")
    if cfg.train.soup or cfg.train.ensemble:
        train_soup(cfg, out, command)
    elif args.seeds:
        train_seeds(cfg, args.seeds, out, command)
    else:
        train(cfg, out, command)
    return 0


def _expand_models(specs: list[str]) -> list[str]:
    out: list[str] = []
    for spec in specs:
        if spec != "default" and glob.has_magic(spec):
            hits = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
            if not hits:
                raise ConfigError(f"--model {spec}: no checkpoint matches this pattern")
            out.extend(hits)
        else:
            out.append(spec)
    return out


def _suffixed(path: Path, k: int) -> Path:
    return path.with_name(f"{path.stem}.{k}{path.suffix}")


def _check_output(flag: str, path: str | Path) -> Path:
    """A file the command will write, checked before any work: not a folder, in a folder that exists (or can be
    made: its first existing ancestor is a folder) and is writable."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give the path of the file to write")
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ConfigError(f"{flag} {path}: not writable")
    return out


def _check_counts(args: argparse.Namespace, *keys: str) -> None:
    for key in keys:
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(args, key)}")


def _eval_source(args: argparse.Namespace):
    """The ``SourceConfig`` of ``mmsa-eval``'s options; a bad value is one line naming its option."""
    from .config import SourceConfig

    try:
        return SourceConfig(reader=args.dataset, labels=args.labels, split=args.split, root=args.root,
                            modalities=tuple(args.modalities or ()), text_column=args.text_column,
                            videos=args.videos, name=f"{args.dataset}_{args.split}")
    except ValueError as exc:  # "<field>: why": name the option instead of the field
        key, sep, why = str(exc).partition(": ")
        raise ConfigError(f"--{key.replace('_', '-')}: {why}" if sep and key.isidentifier() else str(exc)) from None


def _eval_outputs(args: argparse.Namespace, models: list[str]) -> tuple[Path, Path, Path]:
    """The metrics, predictions and plot paths (``.<k>`` added with several models), checked before any work."""
    out, pred_path = Path(args.out), Path(args.predictions)
    plot_path = Path(args.plot) if args.plot else out.with_suffix(".png")
    for flag, path in (("--out", out), ("--predictions", pred_path), ("--plot", plot_path)):
        _check_output(flag, path)
        for k in range(1, len(models) + 1) if len(models) > 1 else ():
            _check_output(flag, _suffixed(path, k))
    return out, pred_path, plot_path


def _eval(argv: list[str] | None) -> int:
    flush_denormals()  # fast CPU inference (mmsa.model.runtime); training keeps exact IEEE math
    args = _eval_parser().parse_args(argv)
    _setup_logging()
    import torch

    from mmsa.model import load_checkpoint
    from mmsa.model.export import load_graph

    from .cache import featurize
    from .config import CacheConfig
    from .data import read_source
    from .evaluate import predict, score_source, write_json, write_predictions
    from .metrics import REGRESSION_METRICS, VALENCE_METRICS, aggregate, format_metrics, format_table
    from .plots import plot_source

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.runtime == "onnx" and device.type != "cpu":
        raise ConfigError("--runtime onnx runs on the CPU: add --device cpu")
    _check_counts(args, "batch_size", "workers")
    src = _eval_source(args)
    models = _expand_models(args.model)
    out, pred_path, plot_path = _eval_outputs(args, models)
    data = read_source(src, keep_unrated=True)
    stores = {}  # per feature settings (a model's audio input decides its audio features)
    keys = VALENCE_METRICS if data.kind == "emotion" else REGRESSION_METRICS
    runs = []
    for k, spec in enumerate(models, 1):
        loaded = load_checkpoint(spec, device=device, bert=args.bert)
        model = loaded.model if args.runtime == "torch" else load_graph(loaded, args.graph_cache)
        key = loaded.features.fingerprint()
        if key not in stores:
            stores[key] = featurize(data, CacheConfig(dir=args.cache, workers=args.workers), loaded.features)
        store = stores[key]
        preds = predict(model, store, loaded.tokenizer, loaded.features, args.batch_size, device)
        metrics = {**score_source(data, preds), "model": loaded.info.tag, "checkpoint": str(loaded.info.path),
                   "dataset": args.dataset, "labels": args.labels, "split": args.split, "videos": args.videos,
                   "modalities": list(data.modalities), "runtime": args.runtime}
        several = len(models) > 1
        write_predictions(_suffixed(pred_path, k) if several else pred_path, data, preds)
        plot_source(data, preds, _suffixed(plot_path, k) if several else plot_path)
        if several:
            write_json(_suffixed(out, k), metrics)
        runs.append(metrics)
        print(f"{loaded.info.tag} on {args.dataset} {args.split} (n={metrics['n']}, skipped {metrics['n_skipped']}):")
        print(format_metrics(metrics, keys))
    if len(runs) == 1:
        write_json(out, runs[0])
    else:
        agg = aggregate([{k2: v for k2, v in r.items() if k2 in keys or k2 == "unimodal"} for r in runs])
        write_json(out, {**agg, "models": [r["model"] for r in runs], "checkpoints": [r["checkpoint"] for r in runs],
                         "dataset": args.dataset, "split": args.split, "n": runs[0]["n"],
                         "n_skipped": runs[0]["n_skipped"], "runs": runs})
        print(f"{len(runs)} models (mean +- std):")
        print(format_table(agg, keys))
    return 0


def train_main(argv: list[str] | None = None) -> int:
    return run_cli(_train, argv)


def eval_main(argv: list[str] | None = None) -> int:
    return run_cli(_eval, argv)


def fit_fusion_main(argv: list[str] | None = None) -> int:
    return run_cli(_fit, argv)


if __name__ == "__main__":
    sys.exit(train_main())
