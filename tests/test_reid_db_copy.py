"""`modelport reid db copy`: SQLite <-> PostgreSQL (a real server, tests/pg_server.py), verified and atomic."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from modelport.reid import store
from modelport.reid.db import SchemaTooNewError, index_name, schema
from modelport.reid.db.copy import CopyMismatchError, CopyRefusedError, checksum, copy_store
from modelport.reid.identify import run_cluster

MODEL = store.ModelRecord("m@0123456789ab", "m", "0123456789ab" * 5, "zoo", None, 16)


def _store(path, n: int = 60, seed: int = 0) -> str:
    """A SQLite store another tool extended (a ``camera`` column), with embeddings of 4 people in 12 tracks."""
    conn = store.connect(path, create=True)
    rng = np.random.default_rng(seed)
    try:
        with conn:
            conn.execute("ALTER TABLE object_detections ADD COLUMN camera TEXT")
            ids = [store.add_detection(conn, (f"v{i % 2}.mp4", i, i / 15, "person", 0.5 + i / 200, 1.5, 2, 30, 60,
                                              i // 5)) for i in range(n)]
            conn.execute("UPDATE object_detections SET camera = 'cam-' || (id % 3)")
            store.write_ground_truth(conn, [(i, (i - 1) // 5 % 4) for i in ids])
        store.register_model(conn, MODEL)
        centres = rng.normal(size=(4, MODEL.dim))
        vectors = (centres[[(i - 1) // 5 % 4 for i in ids]] + 0.2 * rng.normal(size=(n, MODEL.dim))).astype(np.float32)
        store.write_embeddings(conn, MODEL.key, ids, vectors, rng.uniform(0, 9, n).tolist(), True)
    finally:
        conn.close()
    return str(path)


def _rows(location, table: str = "object_detections") -> list[tuple]:
    conn = store.connect(location)
    try:
        columns = list(conn.columns(table))
        return [tuple(conn.vectors([v])[0].tolist() if c == "reid_embedding" and v is not None else v
                      for c, v in zip(columns, r))
                for r in conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")]
    finally:
        conn.close()


def _sums(report) -> dict[str, tuple[int, str]]:
    return {t.table: (t.destination_rows, t.destination_checksum) for t in report.tables}


def _identities(location, out) -> tuple[int, dict[int, int]]:
    report = run_cluster(location, out, threshold=0.5, webp=False)
    conn = store.connect(location)
    try:
        return report.identities, store.identities(conn, MODEL.key)
    finally:
        conn.close()


def test_sqlite_to_postgres_and_back_is_identical_and_clusters_the_same(tmp_path, pg_url):
    original = _store(tmp_path / "a.db")
    there = copy_store(original, pg_url, batch=7)  # batches smaller than the tables: the streaming path
    back = copy_store(pg_url, tmp_path / "b.db", batch=7)
    assert all(t.ok for t in there.tables + back.tables) and _sums(there) == _sums(back)
    assert there.added_columns == ["object_detections.camera TEXT"]
    assert _sums(there)["reid_embeddings"][0] == 60 and _sums(there)["reid_ground_truth"][0] == 60
    assert _rows(tmp_path / "b.db") == _rows(original) and _rows(pg_url) == _rows(original)
    assert _rows(pg_url)[0][-1] == "cam-1"

    expected = _identities(original, tmp_path / "c0")
    assert expected[0] >= 2
    assert _identities(pg_url, tmp_path / "c1") == expected == _identities(tmp_path / "b.db", tmp_path / "c2")

    conn = store.connect(pg_url)
    try:  # ids continue after the copied ones, and the model's HNSW index exists
        assert store.add_detection(conn, ("v9.mp4", 0, 0.0, "person", 1.0, 0, 0, 1, 1, None)) == 61
        assert conn.has_index(index_name(MODEL.key))
    finally:
        conn.close()


def test_a_non_empty_destination_is_refused_unless_forced_and_then_replaced(tmp_path):
    first, second = _store(tmp_path / "a.db", n=60, seed=0), _store(tmp_path / "b.db", n=30, seed=1)
    dst = tmp_path / "dst.db"
    copy_store(first, dst)
    before = _rows(dst)
    with pytest.raises(CopyRefusedError, match=r"dst\.db: is not empty \(object_detections,") as caught:
        copy_store(second, dst)
    assert "--force" in caught.value.hint and _rows(dst) == before
    report = copy_store(second, dst, force=True)
    assert report.replaced_rows > 60 and _rows(dst) == _rows(second)
    assert {t.table: t.source_rows for t in report.tables}["reid_embeddings"] == 30


@pytest.fixture(params=["sqlite", "postgresql"])
def tampered(request, tmp_path) -> str:
    """An empty destination whose trigger changes one copied value, as a faulty copy would."""
    if request.param == "sqlite":
        location = str(tmp_path / "dst.db")
        trigger = ("CREATE TRIGGER tamper AFTER INSERT ON reid_quality WHEN NEW.detection_id = 3 BEGIN "
                   "UPDATE reid_quality SET sharpness = sharpness + 1 WHERE detection_id = 3; END")
    else:
        location = request.getfixturevalue("pg_url")
        trigger = ("CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "IF NEW.detection_id = 3 THEN NEW.sharpness := NEW.sharpness + 1; END IF; RETURN NEW; END $$; "
                   "CREATE TRIGGER tamper BEFORE INSERT ON reid_quality FOR EACH ROW EXECUTE FUNCTION tamper()")
    conn = store.connect(location, create=True)
    try:
        with conn:
            for statement in trigger.split("; CREATE"):
                conn.execute(statement if statement.startswith("CREATE") else "CREATE" + statement)
    finally:
        conn.close()
    return location


def test_a_copy_changed_in_the_destination_is_detected_and_rolled_back(tmp_path, tampered):
    with pytest.raises(CopyMismatchError, match=r"reid_quality differ\(s\)") as caught:
        copy_store(_store(tmp_path / "a.db"), tampered)
    assert caught.value.exit_code == 1 and "rolled back" in caught.value.hint
    conn = store.connect(tampered)
    try:
        assert "camera" not in conn.columns("object_detections")  # the added column went with the rows
        tables = ("object_detections", "reid_embeddings", "reid_quality")
        assert [checksum(conn, t, list(conn.columns(t)))[0] for t in tables] == [0, 0, 0]
    finally:
        conn.close()


def test_the_source_itself_a_newer_schema_and_a_column_without_a_type_are_refused(tmp_path, postgres, pg_url):
    source = _store(tmp_path / "a.db")
    with pytest.raises(CopyRefusedError, match="is the source database itself"):
        copy_store(source, tmp_path / "." / "a.db")
    copy_store(source, pg_url)
    with pytest.raises(CopyRefusedError, match="is the source database itself"):
        copy_store(pg_url, pg_url + "&application_name=other")

    raw = sqlite3.connect(source)
    with raw:  # NUMERIC affinity: SQLite keeps ints, floats and text side by side, PostgreSQL cannot
        raw.execute("ALTER TABLE object_detections ADD COLUMN seen DATETIME")
    raw.close()
    empty = postgres.create_database()
    with pytest.raises(CopyRefusedError, match=r"object_detections lacks column\(s\) seen \(DATETIME\)"):
        copy_store(source, empty)
    assert _rows(empty) == []

    raw = sqlite3.connect(source)
    with raw:
        raw.execute("UPDATE reid_meta SET value = ? WHERE key = 'schema_version'", (str(schema.latest() + 1),))
    raw.close()
    with pytest.raises(SchemaTooNewError):
        copy_store(source, tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport.cli", "reid", "db", "copy", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def test_cli_prints_a_verified_table_in_80_columns_and_refuses_a_full_destination(tmp_path):
    source = _store(tmp_path / "a.db")
    done = _cli(source, tmp_path / "b.db")
    assert done.returncode == 0, done.stderr
    assert "object_detections" in done.stdout and "rows/s" in done.stdout
    table = [line for line in done.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(table) == 4 + 8 and max(map(len, table)) <= 80  # a terminal of 80 columns shows it whole
    refused = _cli(source, tmp_path / "b.db")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "error:" in refused.stderr and "not empty" in refused.stderr and "--force" in refused.stderr


def test_tables_of_other_tools_stop_the_copy_by_name_unless_skipped(tmp_path):
    source = _store(tmp_path / "a.db")
    raw = sqlite3.connect(source)
    with raw:  # AUTOINCREMENT also makes SQLite's own sqlite_sequence, which is the engine's and not named
        raw.execute("CREATE TABLE tracker_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT)")
        raw.execute("INSERT INTO tracker_runs (note) VALUES ('bytetrack, 30 fps')")
    raw.close()
    with pytest.raises(CopyRefusedError, match="outside the store that copy does not copy: tracker_runs\n"):
        copy_store(source, tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()
    with pytest.raises(CopyRefusedError, match="reid_quality: part of the store"):
        copy_store(source, tmp_path / "b.db", skip_tables=["tracker_runs", "reid_quality"])
    report = copy_store(source, tmp_path / "b.db", skip_tables=["tracker_runs"])
    assert report.skipped_tables == ["tracker_runs"]
    assert _rows(tmp_path / "b.db") == _rows(source)
    assert "tracker_runs" not in sqlite3.connect(tmp_path / "b.db").execute(
        "SELECT group_concat(name) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    done = _cli(source, tmp_path / "c.db", "--skip-table", "tracker_runs")
    assert done.returncode == 0 and "not copied: table tracker_runs" in done.stdout, done.stderr
