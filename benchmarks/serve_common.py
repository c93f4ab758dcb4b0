"""What the serving benchmarks share: a `modelport serve` process per engine (started, waited for, stopped, its log
shown when something fails), the spec a served model declares, load cells (concurrent tritonclient clients against
one model, with the server's own statistics) and their summary, and the record header (commit, CPU, recipe,
versions, machine)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from modelport.bench_record import Recipe, provenance  # noqa: E402
from modelport.spec import ModelSpec  # noqa: E402
from modelport.triton.server import free_port  # noqa: E402

ENGINES = ("builtin", "triton")


def start(engine: str, repo: Path, threads: int | None, log: Path) -> tuple[subprocess.Popen, str]:
    """``modelport serve repo --engine engine`` on free loopback ports, its output to ``log``; (process, host:port)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
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


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the server at ``url`` says it is ready; an error if its process exits first or ``timeout`` passes."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, connection_timeout=5, network_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server for {url} exited with status {proc.returncode}")
            try:
                if client.is_server_ready():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server for {url} was not ready within {timeout:.0f} s")
    finally:
        client.close()


def server_metadata(url: str) -> dict:
    """What the server at ``url`` says it is (KServe v2 ``GET /v2``: name, version, extensions): the record
    names the tritonserver build that ran, not only the wheel that shipped it."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, connection_timeout=5, network_timeout=5)
    try:
        meta = client.get_server_metadata()
    finally:
        client.close()
    return {"name": meta.get("name"), "version": meta.get("version")}


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the triton engine stops its server and model processes on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serving(engine: str, repo: Path, log: Path, threads: int | None = None,
            timeout: float = 300) -> Iterator[tuple[subprocess.Popen, str]]:
    """A ready server for the block, stopped after it; when the block (or the start) fails, the end of the
    server's log goes to stderr, since the cause is often there."""
    proc, url = start(engine, repo, threads, log)
    try:
        wait_ready(url, proc, timeout)
        yield proc, url
    except BaseException:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        print(f"--- {engine} server log (end) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        stop(proc)


def served_spec(repo: Path, model: str) -> ModelSpec:
    """The spec a model of a repository of ONNX exports is served with (what a client prepares requests by)."""
    from modelport.formats import get_format

    return get_format("onnx").read_spec(repo / model / "1" / "model.onnx")


def datatype(batch: np.ndarray) -> str:
    """The KServe datatype of a prepared batch: a pixels-in export takes UINT8, the others FP32."""
    return "UINT8" if batch.dtype == np.uint8 else "FP32"


async def run_cell(url: str, model: str, clients: int, seconds: float, images: list[np.ndarray],
                   sync: bool = False) -> dict:
    """``clients`` concurrent clients, each sending one request after another for ``seconds``; every error counts.
    ``sync``: each client a thread with its own ``tritonclient.http`` (geventhttpclient) client, not aiohttp."""
    if sync:
        return await asyncio.to_thread(run_cell_threads, url, model, clients, seconds, images)
    import tritonclient.http.aio as aioclient

    client = aioclient.InferenceServerClient(url, conn_limit=clients, conn_timeout=60)
    metadata = await client.get_model_metadata(model)
    input_name, output_name = metadata["inputs"][0]["name"], metadata["outputs"][0]["name"]
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    async def one_client(index: int) -> None:
        i = index
        while time.perf_counter() < stop:
            image = images[i % len(images)]
            i += clients
            inp = aioclient.InferInput(input_name, list(image.shape), datatype(image))
            inp.set_data_from_numpy(image, binary_data=True)
            start = time.perf_counter()
            try:
                result = await client.infer(model, [inp], outputs=[aioclient.InferRequestedOutput(output_name)])
                problem = _wrong(result.as_numpy(output_name))
            except Exception as exc:  # every failure is counted, none stops the run
                problem = str(exc)[:200]
            if problem:
                errors.append(problem)
            else:
                latencies.append(time.perf_counter() - start)

    stats_before = await client.get_inference_statistics(model)
    began = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    stats_after = await client.get_inference_statistics(model)
    await client.close()
    return _cell(latencies, errors, elapsed, stats_before, stats_after)


def run_cell_threads(url: str, model: str, clients: int, seconds: float, images: list[np.ndarray]) -> dict:
    """``run_cell`` with one thread and one synchronous ``tritonclient.http`` client per simulated client."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.http as httpclient

    admin = httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=300)
    metadata = admin.get_model_metadata(model)
    input_name, output_name = metadata["inputs"][0]["name"], metadata["outputs"][0]["name"]
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    def one_client(index: int) -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=300)
        i = index
        try:
            while time.perf_counter() < stop:
                image = images[i % len(images)]
                i += clients
                inp = httpclient.InferInput(input_name, list(image.shape), datatype(image))
                inp.set_data_from_numpy(image, binary_data=True)
                start = time.perf_counter()
                try:
                    result = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(output_name)])
                    problem = _wrong(result.as_numpy(output_name))
                except Exception as exc:  # every failure is counted, none stops the run
                    problem = str(exc)[:200]
                if problem:
                    errors.append(problem)
                else:
                    latencies.append(time.perf_counter() - start)
        finally:
            client.close()

    stats_before = admin.get_inference_statistics(model)
    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    elapsed = time.perf_counter() - began
    stats_after = admin.get_inference_statistics(model)
    admin.close()
    return _cell(latencies, errors, elapsed, stats_before, stats_after)


def _wrong(answer: np.ndarray | None) -> str | None:
    if answer is None or answer.shape[0] != 1 or not np.isfinite(answer).all():
        return "wrong or non-finite output"
    return None


def _cell(latencies: list[float], errors: list[str], elapsed: float, stats_before: dict, stats_after: dict) -> dict:
    """One cell's record: the clients' requests and latencies, the server's executions between the two reads."""
    before, after = stats_before["model_stats"][0], stats_after["model_stats"][0]
    executions = int(after["execution_count"]) - int(before["execution_count"])
    rows = int(after["inference_count"]) - int(before["inference_count"])
    compute_ns = _compute_ns(after) - _compute_ns(before)
    return {"requests": len(latencies), "errors": len(errors), "error_samples": sorted(set(errors))[:3],
            "seconds": elapsed, "latencies": latencies, "executions": executions,
            "mean_batch": rows / executions if executions else None,
            "compute_ms_per_execution": compute_ns / executions / 1e6 if executions else None}


def _compute_ns(stats: dict) -> int:
    """Time the server spent running the model (its batch statistics' compute_infer), over all batch sizes."""
    return sum(int(b["compute_infer"]["ns"]) for b in stats.get("batch_stats", []))


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


def header(benchmark: str, versioned: Sequence[str], load_before: float, recipe: Recipe) -> dict:
    """A record's common fields: name, date, commit and dirty flag, CPU, the models' recipe, machine, library
    versions and the 1-minute load average before the run and now (other jobs on the machine show there)."""
    from modelport.machine import library_versions, machine_info

    return {"benchmark": benchmark, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **provenance(recipe), "machine": machine_info(), "versions": library_versions(tuple(versioned)),
            "loadavg": [load_before, os.getloadavg()[0]]}
