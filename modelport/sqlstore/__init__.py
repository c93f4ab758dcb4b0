"""Where an application's store lives: a SQLite file (the embedded default) or a PostgreSQL server with pgvector.

``open_store`` takes a path or a ``postgresql://user@host/dbname`` URL, lets the application create and
migrate its own tables (``migrations``), and returns a ``Database`` that speaks either engine.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from modelport.atomic import create_sqlite
from modelport.errors import ExportError, MissingRuntimeError, ModelportError, WeightsNotFoundError
from modelport.sqlstore.base import Database, DatabaseError, SchemaTooNewError
from modelport.sqlstore.migrations import Migration, migrate, render, schema_version, statements
from modelport.sqlstore.postgres import INSTALL_HINT, PostgresDatabase, connect_postgres, is_url, redacted

Location = str | Path
SERVER_HINT = ("the user needs CREATE rights on the database, and pgvector installed on the server with "
               "CREATE EXTENSION vector run once by the database's owner")


@dataclass(frozen=True, slots=True)
class StoreKind:
    """What an application calls its store in messages, and how its schema changes are serialised."""

    noun: str  # "detections database", "search index"
    create_hint: str  # how to make one, for a file that does not exist
    schema_lock: str  # the advisory lock (PostgreSQL) taken around this application's schema changes
    file_error: type[ModelportError] = DatabaseError  # raised for a file SQLite cannot use


def describe(location: Location) -> str:
    """``location`` for messages (a URL without its password)."""
    return redacted(location) if is_url(location) else str(location)


def _open_sqlite(path: Path, kind: StoreKind, create: bool, schema: str) -> Database:
    if not path.exists():
        if not create:
            raise WeightsNotFoundError(f"{path}: {kind.noun} not found", hint=kind.create_hint)
        # A new database appears with its tables, and never over a file that appeared meanwhile.
        try:
            create_sqlite(path, schema, hint="pass another --db")
        except ExportError:
            pass  # another process made it first: checked below like any existing file
        except (sqlite3.Error, OSError) as exc:
            raise kind.file_error(f"{path}: could not create the {kind.noun} ({exc})") from None
    raw = sqlite3.connect(str(path), timeout=30.0)
    try:
        # Read through SQLite, never with open(): closing any descriptor of the file drops every POSIX lock this
        # process holds on it, SQLite's included (claims open a second connection in the reader thread), and
        # another process then took the live WAL database for unused: "database disk image is malformed".
        raw.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError:  # reading the header writes nothing: the file is left as it was
        raw.close()
        raise kind.file_error(f"{path}: exists and is not a SQLite database",
                              hint="pass another --db; this file is left untouched") from None
    try:
        # Write-ahead logging: readers never block the writer, and several workers share the file.
        raw.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        raw.close()
        raise kind.file_error(f"{path}: not a usable SQLite database ({exc})") from None
    return Database(raw, str(path), kind.schema_lock)


def open_store(location: Location, kind: StoreKind, prepare: Callable[[Database], None], *, create: bool = False,
               new_sqlite_schema: str = "") -> Database:
    """Open (or with ``create`` make) the store at ``location`` and run ``prepare`` on it: the application's
    own checks and migrations (``migrate``). A new SQLite file is created holding ``new_sqlite_schema``; on a
    server, modelport creates tables, never databases. Failures are ``DatabaseError``s (or ``kind.file_error``
    for a file) that name ``location`` and say what to do."""
    db = (connect_postgres(str(location), kind.schema_lock) if is_url(location)
          else _open_sqlite(Path(location), kind, create, new_sqlite_schema))
    try:
        prepare(db)
        if isinstance(db, PostgresDatabase):
            db.register_vectors()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise kind.file_error(f"{db}: not a usable SQLite database ({exc})") from None
    except ModelportError:
        db.close()
        raise
    except ImportError as exc:  # pgvector's Python package (psycopg imported already)
        db.close()
        raise MissingRuntimeError(f"{db}: PostgreSQL vectors need {exc.name or 'pgvector'}",
                                  hint=INSTALL_HINT) from None
    except Exception as exc:
        db.close()
        if type(exc).__module__.startswith("psycopg"):
            raise DatabaseError(f"{db}: {str(exc).strip()}", hint=SERVER_HINT) from None
        raise
    return db


__all__ = ["Database", "DatabaseError", "Location", "Migration", "PostgresDatabase", "SchemaTooNewError",
           "StoreKind", "describe", "is_url", "migrate", "open_store", "redacted", "render",
           "schema_version", "statements"]
