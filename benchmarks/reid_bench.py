"""ReID application benchmark.

1. `reid extract` end to end (decode video, crop, preprocess, infer, store in SQLite) against the
   model-only throughput of the same ONNX Runtime session on the same crops, preprocessed in advance.
   Both are measured in interleaved rounds so machine load hits them alike.
2. `reid cluster` on 50,000 detections (2,000 tracks in 20 videos): wall time and peak memory (RSS of
   a fresh process, so nothing else is counted).

    flock /tmp/modelport-bench.lock python benchmarks/reid_bench.py
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _untrained(arch: str, folder: Path) -> Path:
    """Calibrated random weights with a float-input ONNX export and a uint8-input one beside them."""
    from conftest import calibrated_model, save_plain

    from modelport.export import export
    from modelport.zoo import get_entry

    weights = save_plain(calibrated_model(arch), folder / f"{arch}_bench.pt", get_entry(arch).feature_dim)
    export(weights, "onnx")
    export(weights, "onnx", uint8_input=True)
    return weights


def _scene_db(folder: Path, limit: int | None) -> tuple[Path, Path]:
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    scene = write_demo_data(folder / "scene", force=True)
    det = scene.detections
    if limit:
        det = folder / f"det_{limit}.txt"
        det.write_text("\n".join(scene.detections.read_text().splitlines()[:limit]) + "\n")
    db = folder / f"template_{limit}.db"
    db.unlink(missing_ok=True)
    import_mot(db, scene.video, det)
    return db, scene.video


def _prepared_batches(db: Path, runner, batch: int) -> list[np.ndarray]:
    """The exact model inputs extract computes, made once, outside any timing."""
    from modelport.reid import store
    from modelport.reid.extract import _batches

    conn = store.connect(db)
    rows = store.pending(conn, "none", "person")
    conn.close()
    return [b.inputs for b in _batches(rows, runner.spec.preprocess, batch)]


VARIANTS = {"float input": ".onnx", "uint8 input (preprocessing in graph)": ".uint8in.onnx"}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_extract(arch: str, work: Path, rounds: int, limit: int | None, batch: int = 16) -> list[dict]:
    """Both ONNX variants of ``arch``: extract end to end and model-only, all interleaved per round.

    Model-only is timed two ways on the same prepared batches: one ``embed`` call per batch (what a user
    looping over batches gets) and ``embed_stream`` (the scheduling extract uses, the next batches queued
    while the last is returned). The target ratio is taken against the faster of the two.
    """
    from modelport import load
    from modelport.reid.extract import extract

    weights = _untrained(arch, work)
    template, _ = _scene_db(work, limit)
    runners = {v: load(weights.with_name(weights.stem + suffix)) for v, suffix in VARIANTS.items()}
    inputs = {v: _prepared_batches(template, r, batch) for v, r in runners.items()}
    crops = sum(len(b) for b in next(iter(inputs.values())))
    for v, r in runners.items():
        r(inputs[v][0])  # warm-up
    kinds = ("extract", "per_batch", "stream")
    speed = {v: {k: [] for k in kinds} for v in runners}
    cpu = {v: {k: [] for k in kinds} for v in runners}  # process CPU ms per crop, all threads
    for r in range(rounds):
        for v, runner in runners.items():
            db = work / f"run_{arch}_{r}.db"
            shutil.copy(template, db)
            c0 = _cpu_s()
            result = extract(db, runner, batch=batch)
            c1 = _cpu_s()
            assert result.computed == crops, (result.computed, crops)
            speed[v]["extract"].append(result.crops_per_s)
            cpu[v]["extract"].append((c1 - c0) / crops * 1e3)
            db.unlink()
            for kind in ("per_batch", "stream"):
                c0, start = _cpu_s(), time.perf_counter()
                if kind == "per_batch":
                    for b in inputs[v]:
                        runner.embed(b, prepared=True)
                else:
                    for _ in runner.embed_stream((None, b) for b in inputs[v]):
                        pass
                speed[v][kind].append(crops / (time.perf_counter() - start))
                cpu[v][kind].append((_cpu_s() - c0) / crops * 1e3)
            print(f"  {arch} [{v}] round {r}: extract {speed[v]['extract'][-1]:.1f} crops/s, model only "
                  f"{speed[v]['per_batch'][-1]:.1f} (per batch) / {speed[v]['stream'][-1]:.1f} (stream) img/s",
                  flush=True)
    rows = []
    for v, runner in runners.items():
        med = {k: float(np.median(speed[v][k])) for k in kinds}
        model = max(med["per_batch"], med["stream"])
        # Each round's extract and model-only runs are back to back: their ratio is the least exposed to
        # the host's speed drifting between rounds.
        paired = np.array(speed[v]["extract"]) / np.maximum(speed[v]["per_batch"], speed[v]["stream"])
        rows.append({"arch": arch, "variant": v, "artifact": runner.path.name, "runtime": runner.model_type,
                     "batch": batch, "crops": crops, "rounds": rounds,
                     "extract_crops_per_s": round(med["extract"], 1),
                     "model_only_img_per_s": round(model, 1),
                     "model_only_per_batch_img_per_s": round(med["per_batch"], 1),
                     "model_only_stream_img_per_s": round(med["stream"], 1),
                     "ratio": round(med["extract"] / model, 3),
                     "paired_ratio_median": round(float(np.median(paired)), 3),
                     "cpu_ms_per_crop": {k: round(float(np.median(cpu[v][k])), 3) for k in kinds},
                     "extract_rounds": [round(x, 1) for x in speed[v]["extract"]],
                     "model_rounds": [round(x, 1) for x in speed[v]["per_batch"]],
                     "model_stream_rounds": [round(x, 1) for x in speed[v]["stream"]]})
    return rows


def make_cluster_db(work: Path, video: Path, detections: int = 50_000, tracks: int = 2_000, videos: int = 20,
                    people: int = 200, dim: int = 512, seed: int = 0) -> Path:
    """50k detections on links to the demo video, embeddings of ``people`` synthetic identities."""
    from modelport.reid import store

    rng = np.random.default_rng(seed)
    db = work / "cluster50k.db"
    db.unlink(missing_ok=True)
    conn = store.connect(db, create=True)
    links = []
    for v in range(videos):
        link = work / f"video_{v:02d}.mp4"
        link.unlink(missing_ok=True)
        link.symlink_to(video.resolve())
        links.append(str(link))
    centres = rng.normal(0, 1, (people, dim)).astype(np.float32)
    common = np.abs(rng.normal(2, 0.5, dim)).astype(np.float32)  # the shared component real features have
    per_track = detections // tracks
    rows, vectors = [], []
    for t in range(tracks):
        video = links[t % videos]
        person = rng.integers(people)
        start = int(rng.integers(0, 450 - per_track))
        x = float(rng.uniform(0, 560))
        for k in range(per_track):
            frame = start + k
            rows.append((video, frame, frame / 15.0, "person", float(rng.uniform(0.5, 0.99)),
                         x, 150.0, x + 60.0, 330.0, t + 1))
            vectors.append(common + centres[person] * 0.6 + rng.normal(0, 0.5, dim).astype(np.float32))
    with conn:
        conn.executemany("INSERT INTO object_detections (video, frame_index, timestamp, class_name, confidence, "
                         "x1, y1, x2, y2, track_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    ids = [r[0] for r in conn.execute("SELECT id FROM object_detections ORDER BY id")]
    record = store.ModelRecord("synthetic@0", "synthetic", "0" * 64, "synthetic", None, dim)
    store.register_model(conn, record)
    store.write_embeddings(conn, record.key, ids, np.maximum(np.stack(vectors), 0), [100.0] * len(ids), True)
    conn.close()
    return db


# Peak memory is VmHWM from /proc: unlike getrusage's ru_maxrss it starts afresh at exec, so the
# benchmark process's own memory (models, the 50k-row build) is not inherited into the figure.
CLUSTER_CHILD = """
import json, sys, time
from pathlib import Path
def hwm():
    line = [l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0]
    return int(line.split()[1]) / 1024
from modelport.reid.identify import run_cluster
import scipy.cluster.hierarchy, sklearn.metrics  # imported before the baseline is read
baseline = hwm()
start = time.perf_counter()
r = run_cluster(sys.argv[1], sys.argv[2], threshold="auto", standardize=True, force=True)
print(json.dumps({"seconds": time.perf_counter() - start, "tracks": r.tracks, "identities": r.identities,
                  "detections": r.detections, "import_rss_mb": baseline,
                  "peak_rss_mb": hwm()}))
"""


def bench_cluster(work: Path, video: Path) -> dict:
    start = time.perf_counter()
    db = make_cluster_db(work, video)
    built = time.perf_counter() - start
    proc = subprocess.run([sys.executable, "-c", CLUSTER_CHILD, str(db), str(work / "cluster_out")],
                          capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["db_build_seconds"] = round(built, 1)
    result["seconds"] = round(result["seconds"], 2)
    result["peak_rss_mb"] = round(result["peak_rss_mb"], 1)
    result["import_rss_mb"] = round(result["import_rss_mb"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reid_bench.json")
    args = parser.parse_args()
    import onnxruntime

    from modelport.bench_record import Recipe, provenance
    from modelport.machine import physical_cores

    with tempfile.TemporaryDirectory(prefix="reid_bench_") as tmp:
        work = Path(tmp)
        extract_rows = [*bench_extract("osnet_x0_25", work, args.rounds, None),
                        *bench_extract("osnet_x1_0", work, args.rounds, 400)]
        cluster = bench_cluster(work, work / "scene" / "video.mp4")
    recipe = Recipe("bn_calibrated", "random init, seed 0 (tests/conftest.calibrated_model), plain state dict",
                    "osnet_x0_25 and osnet_x1_0, BatchNorm calibrated on 24 synthetic person crops")
    record = {**provenance(recipe),
              "machine": {"cpu": platform.processor() or platform.machine(), "physical_cores": physical_cores(),
                          "python": platform.python_version(), "onnxruntime": onnxruntime.__version__},
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "extract": extract_rows, "cluster_50k": cluster}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
