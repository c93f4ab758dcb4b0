"""Exact cosine search over an index: text or image queries against every stored embedding (numpy, or
pgvector on PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.errors import ModelportError
from modelport.search.encoders import Encoders, reopen
from modelport.search.store import IndexMismatchError, IndexStore, top_k


@dataclass(frozen=True, slots=True)
class Hit:
    rank: int
    path: str
    score: float


def search(db: str | Path, *, text: str | None = None, image: str | Path | None = None, top: int = 10,
           encoders: Encoders | None = None) -> list[Hit]:
    """The ``top`` images of ``db`` (a SQLite file or a ``postgresql://`` URL) closest to a text or an image query.

    ``encoders`` default to the ones recorded in the index; given ones must be of the same model.
    """
    if (text is None) == (image is None):
        raise ModelportError("give exactly one query: a text or --image FILE")
    if top < 1:
        raise ModelportError(f"--top must be a positive integer, got {top}")
    with IndexStore(db) as store:
        info = store.model()
        if info is None:
            raise ModelportError(f"{store.location}: the index is empty", hint="run `modelport search index` first")
        if encoders is None:
            encoders = reopen(info)
        elif not encoders.fingerprint().same_model(info):
            built, given = (f"{i.clip_model} ({i.sha256 or 'random weights'})" for i in (info, encoders.info))
            raise IndexMismatchError(f"{store.location} was built with {built}, not {given}",
                                     hint="query with the model the index was built with (omit --model)")
        query = encoders.text().embed_text([text])[0] if text is not None else encoders.image().embed([image])[0]
        ranked = store.top(query, top)
    return [Hit(i + 1, path, score) for i, (path, score) in enumerate(ranked)]


__all__ = ["Hit", "search", "top_k"]  # top_k: the numpy search, kept where callers found it
