"""The detections store: ``object_detections`` (shared with other tools) plus modelport's tables.

A SQLite file, or a PostgreSQL database with pgvector (``modelport.reid.db``): the same tables and meaning.
``object_detections`` is read as it is; modelport only adds its own ``reid_*`` tables beside it, so
databases written by other tools keep working and keep their shape. Every write is one transaction.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from modelport.reid import db as engines
from modelport.reid.db import Database, DatabaseError, Location, database_name, is_url, open_database
from modelport.reid.db.schema import DETECTIONS, MODELPORT, ORDER_INDEX, REQUIRED_COLUMNS, render

DEFAULT_DB = Path("data/db/detections.db")
# A new SQLite file is created holding these (the schema's SQLite words; migrations add what follows).
DETECTIONS_DDL = render(DETECTIONS, Database)
MODELPORT_DDL = render(MODELPORT, Database)
__all__ = ["DatabaseError", "ORDER_INDEX", "REQUIRED_COLUMNS", "database_name", "is_url"]


class ModelNotInDatabaseError(DatabaseError):
    """A ``--model`` value matches none (or several) of the models whose embeddings the database holds."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    key: str  # "<name>@<sha256 prefix>": one per model and weights
    name: str
    sha256: str
    model_type: str
    path: str | None
    dim: int


@dataclass
class DetectionTable:
    """Columns of many detections as arrays (what clustering and reports work on)."""

    ids: np.ndarray
    video: np.ndarray  # object array of str
    frame: np.ndarray
    timestamp: np.ndarray
    confidence: np.ndarray
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2
    track: np.ndarray  # int64, -1 where the detection has no track

    def __len__(self) -> int:
        return len(self.ids)

    def video_index(self) -> tuple[list[str], np.ndarray]:
        """The distinct videos in name order, and each detection's position among them."""
        names = sorted(set(self.video.tolist()))
        lookup = {v: i for i, v in enumerate(names)}
        return names, np.fromiter((lookup[v] for v in self.video.tolist()), np.int64, len(self.video))


def connect(location: Location, create: bool = False) -> Database:
    """Open (or with ``create`` make) a detections store: a SQLite file, or a ``postgresql://`` URL.

    Its schema is migrated to this modelport's version (see ``modelport.reid.db.schema``)."""
    return open_database(location, create, new_sqlite_schema=DETECTIONS_DDL + MODELPORT_DDL)


def count_detections(conn: Database, video: str | None = None) -> int:
    if video is None:
        return conn.execute("SELECT COUNT(*) FROM object_detections").fetchone()[0]
    return conn.execute("SELECT COUNT(*) FROM object_detections WHERE video = ?", (video,)).fetchone()[0]


def ground_truth(conn: Database, ids: np.ndarray) -> np.ndarray:
    """The ground-truth person of each detection id in ``ids``, -1 where unknown."""
    pairs = np.array(conn.execute("SELECT detection_id, person_id FROM reid_ground_truth").fetchall(), np.int64)
    truth = np.full(len(ids), -1, np.int64)
    if len(pairs):
        order = np.argsort(pairs[:, 0])
        known, persons = pairs[order, 0], pairs[order, 1]
        at = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        hit = known[at] == ids
        truth[hit] = persons[at[hit]]
    return truth


# ---- models and embeddings ------------------------------------------------------------------------

def register_model(conn: Database, model: ModelRecord, make_default: bool = False) -> bool:
    """Record a model; it becomes the default when asked or when it is the first. Returns is-default."""
    with conn:
        conn.execute("INSERT INTO reid_models (model_key, name, sha256, model_type, path, dim, created) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                     (model.key, model.name, model.sha256, model.model_type, model.path, model.dim, time.time()))
        current = default_model_key(conn)
        if make_default or current is None:
            conn.execute("INSERT INTO reid_meta (key, value) VALUES ('default_model', ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (model.key,))
            if current != model.key:
                # The shared column now follows the new default: copy what that model has already computed.
                conn.execute("UPDATE object_detections SET reid_embedding = (SELECT e.embedding FROM "
                             "reid_embeddings e WHERE e.detection_id = object_detections.id AND e.model_key = ?)",
                             (model.key,))
            is_default = True
        else:
            is_default = current == model.key
    engines.index_vectors(conn, model.key, model.dim)
    return is_default


def default_model_key(conn: Database) -> str | None:
    row = conn.execute("SELECT value FROM reid_meta WHERE key = 'default_model'").fetchone()
    return row[0] if row else None


def models(conn: Database) -> list[ModelRecord]:
    rows = conn.execute("SELECT model_key, name, sha256, model_type, path, dim FROM reid_models ORDER BY created")
    return [ModelRecord(*r) for r in rows]


def get_model(conn: Database, key: str | None) -> ModelRecord:
    """A model by key, name or key prefix; the default model when ``key`` is None.

    A weights file or export is matched by sha256 instead: see ``modelport.reid.models.resolve_model``.
    """
    known = models(conn)
    key = key or default_model_key(conn)
    if key is None or not known:
        raise DatabaseError("no embeddings in this database yet", hint="run `modelport reid extract` first")
    hits = [m for m in known if m.key == key] or [m for m in known if m.name == key or m.key.startswith(key)]
    if len(hits) != 1:
        raise ModelNotInDatabaseError(f"model {key!r} is {'ambiguous' if hits else 'not'} in this database",
                                      hint=known_models_hint(hits or known))
    return hits[0]


def known_models_hint(known: Sequence[ModelRecord]) -> str:
    """The models a user can name, with what each key stands for."""
    return "models in this database: " + "; ".join(
        f"{m.key} ({m.model_type}, {m.dim}-d{', from ' + m.path if m.path else ''})" for m in known)


def pending(conn: Database, model_key: str, class_name: str | None) -> list[tuple]:
    """(id, video, frame_index, x1, y1, x2, y2) of detections still lacking ``model_key``'s embedding."""
    where = "AND d.class_name = ?" if class_name else ""
    args = (model_key, class_name) if class_name else (model_key,)
    return conn.execute(
        "SELECT d.id, d.video, d.frame_index, d.x1, d.y1, d.x2, d.y2 FROM object_detections d "
        "WHERE NOT EXISTS (SELECT 1 FROM reid_embeddings e WHERE e.detection_id = d.id AND e.model_key = ?) "
        f"{where} ORDER BY d.video, d.frame_index, d.id", args).fetchall()


def pending_count(conn: Database, model_key: str, class_name: str | None) -> int:
    """How many detections (of ``class_name``) lack ``model_key``'s embedding."""
    where = "AND d.class_name = ?" if class_name else ""
    return conn.execute(
        "SELECT COUNT(*) FROM object_detections d WHERE NOT EXISTS (SELECT 1 FROM reid_embeddings e "
        f"WHERE e.detection_id = d.id AND e.model_key = ?) {where}",
        (model_key, class_name) if class_name else (model_key,)).fetchone()[0]


def write_embeddings(conn: Database, model_key: str, ids: Sequence[int], vectors: np.ndarray,
                     sharpness: Sequence[float], is_default: bool, commit: bool = True) -> None:
    """Store one batch in a transaction: a kill leaves either all of it or none of it.

    ``commit=False`` runs in the caller's transaction (``with conn:``), so it can group batches into one commit.
    """
    blobs = [conn.vector(v) for v in vectors]
    with conn if commit else contextlib.nullcontext():
        conn.executemany("INSERT INTO reid_embeddings (detection_id, model_key, embedding) VALUES (?, ?, ?) "
                         "ON CONFLICT DO NOTHING", [(int(i), model_key, b) for i, b in zip(ids, blobs)])
        conn.executemany("INSERT INTO reid_quality (detection_id, sharpness) VALUES (?, ?) "
                         "ON CONFLICT (detection_id) DO UPDATE SET sharpness = excluded.sharpness",
                         [(int(i), float(s)) for i, s in zip(ids, sharpness)])
        if is_default:
            conn.executemany("UPDATE object_detections SET reid_embedding = ? WHERE id = ?",
                             [(b, int(i)) for i, b in zip(ids, blobs)])


def add_detection(conn: Database, row: Sequence[Any]) -> int:
    """Insert one detection (video, frame_index, timestamp, class_name, confidence, x1, y1, x2, y2, track_id);
    returns its id."""
    return conn.execute("INSERT INTO object_detections (video, frame_index, timestamp, class_name, confidence, "
                        "x1, y1, x2, y2, track_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        row).fetchone()[0]


def write_ground_truth(conn: Database, pairs: Iterable[tuple[int, int]]) -> None:
    """(detection id, person id) pairs; a detection's earlier ground truth is replaced."""
    conn.executemany("INSERT INTO reid_ground_truth (detection_id, person_id) VALUES (?, ?) "
                     "ON CONFLICT (detection_id) DO UPDATE SET person_id = excluded.person_id", pairs)


def nearest(conn: Database, model: ModelRecord, query: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
    """(detection id, cosine distance) of the ``k`` stored embeddings of ``model`` nearest ``query``, nearest
    first: through the HNSW index on PostgreSQL (approximate), by exact search elsewhere."""
    found = engines.nearest(conn, model.key, model.dim, query, k)
    if found is not None:
        return found
    q = np.asarray(query, np.float32) / max(float(np.linalg.norm(query)), 1e-12)
    best: list[tuple[int, float]] = []
    cursor = conn.execute("SELECT detection_id, embedding FROM reid_embeddings WHERE model_key = ?", (model.key,))
    while rows := cursor.fetchmany(8192):  # a chunk at a time: memory stays flat however many are stored
        vectors = conn.vectors([r[1] for r in rows])
        distance = 1.0 - vectors @ q / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        best += [(int(rows[i][0]), float(distance[i])) for i in np.argsort(distance, kind="stable")[:k]]
        best = sorted(best, key=lambda pair: pair[1])[:k]
    return best


def embedding_count(conn: Database, model_key: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM reid_embeddings WHERE model_key = ?", (model_key,)).fetchone()[0]


# ---- bulk reads -------------------------------------------------------------------------------------

def load_detections(conn: Database, class_name: str | None = None, model_key: str | None = None, *,
                    with_vectors: bool = True, chunk: int = 65536
                    ) -> tuple[DetectionTable, np.ndarray | None, np.ndarray]:
    """Detections (of ``class_name``; with ``model_key``, only those holding its embedding), those embeddings
    (None without ``model_key`` or ``with_vectors``) and sharpness (NaN where unknown).

    Rows are read ``chunk`` at a time into arrays; for many detections pass ``with_vectors=False`` and stream
    the embeddings with ``table_embeddings``.
    """
    where, args = ["1 = 1"], []
    if class_name:
        where.append("d.class_name = ?")
        args.append(class_name)
    join, emb_col = "", "NULL"
    if model_key and with_vectors:
        join = "JOIN reid_embeddings e ON e.detection_id = d.id AND e.model_key = ?"
        args.insert(0, model_key)
        emb_col = "e.embedding"
    elif model_key:
        where.append("EXISTS (SELECT 1 FROM reid_embeddings e WHERE e.detection_id = d.id AND e.model_key = ?)")
        args.append(model_key)
    # stream: on PostgreSQL a server-side cursor; a plain execute would hold the whole result in the client.
    chunks = conn.stream(
        f"SELECT d.id, d.video, d.frame_index, COALESCE(d.timestamp, 0), COALESCE(d.confidence, 1), "
        f"d.x1, d.y1, d.x2, d.y2, COALESCE(d.track_id, -1), COALESCE(q.sharpness, 'nan'), {emb_col} "
        f"FROM object_detections d {join} LEFT JOIN reid_quality q ON q.detection_id = d.id "
        f"WHERE {' AND '.join(where)} ORDER BY d.video, d.frame_index, d.id", args, chunk)
    parts: list[tuple] = []
    merged: list[Any]
    videos: dict[str, str] = {}  # one string object per video, shared by its rows
    for rows in chunks:
        cols = list(zip(*rows))
        video = np.empty(len(rows), dtype=object)
        video[:] = [videos.setdefault(v, v) for v in cols[1]]
        parts.append((np.asarray(cols[0], np.int64), video, np.asarray(cols[2], np.int64),
                      np.asarray(cols[3], np.float64), np.asarray(cols[4], np.float64),
                      np.asarray(cols[5:9], np.float64).T.reshape(len(rows), 4), np.asarray(cols[9], np.int64),
                      np.asarray(cols[10], np.float64),
                      conn.vectors(cols[11]) if emb_col != "NULL" else None))
    if parts:
        merged = [np.concatenate(c) if c[0] is not None else None for c in zip(*parts)]
    else:
        merged = [np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                  np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32)]
    ids, video, frame, timestamp, confidence, boxes, track, sharp, vectors = merged
    table = DetectionTable(ids, video, frame, timestamp, confidence, boxes, track)
    return table, vectors if model_key and with_vectors else None, sharp


def table_embeddings(conn: Database, model_key: str, det: DetectionTable,
                     chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``model_key``'s embeddings of ``det``'s detections as (rows of ``det``, float32 vectors), a chunk at a
    time in the table's order, so that no more than a chunk of them is ever in memory."""
    order = np.argsort(det.ids, kind="stable")
    sorted_ids = det.ids[order]
    # stream: a server-side cursor on PostgreSQL, whose client would otherwise receive every vector at once.
    for rows in conn.stream("SELECT detection_id, embedding FROM reid_embeddings WHERE model_key = ?", (model_key,),
                            chunk):
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        at = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
        found = sorted_ids[at] == ids if len(sorted_ids) else np.zeros(len(ids), bool)
        if found.any():
            keep = np.flatnonzero(found)
            vectors = conn.vectors([rows[i][1] for i in keep.tolist()])
            yield order[at[keep]], vectors


def write_identities(conn: Database, model_key: str, pairs: Iterable[tuple[int, int]]) -> None:
    """Replace a model's identity assignment in one transaction."""
    with conn:
        conn.execute("DELETE FROM reid_identities WHERE model_key = ?", (model_key,))
        conn.executemany("INSERT INTO reid_identities (model_key, detection_id, person_id) VALUES (?, ?, ?)",
                         ((model_key, int(d), int(p)) for d, p in pairs))


def identities(conn: Database, model_key: str) -> dict[int, int]:
    return dict(conn.execute("SELECT detection_id, person_id FROM reid_identities WHERE model_key = ?",
                             (model_key,)))
