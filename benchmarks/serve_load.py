"""Load test of `modelport serve` on loopback: 32 concurrent clients of the official tritonclient (aio).

    flock /tmp/modelport-bench.lock python benchmarks/serve_load.py            # ~2 minutes
    python benchmarks/serve_load.py --clients 32 --seconds 8 --rounds 3

One server process holds the same ONNX export twice: ``osnet_batched`` (dynamic batching: preferred batch
sizes 4, 8, 16 within a 2 ms queue delay) and ``osnet_single`` (no dynamic batching: one request per
model execution). Modes run in interleaved rounds so that machine drift hits them alike:
  batched-32     32 clients, each sending one image after another, dynamic batching on
  unbatched-32   the same 32 clients against the model without dynamic batching
  sequential-1   one client, one request at a time (the latency floor)
Each client request is one 3x256x128 float32 crop (prepared as the served spec says, ``tasks.embed.prepare``)
as binary tensor data. Writes benchmarks/results/serve_load.json and the first section of
benchmarks/SERVE_RESULTS.md (the sections after it are kept).

The model is an untrained (BatchNorm-calibrated) OSNet x0_25: no weights can be downloaded here, and speed
does not depend on the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from serve_common import header, run_cell, served_spec, serving, summarise  # noqa: E402

from modelport.bench_record import Recipe  # noqa: E402
from modelport.samples import person_crops  # noqa: E402
from modelport.tasks.embed import prepare  # noqa: E402
from modelport.triton import ConfigOptions, ModelEntry, build_repository  # noqa: E402
from modelport.zoo.calibrate import make_untrained_checkpoint  # noqa: E402

ARCH = "osnet_x0_25"
VERSIONED = ("tritonclient", "fastapi", "uvicorn", "onnxruntime")
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


async def bench(url: str, repo: Path, clients: int, seconds: float, rounds: int) -> dict:
    spec = served_spec(repo, "osnet_batched")  # requests are prepared as the served spec says
    pre_images = prepare(spec, person_crops(64, spec.preprocess.height, spec.preprocess.width, seed=42))
    images = [pre_images[i : i + 1] for i in range(len(pre_images))]
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    await run_cell(url, "osnet_batched", clients, 2.0, images)  # warm-up: both models, every code path
    await run_cell(url, "osnet_single", clients, 2.0, images)
    for r in range(rounds):
        for mode, (model, n) in MODES.items():
            runs[mode].append(await run_cell(url, model, n or clients, seconds, images))
            last = runs[mode][-1]
            print(f"round {r + 1} {mode:13s} {last['requests'] / last['seconds']:7.1f} req/s "
                  f"errors {last['errors']}", flush=True)
    return {mode: summarise(v) for mode, v in runs.items()}


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
    # The file's later sections come from other benchmarks (serve_triton_load.py, pixels_in.py): kept as they are.
    old = path.read_text() if path.exists() else ""
    rest = old[old.index("\n## ") + 1 :] if "\n## " in old else ""
    path.write_text("\n".join(lines) + "\n" + ("\n" + rest if rest else ""))


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
        with serving("builtin", repo, Path(tmp) / "builtin.log", args.threads) as (_, url):
            results = asyncio.run(bench(url, repo, args.clients, args.seconds, args.rounds))
    recipe = Recipe("bn_calibrated", "random weights, seed 0 (make_untrained_checkpoint)",
                    f"{ARCH}, BatchNorm calibrated on 64 synthetic person crops")
    record = {**header("serve_load", VERSIONED, load_before, recipe), "model": ARCH, "clients": args.clients,
              "seconds": args.seconds, "rounds": args.rounds,
              "server_threads": args.threads or "default (physical cores)",
              "server": "modelport serve (FastAPI + uvicorn), onnxruntime CPU", "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    write_markdown(record, args.markdown)
    print(args.markdown.read_text())


if __name__ == "__main__":
    main()
