"""ReID stores on a PostgreSQL server that the dashboard was started with (``modelport ui --db URL``).

A server store has no file under the root to confine, so the dashboard accepts only the URLs it was given.
Pages, job parameters, the job history and error messages name a store by its URL without the password; the
full URL stays in the server's memory and reaches a job's worker process through its environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from modelport.errors import ModelportError
from modelport.sqlstore import describe, is_url
from modelport.ui.listing import Database, store_contents
from modelport.ui.params import ParamError

ENV = "MODELPORT_UI_STORES"  # the server's store URLs, as a JSON list, in a worker's environment
START_HINT = ("start the dashboard with `modelport ui --db URL` (repeatable); it connects only to the stores it was "
              "given")


@dataclass(frozen=True)
class ServerStores:
    """The server stores of one dashboard, by name (the URL without its password)."""

    urls: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, urls: Sequence[str]) -> ServerStores:
        """Refuses what is not a postgresql:// URL, and two URLs that differ only by their password."""
        named: dict[str, str] = {}
        for url in urls:
            if not is_url(url):
                raise ModelportError(f"--db {describe(url)}: not a postgresql:// URL",
                                     hint="SQLite stores are files under --root, listed without --db; "
                                          "--db takes postgresql://user@host/dbname")
            name = describe(url)
            if named.get(name, url) != url:
                raise ModelportError(f"--db {name}: given twice with different passwords",
                                     hint="give each store once")
            named[name] = url
        return cls(named)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServerStores:
        return cls.of(json.loads(env.get(ENV) or "[]"))

    def env(self) -> dict[str, str]:
        """What a worker's environment needs for ``from_env`` to find these stores."""
        return {ENV: json.dumps(list(self.urls.values()))} if self.urls else {}

    def resolve(self, value: str) -> tuple[str, str]:
        """(name, URL) of the store ``value`` names, by its name or its full URL."""
        if value in self.urls:
            return value, self.urls[value]
        name = describe(value)
        if self.urls.get(name) == value:
            return name, value
        raise ParamError(f"db: {name} is not a store of this dashboard", hint=START_HINT)

    def listing(self) -> list[Database]:
        return [read_store(name, url) for name, url in self.urls.items()]


def read_store(name: str, url: str) -> Database:
    """What the listing shows of the store at ``url``: counts and models, read without changing it (no
    migration); a store that cannot be read is listed with the reason."""
    from modelport.sqlstore import connect_postgres

    try:
        conn = connect_postgres(url)
    except ModelportError as exc:
        return Database(name, 0, 0, problem=exc.message)
    try:
        tables = conn.tables()
        if "object_detections" not in tables:
            return Database(name, 0, 0, problem=f"{name}: no object_detections table (import detections first)")
        return store_contents(conn.execute, tables, name)
    except Exception as exc:  # noqa: BLE001 - a server error: listed with its reason, the page still loads
        return Database(name, 0, 0, problem=f"{name}: {str(exc).strip()}")
    finally:
        conn.close()
