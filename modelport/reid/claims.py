"""Extraction workers sharing one database: each claims a batch of detections before computing it.

A claim is a row in ``reid_claims`` (detection, model, worker) inserted in the same transaction that found
the detections unembedded and unclaimed, so two workers never take the same detection: on SQLite that
transaction holds the write lock from its start (``BEGIN IMMEDIATE``); on PostgreSQL it locks the rows it
takes with ``FOR UPDATE SKIP LOCKED`` (workers on other machines pass over them instead of waiting), and the
claims' primary key turns away a row another worker claimed between this one's read and its lock.
A worker is ``host:pid:start``; the claims of a worker that is gone (same host, that process no longer runs)
are released by the next worker to look, and those of another host after LEASE_S, so a killed run loses
nothing: its unfinished detections are claimed again.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Iterator

from modelport.reid.db import Database, Location

CLAIM_ROWS = 256  # detections per claim: about 0.4 s of osnet_x0_25 on two cores
LEASE_S = 3600.0  # claims of a worker on another host are released after this long

ROW = tuple  # (id, video, frame_index, x1, y1, x2, y2), as extraction reads them


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None when it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: whether the pid exists is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]


def worker_id() -> str:
    """This process as a claim owner: host, pid and start time (a reused pid is another worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or 0}"


def _gone(worker: str, newest_claim: float, now: float) -> bool:
    host, pid, start = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return now - newest_claim > LEASE_S
    return _start_ticks(int(pid)) not in (start, "0")


def release_stale(conn: Database, model_key: str) -> int:
    """Drop the claims of workers that are gone; returns how many detections were released."""
    now = time.time()
    owners = conn.execute("SELECT worker, MAX(claimed) FROM reid_claims WHERE model_key = ? GROUP BY worker",
                          (model_key,)).fetchall()
    gone = [w for w, newest in owners if _gone(w, newest, now)]
    if not gone:
        return 0
    with conn:
        return sum(conn.execute("DELETE FROM reid_claims WHERE model_key = ? AND worker = ?", (model_key, w)).rowcount
                   for w in gone)


def release(conn: Database, model_key: str, worker: str) -> None:
    """Drop ``worker``'s claims (at the end of its run; what it finished has its embeddings)."""
    with conn:
        conn.execute("DELETE FROM reid_claims WHERE model_key = ? AND worker = ?", (model_key, worker))


def claim(conn: Database, model_key: str, class_name: str | None, worker: str,
          after: tuple[str, int, int] | None, size: int = CLAIM_ROWS) -> list[ROW]:
    """Up to ``size`` detections after ``after`` (video, frame, id order) that have no embedding of
    ``model_key`` and no claim, claimed for ``worker`` in one transaction."""
    where = ["NOT EXISTS (SELECT 1 FROM reid_embeddings e WHERE e.detection_id = d.id AND e.model_key = ?)",
             "NOT EXISTS (SELECT 1 FROM reid_claims c WHERE c.detection_id = d.id AND c.model_key = ?)"]
    args: list = [model_key, model_key]
    if class_name:
        where.append("d.class_name = ?")
        args.append(class_name)
    if after is not None:
        where.append("(d.video, d.frame_index, d.id) > (?, ?, ?)")
        args.extend(after)
    while True:
        now = time.time()
        with conn.write():  # the write lock (SQLite) or row locks (PostgreSQL) before the read
            rows = conn.execute(
                "SELECT d.id, d.video, d.frame_index, d.x1, d.y1, d.x2, d.y2 FROM object_detections d "
                f"WHERE {' AND '.join(where)} ORDER BY d.video, d.frame_index, d.id LIMIT ? {conn.skip_locked('d')}",
                [*args, size]).fetchall()
            conn.executemany("INSERT INTO reid_claims (detection_id, model_key, worker, claimed) VALUES "
                             "(?, ?, ?, ?) ON CONFLICT DO NOTHING", [(r[0], model_key, worker, now) for r in rows])
            if not conn.skip_locked("d"):
                return rows
            # Keep what this transaction's inserts claimed; if another worker took all of them, look again
            # (their claims are visible now, so the next read passes over them).
            mine = {r[0] for r in conn.execute("SELECT detection_id FROM reid_claims WHERE model_key = ? AND "
                                               "worker = ? AND claimed = ?", (model_key, worker, now))}
        if mine or not rows:
            return [r for r in rows if r[0] in mine]


def claimed_rows(db: Location, model_key: str, class_name: str | None, worker: str,
                 size: int = CLAIM_ROWS) -> Iterator[ROW]:
    """Detections for ``worker`` to embed, claimed ``size`` at a time as they are consumed, in (video, frame)
    order. Sweeps again from the start while sweeps find work (claims released by workers that died)."""
    from modelport.reid.store import connect

    conn = connect(db)  # its own connection: this runs in the extraction's reader thread
    try:
        while True:
            release_stale(conn, model_key)
            after, found = None, False
            while rows := claim(conn, model_key, class_name, worker, after, size):
                found = True
                after = (rows[-1][1], rows[-1][2], rows[-1][0])
                yield from rows
            if not found:
                return
    finally:
        conn.close()
