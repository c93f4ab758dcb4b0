"""Pixels in, results out: the client CPU per image a model with preprocessing in its graph saves against float input.

    flock /tmp/modelport-bench.lock python benchmarks/pixels_in.py                      # OSNet x0_25, ~6 minutes
    flock /tmp/modelport-bench.lock python benchmarks/pixels_in.py --model yolo11n      # ~6 minutes
    python benchmarks/pixels_in.py --engines builtin --seconds 1 --rounds 1 --json /tmp/p.json   # a smoke run

One checkpoint is exported twice, both exports verified: with float input and with ``--uint8-input`` (the graph
casts, scales and normalises pixels itself). ``osnet``: OSNet x0_25 (BatchNorm-calibrated random weights,
``make_untrained_checkpoint``, verified against PyTorch); ``osnet`` takes (N, 3, 256, 128) float32,
``osnet_uint8in`` (N, 256, 128, 3) uint8 RGB. ``yolo11n``: Ultralytics' yolo11n.yaml with seeded weights,
BatchNorm-calibrated on synthetic street scenes (``detect.untrained.save_untrained``), raw-head exports verified
against Ultralytics' predict; ``yolo11n`` takes (N, 3, 640, 640) float32, ``yolo11n_uint8in`` (N, 640, 640, 3)
uint8 RGB. Both exports serve from one repository on each engine (``modelport serve``, builtin and
``--engine triton``). The client, this process alone, starts from decoded BGR uint8 images of several sizes
(person crops as cut from camera frames; street scenes of 375x500 to 720x1280) and per request prepares them as
the served spec says (``modelport.tasks.embed.prepare``: resize, and for float input also mean/std and NCHW;
``modelport.tasks.detect.letterboxed``: letterbox, and for float input also /255 and NCHW), sends them with the
official synchronous ``tritonclient.http`` (binary tensor data), and reads the answer as a modelport client
would (``tasks.embed.normalised``; a raw detector head through modelport's CPU NMS at the served defaults and
each image's letterbox back to its pixels). Measured per image: the client's CPU (``time.process_time``, all its
threads) and wall time, the CPU per stage (prepare / request / results, ``time.thread_time``), request and
answer body bytes, and the server processes' CPU (``psutil``, the server and its children). The cells (engine,
batch, input) run in interleaved rounds, float and uint8 alternating first, so machine load hits both alike.
Before the timed cells both exports' answers for the same images are compared (``agreement`` in the record).
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

from pixels_subjects import SUBJECTS, Subject  # noqa: E402
from serve_common import header, served_spec, serving  # noqa: E402

from modelport.bench_record import Recipe  # noqa: E402
from modelport.spec import ModelSpec  # noqa: E402
from modelport.triton import ModelEntry, build_repository  # noqa: E402

INPUTS = ("float", "uint8")
VERSIONED = (
    "tritonclient",
    "nvidia-pytriton",
    "fastapi",
    "uvicorn",
    "onnxruntime",
    "opencv-python",
    "pillow",
    "psutil",
    "ultralytics",
)


def build(work: Path, subject: Subject) -> Path:
    """A repository serving the float-input and the uint8-input export of one checkpoint."""
    plain, folded = subject.exports(work)
    repo = work / "repo"
    build_repository(
        [
            ModelEntry(str(plain), name=subject.models["float"], options=subject.options),
            ModelEntry(str(folded), name=subject.models["uint8"], options=subject.options),
        ],
        repo,
    )
    return repo


class Client:
    """One served model seen from the client: its spec (from the repository's config) and a sync HTTP client."""

    def __init__(self, url: str, model: str, spec: ModelSpec, subject: Subject) -> None:
        import tritonclient.http as httpclient

        self.http = httpclient
        self.model, self.spec, self.subject = model, spec, subject
        self.client = httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=300)
        self.input = spec.inputs[0]
        self.output = spec.outputs[0].name

    def call(
        self, items: list[np.ndarray], stages: dict[str, float] | None = None, *, sizes: bool = False
    ) -> tuple[list, np.ndarray, int, int]:
        """The results for decoded BGR uint8 images, the raw answer; with ``sizes`` also the request and answer
        body bytes (serialised again to count them: not to be timed), else 0 and 0."""
        t0 = time.thread_time()
        batch, context = self.subject.prepare(self.spec, items)
        t1 = time.thread_time()
        datatype = "UINT8" if batch.dtype == np.uint8 else "FP32"
        inp = self.http.InferInput(self.input.name, list(batch.shape), datatype)
        inp.set_data_from_numpy(batch, binary_data=True)
        out = [self.http.InferRequestedOutput(self.output, binary_data=True)]
        result = self.client.infer(self.model, [inp], outputs=out)
        answer = result.as_numpy(self.output)
        t2 = time.thread_time()
        found = self.subject.finish(self.spec, {self.output: answer}, context, len(items))
        t3 = time.thread_time()
        if stages is not None:
            for name, dt in (("prepare", t1 - t0), ("request", t2 - t1), ("results", t3 - t2)):
                stages[name] += dt
        if not sizes:
            return found, answer, 0, 0
        sent = len(self.http.InferenceServerClient.generate_request_body([inp], outputs=out)[0])
        response = result.get_response()
        received = len(json.dumps(response, separators=(",", ":"))) + sum(
            int(o.get("parameters", {}).get("binary_data_size", 0)) for o in response["outputs"]
        )
        return found, answer, sent, received

    def close(self) -> None:
        self.client.close()


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
    _, _, sent, received = client.call(images[:batch], sizes=True)  # untimed: bodies depend on the shape only
    count = requests = i = 0
    server0 = server_cpu(server_pid)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while True:
        items = [images[(i + k) % len(images)] for k in range(batch)]
        i += batch
        found, answer, _, _ = client.call(items, stages)
        if len(found) != batch or not np.isfinite(answer).all():
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


def agreement(clients: dict[str, Client], images: list[np.ndarray], subject: Subject) -> dict:
    """The two exports' answers for the same images: the uint8 path must give the float path's results."""
    a, raw_a, _, _ = clients["float"].call(images)
    b, raw_b, _, _ = clients["uint8"].call(images)
    return {"images": len(images), **subject.compare(a, b), "raw_max_abs_diff": float(np.abs(raw_a - raw_b).max())}


def bench(
    url: str,
    pid: int,
    repo: Path,
    subject: Subject,
    images: list[np.ndarray],
    batches: list[int],
    seconds: float,
    rounds: int,
) -> dict:
    models = subject.models
    clients = {k: Client(url, models[k], served_spec(repo, models[k]), subject) for k in INPUTS}
    try:
        check = agreement(clients, images[: subject.options.max_batch_size], subject)
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
    parser.add_argument("--model", choices=tuple(SUBJECTS), default="osnet")
    parser.add_argument("--engines", default="builtin,triton", help="some of builtin, triton")
    parser.add_argument("--batches", default=None, help="images per request (osnet: 1,16; yolo11n: 1,4)")
    parser.add_argument("--seconds", type=float, default=None, help="per cell and round (default 6)")
    parser.add_argument("--rounds", type=int, default=None, help="(default 4)")
    parser.add_argument("--images", type=int, default=None, help="distinct images (osnet: 64 crops; yolo11n: 12)")
    parser.add_argument("--json", type=Path, default=None, help="(default results/pixels_in_<model>.json)")
    args = parser.parse_args()
    subject = SUBJECTS[args.model]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    batches = [int(b) for b in (args.batches or subject.batches).split(",") if b.strip()]
    if not engines or not set(engines) <= {"builtin", "triton"} or not batches or min(batches) < 1:
        parser.error("--engines takes builtin and/or triton, --batches positive integers")
    if max(batches) > subject.options.max_batch_size:
        parser.error(f"--batches: at most {subject.options.max_batch_size} images per request for {args.model}")
    seconds = args.seconds or subject.seconds
    rounds = args.rounds or subject.rounds
    json_path = args.json or HERE / "results" / f"pixels_in_{subject.stem}.json"
    images = subject.sample(args.images or subject.count)
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="modelport-pixels-in-") as tmp:
        repo = build(Path(tmp), subject)
        for engine in engines:  # one server at a time: the other would idle, but its threads would not
            with serving(engine, repo, Path(tmp) / f"{engine}.log") as (proc, url):
                results[engine] = bench(url, proc.pid, repo, subject, images, batches, seconds, rounds)
    record = {
        **header("pixels_in", VERSIONED, load_before, Recipe("bn_calibrated", "seeded random weights", subject.recipe)),
        "model": subject.recipe,
        "models": subject.models,
        "images": {"count": len(images), "kind": subject.images},
        "client": "tritonclient.http (sync), binary tensor data, one request after another; per request: "
        + subject.client,
        "batches": batches,
        "seconds": seconds,
        "rounds": rounds,
        "config": {
            "max_batch_size": subject.options.max_batch_size,
            "preferred_batch_sizes": list(subject.options.preferred_batch_sizes),
            "max_queue_delay_us": subject.options.max_queue_delay_us,
            "format": "onnx (ONNX Runtime, CPU)",
        },
        "engines": {
            "builtin": "modelport serve (FastAPI + uvicorn)",
            "triton": "modelport serve --engine triton (tritonserver from nvidia-pytriton)",
        },
        "results": results,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=1))
    print(table(record))
    print(f"record: {json_path}")


if __name__ == "__main__":
    main()
