"""Versioned schemas: one DDL text for both engines, and the migrations a store applies when it is opened.

A store's meta table holds a ``schema_version`` row saying which migrations it has had; opening one applies
the missing ones in order, in one transaction. A store from before versioning (no such row) is version 0. A
store whose version is newer than this modelport knows is refused, never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from modelport.sqlstore.base import Database, SchemaTooNewError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    apply: Callable[[Database], None]


def render(template: str, db: type[Database] | Database) -> str:
    """``template`` with ``{id}``, ``{real}``, ``{vector}``, ... replaced by the engine's words (Database.types)."""
    return template.format(**db.types)


def statements(script: str) -> list[str]:
    """The statements of a DDL script (none of ours holds a ';' inside one), to run inside a transaction:
    sqlite3's executescript would commit first."""
    return [s.strip() for s in script.split(";") if s.strip()]


def schema_version(db: Database, meta: str) -> int:
    """The version recorded in ``db``'s ``meta`` table (key, value); 0 for a store from before versioning."""
    if meta not in db.tables():
        return 0
    row = db.execute(f"SELECT value FROM {meta} WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: Database, migrations: Sequence[Migration], meta: str) -> int:
    """Apply the ``migrations`` (in order) that ``db`` lacks, in one transaction, and record the last one's
    version in ``meta`` (which the first migration creates); returns the version ``db`` now has."""
    latest = migrations[-1].version
    if (found := schema_version(db, meta)) == latest:
        return found
    with db.write():
        db.lock_schema()
        found = schema_version(db, meta)  # another process may have migrated it while this one waited
        if found > latest:
            raise SchemaTooNewError(f"{db}: schema version {found} is newer than this modelport knows ({latest})",
                                    hint="upgrade modelport to open this database; it was left untouched")
        for migration in migrations:
            if migration.version > found:
                migration.apply(db)
        db.execute(f"INSERT INTO {meta} (key, value) VALUES ('schema_version', ?) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(latest),))
    return latest
