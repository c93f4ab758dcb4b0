"""Exact cosine search over an index: text or image queries against every stored embedding (numpy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.errors import ModelportError
from modelport.search.encoders import Encoders, reopen
from modelport.search.store import IndexMismatchError, IndexStore


@dataclass(frozen=True, slots=True)
class Hit:
    rank: int
    path: str
    score: float


def top_k(query: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine scores of the ``k`` rows of ``matrix`` most similar to ``query``, best first."""
    q = query.astype(np.float32).ravel()
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    norms = np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
    scores = (matrix @ q) / norms
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, k - 1)[:k]
    # Ties broken by row (path order) so that results are stable across runs.
    order = part[np.lexsort((part, -scores[part]))]
    return order, scores[order]


def search(db: str | Path, *, text: str | None = None, image: str | Path | None = None, top: int = 10,
           encoders: Encoders | None = None) -> list[Hit]:
    """The ``top`` images of ``db`` closest to a text or an image query.

    ``encoders`` default to the ones recorded in the index; given ones must be of the same model.
    """
    if (text is None) == (image is None):
        raise ModelportError("give exactly one query: a text or --image FILE")
    if top < 1:
        raise ModelportError(f"--top must be a positive integer, got {top}")
    with IndexStore(db) as store:
        info = store.model()
        if info is None:
            raise ModelportError(f"{db}: the index is empty", hint="run `modelport search index` first")
        if encoders is None:
            encoders = reopen(info)
        elif not encoders.fingerprint().same_model(info):
            raise IndexMismatchError(f"{db} was built with {info.clip_model} ({info.sha256 or 'random weights'}), "
                                     f"not {encoders.info.clip_model} ({encoders.info.sha256 or 'random weights'})",
                                     hint="query with the model the index was built with (omit --model)")
        paths, matrix = store.embeddings()
    query = encoders.text().embed_text([text])[0] if text is not None else encoders.image().embed([image])[0]
    rows, scores = top_k(query, matrix, top)
    return [Hit(i + 1, paths[r], float(s)) for i, (r, s) in enumerate(zip(rows, scores))]
