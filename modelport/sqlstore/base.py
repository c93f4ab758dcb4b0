"""One connection to a store, whichever engine holds it: what differs between SQLite and PostgreSQL.

Callers write one SQL text with ``?`` placeholders and ``ON CONFLICT`` upserts (both engines read those) and
ask the connection for the rest: column types (``types``), how vectors travel, the lock a claim takes, and
nearest-neighbour search where the engine has it. ``with db:`` is one transaction on either engine.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from modelport.errors import ModelportError


class DatabaseError(ModelportError, ValueError):
    """A store's database is missing, unreachable, unreadable or lacks a required table or column."""


class SchemaTooNewError(DatabaseError):
    """The database was written by a newer modelport, whose schema this one does not know."""


class Database:
    """The connection wrapper every store function takes: SQLite's, which PostgreSQL's overrides where it differs."""

    engine = "sqlite"
    # ``bytes_text``: text that sorts by code point on both engines (SQLite's BINARY collation, PostgreSQL's "C").
    types = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "vector": "BLOB", "bigint": "INTEGER",
             "without_rowid": " WITHOUT ROWID", "text": "TEXT", "blob": "BLOB", "bytes_text": "TEXT"}

    def __init__(self, raw: Any, location: str, schema_lock: str = "modelport.schema") -> None:
        self.raw = raw
        self.location = location  # for messages: a path, or a URL without its password
        self.schema_lock = schema_lock  # what lock_schema() takes on a server: one per application's tables

    def __str__(self) -> str:
        return self.location

    # ---- statements and transactions --------------------------------------------------------------------
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.raw.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        return self.raw.executemany(sql, rows)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            self.raw.commit()
        else:
            self.raw.rollback()

    def stream(self, sql: str, args: Sequence[Any] = (), size: int = 1000) -> Iterator[list[Any]]:
        """The rows of ``sql`` in lists of at most ``size``, never all in memory at once."""
        cursor = self.raw.execute(sql, args)
        while rows := cursor.fetchmany(size):
            yield rows

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Database]:
        """A read-only transaction: every read inside sees the database as it was when the first one ran."""
        self.raw.execute("BEGIN")  # WAL: a reader keeps its snapshot while writers go on
        try:
            yield self
        finally:
            self.raw.rollback()

    def write(self) -> Database:
        """A transaction that holds the write lock from its start, so what it reads cannot change under it."""
        self.raw.execute("BEGIN IMMEDIATE")
        return self

    def commit(self) -> None:
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()

    # ---- catalogue --------------------------------------------------------------------------------------
    def tables(self) -> set[str]:
        return {r[0] for r in self.raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> declared type (upper case) of ``table``; empty when there is no such table."""
        return {r[1]: str(r[2]).upper() for r in self.raw.execute(f"PRAGMA table_info({table})")}

    @staticmethod
    def value_kind(declared: str) -> str | None:
        """What a column declared ``declared`` holds, as a key of ``types`` (bigint, real, text, blob), by
        SQLite's affinity rules; None where values of several kinds may mix (NUMERIC affinity)."""
        if "INT" in declared:
            return "bigint"
        if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
            return "text"
        if "BLOB" in declared or not declared:
            return "blob"
        if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
            return "real"
        return None

    def identity(self) -> tuple[str, ...]:
        """What tells two connections to one database apart from connections to two."""
        return (self.engine, str(self.raw.execute("PRAGMA database_list").fetchone()[2]))

    def has_index(self, name: str) -> bool:
        return self.raw.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                                (name,)).fetchone() is not None

    def add_vector_type(self) -> None:
        """Make the vector column type exist (SQLite stores vectors as BLOBs: nothing to do)."""

    def set_vector_width(self, table: str, column: str, dim: int) -> None:
        """Make ``table.column`` hold vectors of ``dim`` values only, where the engine can (not SQLite's BLOBs)."""

    def lock_schema(self) -> None:
        """Serialise schema migrations between processes (write() already does on SQLite)."""

    def skip_locked(self, alias: str) -> str:
        """The clause a claiming SELECT ends with so that concurrent claims take different rows of ``alias``;
        empty on SQLite, which serialises claims with BEGIN IMMEDIATE instead (see write())."""
        return ""

    # ---- vectors ----------------------------------------------------------------------------------------
    def vector(self, v: np.ndarray) -> Any:
        """``v`` as a parameter of a vector column."""
        return np.ascontiguousarray(v, dtype="<f4").tobytes()

    def vectors(self, values: Sequence[Any]) -> np.ndarray:
        """Values read from a vector column as one (n, dim) float32 array."""
        return np.frombuffer(b"".join(values), "<f4").reshape(len(values), -1)

    def index_vectors(self, name: str, table: str, column: str, dim: int, where: Mapping[str, Any]) -> None:
        """Build the nearest-neighbour (cosine) index ``name`` over the ``dim``-wide vectors of ``table.column``
        in the rows matching ``where`` (column -> value), where the engine has one."""

    def nearest(self, table: str, key: str, column: str, dim: int, query: np.ndarray, k: int,
                where: Mapping[str, Any] | None = None, then_by: str = "") -> list[tuple[Any, float]] | None:
        """(``key``, cosine distance) of the ``k`` rows of ``table`` (matching ``where``) whose ``column`` is
        nearest ``query``, nearest first, equal distances in ``then_by`` order where given: through the
        engine's index where one matches (approximate), by an exact scan otherwise; None where the engine has
        no vector search (the caller searches exactly)."""
        return None

    def after_explicit_ids(self, table: str) -> None:
        """Rows were inserted with explicit ids: later inserts must number after them (SQLite always does)."""

