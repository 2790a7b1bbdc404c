"""Preprocessing cache: featurize each media row once, through the shared feature contract.

Media rows become model input through :func:`mmsa.media.clip_sample` (clips: ffmpeg audio, OpenCV
frames, the Haar detector, ``model/features.py``) or :func:`mmsa.model.features.face_crop`
(FER2013 images, which are already face crops), the same code the live monitor runs. The result
is stored per row as a small safetensors file::

    <cache.dir>/<feature fingerprint>/<key[:2]>/<key>.safetensors   tensors: audio (F, T), faces (n, 1, S, S)

``key`` hashes the media file's *content* (sha256), the segment, the modalities and the face
detector options, so a changed file or setting is featurized again, and a copy of the same data
elsewhere (a fresh checkout of ``../shared/data``, a rebuilt folder of the same cut clips) is not.
A file's content digest is itself remembered by path, size and mtime
(``<cache.dir>/media-digests/``), so each file is read through once per copy, not once per run. Files are written
atomically (temp file + rename): an interrupted run resumes where it stopped. Rows are decoded
in parallel threads (ffmpeg and OpenCV release the GIL), with a progress bar. Text-only
sources are not cached: their samples are built on the fly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mmsa.media import MediaError, clip_sample
from mmsa.media.faces import DetectorOptions, FaceDetector
from mmsa.model.errors import MMSAError
from mmsa.model.features import DEFAULT_FEATURES, FeatureConfig, Sample, face_crop, face_window
from mmsa.model.resources import file_digest

from .config import CacheConfig, resolve_path
from .data import Record, SourceData
from .errors import DataError

log = logging.getLogger(__name__)
FORMAT = "mmsa-cache/1"


class SampleStore:
    """The samples of one source in record order; media features are read from the cache on access."""

    def __init__(self, data: SourceData, files: list[Path] | None = None) -> None:
        self.data = data
        self.records = data.records
        self.files = files

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        rec = self.records[i]
        sample = Sample(text=rec.text, aspect=rec.aspect)
        if self.files is not None:
            tensors = load_file(str(self.files[i]))
            sample.audio = tensors.get("audio")
            sample.faces = tensors.get("faces")
        return sample

    def text_length(self, i: int) -> int:
        """Words of the row's text (for length-grouped batches)."""
        text = self.records[i].text
        return len(text.split()) if text else 0


def media_digest(path: Path, root: Path) -> str:
    """The sha256 of the file's bytes, remembered under ``root`` by path, size and mtime (read once per copy)."""
    st = path.stat()
    where = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = root / where[:2] / where
    try:
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = file_digest(path, 64)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(digest)
    os.replace(tmp, memo)
    return digest


def _key(rec: Record, kind: str, mods: tuple[str, ...], detector: DetectorOptions, digests: Path) -> str:
    ident = {
        "v": 2, "kind": kind, "media": media_digest(rec.media, digests),
        "start": rec.start_s, "end": rec.end_s, "mods": sorted(m for m in mods if m != "text"),
        "detector": dataclasses.asdict(detector),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _compute(rec: Record, kind: str, mods: tuple[str, ...], features: FeatureConfig, local: threading.local) -> Sample:
    if kind == "image":
        import cv2

        img = cv2.imread(str(rec.media), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise MediaError(f"{rec.media}: cannot read image")
        return Sample(faces=face_window([face_crop(img, None, features)], features))
    detector = None
    if "vision" in mods:
        if not hasattr(local, "detector"):
            local.detector = FaceDetector()
        detector = local.detector
    sample = clip_sample(rec.media, None, detector, rec.start_s, rec.end_s, features)
    if "audio" not in mods:
        sample.audio = None
    return sample


def _write(path: Path, sample: Sample, rec: Record) -> None:
    tensors = {}
    if sample.audio is not None:
        tensors["audio"] = sample.audio.float().contiguous()
    if sample.faces is not None:
        tensors["faces"] = sample.faces.float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "media": str(rec.media), "id": rec.id})
    os.replace(tmp, path)


def _present(path: Path) -> tuple[bool, bool]:
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
    return "audio" in keys, "faces" in keys


def featurize(
    data: SourceData,
    cache: CacheConfig = CacheConfig(),
    features: FeatureConfig = DEFAULT_FEATURES,
    progress: bool = True,
) -> SampleStore:
    """Featurize the media rows of ``data`` that are not cached yet; return the source's samples.

    Rows left with no usable input (no text, no audio long enough, no face) are dropped and
    counted in ``data.skipped["no_usable_input"]``.
    """
    kind = data.media_kind
    if kind is None:
        return SampleStore(data)
    detector = DetectorOptions()
    root = resolve_path(cache.dir) / features.fingerprint()
    digests = resolve_path(cache.dir) / "media-digests"
    keys = [_key(r, kind, data.modalities, detector, digests) for r in data.records]
    files = [root / k[:2] / f"{k}.safetensors" for k in keys]
    todo = [i for i, f in enumerate(files) if not f.is_file()]
    t0 = time.perf_counter()
    if todo:
        _run(data, kind, files, todo, features, cache.workers, progress)
        log.info("%s: featurized %d rows in %.1f s (%d were cached) -> %s", data.name, len(todo),
                 time.perf_counter() - t0, len(files) - len(todo), root)
    keep_records, keep_files, dropped = [], [], 0
    for rec, f in zip(data.records, files):
        has_audio, has_faces = _present(f)
        if rec.text or has_audio or has_faces:
            keep_records.append(rec)
            keep_files.append(f)
        else:
            dropped += 1
    if dropped:
        data.skipped["no_usable_input"] = data.skipped.get("no_usable_input", 0) + dropped
        log.info("%s: %d rows have no usable input (no text, audio or face) and are skipped", data.name, dropped)
    if not keep_records:
        raise DataError(f"{data.cfg.labels}: none of the {len(files)} rows of {data.name} has usable input")
    data.records = keep_records
    return SampleStore(data, keep_files)


def _run(data: SourceData, kind: str, files: list[Path], todo: list[int], features: FeatureConfig,
         workers: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    local = threading.local()
    torch_threads = torch.get_num_threads()

    def job(i: int) -> None:
        rec = data.records[i]
        try:
            sample = _compute(rec, kind, data.modalities, features, local)
        except MMSAError as exc:
            raise DataError(f"{rec.where}: {exc}") from exc
        _write(files[i], sample, rec)

    bar = tqdm(total=len(todo), desc=f"featurize {data.name}", unit="row", disable=None if progress else True)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="featurize")
    try:
        # one torch thread per worker: the STFTs are small and the workers already fill the cores
        torch.set_num_threads(1)
        futures = [pool.submit(job, i) for i in todo]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
            bar.update(len(done))
            for fut in done:
                fut.result()  # re-raise the first failure (naming its label line)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(torch_threads)
        bar.close()
