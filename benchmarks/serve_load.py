"""Load test of `modelport serve` on loopback: 32 concurrent clients of the official tritonclient (aio).

    flock /tmp/modelport-bench.lock python benchmarks/serve_load.py            # ~2 minutes
    python benchmarks/serve_load.py --clients 32 --seconds 8 --rounds 3

One server process holds the same ONNX export twice: ``osnet_batched`` (dynamic batching: preferred batch
sizes 4, 8, 16 within a 2 ms queue delay) and ``osnet_single`` (no dynamic batching: one request per
model execution). Modes run in interleaved rounds so that machine drift hits them alike:
  batched-32     32 clients, each sending one image after another, dynamic batching on
  unbatched-32   the same 32 clients against the model without dynamic batching
  sequential-1   one client, one request at a time (the latency floor)
Each client request is one 3x256x128 float32 crop as binary tensor data. Writes
benchmarks/results/serve_load.json and benchmarks/SERVE_RESULTS.md.

The model is an untrained (BatchNorm-calibrated) OSNet x0_25: no weights can be downloaded here, and speed
does not depend on the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from modelport.machine import machine_info  # noqa: E402
from modelport.preprocess import prepare  # noqa: E402
from modelport.samples import person_crops  # noqa: E402
from modelport.triton import ConfigOptions, ModelEntry, build_repository  # noqa: E402
from modelport.zoo.calibrate import make_untrained_checkpoint  # noqa: E402

ARCH = "osnet_x0_25"
MODES = {"batched-32": ("osnet_batched", None), "unbatched-32": ("osnet_single", None),
         "sequential-1": ("osnet_single", 1)}


def build(work: Path) -> Path:
    weights = make_untrained_checkpoint(work, ARCH)
    repo = work / "repo"
    onnx = ModelEntry(str(weights), name="osnet_batched", options=ConfigOptions(
        max_batch_size=16, preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=2000))
    (built,) = build_repository([onnx], repo)
    # the same verified artifact, served without dynamic batching
    build_repository([ModelEntry(str(built.path / "model.onnx"), name="osnet_single",
                                 options=ConfigOptions(dynamic_batching=False))], repo)
    return repo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(repo: Path, port: int, threads: int | None = None) -> subprocess.Popen:
    extra = ["--threads", str(threads)] if threads else []
    return subprocess.Popen([sys.executable, "-m", "modelport.cli", "serve", str(repo), "--port", str(port),
                             "--log-level", "warning", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import tritonclient.http.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if await client.is_server_ready():
                    return
            except Exception:  # not listening yet
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError("server did not become ready")
    finally:
        await client.close()


async def run_mode(url: str, model: str, clients: int, seconds: float, images: list[np.ndarray]) -> dict:
    import tritonclient.http.aio as aioclient

    client = aioclient.InferenceServerClient(url, conn_limit=clients, conn_timeout=30)
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    async def one_client(index: int) -> None:
        i = index
        while time.perf_counter() < stop:
            image = images[i % len(images)]
            i += clients
            inp = aioclient.InferInput("images", list(image.shape), "FP32")
            inp.set_data_from_numpy(image, binary_data=True)
            start = time.perf_counter()
            try:
                result = await client.infer(model, [inp], outputs=[aioclient.InferRequestedOutput("embeddings")])
                if result.as_numpy("embeddings").shape != (1, 512):
                    errors.append("wrong output shape")
                    continue
            except Exception as exc:  # every failure is counted, none stops the run
                errors.append(str(exc)[:200])
                continue
            latencies.append(time.perf_counter() - start)

    stats_before = await client.get_inference_statistics(model)
    began = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    stats_after = await client.get_inference_statistics(model)
    await client.close()
    before, after = stats_before["model_stats"][0], stats_after["model_stats"][0]
    executions = after["execution_count"] - before["execution_count"]
    rows = after["inference_count"] - before["inference_count"]
    return {"requests": len(latencies), "errors": len(errors), "error_samples": sorted(set(errors))[:3],
            "seconds": elapsed, "latencies": latencies, "executions": executions,
            "mean_batch": rows / executions if executions else None}


def summarise(runs: list[dict]) -> dict:
    lat = np.array([x for r in runs for x in r["latencies"]]) * 1e3
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    executions = sum(r["executions"] for r in runs)
    return {"requests": requests, "errors": sum(r["errors"] for r in runs),
            "error_samples": sorted({e for r in runs for e in r["error_samples"]})[:3],
            "throughput_rps": requests / seconds if seconds else 0.0,
            "latency_ms": {p: float(np.percentile(lat, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))}
            if lat.size else None,
            "mean_batch": (sum(r["mean_batch"] * r["executions"] for r in runs if r["mean_batch"]) / executions)
            if executions else None,
            "rounds": [{"throughput_rps": r["requests"] / r["seconds"], "errors": r["errors"]} for r in runs]}


async def bench(url: str, clients: int, seconds: float, rounds: int) -> dict:
    pre_images = prepare(person_crops(64, 256, 128, seed=42), _preprocess())
    images = [pre_images[i : i + 1] for i in range(len(pre_images))]
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    await run_mode(url, "osnet_batched", clients, 2.0, images)  # warm-up: both models, every code path
    await run_mode(url, "osnet_single", clients, 2.0, images)
    for r in range(rounds):
        for mode, (model, n) in MODES.items():
            runs[mode].append(await run_mode(url, model, n or clients, seconds, images))
            last = runs[mode][-1]
            print(f"round {r + 1} {mode:13s} {last['requests'] / last['seconds']:7.1f} req/s "
                  f"errors {last['errors']}", flush=True)
    return {mode: summarise(v) for mode, v in runs.items()}


def _preprocess():
    from modelport.spec import Source
    from modelport.zoo import get_entry, spec_for

    return spec_for(get_entry(ARCH), Source("random")).preprocess


def write_markdown(record: dict, path: Path) -> None:
    r = record["results"]
    m = record["machine"]
    lines = [
        "# `modelport serve` under load",
        "",
        f"{record['clients']} concurrent clients of the official `tritonclient.http.aio` client on loopback, "
        f"one {record['model']} crop (3x256x128 float32, binary tensor data) per request, "
        f"{record['rounds']} interleaved rounds of {record['seconds']:.0f} s per mode. Server and clients share "
        f"the machine: {m['cpu']} ({m['physical_cores']} physical cores). ONNX Runtime on the CPU. "
        f"`python benchmarks/serve_load.py` ({record['date']}).",
        "",
        f"Load average (1 min) before / after: {record['loadavg'][0]:.1f} / {record['loadavg'][1]:.1f}: other jobs "
        "shared the machine, which is why rounds differ; the modes ran interleaved, so they shared it alike.",
        "",
        "| mode | clients | req/s | req/s per round (min-max) | p50 ms | p90 ms | p99 ms | mean batch | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in r.items():
        lat = row["latency_ms"] or {}
        batch = f"{row['mean_batch']:.1f}" if row["mean_batch"] else "-"
        clients = 1 if mode == "sequential-1" else record["clients"]
        per_round = [x["throughput_rps"] for x in row["rounds"]]
        lines.append(f"| {mode} | {clients} | {row['throughput_rps']:.1f} | "
                     f"{min(per_round):.1f}-{max(per_round):.1f} | "
                     f"{lat.get('p50', 0):.1f} | "
                     f"{lat.get('p90', 0):.1f} | {lat.get('p99', 0):.1f} | {batch} | {row['errors']} |")
    gain = r["batched-32"]["throughput_rps"] / max(r["unbatched-32"]["throughput_rps"], 1e-9)
    seq = r["batched-32"]["throughput_rps"] / max(r["sequential-1"]["throughput_rps"], 1e-9)
    per_round_gain = [b["throughput_rps"] / max(u["throughput_rps"], 1e-9)
                      for b, u in zip(r["batched-32"]["rounds"], r["unbatched-32"]["rounds"])]
    lines += [
        "",
        f"Dynamic batching gain at {record['clients']} clients: **{gain:.2f}x** the throughput of the same model "
        f"served one request per execution (per round: {', '.join(f'{g:.2f}x' for g in per_round_gain)}), and "
        f"{seq:.2f}x one client sending one request at a time.",
        f"Errors in total: {sum(row['errors'] for row in r.values())} (target: zero).",
        "",
        "Raw numbers, per-round throughput and the machine: `benchmarks/results/serve_load.json`.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads in the server")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "serve_load.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "SERVE_RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="modelport-serve-load-") as tmp:
        repo = build(Path(tmp))
        port = free_port()
        url = f"127.0.0.1:{port}"
        proc = start_server(repo, port, args.threads)
        try:
            asyncio.run(wait_ready(url, proc))
            results = asyncio.run(bench(url, args.clients, args.seconds, args.rounds))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    record = {"benchmark": "serve_load", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "model": ARCH, "clients": args.clients, "seconds": args.seconds, "rounds": args.rounds,
              "server_threads": args.threads or "default (physical cores)",
              "machine": machine_info(), "server": "modelport serve (FastAPI + uvicorn), onnxruntime CPU",
              "loadavg": [load_before, os.getloadavg()[0]], "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    write_markdown(record, args.markdown)
    print(args.markdown.read_text())


if __name__ == "__main__":
    main()
