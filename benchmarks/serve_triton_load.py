"""Load test: `modelport serve` (builtin engine) against a real Triton Inference Server (`--engine triton`), on
loopback, with the official tritonclient (HTTP, aio) at several concurrencies.

    flock /tmp/modelport-bench.lock python benchmarks/serve_triton_load.py          # ~6 minutes
    python benchmarks/serve_triton_load.py --concurrency 1,4 --seconds 2 --rounds 1 --json /tmp/check.json

Both engines serve the same repository, one verified ONNX export of OSNet x0_25 with the same config:
max_batch_size 16, dynamic batching (preferred 4, 8, 16 within 2 ms), one instance. Each request is one
3x256x128 float32 crop as binary tensor data. Both servers run for the whole test and the (engine,
concurrency) cells run in interleaved rounds, so drift on the machine hits every cell alike. Per cell:
requests per second, p50/p90/p99 latency, errors, and the mean batch the server executed (its statistics
endpoint). Writes a JSON record (git commit, library versions, machine, load average) and prints a table;
the model is untrained (BatchNorm-calibrated): speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from serve_load import _preprocess, run_mode, summarise, wait_ready  # noqa: E402

from modelport.machine import library_versions, machine_info  # noqa: E402
from modelport.preprocess import prepare  # noqa: E402
from modelport.samples import person_crops  # noqa: E402
from modelport.triton import ConfigOptions, ModelEntry, build_repository  # noqa: E402
from modelport.triton.server import free_port  # noqa: E402
from modelport.zoo.calibrate import make_untrained_checkpoint  # noqa: E402

ARCH = "osnet_x0_25"
MODEL = "osnet"
ENGINES = ("builtin", "triton")
VERSIONED = ("tritonclient", "nvidia-pytriton", "fastapi", "uvicorn", "grpcio")


def build(work: Path) -> Path:
    weights = make_untrained_checkpoint(work, ARCH)
    repo = work / "repo"
    build_repository([ModelEntry(str(weights), name=MODEL, options=ConfigOptions(
        max_batch_size=16, preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=2000))], repo)
    return repo


def start(engine: str, repo: Path, threads: int | None, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "modelport.cli", "serve", str(repo), "--engine", engine, "--port", str(port),
            "--device", "cpu", "--log-level", "warning"]
    if engine == "triton":
        args += ["--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    if threads:
        args += ["--threads", str(threads)]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, f"127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the triton engine stops its server and model processes on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def bench(urls: dict[str, str], levels: list[int], seconds: float, rounds: int) -> dict:
    pre = prepare(person_crops(64, 256, 128, seed=42), _preprocess())
    images = [pre[i : i + 1] for i in range(len(pre))]
    for url in urls.values():  # warm-up: every code path, both engines
        await run_mode(url, MODEL, max(levels), 2.0, images)
    runs: dict[str, dict[int, list[dict]]] = {e: {c: [] for c in levels} for e in urls}
    for r in range(rounds):
        for clients in levels:
            for engine, url in urls.items():
                last = await run_mode(url, MODEL, clients, seconds, images)
                runs[engine][clients].append(last)
                print(f"round {r + 1} {engine:8s} c={clients:3d} {last['requests'] / last['seconds']:7.1f} req/s "
                      f"errors {last['errors']}", flush=True)
    return {engine: {str(c): summarise(v) for c, v in by_level.items()} for engine, by_level in runs.items()}


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE.parent, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE.parent,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def table(record: dict) -> str:
    lines = ["| engine | clients | req/s | p50 ms | p90 ms | p99 ms | mean batch | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for engine, by_level in record["results"].items():
        for clients, row in by_level.items():
            lat = row["latency_ms"] or {}
            batch = f"{row['mean_batch']:.1f}" if row["mean_batch"] else "-"
            lines.append(f"| {engine} | {clients} | {row['throughput_rps']:.1f} | {lat.get('p50', 0):.1f} | "
                         f"{lat.get('p90', 0):.1f} | {lat.get('p99', 0):.1f} | {batch} | {row['errors']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16,32,64", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--threads", type=int, default=None, help="runtime threads per model instance (both engines)")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "serve_triton_load.json")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not levels or min(levels) < 1 or not set(engines) <= set(ENGINES):
        parser.error(f"--concurrency takes positive integers, --engines some of {ENGINES}")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="modelport-serve-triton-load-") as tmp:
        repo = build(Path(tmp))
        procs, urls = {}, {}
        try:
            for engine in engines:
                procs[engine], urls[engine] = start(engine, repo, args.threads, Path(tmp) / f"{engine}.log")
                asyncio.run(wait_ready(urls[engine], procs[engine], timeout=300))
            results = asyncio.run(bench(urls, levels, args.seconds, args.rounds))
        except BaseException:
            for engine, _proc in procs.items():
                log = (Path(tmp) / f"{engine}.log").read_text(errors="replace")[-2000:]
                print(f"--- {engine} server log (end) ---\n{log}", file=sys.stderr)
            raise
        finally:
            for proc in procs.values():
                stop(proc)
    record = {"benchmark": "serve_triton_load", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "git_commit": git_commit(), "model": ARCH, "concurrency": levels, "seconds": args.seconds,
              "rounds": args.rounds, "protocol": "HTTP/REST, binary tensor data, tritonclient.http.aio",
              "config": {"max_batch_size": 16, "preferred_batch_sizes": [4, 8, 16], "max_queue_delay_us": 2000,
                         "instances": 1, "format": "onnx (ONNX Runtime, CPU)"},
              "engines": {"builtin": "modelport serve (FastAPI + uvicorn, modelport's dynamic batcher)",
                          "triton": "modelport serve --engine triton (tritonserver from nvidia-pytriton, Python "
                                    "backend running modelport's runner, Triton's dynamic batcher)"},
              "server_threads": args.threads or "default (physical cores)", "machine": machine_info(),
              "versions": library_versions(VERSIONED), "loadavg": [load_before, os.getloadavg()[0]], "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    print(table(record))
    print(f"record: {args.json}")


if __name__ == "__main__":
    main()
