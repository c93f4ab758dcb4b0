"""`modelport reid db copy`: a whole store from one database to another (SQLite or PostgreSQL, either way),
in one destination transaction, kept only when every table's row count and checksum match the source's.

The source is read in one snapshot and every table is streamed in batches, so memory does not grow with
the store. A checksum is the sum (mod 2**128) of a hash of each row, so it does not depend on row order or
on the engine: integers as decimal text, floats as float64 (both engines store doubles exactly), vectors as
float32 bytes whether they are pgvector values or SQLite BLOBs.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from modelport.reid.db import Database, DatabaseError, Location, describe, index_vectors, is_url, open_database
from modelport.reid.db.schema import DETECTIONS, MODELPORT, render

log = logging.getLogger(__name__)

# Every table copied, with its primary key (rows are read and written in its order).
KEYS = {"object_detections": ("id",), "reid_models": ("model_key",), "reid_meta": ("key",),
        "reid_embeddings": ("detection_id", "model_key"), "reid_quality": ("detection_id",),
        "reid_ground_truth": ("detection_id",), "reid_identities": ("model_key", "detection_id"),
        "reid_claims": ("detection_id", "model_key")}
VECTOR_COLUMNS = {("object_detections", "reid_embedding"), ("reid_embeddings", "embedding")}
BATCH_ROWS = 2000
_MOD = 1 << 128


class CopyRefusedError(DatabaseError):
    """A copy was refused before anything was written: same database, a non-empty destination, a column
    the destination cannot hold."""


class CopyMismatchError(DatabaseError):
    """What the destination holds after writing differs from the source; the copy was rolled back."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    source_rows: int
    source_checksum: str
    destination_rows: int
    destination_checksum: str

    @property
    def ok(self) -> bool:
        return (self.source_rows, self.source_checksum) == (self.destination_rows, self.destination_checksum)


@dataclass
class CopyReport:
    source: str
    destination: str
    tables: list[TableCopy]
    added_columns: list[str] = field(default_factory=list)  # "table.column TYPE" added to the destination
    replaced_rows: int = 0  # destination rows deleted by --force
    skipped_tables: list[str] = field(default_factory=list)  # SRC tables outside the store, left out as asked
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.source_rows for t in self.tables)


# ---- checksums --------------------------------------------------------------------------------------------

def _vector_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)  # SQLite: float32 little-endian already
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, "<f4").tobytes()


def _canonical(value: Any, vector: bool) -> bytes:
    """One value as bytes that do not depend on the engine it was read from (tagged, length-prefixed)."""
    if value is None:
        return b"N"
    if vector:
        raw = _vector_bytes(value)
        return b"V%d:" % len(raw) + raw
    if isinstance(value, (bool, int)):
        return b"I%d;" % int(value)
    if isinstance(value, float):
        return b"F" + struct.pack("<d", value)
    if isinstance(value, str):
        raw = value.encode()
        return b"S%d:" % len(raw) + raw
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return b"B%d:" % len(raw) + raw
    raise DatabaseError(f"a value of type {type(value).__name__} cannot be checksummed",
                        hint="copy handles integers, floats, text, bytes and vectors")


def _sum_rows(rows: Iterable[tuple], vectors: list[bool], total: int) -> int:
    for row in rows:
        digest = hashlib.sha256(b"".join(_canonical(v, vec) for v, vec in zip(row, vectors))).digest()
        total = (total + int.from_bytes(digest[:16], "little")) % _MOD
    return total


def checksum(db: Database, table: str, columns: list[str], batch: int = BATCH_ROWS) -> tuple[int, str]:
    """(rows, checksum) of ``columns`` of ``table``: equal on both engines for equal content, in any order."""
    vectors = [(table, c) in VECTOR_COLUMNS for c in columns]
    count, total = 0, 0
    for rows in db.stream(f"SELECT {', '.join(columns)} FROM {table}", (), batch):
        count += len(rows)
        total = _sum_rows(rows, vectors, total)
    return count, f"{total:032x}"


# ---- copying ----------------------------------------------------------------------------------------------

def _same_file(source: Location, destination: Location) -> bool:
    if is_url(source) or is_url(destination):
        return False
    a, b = Path(source), Path(destination)
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))


def _connect(location: Location, create: bool) -> Database:
    # What store.connect does; a new SQLite file gets the same tables.
    return open_database(location, create, new_sqlite_schema=render(DETECTIONS + MODELPORT, Database))


def _missing_columns(src: Database, dst: Database, table: str) -> list[tuple[str, str]]:
    """(column, destination type) of each source column the destination lacks; refuses what has no type there."""
    have, out, refused = dst.columns(table), [], []
    for column, declared in src.columns(table).items():
        if column in have:
            continue
        kind = "vector" if (table, column) in VECTOR_COLUMNS else src.value_kind(declared)
        if kind is None:
            refused.append(f"{column} ({declared})")
        else:
            out.append((column, dst.types[kind]))
    if refused:
        raise CopyRefusedError(f"{dst}: {table} lacks column(s) {', '.join(refused)} of {src}, and copy knows no "
                               f"{dst.engine} type that keeps their values",
                               hint=f"add them to {table} in the destination with the type you want, then copy "
                                    "again (nothing was written)")
    return out


def _occupied(dst: Database) -> list[str]:
    tables = dst.tables()
    found = []
    for table in KEYS:
        if table in tables and dst.execute(
                f"SELECT 1 FROM {table}{' WHERE key <> ?' if table == 'reid_meta' else ''} LIMIT 1",
                ('schema_version',) if table == "reid_meta" else ()).fetchone():
            found.append(table)
    return found


def _write_table(src: Database, dst: Database, table: str, columns: list[str], batch: int) -> int:
    vector_at = [i for i, c in enumerate(columns) if (table, c) in VECTOR_COLUMNS]
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    order = ", ".join(KEYS[table])
    written = 0
    for rows in src.stream(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}", (), batch):
        if vector_at:
            rows = [list(r) for r in rows]
            for r in rows:
                for i in vector_at:
                    if r[i] is not None:
                        r[i] = dst.vector(np.frombuffer(_vector_bytes(r[i]), "<f4"))
        try:
            dst.executemany(insert, rows)
        except Exception as exc:
            if isinstance(exc, DatabaseError):
                raise
            raise DatabaseError(f"{dst}: writing {table} failed ({str(exc).strip()})",
                                hint="nothing was written; a destination column may hold another type than "
                                     "the source's") from None
        written += len(rows)
    log.info("copied %d rows of %s", written, table)
    return written


def other_tables(db: Database) -> list[str]:
    """Tables (and, on PostgreSQL, views) of ``db`` that are not the store's: another tool's, which copy does not
    know how to key, type or verify. SQLite's own ``sqlite_*`` tables are the engine's, not data."""
    return sorted(t for t in db.tables() if t not in KEYS and not t.startswith("sqlite_"))


def copy_store(source: Location, destination: Location, *, force: bool = False, batch: int = BATCH_ROWS,
               skip_tables: Iterable[str] = ()) -> CopyReport:
    """Copy every table of the store at ``source`` into ``destination`` and verify it; see the module doc.

    A destination holding rows is refused unless ``force``, which deletes them in the same transaction. A
    source holding tables outside the store is refused, naming them, unless each is in ``skip_tables``: it
    would otherwise arrive without them. A new SQLite destination file is removed again when the copy fails."""
    start = time.perf_counter()
    if _same_file(source, destination):
        raise CopyRefusedError(f"{describe(destination)}: is the source database itself",
                               hint="give another destination")
    src = _connect(source, False)  # a source with a newer schema is refused here (SchemaTooNewError)
    created = not is_url(destination) and not Path(destination).exists()
    dst: Database | None = None
    try:
        dst = _connect(destination, True)
        if src.identity() == dst.identity():
            raise CopyRefusedError(f"{dst}: is the source database itself", hint="give another destination")
        skipped = _check_other_tables(src, set(skip_tables))
        report = _copy(src, dst, force, batch)
        report.skipped_tables = skipped
    except BaseException:
        if dst is not None:
            dst.close()
        src.close()
        if created:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{destination}{suffix}").unlink(missing_ok=True)
        raise
    dst.close()
    src.close()
    report.seconds = time.perf_counter() - start
    log.info("copied %d rows from %s to %s in %.1f s", report.rows, src, dst, report.seconds)
    return report


def _check_other_tables(src: Database, skip: set[str]) -> list[str]:
    """The source's tables outside the store, all of which ``skip`` must name; returns them."""
    if store_tables := sorted(skip & set(KEYS)):
        raise CopyRefusedError(f"--skip-table {', '.join(store_tables)}: part of the store, always copied",
                               hint="--skip-table names tables of other tools only")
    others = other_tables(src)
    if unnamed := [t for t in others if t not in skip]:
        raise CopyRefusedError(
            f"{src}: holds table(s) outside the store that copy does not copy: {', '.join(unnamed)}",
            hint="copy them with their own tool, then pass " + " ".join(f"--skip-table {t}" for t in unnamed)
                 + " to copy the store without them")
    return others


def _copy(src: Database, dst: Database, force: bool, batch: int) -> CopyReport:
    with src.snapshot(), dst.write():
        dst.lock_schema()
        present = src.tables()
        tables = [t for t in KEYS if t in present]
        if occupied := _occupied(dst):
            if not force:
                raise CopyRefusedError(f"{dst}: is not empty ({', '.join(occupied)} hold rows)",
                                       hint="pass --force to replace its rows, or give an empty database")
        replaced = 0
        for table in KEYS:
            if force or table == "reid_meta":  # the source's reid_meta (its schema_version is ours) replaces it
                deleted = dst.execute(f"DELETE FROM {table}").rowcount
                replaced += deleted if table != "reid_meta" else 0
        added = []
        for table in tables:
            for column, kind in _missing_columns(src, dst, table):
                dst.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                added.append(f"{table}.{column} {kind}")
        columns = {t: list(src.columns(t)) for t in tables}
        for table in tables:
            _write_table(src, dst, table, columns[table], batch)
        dst.after_explicit_ids("object_detections")
        for key, dim in dst.execute("SELECT model_key, dim FROM reid_models").fetchall():
            index_vectors(dst, key, int(dim))
        results = []
        for table in tables:
            results.append(TableCopy(table, *checksum(src, table, columns[table], batch),
                                     *checksum(dst, table, columns[table], batch)))
        if bad := [t for t in results if not t.ok]:
            raise CopyMismatchError(
                f"{dst}: after copying, {', '.join(t.table for t in bad)} differ(s) from {src} ("
                + "; ".join(f"{t.table}: {t.source_rows} rows {t.source_checksum[:12]} vs {t.destination_rows} "
                            f"rows {t.destination_checksum[:12]}" for t in bad) + ")",
                hint="the copy was rolled back; look for triggers or column types in the destination that "
                     "change values")
    return CopyReport(str(src), str(dst), results, added, replaced)
