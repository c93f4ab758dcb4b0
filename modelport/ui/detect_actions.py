"""The dashboard's detector benchmark: ``run_detect_benchmark`` with the arguments ``modelport bench
yolo.pt`` passes it, the record and a plot beside the weights, and the fastest pipeline that matched
Ultralytics' predictions in that run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from modelport.ui import params as P

log = logging.getLogger("modelport.ui.job")


def pipelines() -> list[tuple[str, str, str | None]]:
    """(pipeline id, label, why it cannot run here or None) for each exported track the benchmark knows."""
    from modelport.detect.bench import TRACKS
    from modelport.formats import get_format

    out = []
    for tid, fmt_id, flavor, dynamic in TRACKS:
        fmt = get_format(fmt_id)
        label = f"{fmt.name} {'NMS in the graph' if flavor else 'raw + NMS in Python'}" + \
            (", any input size" if dynamic else "")
        out.append((tid, f"{tid} ({label})", fmt.unavailable_reason("cpu")))
    return out


def validate_detect_bench(weights: Path, params: dict) -> dict:
    usable = [tid for tid, _label, reason in pipelines() if reason is None]
    checked = {"weights": str(weights), "detector": True,
               "tracks": P.choices(params, "tracks", usable),
               "batches": P.int_list(params, "batches", "1", 1, 1024) if P.text(params, "batches") else None,
               "max_batch": P.integer(params, "max_batch", None, 1, 1024),
               "imgsz": P.integer(params, "imgsz", 640, 32, 4096),
               "conf": P.number(params, "conf", 0.25, 0.0, 1.0),
               "seconds": P.number(params, "seconds", 20.0, 0.05, 600.0)}
    if checked["imgsz"] % 32:
        raise P.ParamError(f"imgsz: {checked['imgsz']} is not a multiple of 32 (the detector's stride)")
    return checked


def run_detect_bench(p: dict) -> dict:
    from modelport.atomic import atomic_write_text
    from modelport.detect.bench import run_detect_benchmark

    weights = Path(p["weights"])
    log.info("benchmarking detector %s: Ultralytics and %s", weights.name, ", ".join(p["tracks"]))
    report = run_detect_benchmark(weights, batches=p["batches"], imgsz=p["imgsz"], conf=p["conf"],
                                  seconds=p["seconds"], max_batch=p["max_batch"], tracks=p["tracks"],
                                  progress=lambda msg: log.info("benchmark: %s", msg))
    folder = weights.parent / "benchmarks"
    folder.mkdir(exist_ok=True)
    record = atomic_write_text(folder / f"{weights.stem}.json", json.dumps(report, indent=1), force=True)
    plot = write_detect_plot(report, folder / f"{weights.stem}.png")
    rows = []
    for r in report["rows"]:
        split, parity = r.get("split_ms") or {}, r.get("parity") or {}
        rows.append({"runtime": r["runtime"], "track": r["track"], "batch": r["batch"], "status": r["status"],
                     "reason": r["reason"], "path": r["path"], "preprocess_ms": split.get("preprocess"),
                     "inference_ms": split.get("inference"), "nms_ms": split.get("nms"),
                     "p50_ms": (r.get("latency_ms") or {}).get("p50"), "fps": r.get("throughput"),
                     "x_ultralytics": r.get("x_ultralytics"), "min_iou": parity.get("min_iou"),
                     "boxes": parity.get("detections")})
    model = report["model"]
    return {"kind": "detect", "rows": rows, "plot": str(plot), "record": str(record),
            "untrained": model["untrained"], "imgsz": model["imgsz"],
            "fastest": fastest_pipeline(report)}


def fastest_pipeline(report: dict) -> dict | None:
    """The fastest pipeline at the largest batch measured, among those whose detections matched Ultralytics'
    (status ``ok``: Ultralytics itself is the reference), with its speed-up over the faster Ultralytics run."""
    measured = [r for r in report["rows"] if r.get("throughput")]
    if not measured:
        return None
    batch = max(r["batch"] for r in measured)
    ok = [r for r in measured if r["batch"] == batch and r["status"] == "ok"]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["throughput"])
    failed = sorted({r["runtime"] for r in report["rows"] if r["status"] == "parity-failed"})
    return {"runtime": best["runtime"], "batch": batch, "fps": best["throughput"],
            "x_ultralytics": best["x_ultralytics"], "path": best["path"], "export": best["format"] != "ultralytics",
            "parity_failed": failed}


def write_detect_plot(report: dict, path: Path) -> Path:
    """Grouped bars: images/s of every pipeline at every batch size; pipelines whose detections did not
    match Ultralytics' are hatched and say so in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("throughput")]
    batches = sorted({r["batch"] for r in rows})
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(batches) * max(1, len(names))), 4.5))
    for i, name in enumerate(names):
        mine = {r["batch"]: r for r in rows if r["runtime"] == name}
        failed = any(r["status"] != "ok" for r in mine.values())
        values = [mine[b]["throughput"] if b in mine else 0 for b in batches]
        ax.bar([x + i * width for x in range(len(batches))], values, width,
               label=name + (" (parity failed)" if failed else ""), hatch="//" if failed else None)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_ylabel("images / s")
    model = report["model"]
    title = f"{model['name']} at {model['imgsz']} px on {report['machine']['cpu']}"
    ax.set_title(title + (" — untrained weights" if model["untrained"] else ""), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
