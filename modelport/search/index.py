"""Embed every image under a folder into a search index, in batches, skipping what is already there."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from modelport.errors import ModelportError, WeightsNotFoundError
from modelport.preprocess import finish, resize_all
from modelport.search.encoders import Encoders
from modelport.search.store import IndexStore

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
Progress = Callable[[int, int], None]  # (images done, images to do)


@dataclass(frozen=True, slots=True)
class IndexStats:
    found: int  # image files under the folder
    skipped: int  # already in the index, unchanged
    added: int
    failed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsNotFoundError(f"{folder}: {'not a folder' if folder.exists() else 'image folder not found'}",
                                   hint="give the folder of images to index (searched recursively)")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def index_folder(folder: str | Path, encoders: Encoders, db: str | Path, *, batch: int = 32,
                 progress: Progress | None = None) -> IndexStats:
    """Embed new or changed images under ``folder`` into ``db`` (a SQLite file or a ``postgresql://`` URL);
    unreadable files are recorded as failures."""
    if batch < 1:
        raise ModelportError(f"batch must be a positive integer, got {batch}")
    start = time.perf_counter()
    images = list_images(folder)
    with IndexStore(db, create=True) as store:
        store.bind(encoders.fingerprint())
        known = store.known()
        todo = [p for p in images if known.get(str(p.resolve())) != _stamp(p)]
        runner = encoders.image() if todo else None
        pre = runner.spec.preprocess if runner else None
        added = failed = 0
        for offset in range(0, len(todo), batch):
            chunk, readable, failures = todo[offset : offset + batch], [], []
            pixels = []
            for path in chunk:
                try:
                    pixels.append(resize_all([path], pre)[0])
                    readable.append(path)
                except (ModelportError, OSError, ValueError) as exc:
                    failures.append((str(path.resolve()), str(exc)))
            rows = []
            if readable:
                emb = runner.embed(finish(np.stack(pixels), pre), prepared=True)
                rows = [(str(p.resolve()), *_stamp(p), e) for p, e in zip(readable, emb)]
            store.add(rows, failures)
            added, failed = added + len(rows), failed + len(failures)
            if progress:
                progress(offset + len(chunk), len(todo))
    return IndexStats(len(images), len(images) - len(todo), added, failed, time.perf_counter() - start)
