"""INT8 with an accuracy target on an undamped, BN-calibrated OSNet: every calibration method and the
accuracy-aware search for ONNX Runtime and OpenVINO (NNCF), then speed side by side with fp32.

    python benchmarks/int8_bench.py --exports-only                                  # osnet_x1_0, ~1 h on 2 cores
    flock /tmp/modelport-bench.lock python benchmarks/int8_bench.py --measure-only  # the timed part, under the lock
    python benchmarks/int8_bench.py --report-only

Model recipe: torchreid-layout checkpoint of a random-init OSNet (``torch.manual_seed(0)``) whose BatchNorm
statistics were estimated on 64 varied synthetic person crops (``modelport.zoo.calibrate.calibrated_untrained``,
4 x 16 crops, seeds 0-3), NOT damped. Calibration: 128 crops (64 people x 2 views, seed 900); the search is
judged on them, as export verifies; accuracy in the table is on 128 held-out crops (seed 4242) against PyTorch.
Speed: batch 16, every artifact in one process, interleaved in rounds (``modelport.bench.time_interleaved``);
ratios are against the faster fp32 runtime of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from modelport.bench import Candidate, open_candidate, size_mb, time_interleaved  # noqa: E402
from modelport.bench_record import Recipe, provenance  # noqa: E402
from modelport.int8 import METHODS, Int8Settings  # noqa: E402
from modelport.machine import machine_info, machine_key  # noqa: E402
from modelport.timing import percentiles  # noqa: E402

BATCH = 16


def recipe(work: Path, arch: str) -> Path:
    from modelport.zoo import save_untrained
    from modelport.zoo.calibrate import calibrated_untrained

    return save_untrained(calibrated_untrained(arch, seed=0), work / f"{arch}_bn_undamped.pt")


def crops_folder(folder: Path, people: int, seed: int) -> Path:
    from PIL import Image

    from modelport.samples import person_tracks

    folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(person_tracks(people, 2, 256, 128, seed=seed)):
        Image.fromarray(crop[..., ::-1].copy()).save(folder / f"crop_{i:04d}.png")
    return folder


def export_variant(weights: Path, out: Path, fmt: str, calib: Path, settings: Int8Settings, say) -> dict:
    """One INT8 export kept even when it misses the target (fail_closed off, export verification off), so
    its speed can be measured; its record (points, fp32 nodes) comes from the artifact's spec."""
    from modelport.export import export_all
    from modelport.formats import get_format

    start = time.perf_counter()
    result = export_all(weights, fmt, out=out, precision="int8", calib=calib, verify=False, int8=settings)[0]
    seconds = time.perf_counter() - start
    if not result.ok or result.path is None:
        say(f"{fmt} {settings.method}: export failed: {result.error}")
        return {"format": fmt, "settings": settings.info, "error": result.error, "export_s": seconds}
    record = get_format(fmt).read_spec(result.path).extra["int8"]
    say(f"{fmt} {settings.method} accuracy_control={settings.accuracy_control}: {len(record['points'])} points, "
        f"target met {record.get('target_met')}, {seconds:.0f} s")
    return {"format": fmt, "path": str(result.path), "record": record, "export_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="osnet_x1_0")
    parser.add_argument("--seconds", type=float, default=60.0, help="timing budget over all artifacts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS), help="calibration methods to try")
    parser.add_argument("--ort-share", type=float, default=0.5, help="ONNX Runtime search: most nodes kept fp32")
    # NNCF re-ranks every remaining group after each step that made things worse (minutes each on 2 cores),
    # so its search is capped lower to fit one run.
    parser.add_argument("--ov-share", type=float, default=0.02, help="NNCF accuracy control: most layers reverted")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "int8")
    parser.add_argument("--report-dir", type=Path, default=HERE,
                        help="where INT8_RESULTS.md and results/int8_ARCH.json/.png go")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--exports-only", action="store_true", help="export and stop (time later, under the lock)")
    parser.add_argument("--measure-only", action="store_true", help="time the exports already in --work")
    args = parser.parse_args()
    out = args.report_dir / "results" / f"int8_{args.arch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        from int8_report import write_report

        print(write_report(json.loads(out.read_text()), args.report_dir))
        return
    say = lambda m: print(f"[int8 {args.arch}] {m}", flush=True)  # noqa: E731
    args.work.mkdir(parents=True, exist_ok=True)
    weights = recipe(args.work, args.arch)
    calib = crops_folder(args.work / "calib", 64, seed=900)
    held = crops_folder(args.work / "heldout", 64, seed=4242)
    from modelport.export import export_all

    fp32 = {r.format: r.path for r in export_all(weights, "onnx,openvino", out=args.work / "fp32") if r.ok}
    done = args.work / "variants.json"  # each export as it finishes: --measure-only times what exists
    if args.measure_only:
        variants = json.loads(done.read_text())
        say(f"measuring {len(variants)} exports listed in {done}")
        finish(args, out, measure(args, weights, held, fp32, variants, say))
        return
    variants = []

    def keep(variant: dict) -> dict:
        variants.append(variant)
        done.write_text(json.dumps(variants, indent=1))
        return variant

    for fmt in ("onnx", "openvino"):
        full = [keep(export_variant(weights, args.work / f"full_{m}", fmt, calib,
                                    Int8Settings(method=m, accuracy_control=False, fail_closed=False), say))
                for m in args.methods.split(",")]
        scored = [v for v in full if "record" in v]
        best = max(scored, key=lambda v: min(v["record"]["points"][0]["min_cosine"],
                                             v["record"]["points"][0]["nn_agreement"]))
        method = best["record"]["method"]
        share = args.ov_share if fmt == "openvino" else args.ort_share
        keep(export_variant(weights, args.work / f"search_{method}", fmt, calib,
                            Int8Settings(method=method, fail_closed=False, speed_rounds=5, max_fp32_share=share),
                            say))
    if not args.exports_only:
        finish(args, out, measure(args, weights, held, fp32, variants, say))


def finish(args, out: Path, report: dict) -> None:
    from int8_report import write_report

    out.write_text(json.dumps(report, indent=1))
    print(write_report(report, args.report_dir))


def measure(args, weights: Path, held: Path, fp32: dict, variants: list[dict], say) -> dict:
    """Held-out accuracy against PyTorch and batch-16 speed of every artifact, interleaved in one run."""
    from modelport.discover import open_artifact
    from modelport.formats import get_format
    from modelport.preprocess import prepare
    from modelport.verify import INT8, compare_output

    reference = open_artifact(weights)
    files = sorted(held.glob("*.png"))
    heldout = prepare(files, reference.spec.preprocess)
    expected = reference(heldout)["embeddings"]
    cands = [Candidate(f, f, "fp32", Path(path)) for f, path in fp32.items()]
    for v in variants:
        if "path" in v:
            search = "search" if v["record"]["accuracy_control"] else "full"
            cands.append(Candidate(f"{v['format']}.int8.{v['record']['method']}.{search}", v["format"], "int8",
                                   Path(v["path"])))
    for c in cands:
        open_candidate(c, lambda c=c: get_format(c.format).load(c.path, "cpu"))
        c.size_mb = size_mb(c.path)
        check = compare_output("embeddings", expected, c.runner(heldout)["embeddings"], INT8)
        c.parity = {"min_cosine": check.min_cosine, "min_centered_cosine": check.min_centered_cosine,
                    "nn_agreement": check.nn_agreement, "passed": check.passed, "failures": list(check.failures)}
        say(f"{c.id}: held-out min cosine {check.min_cosine:.4f}, NN {check.nn_agreement:.3f}")
    batch = heldout[:BATCH]
    say(f"timing {len(cands)} artifacts at batch {BATCH}, {args.seconds:.0f} s over {args.rounds} rounds")
    load_before = os.getloadavg()
    times = time_interleaved(cands, batch, args.seconds, args.rounds)
    load_after = os.getloadavg()
    rows = []
    for c in cands:
        lat = percentiles(times[c.id])
        rows.append({"runtime": c.id, "format": c.format, "precision": c.precision, "path": str(c.path),
                     "batch": BATCH, "latency_ms": lat, "throughput": BATCH * 1000 / lat["mean"],
                     "parity_heldout": c.parity, "size_mb": c.size_mb, "settings": c.settings})
        c.runner.close()
    best32 = max((r for r in rows if r["precision"] == "fp32"), key=lambda r: r["throughput"])
    for r in rows:
        r["vs_best_fp32"] = r["throughput"] / best32["throughput"]
    info = machine_info()
    return {"schema": 1, "kind": "int8_accuracy_target", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **provenance(Recipe("bn_calibrated", "random init, torch.manual_seed(0) (torchreid layout)",
                                "BatchNorm calibrated on 64 synthetic person crops (calibrated_untrained, 4 x 16, "
                                "seeds 0-3); residual BatchNorm NOT damped")),
            "machine": info, "machine_key": machine_key(info),
            "model": {"arch": args.arch, "recipe": "torchreid-layout random-init checkpoint (seed 0), BatchNorm "
                      "calibrated on 64 varied synthetic person crops (calibrated_untrained, 4 x 16, seeds 0-3), "
                      "residual BN not damped", "weights": str(weights)},
            "settings": {"batch": BATCH, "seconds": args.seconds, "rounds": args.rounds,
                         "calibration": "128 crops: person_tracks(64 people, 2 views, seed 900)",
                         "heldout": "128 crops: person_tracks(64 people, 2 views, seed 4242)",
                         "target": {"min_cosine": INT8.min_cosine, "min_nn_agreement": INT8.min_nn_agreement,
                                    "speed_vs_best_fp32": 1.3}},
            "load_average": {"before": list(load_before), "after": list(load_after)},
            "best_fp32": best32["runtime"], "rows": rows,
            "variants": [{k: v for k, v in x.items() if k != "path"} for x in variants]}


if __name__ == "__main__":
    main()
