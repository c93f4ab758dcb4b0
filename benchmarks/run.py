"""Benchmark the ReID zoo on this machine and write benchmarks/results/*.json, *.png and RESULTS.md.

    python benchmarks/run.py                       # osnet_x1_0, osnet_x0_25, resnet50
    python benchmarks/run.py --models osnet_x1_0 --seconds 10

Untrained models (random weights, BatchNorm calibrated on synthetic crops, see shared TESTING.md) are
used because no pretrained weights can be downloaded here; speed does not depend on the weights, and
INT8 accuracy is judged against fp32 on held-out synthetic crops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from modelport.bench import run_benchmark, write_plot  # noqa: E402
from modelport.demo import make_untrained_checkpoint  # noqa: E402
from modelport.samples import person_crops  # noqa: E402


def calibration_folder(folder: Path, count: int = 128) -> Path:
    """Synthetic person crops written as images, seeds disjoint from the parity/timing inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(person_crops(count, 256, 128, seed=900)):
        Image.fromarray(crop[..., ::-1].copy()).save(folder / f"crop_{i:04d}.png")
    return folder


def summarise(report: dict, batch: int) -> dict:
    rows = [r for r in report["rows"] if r["batch"] == batch and r["throughput"]]
    by = {r["runtime"]: r for r in rows}
    ok = [r for r in rows if r["status"] == "ok" and not r["runtime"].startswith("onnx-baseline")]
    fp32 = [r for r in ok if r["precision"] == "fp32" and r["runtime"] != "pytorch"]
    int8 = [r for r in ok if r["precision"] == "int8"]
    best32 = max(fp32, key=lambda r: r["throughput"]) if fp32 else None
    best8 = max(int8, key=lambda r: r["throughput"]) if int8 else None
    base = next((r for r in rows if r["runtime"].startswith("onnx-baseline")), None)
    out = {"batch": batch, "best_fp32": best32 and best32["runtime"], "best_int8": best8 and best8["runtime"]}
    if best32:
        out["best_fp32_vs_pytorch"] = best32["throughput"] / by["pytorch"]["throughput"]
        out["best_fp32_gflops"] = best32["gflops_achieved"]
        out["best_fp32_fraction_of_peak"] = best32["gflops_achieved"] / report["peak_gflops"]
        if base:
            out["best_fp32_vs_untuned_onnx"] = best32["throughput"] / base["throughput"]
    if best32 and best8:
        out["best_int8_vs_best_fp32"] = best8["throughput"] / best32["throughput"]
    return out


def table(report: dict) -> str:
    lines = ["| runtime | batch | status | p50 ms | p99 ms | img/s | x PyTorch | min cos | centred cos | NN agree | MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = {r["batch"]: r["throughput"] for r in report["rows"] if r["runtime"] == "pytorch"}
    for r in report["rows"]:
        lat, par = r["latency_ms"] or {}, r["parity"] or {}
        if not r["throughput"]:
            lines.append(f"| {r['runtime']} | {r['batch']} | {r['status']}: {r['reason'][:70]} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['runtime']} | {r['batch']} | {r['status']} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
            f"{r['throughput']:.1f} | {r['throughput'] / base[r['batch']]:.2f}x | {par.get('min_cosine', 0):.5f} | "
            f"{par.get('min_centered_cosine', 0):.4f} | {par.get('nn_agreement', 0):.2f} | {r['size_mb'] or 0:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="osnet_x1_0,osnet_x0_25,resnet50")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    args = parser.parse_args()
    calib = calibration_folder(args.work / "calib")
    batches = [int(b) for b in args.batches.split(",")]
    for name in args.models.split(","):
        weights = make_untrained_checkpoint(args.work, name)
        report = run_benchmark(weights, formats=["onnx", "openvino", "torchscript", "tensorrt"], batches=batches,
                               seconds=args.seconds, int8=True, calib=calib, baseline=True,
                               export_dir=args.work / "exports", progress=lambda m: print(f"[{name}] {m}", flush=True))
        report["summary"] = [summarise(report, b) for b in batches]
        (HERE / "results" / f"{name}.json").write_text(json.dumps(report, indent=1))
        write_plot(report, HERE / "results" / f"{name}.png")
        print(table(report))
        print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
