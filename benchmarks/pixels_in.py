"""Pixels in, results out: the client CPU per image a model with preprocessing in its graph saves against float input.

    flock /tmp/modelport-bench.lock python benchmarks/pixels_in.py                      # ~6 minutes
    python benchmarks/pixels_in.py --engines builtin --seconds 1 --rounds 1 --json /tmp/p.json   # a smoke run

OSNet x0_25 is exported twice from one checkpoint (BatchNorm-calibrated random weights, ``make_untrained_checkpoint``,
both exports verified against PyTorch): ``osnet`` takes (N, 3, 256, 128) float32, ``osnet_uint8in`` (``--uint8-input``)
takes (N, 256, 128, 3) uint8 RGB pixels and casts, scales and normalises inside the graph. Both serve from one
repository on each engine (``modelport serve``, builtin and ``--engine triton``). The client, this process alone,
starts from decoded BGR uint8 person crops of several sizes (as cut from camera frames) and per request: prepares
them as the served spec says (``modelport.tasks.embed.prepare``: resize, and for float input also mean/std and NCHW),
sends them with the official synchronous ``tritonclient.http`` (binary tensor data), and L2-normalises the answer
(``modelport.tasks.embed.normalised``). Measured per image: the client's CPU (``time.process_time``, all its threads)
and wall time, the CPU per stage (prepare / request / results, ``time.thread_time``), request and answer body bytes,
and the server processes' CPU (``psutil``, the server and its children). The cells (engine, batch, input) run in
interleaved rounds, float and uint8 alternating first, so machine load hits both alike.

yolo11n is not measured yet. Its pixels-in export exists (``modelport export yolo11n.pt --uint8-input`` writes
yolo11n.uint8in.onnx; ``modelport.detect.pixels``), but the builtin server's detect task
(``modelport/serve/tasks.py``) still letterboxes uploads to float, so it cannot serve that export until it
letterboxes through ``modelport.tasks.detect.letterboxed``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from serve_triton_load import git_commit, start, stop  # noqa: E402

from modelport.machine import library_versions, machine_info  # noqa: E402
from modelport.spec import ModelSpec  # noqa: E402
from modelport.triton import ConfigOptions, ModelEntry, build_repository  # noqa: E402

INPUTS = ("float", "uint8")
MODELS = {"float": "osnet", "uint8": "osnet_uint8in"}
OPTIONS = ConfigOptions(max_batch_size=16, preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=2000)
CROP_SIZES = ((192, 80), (288, 112), (384, 160), (480, 208))  # (height, width) of the decoded crops
VERSIONED = (
    "tritonclient",
    "nvidia-pytriton",
    "fastapi",
    "uvicorn",
    "onnxruntime",
    "opencv-python",
    "pillow",
    "psutil",
)
RECIPE = (
    "OSNet x0_25, untrained: random weights, BatchNorm-calibrated on synthetic crops "
    "(make_untrained_checkpoint); ONNX exports (float input, and --uint8-input) verified against PyTorch"
)


def build(work: Path) -> Path:
    """A repository serving the float-input and the uint8-input export of one OSNet x0_25 checkpoint."""
    from modelport.export import export
    from modelport.zoo.calibrate import make_untrained_checkpoint

    weights = make_untrained_checkpoint(work, "osnet_x0_25")
    (plain,) = export(weights, "onnx", out=work)
    (folded,) = export(weights, "onnx", out=work, uint8_input=True)
    repo = work / "repo"
    build_repository(
        [
            ModelEntry(str(plain), name=MODELS["float"], options=OPTIONS),
            ModelEntry(str(folded), name=MODELS["uint8"], options=OPTIONS),
        ],
        repo,
    )
    return repo


def crops(count: int, seed: int = 42) -> list[np.ndarray]:
    """``count`` decoded BGR uint8 person crops, cycling through CROP_SIZES."""
    from modelport.samples import person_crops

    sizes = [CROP_SIZES[i % len(CROP_SIZES)] for i in range(count)]
    return [person_crops(1, h, w, seed=seed + i)[0] for i, (h, w) in enumerate(sizes)]


class Client:
    """One served model seen from the client: its spec (from the repository's config) and a sync HTTP client."""

    def __init__(self, url: str, model: str, spec: ModelSpec) -> None:
        import tritonclient.http as httpclient

        self.http = httpclient
        self.model, self.spec = model, spec
        self.client = httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=300)
        self.input = spec.inputs[0]
        self.output = spec.outputs[0].name

    def embed(
        self, items: list[np.ndarray], stages: dict[str, float] | None = None, *, sizes: bool = False
    ) -> tuple[np.ndarray, int, int]:
        """L2-normalised embeddings of BGR uint8 crops; with ``sizes`` also the request and answer body bytes
        (serialised again to count them: not to be timed), else 0 and 0."""
        from modelport.tasks.embed import normalised, prepare

        t0 = time.thread_time()
        batch = prepare(self.spec, items)
        t1 = time.thread_time()
        datatype = "UINT8" if batch.dtype == np.uint8 else "FP32"
        inp = self.http.InferInput(self.input.name, list(batch.shape), datatype)
        inp.set_data_from_numpy(batch, binary_data=True)
        out = [self.http.InferRequestedOutput(self.output, binary_data=True)]
        result = self.client.infer(self.model, [inp], outputs=out)
        answer = result.as_numpy(self.output)
        t2 = time.thread_time()
        emb = normalised(self.spec, {self.output: answer}, len(items))
        t3 = time.thread_time()
        if stages is not None:
            for name, dt in (("prepare", t1 - t0), ("request", t2 - t1), ("results", t3 - t2)):
                stages[name] += dt
        if not sizes:
            return emb, 0, 0
        sent = len(self.http.InferenceServerClient.generate_request_body([inp], outputs=out)[0])
        response = result.get_response()
        received = len(json.dumps(response, separators=(",", ":"))) + sum(
            int(o.get("parameters", {}).get("binary_data_size", 0)) for o in response["outputs"]
        )
        return emb, sent, received

    def close(self) -> None:
        self.client.close()


def served_spec(repo: Path, model: str) -> ModelSpec:
    from modelport.formats import get_format

    return get_format("onnx").read_spec(repo / model / "1" / "model.onnx")


def server_cpu(pid: int) -> float:
    """CPU seconds of the server process and all its children (Triton's server and model processes)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_cell(client: Client, images: list[np.ndarray], batch: int, seconds: float, server_pid: int) -> dict:
    """Requests of ``batch`` crops one after another for ``seconds``; totals for the cell."""
    stages = {"prepare": 0.0, "request": 0.0, "results": 0.0}
    _, sent, received = client.embed(images[:batch], sizes=True)  # untimed: bodies depend on the shape only
    count = requests = i = 0
    server0 = server_cpu(server_pid)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while True:
        items = [images[(i + k) % len(images)] for k in range(batch)]
        i += batch
        emb, _, _ = client.embed(items, stages)
        if emb.shape[0] != batch or not np.isfinite(emb).all():
            raise RuntimeError(f"{client.model}: wrong answer for a batch of {batch}")
        count, requests = count + batch, requests + 1
        if time.perf_counter() - wall0 >= seconds:
            break
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "images": count,
        "requests": requests,
        "client_cpu_s": cpu,
        "wall_s": wall,
        "stage_cpu_s": stages,
        "request_bytes": sent * requests,
        "answer_bytes": received * requests,
        "server_cpu_s": server_cpu(server_pid) - server0,
    }


def per_image(cells: list[dict]) -> dict:
    """Totals over a cell's rounds, per image."""
    n = sum(c["images"] for c in cells)

    def ms(key: str) -> float:
        return 1000.0 * sum(c[key] for c in cells) / n

    return {
        "images": n,
        "requests": sum(c["requests"] for c in cells),
        "client_cpu_ms": ms("client_cpu_s"),
        "wall_ms": ms("wall_s"),
        "server_cpu_ms": ms("server_cpu_s"),
        "stage_cpu_ms": {s: 1000.0 * sum(c["stage_cpu_s"][s] for c in cells) / n for s in cells[0]["stage_cpu_s"]},
        "request_bytes": sum(c["request_bytes"] for c in cells) / n,
        "answer_bytes": sum(c["answer_bytes"] for c in cells) / n,
        "client_cpu_ms_per_round": [1000.0 * c["client_cpu_s"] / c["images"] for c in cells],
    }


def agreement(clients: dict[str, Client], images: list[np.ndarray]) -> dict:
    """The two exports' embeddings of the same crops: the uint8 path must give the float path's answers."""
    a, _, _ = clients["float"].embed(images)
    b, _, _ = clients["uint8"].embed(images)
    cos = (a * b).sum(axis=1)
    return {"crops": len(images), "min_cosine": float(cos.min()), "max_abs_diff": float(np.abs(a - b).max())}


def bench(
    url: str, pid: int, repo: Path, images: list[np.ndarray], batches: list[int], seconds: float, rounds: int
) -> dict:
    clients = {k: Client(url, MODELS[k], served_spec(repo, MODELS[k])) for k in INPUTS}
    try:
        check = agreement(clients, images[:16])
        for k in INPUTS:  # warm-up: connections, the server's first runs at every batch size
            for b in batches:
                run_cell(clients[k], images, b, 1.0, pid)
        cells: dict[str, dict[str, list[dict]]] = {str(b): {k: [] for k in INPUTS} for b in batches}
        for r in range(rounds):
            for b in batches:
                for k in INPUTS if r % 2 == 0 else INPUTS[::-1]:  # A/B, then B/A
                    cells[str(b)][k].append(run_cell(clients[k], images, b, seconds, pid))
                print(
                    f"round {r + 1} batch {b:2d} "
                    + "  ".join(
                        f"{k}: {1000 * cells[str(b)][k][-1]['client_cpu_s'] / cells[str(b)][k][-1]['images']:.3f} "
                        "client CPU ms/image"
                        for k in INPUTS
                    ),
                    flush=True,
                )
    finally:
        for c in clients.values():
            c.close()
    results = {}
    for b, by_input in cells.items():
        row = {k: per_image(v) for k, v in by_input.items()}
        f, u = row["float"], row["uint8"]
        row["uint8_over_float"] = {
            "client_cpu": u["client_cpu_ms"] / f["client_cpu_ms"],
            "prepare_cpu": u["stage_cpu_ms"]["prepare"] / f["stage_cpu_ms"]["prepare"],
            "wall": u["wall_ms"] / f["wall_ms"],
            "request_bytes": u["request_bytes"] / f["request_bytes"],
            "server_cpu": u["server_cpu_ms"] / f["server_cpu_ms"],
        }
        results[b] = row
    return {"agreement": check, "batches": results}


def table(record: dict) -> str:
    lines = [
        "| engine | batch | input | client CPU ms/img | prepare | request | results | wall ms/img | "
        "request KB/img | server CPU ms/img |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, res in record["results"].items():
        for b, row in res["batches"].items():
            for k in INPUTS:
                r = row[k]
                s = r["stage_cpu_ms"]
                lines.append(
                    f"| {engine} | {b} | {k} | {r['client_cpu_ms']:.3f} | {s['prepare']:.3f} | "
                    f"{s['request']:.3f} | {s['results']:.3f} | {r['wall_ms']:.2f} | "
                    f"{r['request_bytes'] / 1024:.1f} | {r['server_cpu_ms']:.2f} |"
                )
            q = row["uint8_over_float"]
            lines.append(
                f"| {engine} | {b} | **uint8 / float** | **{q['client_cpu']:.2f}x** | {q['prepare_cpu']:.2f}x "
                f"| | | {q['wall']:.2f}x | {q['request_bytes']:.2f}x | {q['server_cpu']:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="builtin,triton", help="some of builtin, triton")
    parser.add_argument("--batches", default="1,16", help="crops per request")
    parser.add_argument("--seconds", type=float, default=6.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--crops", type=int, default=64)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "pixels_in_osnet_x0_25.json")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not engines or not set(engines) <= {"builtin", "triton"} or not batches or min(batches) < 1:
        parser.error("--engines takes builtin and/or triton, --batches positive integers")
    import asyncio

    from serve_load import wait_ready

    images = crops(args.crops)
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="modelport-pixels-in-") as tmp:
        repo = build(Path(tmp))
        for engine in engines:  # one server at a time: the other would idle, but its threads would not
            proc, url = start(engine, repo, None, Path(tmp) / f"{engine}.log")
            try:
                asyncio.run(wait_ready(url, proc, timeout=300))
                results[engine] = bench(url, proc.pid, repo, images, batches, args.seconds, args.rounds)
            except BaseException:
                print((Path(tmp) / f"{engine}.log").read_text(errors="replace")[-2000:], file=sys.stderr)
                raise
            finally:
                stop(proc)
    record = {
        "benchmark": "pixels_in",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git_commit": git_commit(),
        "model": RECIPE,
        "models": MODELS,
        "crops": {
            "count": len(images),
            "sizes_hw": [list(s) for s in CROP_SIZES],
            "kind": "decoded BGR uint8 synthetic person crops (modelport.samples.person_crops, seeds 42..)",
        },
        "client": "tritonclient.http (sync), binary tensor data, one request after another; per request: "
        "tasks.embed.prepare -> infer -> tasks.embed.normalised",
        "batches": batches,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "config": {
            "max_batch_size": OPTIONS.max_batch_size,
            "preferred_batch_sizes": list(OPTIONS.preferred_batch_sizes),
            "max_queue_delay_us": OPTIONS.max_queue_delay_us,
            "format": "onnx (ONNX Runtime, CPU)",
        },
        "engines": {
            "builtin": "modelport serve (FastAPI + uvicorn)",
            "triton": "modelport serve --engine triton (tritonserver from nvidia-pytriton)",
        },
        "machine": machine_info(),
        "versions": library_versions(VERSIONED),
        "loadavg": [load_before, os.getloadavg()[0]],
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    print(table(record))
    print(f"record: {args.json}")


if __name__ == "__main__":
    main()
