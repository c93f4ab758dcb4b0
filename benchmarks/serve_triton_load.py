"""Load test: `modelport serve` (builtin engine) against a real Triton Inference Server (`--engine triton`), on
loopback, with the official tritonclient (HTTP, aio) at several concurrencies.

    flock /tmp/modelport-bench.lock python benchmarks/serve_triton_load.py          # ~10 minutes
    python benchmarks/serve_triton_load.py --models osnet --concurrency 1,4 --seconds 2 --rounds 1 --json /tmp/c.json
    python benchmarks/serve_triton_load.py --models yolo11n --client sync --json /tmp/yolo_sync.json

Both engines serve the same repository of verified ONNX exports, one instance each, dynamic batching within
2 ms: ``osnet`` (OSNet x0_25; max batch 16, preferred 4/8/16; a request is one 3x256x128 float32 crop) and
``yolo11n`` (the raw-head export, [1, 84, 8400] per image; max batch 8, preferred 4/8; a request is one
letterboxed 3x640x640 float32 street scene); requests are prepared as the served spec says, by the functions
a modelport client uses (``tasks.embed.prepare``, ``tasks.detect.letterboxed``). Both servers run for the whole
test and each model's (engine, concurrency) cells run in interleaved rounds, so drift on the machine hits every
cell alike. Per cell:
requests per second, p50/p90/p99 latency, errors, and the mean batch the server executed (its statistics
endpoint) and its model compute time per execution. ``--client sync`` replaces the aiohttp client with one
thread per client, each with its own synchronous ``tritonclient.http`` client (aiohttp is slow with Triton's
multi-megabyte answers: see SERVE_RESULTS.md). Writes a JSON record (git commit, library versions, machine,
load average) and prints a table. The models are untrained, speed does not depend on the weights: OSNet is
BatchNorm-calibrated on synthetic crops; yolo11n is Ultralytics' yolo11n.yaml with seeded weights (torch seed
0), BatchNorm-calibrated on 8 synthetic street scenes at 640 (``modelport.detect.untrained.save_untrained``),
exported by ``modelport.detect.export.export_detector`` (raw track, verified against Ultralytics' predict).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from serve_common import ENGINES, header, run_cell, served_spec, server_metadata, serving, summarise  # noqa: E402

from modelport.bench_record import Recipe  # noqa: E402
from modelport.triton import ConfigOptions, ModelEntry, build_repository  # noqa: E402

VERSIONED = ("tritonclient", "nvidia-pytriton", "fastapi", "uvicorn", "grpcio", "onnxruntime", "ultralytics")


@dataclass(frozen=True)
class Served:
    """One model of the repository: how it is configured and what a request to it is."""

    name: str
    options: ConfigOptions
    recipe: str
    concurrency: str  # default client counts


MODELS = {
    "osnet": Served("osnet", ConfigOptions(max_batch_size=16, preferred_batch_sizes=(4, 8, 16),
                                           max_queue_delay_us=2000),
                    "OSNet x0_25, untrained, BatchNorm-calibrated on synthetic crops (make_untrained_checkpoint); "
                    "ONNX export verified against PyTorch", "1,4,16,32,64"),
    "yolo11n": Served("yolo11n", ConfigOptions(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=2000),
                      "yolo11n.yaml (Ultralytics) with torch seed 0, BatchNorm-calibrated on 8 synthetic street scenes "
                      "at 640 (detect.untrained.save_untrained); raw-head ONNX export ([B, 84, 8400]) verified "
                      "against Ultralytics' predict", "1,4,16"),
}


def artifact(work: Path, model: str) -> Path:
    """The verified ONNX export each model is served from."""
    if model == "osnet":
        from modelport.export import export
        from modelport.zoo.calibrate import make_untrained_checkpoint

        (onnx,) = export(make_untrained_checkpoint(work, "osnet_x0_25"), "onnx", out=work)
        return onnx
    from modelport.detect.export import export_detector
    from modelport.detect.untrained import save_untrained

    (result,) = export_detector(save_untrained(work / "yolo11n.pt", "yolo11n", seed=0, imgsz=640), "onnx", out=work)
    if not result.ok:
        raise SystemExit(f"yolo11n export failed: {result.error}")
    return result.path


def requests_for(repo: Path, model: str) -> list[np.ndarray]:
    """One-image requests prepared as the served spec says, by the task functions a modelport client uses:
    64 person crops (``tasks.embed.prepare``), or 12 street scenes letterboxed (``tasks.detect.letterboxed``)."""
    spec = served_spec(repo, model)
    if model == "osnet":
        from modelport.samples import person_crops
        from modelport.tasks.embed import prepare

        batch = prepare(spec, person_crops(64, spec.preprocess.height, spec.preprocess.width, seed=42))
    else:
        from modelport.detect.samples import street_scenes
        from modelport.tasks.detect import letterboxed

        batch = letterboxed(street_scenes(12, seed=42), spec.preprocess)[0]
    return [batch[i : i + 1] for i in range(len(batch))]


def build(work: Path, models: list[str]) -> Path:
    repo = work / "repo"
    build_repository([ModelEntry(str(artifact(work, m)), name=m, options=MODELS[m].options) for m in models], repo)
    return repo


async def bench(urls: dict[str, str], model: str, images: list[np.ndarray], levels: list[int], seconds: float,
                rounds: int, sync: bool = False) -> dict:
    for url in urls.values():  # warm-up: every code path, both engines
        await run_cell(url, model, max(levels), 2.0, images, sync)
    runs: dict[str, dict[int, list[dict]]] = {e: {c: [] for c in levels} for e in urls}
    for r in range(rounds):
        for clients in levels:
            for engine, url in urls.items():
                last = await run_cell(url, model, clients, seconds, images, sync)
                runs[engine][clients].append(last)
                print(f"round {r + 1} {model:8s} {engine:8s} c={clients:3d} "
                      f"{last['requests'] / last['seconds']:7.1f} req/s errors {last['errors']}", flush=True)
    return {engine: {str(c): _summary(v) for c, v in by_level.items()} for engine, by_level in runs.items()}


def _summary(runs: list[dict]) -> dict:
    """serve_load's summary plus the server's model compute time per execution (mean over the rounds' executions)."""
    executions = sum(r["executions"] for r in runs)
    timed = [r for r in runs if r["compute_ms_per_execution"] is not None]
    compute = sum(r["compute_ms_per_execution"] * r["executions"] for r in timed) / executions if timed else None
    return {**summarise(runs), "compute_ms_per_execution": compute}


def table(record: dict) -> str:
    lines = ["| model | engine | clients | req/s | p50 ms | p90 ms | p99 ms | mean batch | compute ms/exec | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, by_engine in record["results"].items():
        for engine, by_level in by_engine.items():
            for clients, row in by_level.items():
                lat = row["latency_ms"] or {}
                batch = f"{row['mean_batch']:.1f}" if row["mean_batch"] else "-"
                compute = row.get("compute_ms_per_execution")
                lines.append(f"| {model} | {engine} | {clients} | {row['throughput_rps']:.1f} | "
                             f"{lat.get('p50', 0):.1f} | {lat.get('p90', 0):.1f} | {lat.get('p99', 0):.1f} | "
                             f"{batch} | {f'{compute:.1f}' if compute else '-'} | {row['errors']} |")
    return "\n".join(lines)


def plot(record: dict, path: Path) -> Path:
    """Requests/s and p99 latency against concurrent clients, one panel pair per model, a line per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(record["results"])
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        speed, tail = axes[row]
        for engine, by_level in record["results"][model].items():
            clients = sorted(by_level, key=int)
            x = [int(c) for c in clients]
            speed.plot(x, [by_level[c]["throughput_rps"] for c in clients], marker="o", label=engine)
            tail.plot(x, [(by_level[c]["latency_ms"] or {}).get("p99", float("nan")) for c in clients], marker="o",
                      label=engine)
        for ax, label in ((speed, "requests / s"), (tail, "p99 latency, ms")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(label)
            ax.set_title(f"{model}: {label}", fontsize=10)
            ax.legend(fontsize=8)
        tail.set_yscale("log")
    fig.suptitle(f"builtin vs Triton, {record['protocol']} ({record['machine']['cpu']}, "
                 f"{record['machine']['physical_cores']} cores, load {record['loadavg'][0]:.1f}; untrained models)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"some of {', '.join(MODELS)}")
    parser.add_argument("--concurrency", default=MODELS["osnet"].concurrency, help="osnet client counts")
    parser.add_argument("--detector-concurrency", default=MODELS["yolo11n"].concurrency, help="yolo11n client counts")
    parser.add_argument("--seconds", type=float, default=8.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--threads", type=int, default=None, help="runtime threads per model instance (both engines)")
    parser.add_argument("--client", choices=("aio", "sync"), default="aio",
                        help="aio: tritonclient.http.aio (aiohttp); sync: a thread per client with tritonclient.http")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "serve_triton_load.json")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot (the record's .png) from --json")
    args = parser.parse_args()
    if args.plot_only:
        print(f"plot: {plot(json.loads(args.json.read_text()), args.json.with_suffix('.png'))}")
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    levels = {"osnet": [int(c) for c in args.concurrency.split(",") if c.strip()],
              "yolo11n": [int(c) for c in args.detector_concurrency.split(",") if c.strip()]}
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not models or not set(models) <= set(MODELS) or not set(engines) <= set(ENGINES) or \
            any(not levels[m] or min(levels[m]) < 1 for m in models):
        parser.error(f"--models takes some of {tuple(MODELS)}, --engines some of {ENGINES}, client counts positive "
                     "integers")
    load_before = os.getloadavg()[0]
    # The temporary folder outlives the servers (their logs are in it): the ExitStack closes first.
    with tempfile.TemporaryDirectory(prefix="modelport-serve-triton-load-") as tmp, ExitStack() as servers:
        repo = build(Path(tmp), models)
        images = {m: requests_for(repo, m) for m in models}
        urls = {e: servers.enter_context(serving(e, repo, Path(tmp) / f"{e}.log", args.threads))[1] for e in engines}
        servers_ran = {e: server_metadata(url) for e, url in urls.items()}
        results = {m: asyncio.run(bench(urls, m, images[m], levels[m], args.seconds, args.rounds,
                                        args.client == "sync")) for m in models}
    recipe = Recipe("bn_calibrated", "seeded random weights", "; ".join(f"{m}: {MODELS[m].recipe}" for m in models))
    record = {**header("serve_triton_load", VERSIONED, load_before, recipe),
              "models": {m: MODELS[m].recipe for m in models},
              "concurrency": {m: levels[m] for m in models}, "seconds": args.seconds, "rounds": args.rounds,
              "protocol": "HTTP/REST, binary tensor data, " + ("tritonclient.http.aio (aiohttp)" if args.client == "aio"
                                                               else "tritonclient.http (a thread per client)"),
              "config": {m: {"max_batch_size": MODELS[m].options.max_batch_size,
                             "preferred_batch_sizes": list(MODELS[m].options.preferred_batch_sizes),
                             "max_queue_delay_us": MODELS[m].options.max_queue_delay_us, "instances": 1,
                             "format": "onnx (ONNX Runtime, CPU)"} for m in models},
              "engines": {"builtin": "modelport serve (FastAPI + uvicorn, modelport's dynamic batcher)",
                          "triton": "modelport serve --engine triton (tritonserver from nvidia-pytriton, Python "
                                    "backend running modelport's runner, Triton's dynamic batcher)"},
              "servers": servers_ran, "server_threads": args.threads or "default (physical cores)",
              "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    print(table(record))
    print(f"record: {args.json}; plot: {plot(record, args.json.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
