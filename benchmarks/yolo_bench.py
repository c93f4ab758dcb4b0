"""Benchmark YOLO11n detection pipelines at 640 and write benchmarks/results/yolo11n.json + YOLO_RESULTS.md.

    flock /tmp/modelport-bench.lock python benchmarks/yolo_bench.py            # batch 1 and 8, 40 s each
    flock /tmp/modelport-bench.lock python benchmarks/yolo_bench.py --max-batch 16 --seconds 60

The model is Ultralytics' yolo11n.yaml with seeded random weights, BatchNorm calibrated on synthetic
street scenes (no weights can be downloaded here; speed does not depend on the weights, only the NMS
share does, through the number of candidate boxes). The maximum batch is 8 here instead of yolo11n's
default 128: on a 2-core CPU one batch of 128 frames at 640 takes over ten seconds per pipeline, and
images/s no longer grows with the batch long before that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from modelport.detect.bench import markdown_table, run_detect_benchmark  # noqa: E402
from modelport.detect.untrained import save_untrained  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0, help="timed seconds per batch size, all pipelines")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite YOLO_RESULTS.md from the JSON record")
    args = parser.parse_args()
    record = HERE / "results" / "yolo11n.json"
    if args.markdown_only:
        report = json.loads(record.read_text())
        args.max_batch = report["model"]["max_batch"]
    else:
        work = HERE / "work" / "yolo"
        pt = work / "yolo11n.pt"
        if not pt.exists():
            save_untrained(pt, "yolo11n", seed=0, imgsz=640)
        report = run_detect_benchmark(pt, batches=[1, args.max_batch], max_batch=args.max_batch, conf=args.conf,
                                      seconds=args.seconds, export_dir=work / "exports", progress=print)
        record.parent.mkdir(exist_ok=True)
        record.write_text(json.dumps(report, indent=1))
    rows = {(r["runtime"], r["batch"]): r for r in report["rows"]}
    lines = []
    for batch in (1, args.max_batch):
        e2e, base = rows.get(("onnx-e2e", batch), {}), rows.get(("ultralytics-pytorch", batch), {})
        if e2e.get("fps") and base.get("fps"):
            lines.append(f"- batch {batch}: end-to-end portable ONNX {e2e['fps']:.1f} img/s vs Ultralytics PyTorch "
                         f"{base['fps']:.1f} img/s = **{e2e['fps'] / base['fps']:.2f}x**")
    ratios = [rows[("onnx-e2e", b)]["fps"] / rows[("ultralytics-pytorch", b)]["fps"] for b in (1, args.max_batch)
              if rows.get(("onnx-e2e", b), {}).get("fps") and rows.get(("ultralytics-pytorch", b), {}).get("fps")]
    if ratios and max(ratios) < 2.0:
        lines.append(
            f"- Target (end-to-end portable ONNX >= 2x Ultralytics' images/s): **not met** (best {max(ratios):.2f}x). "
            "Inference is over 90% of every pipeline and the exported runtimes already run yolo11n at about the "
            "machine's measured fp32 matmul peak (GFLOP/s column vs the peak above), so the remaining gap is "
            "the speed of Ultralytics' own fused PyTorch model, not pre/post-processing or NMS (a few "
            "milliseconds per image). Ratios move between runs on this shared 2-core machine; only ratios "
            "from one run (this table) are comparable.")
    m = report["machine"]
    text = "\n".join([
        "# YOLO11n detection pipelines (CPU)",
        "",
        f"Machine: {m.get('cpu')} ({m.get('physical_cores')} physical cores). Input 640x640, conf "
        f"{report['settings']['conf']}, IoU {report['settings']['iou']}, top-k {report['settings']['topk']}; "
        f"{report['settings']['frames']}. All pipelines timed in interleaved rounds in one run "
        "(`python benchmarks/yolo_bench.py`, record in `results/yolo11n.json`). "
        f"yolo11n costs {report['model']['gflop_per_image']:.1f} GFLOP per 640x640 image; this machine's measured "
        f"fp32 matmul peak is {report['peak_gflops']:.0f} GFLOP/s.",
        "",
        *lines,
        "",
        markdown_table(report),
        "",
        "Stages: *pre* = letterbox + normalise (modelport: `preprocess.prepare_letterboxed`; Ultralytics: its own "
        "preprocess), *infer* = the runtime call (with NMS inside for the e2e tracks; for Ultralytics everything "
        "its per-stage timer leaves out is booked here too), *NMS* = CPU NMS (`detect/nms.py` for raw tracks; "
        "Ultralytics' postprocess, NMS plus box scaling), *post* = scaling boxes back to the image. Every "
        "exported track was compared with Ultralytics' predictions on 8 frames before timing (status ok = all "
        "boxes matched at IoU >= 0.99, same class, score diff <= 1e-3, same count).",
        "",
        "Max batch is 8 here, not yolo11n's default 128: see the script's docstring.",
        "",
    ])
    (HERE / "YOLO_RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
