"""Where the ReID store lives: a SQLite file (the embedded default) or a PostgreSQL server with pgvector.

``open_database`` takes a path or a ``postgresql://user@host/dbname`` URL and returns a ``Database`` whose
schema is migrated to the version this modelport knows; store functions work on either.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from modelport.atomic import create_sqlite, is_sqlite
from modelport.errors import ExportError, ModelportError, WeightsNotFoundError
from modelport.reid.db.base import Database, DatabaseError, SchemaTooNewError
from modelport.reid.db.postgres import PostgresDatabase, connect_postgres, is_url, redacted
from modelport.reid.db.schema import DETECTIONS, check_detections, migrate, render, statements

Location = str | Path


def describe(location: Location) -> str:
    """``location`` for messages (a URL without its password)."""
    return redacted(location) if is_url(location) else str(location)


def database_name(location: Location) -> str:
    """What a checkpoint's provenance records: the resolved file, or the URL without its password."""
    return redacted(str(location)) if is_url(location) else str(Path(location).resolve())


def _open_sqlite(path: Path, create: bool, schema: str) -> Database:
    if not path.exists():
        if not create:
            raise WeightsNotFoundError(f"{path}: detections database not found",
                                       hint="create one with `modelport reid import` or `modelport reid demo-data`")
        # A new database appears with its tables, and never over a file that appeared meanwhile.
        try:
            create_sqlite(path, schema, hint="pass another --db")
        except ExportError:
            pass  # another process made it first: checked below like any existing file
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"{path}: could not create the database ({exc})") from None
    if not is_sqlite(path):
        # SQLite would refuse it too, once opened; checking first says what to do and opens nothing.
        raise DatabaseError(f"{path}: exists and is not a SQLite database",
                            hint="pass another --db; this file is left untouched")
    raw = sqlite3.connect(str(path), timeout=30.0)
    try:
        # Write-ahead logging: readers never block the writer, and several extraction workers share the file.
        raw.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        raw.close()
        raise DatabaseError(f"{path}: not a usable SQLite database ({exc})") from None
    return Database(raw, str(path))


def open_database(location: Location, create: bool = False, *, new_sqlite_schema: str = "") -> Database:
    """Open (or with ``create`` make) the store at ``location`` and migrate its schema.

    ``new_sqlite_schema`` is what a new SQLite file is created with; on a server, ``create`` adds the
    detections table to an existing database (modelport never creates databases)."""
    db = connect_postgres(str(location)) if is_url(location) else _open_sqlite(Path(location), create,
                                                                              new_sqlite_schema)
    try:
        if create and "object_detections" not in db.tables():
            with db.write():
                db.lock_schema()
                db.add_vector_type()
                for statement in statements(render(DETECTIONS, db)):
                    db.execute(statement)
        check_detections(db)
        migrate(db)
        if isinstance(db, PostgresDatabase):
            db.register_vectors()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise DatabaseError(f"{db}: not a usable SQLite database ({exc})") from None
    except ModelportError:
        db.close()
        raise
    except Exception as exc:
        db.close()
        if type(exc).__module__.startswith("psycopg"):
            raise DatabaseError(f"{db}: {str(exc).strip()}",
                                hint="the user needs CREATE rights on the database (and CREATE EXTENSION "
                                     "vector once, by its owner)") from None
        raise
    return db


__all__ = ["Database", "DatabaseError", "Location", "PostgresDatabase", "SchemaTooNewError", "database_name",
           "describe", "is_url", "open_database"]
