"""Benchmark the ReID zoo on this machine and write benchmarks/results/*.json, *.png and RESULTS.md.

    python benchmarks/run.py                       # osnet_x1_0, osnet_x0_25, resnet50
    python benchmarks/run.py --models osnet_x1_0 --seconds 10

Untrained models (random weights, BatchNorm calibrated on synthetic crops, see docs/testing.md) are
used because no pretrained weights can be downloaded here; speed does not depend on the weights. INT8
accuracy is judged against fp32 on the calibration crops. BN-calibrated random OSNets amplify
quantisation noise through their residual stacks (INT8 min cosine 0.77-0.84 on osnet_x1_0, measured),
which trained nets do not, so the residual branches' last BatchNorm is damped by 0.3 before export:
layer sizes, and so speed, are unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from modelport.bench import run_benchmark, write_plot  # noqa: E402
from modelport.bench_record import Recipe  # noqa: E402
from modelport.samples import person_tracks  # noqa: E402
from modelport.zoo import build, save_untrained  # noqa: E402
from modelport.zoo.calibrate import make_untrained_checkpoint  # noqa: E402


def calibration_folder(folder: Path, people: int = 64) -> Path:
    """Two synthetic views of each person, so nearest-neighbour agreement asks "does a crop still find
    its other view"; seeds disjoint from the parity/timing inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(person_tracks(people, 2, 256, 128, seed=900)):
        Image.fromarray(crop[..., ::-1].copy()).save(folder / f"crop_{i:04d}.png")
    return folder


DAMPED = Recipe("damped", "random init, seed 0 (make_untrained_checkpoint)",
                "BatchNorm calibrated on 64 synthetic person crops, then the last BatchNorm of every residual "
                "branch scaled by 0.3 (damped_checkpoint)")


def damped_checkpoint(work: Path, name: str, scale: float = 0.3) -> Path:
    import torch

    weights = make_untrained_checkpoint(work, name)
    model = build(weights).module
    with torch.no_grad():
        for key, module in model.named_modules():
            if key.endswith("conv3.bn") or key.endswith(".bn3"):  # OSNet block / ResNet bottleneck output BN
                module.weight.mul_(scale)
                module.bias.mul_(scale)
    return save_untrained(model, weights)


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
            out["untuned_onnx_fraction_of_peak"] = (base["throughput"] * report["model"]["gflop_per_image"]
                                                    / report["peak_gflops"])
    if best32 and best8:
        out["best_int8_vs_best_fp32"] = best8["throughput"] / best32["throughput"]
    return out


def table(report: dict) -> str:
    lines = ["| runtime | batch | status | p50 ms | p99 ms | img/s | x PyTorch | min cos | centred cos "
             "| NN agree | MB |",
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


UNTUNED_NOTE = [
    "## Why best fp32 does not reach 1.1x the untuned ONNX Runtime session here", "",
    "- ONNX Runtime's defaults already are its documented CPU tuning: `SessionOptions()` has",
    "  `graph_optimization_level = ORT_ENABLE_ALL`, sequential execution, and `intra_op_num_threads = 0`,",
    "  which means one thread per physical core. The tuned session differs only by the opset, by the batch",
    "  streams (one single-threaded run per core) and by spinning.",
    "- The untuned session already runs at 78-95% of the measured fp32 matrix-product peak for osnet_x1_0",
    "  and resnet50 (the `untuned at` figure under each table). 1.1x of that needs 86-105% of the peak,",
    "  which no fp32 runtime reaches here. What is left is INT8 (below).",
    "- The host's speed also drifts between runs: a re-run on 2026-11-23 measured a matmul peak of",
    "  111 GFLOP/s instead of 167. Within that run the ratios moved by about 0.1 (osnet_x1_0 batch 16:",
    "  0.94x), which is as large as the margin the target asks for.",
    "",
]


def missed_today(row: dict) -> list[str]:
    """The thresholds of today's ``verify.TOLERANCES`` that an ok row's recorded parity misses."""
    from modelport.verify import TOLERANCES

    par, tol = row.get("parity") or {}, TOLERANCES.get(row.get("precision", "fp32"))
    if row.get("status") != "ok" or not par or tol is None:
        return []
    return [f"{label} {par[key]:.4f} < {limit}" for key, label, limit in (
        ("min_cosine", "min cosine", tol.min_cosine), ("min_centered_cosine", "centred cosine",
                                                       tol.min_centered_cosine),
        ("nn_agreement", "NN agreement", tol.min_nn_agreement)) if limit is not None and par.get(key, 1) < limit]


def provenance_line(report: dict) -> str:
    """Where a record's numbers come from, from its own fields: commit, dirty flag, VNNI, recipe."""
    cpu, recipe = report.get("cpu") or {}, report.get("recipe") or {}
    dirty = {True: "dirty tree", False: "clean tree"}.get(report.get("dirty"), "dirty flag not recorded")
    vnni = {True: "with VNNI", False: "no VNNI"}.get(cpu.get("vnni"), "VNNI not recorded")
    return (f"Record: commit `{(report.get('commit') or '?')[:10]}` ({report.get('commit_source', 'not recorded')}),"
            f" {dirty}; CPU {vnni}; recipe `{recipe.get('kind', 'not recorded')}`.")


def int8_note(reports: dict[str, dict]) -> list[str]:
    """INT8 against best fp32 per model and batch, judged by today's thresholds, and what the undamped model gave
    (``results/int8_<arch>.json``): so the summary never quotes a ratio the records do not support."""
    cells, passing = [], []
    for name, report in reports.items():
        for batch in sorted({r["batch"] for r in report["rows"]}):
            summ = summarise(report, batch)
            if not summ.get("best_int8"):
                continue
            ok = [r for r in report["rows"] if r["batch"] == batch and r["precision"] == "int8"
                  and r["status"] == "ok" and r["throughput"] and not missed_today(r)]
            cell = f"{name} batch {batch}: {summ['best_int8_vs_best_fp32']:.2f}x"
            if ok:
                fp32 = next(r for r in report["rows"] if r["batch"] == batch and r["runtime"] == summ["best_fp32"])
                passing.append(max(r["throughput"] for r in ok) / fp32["throughput"])
            else:
                worst = missed_today(next(r for r in report["rows"] if r["batch"] == batch
                                          and r["runtime"] == summ["best_int8"]))
                cell += f" (fails today's thresholds: {'; '.join(worst)}; no INT8 row at this batch passes)"
            cells.append(cell)
    if not cells:
        return []
    kinds = sorted({(r.get("recipe") or {}).get("kind", "not recorded") for r in reports.values()})
    cpus = sorted({f"{r['machine']['cpu']} {'with' if (r.get('cpu') or {}).get('vnni') else 'without'} VNNI"
                   for r in reports.values()})
    lines = ["## INT8", "",
             f"- Measured on the `{'`/`'.join(kinds)}` models above only, on {', '.join(cpus)}. Best INT8 that "
             "passed its run's thresholds, against best fp32: " + "; ".join(cells) + "."]
    if passing:
        lines.append(f"- INT8 rows that pass today's thresholds: {min(passing):.2f}-{max(passing):.2f}x best fp32.")
    undamped = sorted(HERE.glob("results/int8_*.json"))
    for path in undamped:
        rec = json.loads(path.read_text())
        int8 = [r for r in rec["rows"] if r["precision"] == "int8"]
        best = max(r["parity_heldout"]["min_cosine"] for r in int8)
        verdict = ("no configuration passes" if not any(r["parity_heldout"]["passed"] for r in int8)
                   else "some configurations pass")
        m, cpu = rec["machine"], rec.get("cpu") or {}
        lines.append(f"- The `{(rec.get('recipe') or {}).get('kind', 'not recorded')}` (undamped) "
                     f"{rec['model']['arch']}: {verdict} ({len(int8)} tried; held-out min cosine at best {best:.2f}, "
                     f"target {rec['settings']['target']['min_cosine']}); [INT8_RESULTS.md](INT8_RESULTS.md), "
                     f"measured on {m['cpu']} {'with' if cpu.get('vnni') else 'without'} VNNI, not the machine above, "
                     "so its speed ratios do not compare with these.")
    return lines + [""]


def stale_verdicts(report: dict) -> list[str]:
    """Rows that passed the thresholds of their run but miss today's ``verify.TOLERANCES`` (re-judged here
    from their recorded parity, so a table never claims more than the current criteria allow)."""
    return [f"- **`{row['runtime']}` batch {row['batch']} passed the thresholds of its run but misses today's**: "
            f"{', '.join(missed)} (`verify.TOLERANCES['{row.get('precision')}']`)"
            for row in report["rows"] if (missed := missed_today(row))]


def write_results(names: list[str]) -> Path:
    """RESULTS.md from the committed JSON files (numbers are never typed by hand)."""
    parts = ["# Benchmark results", "",
             "Generated by `python benchmarks/run.py` from `results/*.json`; all runtimes of one model were",
             "measured side by side in one process, interleaved in rounds. Models are untrained (see the",
             "script's docstring); speed does not depend on the weights.", "",
             "**Recipe: random weights, BatchNorm calibrated on synthetic crops, then the last BatchNorm of",
             "every residual branch DAMPED by 0.3** (`damped_checkpoint`; each record's `recipe` says so). The INT8",
             "rows below hold for that damped model only: on the undamped model no INT8 configuration passes",
             "(see INT8 at the end). Each model's rows are re-judged against today's thresholds below its table",
             "(INT8 gained a centred-cosine bound of 0.98 after these runs).",
             ""]
    reports = {}
    for name in names:
        path = HERE / "results" / f"{name}.json"
        if not path.exists():
            continue
        report = reports[name] = json.loads(path.read_text())
        m = report["machine"]
        parts += [f"## {name} ({report['model']['gflop_per_image']:.2f} GFLOP/image)", "",
                  f"{m['cpu']}, {m['physical_cores']} physical cores, flags {', '.join(m['cpu_flags'])}; "
                  f"measured fp32 matmul peak {report['peak_gflops']:.0f} GFLOP/s; "
                  f"{report['settings']['seconds_per_batch']:.0f} s per batch size over "
                  f"{report['settings']['rounds']} rounds; "
                  f"onnxruntime {m['libraries']['onnxruntime']}, openvino {m['libraries']['openvino']}, "
                  f"torch {m['libraries']['torch']}.", provenance_line(report), "", table(report), ""]
        for summ in [summarise(report, b) for b in sorted({r["batch"] for r in report["rows"]})]:
            line = [f"batch {summ['batch']}: best fp32 `{summ['best_fp32']}`"]
            if "best_fp32_vs_pytorch" in summ:
                line.append(f"{summ['best_fp32_vs_pytorch']:.2f}x PyTorch eager")
            if "best_fp32_vs_untuned_onnx" in summ:
                line.append(f"{summ['best_fp32_vs_untuned_onnx']:.2f}x untuned opset-12 ONNX Runtime")
            if "untuned_onnx_fraction_of_peak" in summ:
                line.append(f"untuned at {summ['untuned_onnx_fraction_of_peak']:.0%} of peak")
            if "best_fp32_gflops" in summ:
                line.append(f"{summ['best_fp32_gflops']:.0f} GFLOP/s = "
                            f"{summ['best_fp32_fraction_of_peak']:.0%} of peak")
            if summ.get("best_int8"):
                line.append(f"best verified INT8 `{summ['best_int8']}` {summ['best_int8_vs_best_fp32']:.2f}x best fp32")
            else:
                line.append("no INT8 variant passed its accuracy thresholds")
            parts += ["- " + "; ".join(line)]
        parts += stale_verdicts(report)
        parts += ["", f"![{name}](results/{name}.png)", ""]
    parts += UNTUNED_NOTE + int8_note(reports)
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(parts) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="osnet_x1_0,osnet_x0_25,resnet50")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--report-only", action="store_true", help="Only rewrite RESULTS.md from the JSON files.")
    args = parser.parse_args()
    names = args.models.split(",")
    if args.report_only:
        print(write_results(names))
        return
    calib = calibration_folder(args.work / "calib")
    batches = [int(b) for b in args.batches.split(",")]
    for name in names:
        weights = damped_checkpoint(args.work, name)
        report = run_benchmark(weights, formats=["onnx", "openvino", "torchscript", "tensorrt"], batches=batches,
                               seconds=args.seconds, int8=True, calib=calib, baseline=True,
                               export_dir=args.work / "exports",
                               progress=lambda m, name=name: print(f"[{name}] {m}", flush=True))
        report["recipe"] = asdict(DAMPED)  # the spec only knows "random"
        report["summary"] = [summarise(report, b) for b in batches]
        (HERE / "results" / f"{name}.json").write_text(json.dumps(report, indent=1))
        write_plot(report, HERE / "results" / f"{name}.png")
        print(table(report))
        print(json.dumps(report["summary"], indent=1))
    print(write_results(names))


if __name__ == "__main__":
    main()
