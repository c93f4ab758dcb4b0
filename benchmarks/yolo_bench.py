"""Benchmark YOLO11n detection pipelines at 640 and write benchmarks/results/yolo11n.json + YOLO_RESULTS.md.

    flock /tmp/modelport-bench.lock python benchmarks/yolo_bench.py              # batch 1 and 128 (yolo11n's max)
    flock /tmp/modelport-bench.lock python benchmarks/yolo_bench.py --max-batch 8 --seconds 60
    python benchmarks/yolo_bench.py --markdown-only                              # rewrite the table from the JSON

The model is Ultralytics' yolo11n.yaml with seeded random weights, BatchNorm calibrated on synthetic
street scenes (no weights can be downloaded here; speed does not depend on the weights, only the NMS
share does, through the number of candidate boxes). At the maximum batch every call takes many seconds
on a 2-core CPU, so it runs fewer rounds (``--rounds-max``; each round times every pipeline at least once).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from modelport.bench_record import Recipe  # noqa: E402
from modelport.detect.bench import markdown_table, run_detect_benchmark  # noqa: E402
from modelport.detect.untrained import save_untrained  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-batch", type=int, default=None, help="default: the model's (yolo11n: 128)")
    parser.add_argument("--seconds", type=float, default=40.0, help="timed seconds per batch size, all pipelines")
    parser.add_argument("--rounds-max", type=int, default=2, help="interleaved rounds at the maximum batch")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite YOLO_RESULTS.md from the JSON record")
    args = parser.parse_args()
    record = HERE / "results" / "yolo11n.json"
    if args.markdown_only:
        report = _current(json.loads(record.read_text()))
        args.max_batch = report["model"]["max_batch"]
    else:
        work = HERE / "work" / "yolo"
        pt = work / "yolo11n.pt"
        if not pt.exists():
            save_untrained(pt, "yolo11n", seed=0, imgsz=640)
        from modelport.detect.model import DetectorSource

        args.max_batch = args.max_batch or DetectorSource.of(pt).max_batch
        report = run_detect_benchmark(pt, batches=[1, args.max_batch], max_batch=args.max_batch, conf=args.conf,
                                      seconds=args.seconds, rounds={1: 4, args.max_batch: args.rounds_max},
                                      export_dir=work / "exports", progress=print)
        report["recipe"] = asdict(Recipe("bn_calibrated", f"yolo11n.yaml, torch seed 0 ({pt.name})",
                                         "BatchNorm calibrated on 8 synthetic street scenes at 640 "
                                         "(detect.untrained.save_untrained)"))  # the spec only knows "random"
        record.parent.mkdir(exist_ok=True)
        record.write_text(json.dumps(report, indent=1))
    (HERE / "YOLO_RESULTS.md").write_text(results_markdown(report, args.max_batch))
    print((HERE / "YOLO_RESULTS.md").read_text())


def _current(report: dict) -> dict:
    """A record in today's layout: schema-1 detector records named images/s ``fps``."""
    if report.get("schema") == 1:
        for r in report["rows"]:
            r.setdefault("throughput", r.get("fps"))
    return report


def results_markdown(report: dict, max_batch: int) -> str:
    rows = [r for r in report["rows"] if r.get("throughput")]
    lines, best, shipped_best = [], [], []
    for batch in (1, max_batch):
        at = {r["runtime"]: r for r in rows if r["batch"] == batch}
        ultra = sorted((r for r in at.values() if r["format"] == "ultralytics"), key=lambda r: -r["throughput"])
        e2e = [at[k] for k in ("onnx-e2e", "onnx-e2e-rect") if k in at]
        if not e2e or not ultra:
            continue
        shipped = at.get("ultralytics-pytorch", ultra[-1])
        top = max(e2e, key=lambda r: r["throughput"])
        best.append(top["throughput"] / ultra[0]["throughput"])
        shipped_best.append(top["throughput"] / shipped["throughput"])
        ours = "; ".join(f"{'dynamic shape' if r['runtime'].endswith('rect') else 'fixed 640x640'} "
                         f"{r['throughput']:.1f} img/s = **{r['throughput'] / ultra[0]['throughput']:.2f}x** the "
                         f"faster, {r['throughput'] / shipped['throughput']:.2f}x as shipped" for r in e2e)
        theirs = ", ".join(f"{r['runtime']} (torch threads: {r.get('torch_threads')}) {r['throughput']:.1f} img/s"
                           for r in ultra)
        lines.append(f"- batch {batch}: end-to-end portable ONNX {ours} ({theirs})")
    if best:
        lines.append(
            f"- Target (end-to-end portable ONNX >= 2x Ultralytics' images/s, at batch 1 and the maximum batch), "
            f"against the faster Ultralytics configuration: **{'met' if min(best) >= 2 else 'not met'}** "
            f"({', '.join(f'{r:.2f}x' for r in best)}); against Ultralytics as shipped (its predictor's torch "
            f"threads): {'met' if min(shipped_best) >= 2 else 'not met'} "
            f"({', '.join(f'{r:.2f}x' for r in shipped_best)}).")
    m, st = report["machine"], report["settings"]
    load = "; ".join(f"batch {b}: {v['loadavg_1min_before']:.1f} before, {v['loadavg_1min_after']:.1f} after "
                     f"({v['rounds']} rounds)" for b, v in st.get("load", {}).items())
    return "\n".join([
        "# YOLO11n detection pipelines (CPU)",
        "",
        f"Machine: {m.get('cpu')} ({m.get('physical_cores')} physical cores). Input 640x640 (dynamic-shape row: up "
        f"to 640x640), conf {st['conf']}, "
        f"IoU {st['iou']}, top-k {st['topk']}; {st['frames']}. All pipelines timed in interleaved rounds in one "
        "run (`python benchmarks/yolo_bench.py`, record in `results/yolo11n.json`). yolo11n costs "
        f"{report['model']['gflop_per_image']:.1f} GFLOP per 640x640 image. The machine is shared: 1-minute "
        f"load average {load}.",
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
        "boxes matched at IoU >= 0.99, same class, score diff <= 1e-3, same count). Ratios are against the "
        "faster of the two Ultralytics rows at each batch.",
        "",
        NOTES,
        "",
    ])


NOTES = """## Where the time goes

- Inference is over 90% of every pipeline: letterboxing costs 2-9 ms per image, NMS 1-2 ms per image on the
  CPU (or nothing visible inside the graph). The ratio is therefore the ratio of convolution speed on the same
  two cores; pre/post-processing cannot buy 2x.
- Ultralytics' defaults here: its predictor's `select_device("cpu")` sets torch to `cpu_count - 1` threads,
  **one** thread on this 2-CPU machine, and `predict` letterboxes a batch of same-shape frames to the smallest
  stride-32 rectangle (`rect=True`): the batch-1 frame (480x640) runs at 480x640, 75% of the 640x640 pixels the
  exported graphs always compute (the GFLOP/s column counts 640x640 for every row). The 128-frame batch mixes
  shapes and runs at 640x640 in both.
- The exported runtimes use both cores, as their documentation advises (ONNX Runtime: all graph
  optimisations, intra-op threads = physical cores, no spinning workers since pre/post-processing shares the
  CPU; batches as one single-threaded session per core, like OpenVINO's THROUGHPUT hint with its
  AsyncInferQueue; OpenVINO LATENCY hint for one image).
- ONNX Runtime settings for the detector, model only (`python benchmarks/onnx_streams.py yolo11n.nms.onnx
  640`, random inputs): batch 2 as two single-threaded streams 13.9 img/s, against 8.8 img/s as one two-threaded
  run, so detectors split every batch that fills the streams; batch 1 with spinning workers 11.6 img/s against
  10.6 without. The pipelines run without spinning, the documented choice when pre- and post-processing share
  the CPU; spinning would buy about 9% at batch 1, not the 2x.
- Graph and runtime changes behind the batch-128 ratio (2026-11-23; before them the same bench gave 1.71x):
  - ONNX Runtime profile of the e2e graph, one image on one core: the DFL head's Softmax over axis 1 of
    `[1,16,4,8400]` took 10.7 of 165 ms and the per-class NonMaxSuppression over a one-hot `[1,80,8400]` score
    tensor 5.9 ms. The exports now compute the DFL softmax over the last axis (`detect.model.LastAxisDFL`, same
    values: 1.2 ms) and run one NonMaxSuppression over class-offset boxes, Ultralytics' own device for
    per-class NMS (0.4 ms). Single-threaded A/B on the same image: 143.9 -> 131.7 ms from the DFL alone.
  - ONNX Runtime streams work through a large batch one 640x640 image per run instead of one 64-image run
    per stream: yolo11n at batch 64, model only, 14.9 vs 12.7 img/s (`python benchmarks/onnx_streams.py
    yolo11n.nms.onnx 640 640 --runs 64`); a 64-image run's activations (420 MB for the first layer alone)
    stream through memory instead of cache.
  - In the run before this one OpenVINO's batch-128 rows fell to 8.4 img/s (11.4 in the record before these
    changes) while its batch-1 rows did not, and PyTorch's batch-128 rows fell as much (2t: 5.3 vs 7.0). The
    same export with and without the DFL change measured 78.5 vs 88.3 ms per image at batch 8, model only, and
    in this run, on a faster host, OpenVINO is back at 12.3 img/s: the host, not the change. Splitting
    OpenVINO's batch into one-image requests, as the ONNX streams now do, measured the same (12.8 vs 12.6 img/s
    at batch 32) and was not kept.
- Dynamic-shape export (`modelport export yolo11n.pt --nms --dynamic-shape`, the `onnx-e2e-rect` row): the
  same graph with a symbolic height and width, letterboxed to the smallest stride-32 rectangle exactly when
  Ultralytics' predictor does. At batch 1 it computes the pixels Ultralytics computes (480x640), so that row is
  the equal-work comparison; at batch 128 the frames' sizes are mixed and every pipeline runs 640x640 (the rows
  differ by run-to-run noise). The GFLOP/s column counts 640x640
  for every row, so at batch 1 the rect and Ultralytics rows really ran at three quarters of the figure shown.
- Which Ultralytics figure the 2x target is read against: the issue names "the Ultralytics PyTorch pipeline",
  which is `predict` as it ships; on this 2-CPU machine that pipeline runs torch on one thread. Against it the
  end-to-end ONNX track is above 2x at both batches. Against the same pipeline with torch given both cores
  (`-2t`, a tuning Ultralytics does not do) it is above 2x at batch 128 and 1.4-1.5x at batch 1, where the
  work is equal and both sides use both cores: in this run ONNX Runtime's two-thread session computes about
  116 real GFLOP/s (23.7 img/s x 6.5 GFLOP x 0.75) against PyTorch's 82, and 2x would take 165, more than any
  run of any runtime reached here (the best, ONNX Runtime's streams at batch 128, 130). Spinning workers would
  add about 9%. (The run before this one, on a slower host: 15.9 img/s, 1.53x the 2-thread and 2.26x the
  shipped pipeline.)"""


if __name__ == "__main__":
    main()
