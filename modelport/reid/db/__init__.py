"""Where the ReID store lives: a SQLite file (the embedded default) or a PostgreSQL server with pgvector.

``open_database`` takes a path or a ``postgresql://user@host/dbname`` URL and returns a ``Database`` whose
schema is migrated to the version this modelport knows; store functions work on either (``modelport.sqlstore``
holds what differs between the two engines).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from modelport.reid.db.schema import DETECTIONS, check_detections, migrate
from modelport.sqlstore import (
    Database,
    DatabaseError,
    Location,
    SchemaTooNewError,
    StoreKind,
    describe,
    is_url,
    open_store,
    redacted,
    render,
    statements,
)

STORE = StoreKind("detections database", "create one with `modelport reid import` or `modelport reid demo-data`",
                  "modelport.reid.schema")


def database_name(location: Location) -> str:
    """What a checkpoint's provenance records: the resolved file, or the URL without its password."""
    return redacted(str(location)) if is_url(location) else str(Path(location).resolve())


def open_database(location: Location, create: bool = False, *, new_sqlite_schema: str = "") -> Database:
    """Open (or with ``create`` make) the store at ``location`` and migrate its schema.

    ``new_sqlite_schema`` is what a new SQLite file is created with; on a server, ``create`` adds the
    detections table to an existing database (modelport never creates databases)."""

    def prepare(db: Database) -> None:
        if create and "object_detections" not in db.tables():
            with db.write():
                db.lock_schema()
                db.add_vector_type()
                for statement in statements(render(DETECTIONS, db)):
                    db.execute(statement)
        check_detections(db)
        migrate(db)

    return open_store(location, STORE, prepare, create=create, new_sqlite_schema=new_sqlite_schema)


def index_name(model_key: str) -> str:
    """The name of ``model_key``'s HNSW index on PostgreSQL."""
    return "reid_embeddings_hnsw_" + hashlib.sha256(model_key.encode()).hexdigest()[:16]


def index_vectors(db: Database, model_key: str, dim: int) -> None:
    """Build the nearest-neighbour index of ``model_key``'s embeddings, where the engine has one: a partial
    index over ``embedding::vector(dim)``, since one table holds models of different widths."""
    db.index_vectors(index_name(model_key), "reid_embeddings", "embedding", dim, {"model_key": model_key})


def nearest(db: Database, model_key: str, dim: int, query: np.ndarray, k: int) -> list[tuple[int, float]] | None:
    """(detection id, cosine distance) of the ``k`` embeddings nearest ``query`` through the engine's index,
    or None where the engine has none (the caller searches exactly)."""
    found = db.nearest("reid_embeddings", "detection_id", "embedding", dim, query, k, {"model_key": model_key})
    return None if found is None else [(int(i), d) for i, d in found]


__all__ = ["Database", "DatabaseError", "Location", "SchemaTooNewError", "database_name",
           "describe", "index_name", "index_vectors", "is_url", "nearest", "open_database"]
