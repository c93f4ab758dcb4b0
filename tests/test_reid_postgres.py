"""The store on both engines: versioned migrations, PostgreSQL claims and pgvector search, `reid db copy`."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from modelport.reid import claims, store
from modelport.reid.db import SchemaTooNewError, schema

MODEL = store.ModelRecord("m@0123456789ab", "m", "0123456789ab" * 5, "zoo", None, 16)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    return str(tmp_path / "d.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _fill(db: str, n: int = 40, seed: int = 0) -> np.ndarray:
    conn = store.connect(db, create=True)
    try:
        with conn:
            ids = [store.add_detection(conn, (f"v{i % 2}.mp4", i, i / 10, "person", 0.9, 1, 2, 30, 60, i // 4))
                   for i in range(n)]
            store.write_ground_truth(conn, [(i, i % 5) for i in ids])
        store.register_model(conn, MODEL)
        vectors = np.random.default_rng(seed).normal(size=(n, MODEL.dim)).astype(np.float32)
        store.write_embeddings(conn, MODEL.key, ids, vectors, [1.0] * n, True)
        return vectors
    finally:
        conn.close()


def test_a_new_store_records_the_schema_version_and_refuses_a_newer_one(location, monkeypatch):
    store.connect(location, create=True).close()
    conn = store.connect(location)
    assert schema.schema_version(conn) == schema.latest()
    with conn:
        conn.execute("UPDATE reid_meta SET value = ? WHERE key = 'schema_version'", (str(schema.latest() + 1),))
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer than this modelport knows"):
        store.connect(location)


def test_migrations_run_once_in_order_and_a_failed_one_changes_nothing(location, monkeypatch):
    store.connect(location, create=True).close()
    applied = []

    def v2(db):
        applied.append(2)
        db.execute("CREATE TABLE reid_v2_marker (x TEXT)")

    def v3(db):
        applied.append(3)
        db.execute("INSERT INTO reid_v2_marker (x) VALUES ('after v2')")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, schema.Migration(2, v2), schema.Migration(3, v3)])
    conn = store.connect(location)
    assert applied == [2, 3] and schema.schema_version(conn) == 3
    assert [tuple(r) for r in conn.execute("SELECT x FROM reid_v2_marker")] == [("after v2",)]
    conn.close()
    store.connect(location).close()
    assert applied == [2, 3]  # not again

    def broken(db):
        db.execute("CREATE TABLE reid_v4_half (x TEXT)")
        raise RuntimeError("migration 4 failed")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, schema.Migration(4, broken)])
    with pytest.raises(RuntimeError, match="migration 4"):
        store.connect(location)
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:-1])
    conn = store.connect(location)
    assert schema.schema_version(conn) == 3 and "reid_v4_half" not in conn.tables()
    conn.close()


def test_a_sqlite_file_from_before_versioning_is_migrated_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as raw:  # the shape another tool writes: no reid_* tables, no reid_embedding
        raw.execute("CREATE TABLE object_detections (id INTEGER PRIMARY KEY, video TEXT, frame_index INTEGER, "
                    "timestamp REAL, class_name TEXT, confidence REAL, x1 REAL, y1 REAL, x2 REAL, y2 REAL, "
                    "track_id INTEGER)")
        raw.execute("INSERT INTO object_detections VALUES (7, 'a.mp4', 3, 0.1, 'person', 0.8, 1, 2, 3, 4, 5)")
    raw.close()
    conn = store.connect(db)
    assert schema.schema_version(conn) == schema.latest() and "reid_embedding" in conn.columns("object_detections")
    assert [tuple(r) for r in conn.execute("SELECT id, video, track_id FROM object_detections")] == [(7, "a.mp4", 5)]
    conn.close()


def test_nearest_neighbours_match_exact_search_and_postgres_uses_the_hnsw_index(location):
    vectors = _fill(location)
    conn = store.connect(location)
    try:
        query = vectors[5] + 0.01
        found = store.nearest(conn, MODEL, query, k=5)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        exact = np.argsort(1 - unit @ (query / np.linalg.norm(query)))[:5] + 1  # ids count from 1
        assert [i for i, _ in found] == exact.tolist() and found[0][0] == 6
        if store.is_url(location):
            plan = " ".join(r[0] for r in conn.execute(
                f"EXPLAIN SELECT detection_id FROM reid_embeddings WHERE model_key = ? ORDER BY "
                f"embedding::vector({MODEL.dim}) <=> ?::vector({MODEL.dim}) LIMIT 5", (MODEL.key, conn.vector(query))))
            assert "reid_embeddings_hnsw_" in plan
    finally:
        conn.close()


def test_claims_of_two_connections_never_overlap(location):
    _fill(location)
    other = store.ModelRecord("n@0123456789ab", "n", "f" * 64, "zoo", None, 16)
    a, b = store.connect(location), store.connect(location)
    try:
        store.register_model(a, other)
        taken_a = claims.claim(a, other.key, None, "host:1:1", None, size=15)
        taken_b = claims.claim(b, other.key, None, "host:2:1", None, size=100)
        assert len(taken_a) == 15 and len(taken_b) == 25
        assert not {r[0] for r in taken_a} & {r[0] for r in taken_b}
        assert claims.claim(a, other.key, None, "host:1:1", None) == []
    finally:
        a.close()
        b.close()
