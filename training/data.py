"""Dataset readers: label files -> :class:`Record` lists, with row filters and clear errors.

Every reader returns targets on the MOSI scale [-3, 3] and raises :class:`DataError` naming
file, line and column for malformed input, and the label line for a missing media file.

=========  ===============================================================  ==================
reader     label file                                                        media
=========  ===============================================================  ==================
mosi       CMU-MOSI ``label.csv`` (video_id, clip_id, text, label, mode,     ``root``: the full
           start, end, text_available)                                       videos of the raw
mosei      CMU-MOSEI ``label_*.csv`` (video_id, start, end, text, label,     release, cut on the
           mode)                                                             fly (empty: text)
mmsa-raw   MMSA ``label.csv`` (video_id, clip_id, text, label, annotation,   ``Raw/<video_id>/
           mode)                                                             <clip_id>.mp4``
ravdess    ``labels.csv`` (path, emotion, actor, ...; an optional ``text``   audio files
           column: the clip's transcript, e.g. Whisper's: text + audio)
fer2013    ``labels.csv`` (path, emotion)                                    48x48 face images
vader      ``*_GroundTruth.txt`` (id TAB mean TAB text), mean on [-4, 4]     none (text)
=========  ===============================================================  ==================

Every reader is registered in one table, :data:`READERS` (its modalities, kind, split and media);
the config, the cache and ``mmsa-eval`` ask it instead of naming readers. mosi, mosei and mmsa-raw
files may have an ``aspect`` column: the aspect term of the paper's sentence-pair input
``[CLS] text [SEP] aspect [SEP]`` (Eq. 1), whose spans give the text's contrastive views (Eq. 3-4, 6).

Row filters (``split``): the ``mode`` column for mosi/mosei/mmsa-raw; fixed, deterministic
splits elsewhere: RAVDESS by actor (:data:`RAVDESS_ACTORS`, actor-independent, each part
half male / half female), FER2013 and VADER by a salted hash of the row id
(:data:`HASH_SPLITS`). Emotion targets come from :mod:`mmsa.training.emotion`; VADER means are
rescaled by 3/4 ([-4, 4] -> [-3, 3]).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .emotion import EMOTION_VALENCE, VALENCE_TARGET, valence_of
from .errors import DataError

if TYPE_CHECKING:
    from .config import SourceConfig

log = logging.getLogger(__name__)

RAVDESS_ACTORS = {
    "train": tuple(range(1, 13)),  # actors 01-12
    "valid": (13, 14, 15, 16),
    "test": (17, 18, 19, 20),
}
HASH_SPLITS = (("train", 0.8), ("valid", 0.9), ("test", 1.0))  # cumulative fractions
HASH_SALT = "mmsa-split-v1"
VIDEO_HELDOUT = 0.3
"""``videos = "heldout"`` keeps the videos whose salted hash falls in the last 30 %, ``"train"`` the rest."""
VADER_SCALE = 3.0 / 4.0
CLIP_EXTS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".wav", ".flac")


@dataclass(frozen=True)
class Record:
    """One labelled row. ``label`` is the target on the MOSI scale (NaN: no valence, e.g. surprise)."""

    id: str
    label: float
    text: str | None = None
    media: Path | None = None
    start_s: float | None = None
    end_s: float | None = None
    emotion: str | None = None
    valence: str | None = None
    where: str = ""  # "file:line", for error messages
    aspect: str | None = None  # the aspect term of Eq. 1 (``[CLS] text [SEP] aspect [SEP]``), where the file has one
    group: str = ""  # rows that must stay on one side of a cross-validation fold: the video, the actor ("": the row)

    @property
    def fold_key(self) -> str:
        """What :func:`hash_fold` hashes for this row: its group (video, actor), else its own id."""
        return self.group or self.id


@dataclass
class SourceData:
    """The rows of one source after filtering, and what was skipped (reason -> count)."""

    cfg: SourceConfig
    records: list[Record]
    modalities: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cfg.key

    @property
    def kind(self) -> str:
        return self.cfg.kind

    @property
    def media_kind(self) -> str | None:
        """``clip`` (audio/video files), ``image`` (face crops) or None (text only)."""
        if not set(self.modalities) & {"audio", "vision"}:
            return None
        return READERS[self.cfg.reader].media


def video_part(video_id: str) -> str:
    """``train`` or ``heldout``: a fixed split of a CMU file's videos (``SourceConfig.videos``), so
    that one fold (MOSEI valid) can give training rows and held-out rows from other speakers."""
    u = int(hashlib.sha256(f"{HASH_SALT}:video:{video_id}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    return "heldout" if u >= 1.0 - VIDEO_HELDOUT else "train"


def resolve_path(text: str) -> Path:
    """Config path -> Path (``~`` and ``$VARS`` expanded; relative to the working directory)."""
    return Path(os.path.expandvars(os.path.expanduser(text)))


def hash_split(key: str) -> str:
    """The built-in split (train 80 %, valid 10 %, test 10 %) of a row id; stable across runs and machines."""
    u = int(hashlib.sha256(f"{HASH_SALT}:{key}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    return next(name for name, upto in HASH_SPLITS if u < upto)


def hash_fold(key: str, folds: int) -> int:
    """The cross-validation fold (1..``folds``) of a row's :attr:`Record.fold_key` (``SourceConfig.fold``): a
    salted hash of its own, independent of :func:`hash_split`, so the folds are about equal and stable. The key
    is the row's group where rows are not independent: ``video:<video_id>`` for mosi, mosei and mmsa-raw (the
    clips of one video, one speaker, stay on one side), ``actor:<n>`` for ravdess; FER2013 and VADER rows are
    independent, keyed by their id."""
    u = int(hashlib.sha256(f"{HASH_SALT}:fold:{key}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    return int(u * folds) + 1


# --------------------------------------------------------------------------- CSV


class LabelTable:
    """A CSV label file with a header; values are read with errors naming file, line and column."""

    def __init__(self, path: Path, required: tuple[str, ...]) -> None:
        self.path = path
        if not path.is_file():
            raise DataError(f"{path}: label file not found" if not path.exists() else f"{path}: not a file")
        try:
            self._text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
        reader = csv.reader(io.StringIO(self._text, newline=""))
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise DataError(f"{path}:1: malformed CSV header ({exc})") from exc
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{path}:1: empty label file (expected a header line)")
        self.header = [h.strip() for h in header]
        missing = [c for c in required if c not in self.header]
        if missing:
            raise DataError(f"{path}:1: missing column {missing[0]!r} (columns: {', '.join(self.header)})")

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        reader = csv.reader(io.StringIO(self._text, newline=""))
        try:
            next(reader)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(self.header):
                    raise DataError(
                        f"{self.path}:{reader.line_num}: expected {len(self.header)} fields, got {len(row)}"
                    )
                yield reader.line_num, dict(zip(self.header, row))
        except csv.Error as exc:
            raise DataError(f"{self.path}:{reader.line_num}: malformed CSV ({exc})") from exc

    def col(self, name: str) -> int:
        return self.header.index(name) + 1

    def number(self, row: dict[str, str], line: int, name: str) -> float:
        raw = row[name].strip()
        try:
            value = float(raw)
        except ValueError:
            raise DataError(
                f"{self.path}:{line}: column {self.col(name)} ({name}): expected a number, got {raw!r}"
            ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise DataError(f"{self.path}:{line}: column {self.col(name)} ({name}): expected a finite number, got {raw!r}")
        return value

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def _by_mode(table: LabelTable, split: str) -> bool:
    """Filter rows on the ``mode`` column? (``all`` keeps every row.)"""
    if split.lower() == "all":
        return False
    if "mode" not in table.header:
        raise DataError(f"{table.path}:1: no 'mode' column to select split {split!r} (use split = \"all\")")
    return True


def _first_existing(cands: list[Path]) -> Path | None:
    return next((c for c in cands if c.is_file()), None)


# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class CmuFormat:
    """How a CMU-style label file (mosi, mosei, mmsa-raw) names its rows and finds their media."""

    id_columns: tuple[str, ...]
    """Columns after ``video_id`` that identify a row; the row id joins them with ``_``."""
    media: Literal["full", "clips"]
    """``full``: ``<root>/<video_id>.*`` (or ``Video/Full/``, ``Raw/Video/Full/`` below it), cut at the
    row's start/end seconds; ``clips``: one file per row, ``<root>/Raw/<video_id>/<clip_id>.*``."""
    text_column: bool = False
    """The transcript column is the source's ``text_column`` (else always ``text``)."""


def _read_cmu(cfg: SourceConfig, mods: tuple[str, ...], keep_unrated: bool, skipped: Counter) -> list[Record]:
    """mosi, mosei and mmsa-raw: regression labels with a mode column (and an optional ``aspect`` column)."""
    spec = READERS[cfg.reader]
    fmt = spec.cmu
    assert fmt is not None
    path = resolve_path(cfg.labels)
    media_needed = bool(set(mods) & {"audio", "vision"})
    segmented = fmt.media == "full" and (media_needed or "start" in fmt.id_columns)
    text_col = cfg.text_column if fmt.text_column else "text"
    required = ("video_id", *fmt.id_columns, text_col, "label")
    required += tuple(c for c in ("start", "end") if segmented and c not in required)
    root = resolve_path(cfg.root) if cfg.root else (path.parent if spec.root_default == "labels" else None)
    table = LabelTable(path, required)
    by_mode = _by_mode(table, cfg.split)
    modes: Counter = Counter()
    out = []
    for line, row in table.rows():
        mode = row.get("mode", "").strip()
        modes[mode] += 1
        if by_mode and mode.lower() != cfg.split.lower():
            continue
        vid = row["video_id"].strip()
        if cfg.videos and video_part(vid) != cfg.videos:
            continue
        label = table.number(row, line, "label") * cfg.label_scale
        text = row[text_col].strip() or None
        if row.get("text_available", "1").strip() == "0":
            text = None
        start = end = None
        if segmented:
            start, end = table.number(row, line, "start"), table.number(row, line, "end")
        rid = "_".join([vid, *(row[c].strip() for c in fmt.id_columns)])
        media = None
        if media_needed:
            cands = _cmu_candidates(fmt, root, vid, row)
            media = _first_existing(cands)
            if media is None:
                raise DataError(f"{table.where(line)}: media file not found: {cands[0]}")
        elif "text" in mods and text is None:
            skipped["no_text"] += 1
            continue
        if "text" not in mods:
            text = None
        aspect = (row.get("aspect") or "").strip() or None
        out.append(Record(rid, label, text, media, start, end, where=table.where(line), aspect=aspect if text else None,
                          group=f"video:{vid}"))
    if not out and not sum(skipped.values()):
        _empty(table.path, cfg.split, sorted(m for m in modes if m))
    return out


def _cmu_candidates(fmt: CmuFormat, root: Path, vid: str, row: dict[str, str]) -> list[Path]:
    if fmt.media == "clips":
        clip = row["clip_id"].strip()
        return [root / "Raw" / vid / f"{clip}{e}" for e in CLIP_EXTS] + [root / vid / f"{clip}{e}" for e in CLIP_EXTS]
    return [d / f"{vid}{e}" for d in (root, root / "Video" / "Full", root / "Raw" / "Video" / "Full") for e in CLIP_EXTS]


def _empty(path: Path, split: str, modes: list[str]) -> None:
    have = f" (modes in the file: {', '.join(modes)})" if modes else ""
    raise DataError(f"{path}: no rows for split {split!r}{have}")


def _read_emotion(cfg: SourceConfig, mods: tuple[str, ...], keep_unrated: bool, skipped: Counter) -> list[Record]:
    """ravdess (split by actor) and fer2013 (split by hash): emotion categories -> valence targets."""
    path = resolve_path(cfg.labels)
    by_actor = READERS[cfg.reader].split_by == "actor"
    table = LabelTable(path, ("path", "emotion") + (("actor",) if by_actor else ()))
    root = resolve_path(cfg.root) if cfg.root else path.parent
    split = cfg.split.lower()
    actors: set[int] | None = None
    if by_actor:
        if cfg.actors:
            actors = set(cfg.actors)
        elif split != "all":
            if split not in RAVDESS_ACTORS:
                raise DataError(f"{path}: unknown RAVDESS split {cfg.split!r} (train, valid, test, all, or give actors)")
            actors = set(RAVDESS_ACTORS[split])
    elif split not in ("all", *(n for n, _ in HASH_SPLITS)):
        raise DataError(f"{path}: unknown split {cfg.split!r} for {cfg.reader} (train, valid, test or all)")
    out = []
    for line, row in table.rows():
        rel = row["path"].strip()
        actor = int(table.number(row, line, "actor")) if by_actor else None
        if actors is not None:
            if actor not in actors:
                continue
        elif split != "all" and hash_split(rel) != split:
            continue
        emotion = row["emotion"].strip().lower()
        if emotion not in EMOTION_VALENCE:
            raise DataError(
                f"{table.where(line)}: column {table.col('emotion')} (emotion): unknown emotion {emotion!r} "
                f"(known: {', '.join(EMOTION_VALENCE)})"
            )
        valence = valence_of(emotion)
        if valence is None and not keep_unrated:
            skipped["no_valence"] += 1
            continue
        media = root / rel
        if not media.is_file():
            raise DataError(f"{table.where(line)}: media file not found: {media}")
        label = VALENCE_TARGET[valence] * cfg.label_scale if valence else float("nan")
        text = (row.get("text") or "").strip() or None if "text" in mods else None
        out.append(Record(rel, label, text, media=media, emotion=emotion, valence=valence, where=table.where(line),
                          group=f"actor:{actor}" if by_actor else ""))
    if not out and not sum(skipped.values()):
        raise DataError(f"{path}: no rows for split {cfg.split!r}" + (f" (actors {sorted(actors)})" if actors else ""))
    return out


def _read_vader(cfg: SourceConfig, mods: tuple[str, ...], keep_unrated: bool, skipped: Counter) -> list[Record]:
    path = resolve_path(cfg.labels)
    if path.is_dir():
        files = sorted(path.glob("*_GroundTruth.txt"))
        if not files:
            raise DataError(f"{path}: no *_GroundTruth.txt files in the VADER folder")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: label file not found")
    split = cfg.split.lower()
    if split not in ("all", *(n for n, _ in HASH_SPLITS)):
        raise DataError(f"{path}: unknown split {cfg.split!r} for vader (train, valid, test or all)")
    out = []
    for f in files:
        stem = f.name.removesuffix("_GroundTruth.txt")
        try:
            lines = f.read_text(encoding="utf-8", errors="strict").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{f}: not UTF-8 text (byte {exc.start})") from exc
        for i, text_line in enumerate(lines, 1):
            if not text_line.strip():
                continue
            parts = text_line.split("\t", 2)
            if len(parts) != 3:
                raise DataError(f"{f}:{i}: expected 3 tab-separated fields (id, mean, text), got {len(parts)}")
            rid = f"{stem}:{parts[0].strip()}"
            if split != "all" and hash_split(rid) != split:
                continue
            try:
                mean = float(parts[1])
            except ValueError:
                raise DataError(f"{f}:{i}: column 2 (mean): expected a number, got {parts[1]!r}") from None
            text = parts[2].strip()
            if not text:
                skipped["no_text"] += 1
                continue
            out.append(Record(rid, mean * VADER_SCALE * cfg.label_scale, text, where=f"{f}:{i}"))
    if not out:
        raise DataError(f"{path}: no rows for split {cfg.split!r}")
    return out


def _has_text_column(cfg: SourceConfig) -> bool:
    path = resolve_path(cfg.labels)
    return path.is_file() and "text" in LabelTable(path, ()).header


def read_source(cfg: SourceConfig, keep_unrated: bool = False) -> SourceData:
    """Read and filter one source. ``keep_unrated``: keep emotion rows without valence (surprise)
    for prediction files; training leaves them out."""
    spec = READERS[cfg.reader]
    have = spec.modalities
    if spec.root_default == "none" and not cfg.root:
        have = ("text",)  # without the raw release only the transcripts exist
    if spec.kind == "emotion" and spec.media == "clip" and _has_text_column(cfg):
        have = ("text", *have)  # e.g. RAVDESS with each clip's (ASR) transcript: text + audio
    mods = tuple(m for m in have if not cfg.modalities or m in cfg.modalities)
    if not mods:
        raise DataError(
            f"{cfg.labels}: source {cfg.key} has none of the modalities asked for "
            f"({', '.join(cfg.modalities)}; it has {', '.join(have)})"
        )
    skipped: Counter = Counter()
    records = spec.read(cfg, mods, keep_unrated, skipped)
    if cfg.folds_kept:
        kept, n = cfg.folds_kept
        records = [r for r in records if hash_fold(r.fold_key, n) in kept]  # a video's / an actor's rows together
    if cfg.limit:
        records = records[: cfg.limit]
    if not records:
        raise DataError(
            f"{cfg.labels}: no usable rows for split {cfg.split!r} ({', '.join(f'{k}: {v}' for k, v in skipped.items())} skipped)"
        )
    log.info("%s: %d rows (%s)%s", cfg.key, len(records), "+".join(mods),
             "".join(f", skipped {v} {k}" for k, v in sorted(skipped.items())))
    return SourceData(cfg, records, mods, dict(skipped))


# --------------------------------------------------------------------------- the readers


@dataclass(frozen=True)
class ReaderSpec:
    """One dataset reader (``reader`` in a source, ``--dataset`` of ``mmsa-eval``)."""

    read: Callable[[SourceConfig, tuple[str, ...], bool, Counter], list[Record]]
    """(source, modalities used, keep rows without a valence, skip counter) -> records."""
    modalities: tuple[str, ...]
    """What its rows can carry."""
    kind: Literal["regression", "emotion"]
    """``regression``: sentiment on [-3, 3]; ``emotion``: categories mapped to valence (``emotion.py``)."""
    split_by: Literal["mode", "actor", "hash"]
    """How ``split`` picks rows: the ``mode`` column, RAVDESS actors, or the salted hash of the row id."""
    media: Literal["clip", "image"] | None
    """``clip``: audio/video files (``mmsa.media.clip_sample``); ``image``: face crops; None: text only."""
    root_default: Literal["labels", "none"] = "labels"
    """Media root when ``root`` is empty: the label file's folder, or none (transcripts only)."""
    cmu: CmuFormat | None = None
    """CMU-style label files: how rows are named and where their media are."""
    evaluable: bool = True
    """``mmsa-eval --dataset`` accepts it (VADER has no held-out use: it is training data only)."""


READERS: dict[str, ReaderSpec] = {
    "mosi": ReaderSpec(_read_cmu, ("text", "audio", "vision"), "regression", "mode", "clip", "none",
                       CmuFormat(("clip_id",), "full")),
    "mosei": ReaderSpec(_read_cmu, ("text", "audio", "vision"), "regression", "mode", "clip", "none",
                        CmuFormat(("start", "end"), "full", text_column=True)),
    "mmsa-raw": ReaderSpec(_read_cmu, ("text", "audio", "vision"), "regression", "mode", "clip", "labels",
                           CmuFormat(("clip_id",), "clips")),
    "ravdess": ReaderSpec(_read_emotion, ("audio",), "emotion", "actor", "clip"),
    "fer2013": ReaderSpec(_read_emotion, ("vision",), "emotion", "hash", "image"),
    "vader": ReaderSpec(_read_vader, ("text",), "regression", "hash", None, evaluable=False),
}
"""Every reader, in one table: the config's ``reader`` values, ``mmsa-eval --dataset`` choices,
and what the trainer, cache and checks need to know about each."""
