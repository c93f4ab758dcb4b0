"""`reid cluster` at scale: wall time and peak memory on synthetic embeddings of 10k, 100k and 1M detections.

Each size is a detections database from `modelport.reid.synth.write_embedding_db` (10 detections per track,
10 tracks per person, 512-d ReLU features near a 48-d identity subspace, 4 tracks at a time per camera, with
ground truth), clustered as `reid cluster --standardize --threshold auto` (no WebPs: they read video) in a
fresh process per size, so its peak RSS (VmHWM) counts nothing else. Target: 1,000,000 detections in under
10 minutes and 4 GB.

    flock /tmp/modelport-bench.lock python benchmarks/cluster_bench.py        # the record (quiet machine)
    python benchmarks/cluster_bench.py --sizes 10000,100000 --no-write         # a check; writes nothing
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from modelport.bench_record import Recipe, provenance  # noqa: E402
from modelport.machine import machine_info, machine_key  # noqa: E402

SIZES = "10000,100000,1000000"
TARGET_SECONDS, TARGET_MB, TARGET_SIZE = 600, 4096, 1_000_000
EXTRA_LIBRARIES = ("faiss-cpu", "scipy", "scikit-learn")
PG_SECTION = "<!-- reid_pg_cluster:"  # where reid_pg_cluster.py's section starts

# VmHWM, unlike getrusage's ru_maxrss, starts afresh at exec: the parent's database build is not counted.
CHILD = """
import json, sys, time
from pathlib import Path
def hwm():
    line = [l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0]
    return int(line.split()[1]) / 1024
from modelport.reid.identify import run_cluster
import faiss, scipy.cluster.hierarchy, sklearn.metrics  # imported before the baseline is read
baseline = hwm()
start = time.perf_counter()
r = run_cluster(sys.argv[1], sys.argv[2], threshold=sys.argv[3] if sys.argv[3] == "auto" else float(sys.argv[3]),
                standardize=True, webp=False)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": hwm(), "import_rss_mb": baseline,
                  "detections": r.detections, "tracks": r.tracks, "identities": r.identities,
                  "threshold": r.threshold, "threshold_mode": r.threshold_mode, "silhouette": r.silhouette,
                  "scores": r.scores.to_dict() if r.scores else None}))
"""


def measure(size: int, work: Path, threshold: str) -> dict:
    from modelport.reid.synth import write_embedding_db

    folder = work / f"size_{size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    scene = write_embedding_db(folder / "detections.db", size)
    built = time.perf_counter() - start
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", CHILD, str(scene.db), str(folder / "out"), threshold],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"clustering {size} detections failed:\n{proc.stderr[-4000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update({"size": size, "people": scene.people, "db_mb": round(scene.db.stat().st_size / 2**20, 1),
                "db_build_seconds": round(built, 1), "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
                "seconds": round(row["seconds"], 1), "peak_rss_mb": round(row["peak_rss_mb"], 1),
                "import_rss_mb": round(row["import_rss_mb"], 1)})
    shutil.rmtree(folder, ignore_errors=True)
    return row


def markdown(record: dict) -> str:
    lines = ["# ReID clustering at scale", "",
             f"`{record['command']}` -> [results/cluster_bench.json](results/cluster_bench.json); "
             f"commit {record['commit'][:12] if record['commit'] else '?'}"
             f"{' (with uncommitted changes)' if record['dirty'] else ''}, {record['date']}.",
             f"Machine: {record['machine']['cpu']}, {record['machine']['physical_cores']} physical cores; "
             f"faiss-cpu {record['libraries'].get('faiss-cpu')}, scipy {record['libraries'].get('scipy')}, "
             f"scikit-learn {record['libraries'].get('scikit-learn')}, "
             f"numpy {record['machine']['libraries']['numpy']}.",
             "", record["workload"], "",
             "| detections | tracks | people | identities | path | time | peak RSS (process) | above imports | ARI "
             "| cross-track rank-1 | load avg |",
             "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in record["rows"]:
        s = r["scores"] or {}
        lines.append(f"| {r['size']:,} | {r['tracks']:,} | {r['people']:,} | {r['identities']:,} | "
                     f"{'dense' if r['tracks'] <= record['dense_tracks'] else 'graph'} | {r['seconds']:.1f} s | "
                     f"{r['peak_rss_mb']:,.0f} MB | {r['peak_rss_mb'] - r['import_rss_mb']:,.0f} MB | "
                     f"{s.get('ari', float('nan')):.3f} | {s.get('rank1', float('nan')):.3f} | "
                     f"{r['loadavg_1min'][0]:.1f} / {r['loadavg_1min'][1]:.1f} |")
    target = next((r for r in record["rows"] if r["size"] == TARGET_SIZE), None)
    if target:
        met = target["seconds"] < TARGET_SECONDS and target["peak_rss_mb"] < TARGET_MB
        lines += ["", f"Target (1,000,000 detections in under 10 minutes and 4 GB): **{'met' if met else 'not met'}** "
                      f"({target['seconds']:.0f} s, {target['peak_rss_mb']:,.0f} MB)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES, help="detections per database, comma-separated")
    parser.add_argument("--threshold", default="auto")
    parser.add_argument("--work", type=Path, default=None, help="folder for the databases (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cluster_bench.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "CLUSTER_RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the record instead of writing it")
    args = parser.parse_args()
    from modelport.reid.cluster import DENSE_TRACKS

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cluster_bench_", dir=args.work) as tmp:
        for size in sizes:
            rows.append(measure(size, Path(tmp), args.threshold))
            print(json.dumps(rows[-1]), flush=True)
    info = machine_info()
    libraries = {}
    for name in EXTRA_LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libraries[name] = None
    record = {"benchmark": "cluster_bench", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": f"python benchmarks/cluster_bench.py{'' if args.sizes == SIZES else ' --sizes ' + args.sizes}",
              **provenance(Recipe("none", "no network: synthetic embeddings (reid.synth.write_embedding_db)")),
              "machine": info, "machine_key": machine_key(info), "libraries": libraries,
              "workload": ("synthetic embeddings (modelport.reid.synth.write_embedding_db): 10 detections per track, "
                           "10 tracks per person, 512-d; `reid cluster --standardize --threshold "
                           f"{args.threshold}`, no WebPs; each size in a fresh process (peak RSS = its VmHWM)"),
              "dense_tracks": DENSE_TRACKS, "rows": rows}
    if args.no_write:
        print(markdown(record))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    # reid_pg_cluster.py's section (SQLite against PostgreSQL) follows this table in the same file: kept.
    old = args.markdown.read_text() if args.markdown.exists() else ""
    kept = old[old.index(PG_SECTION):] if PG_SECTION in old else ""
    args.markdown.write_text(markdown(record) + (f"\n{kept}" if kept else ""))
    print(args.markdown.read_text())


if __name__ == "__main__":
    main()
