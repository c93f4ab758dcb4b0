"""Benchmark detector pipelines side by side: Ultralytics' own predict vs every exported track, with the
latency split into preprocessing, inference and NMS, at batch 1 and the maximum batch."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from modelport.bench_record import header, row, size_mb
from modelport.detect.export import artifact_path, export_detector
from modelport.detect.graph import NmsConfig
from modelport.detect.model import CONF, IMGSZ, IOU, DetectorSource, e2e_spec, load_detector
from modelport.detect.nms import NmsSettings
from modelport.detect.runner import DetectRunner, Timings, UltralyticsReference, load_runtime
from modelport.detect.samples import street_scenes
from modelport.detect.verify import compare_detections
from modelport.errors import ModelportError
from modelport.formats import get_format
from modelport.machine import physical_cores
from modelport.timing import interleave

# (runtime id, format, NMS flavour or None for the raw track, dynamic input height and width)
TRACKS = (("onnx-e2e", "onnx", "portable", False), ("onnx-e2e-rect", "onnx", "portable", True),
          ("onnx-raw", "onnx", None, False), ("openvino-e2e", "openvino", "portable", False),
          ("openvino-raw", "openvino", None, False), ("torchscript-raw", "torchscript", None, False))
DYNAMIC_DIR = "dynamic_shape"  # dynamic-shape exports share their static siblings' names
Progress = Callable[[str], None]
# Above this batch every exported runtime frees its scratch memory after its turn: at 128 frames of 640 the idle
# ONNX Runtime and OpenVINO sessions together held over 13 GB and the run was killed for memory.
RELEASE_ABOVE = 16


@dataclass
class Contender:
    id: str
    format: str
    track: str
    runner: object = None  # DetectRunner | UltralyticsReference
    path: Path | None = None
    status: str = "ok"
    reason: str = ""
    parity: dict = field(default_factory=dict)
    threads: int | None = None  # torch threads set before each call (PyTorch pipelines only)
    export_s: float | None = None
    load_s: float | None = None


def _split(samples: list[Timings]) -> dict[str, float]:
    """Mean milliseconds per stage: where a pipeline's time goes."""
    return {k: float(np.mean([getattr(t, k) for t in samples]) * 1e3)
            for k in ("preprocess", "inference", "nms", "postprocess")}


def _call(c: Contender, images: list[np.ndarray]) -> None:
    if c.threads:
        import torch

        torch.set_num_threads(c.threads)
    c.runner.detect(images)


def _release(c: Contender) -> None:
    if isinstance(c.runner, DetectRunner):
        c.runner.release_memory()


def _time_round_robin(cands: list[Contender], images: list[np.ndarray], seconds: float, rounds: int,
                      release: bool = False) -> dict:
    """Interleave pipelines in rounds so that machine drift hits all of them alike. With ``release`` each
    exported runtime frees its scratch memory after its turn (untimed), as PyTorch does after every call."""
    for c in cands:  # warm-up: sessions allocate, Ultralytics sets its predictor up
        _call(c, images)
        if release:
            _release(c)

    def measure(c: Contender) -> Timings:
        start = time.perf_counter()
        _call(c, images)
        wall = time.perf_counter() - start
        t = c.runner.last
        if c.format == "ultralytics":
            # Ultralytics' per-stage split leaves out its own overhead; book that under inference.
            t = Timings(t.preprocess, max(wall - t.preprocess - t.nms, 0.0), t.nms, 0.0)
        return t

    return interleave(cands, measure, seconds, rounds, key=lambda c: c.id, after_turn=_release if release else None)


def run_detect_benchmark(pt_file: str | Path, *, batches: Sequence[int] | None = None, imgsz: int = IMGSZ,
                         tracks: Sequence[str] | None = None, conf: float = CONF, seconds: float = 20.0,
                         rounds: int | dict[int, int] = 4, export_dir: str | Path | None = None,
                         max_batch: int | None = None, progress: Progress | None = None) -> dict:
    """Measure Ultralytics' pipeline and each exported track on the same synthetic frames.

    ``batches`` defaults to 1 and the model's maximum batch (``max_batch`` overrides the model default).
    ``rounds`` may differ per batch (``{128: 2}``; others 4): every round runs each pipeline at least once.
    Ultralytics runs twice: as shipped (its predictor sets torch to ``cpu_count - 1`` threads, at most 8) and
    with torch on every physical core; ratios are taken against the faster of the two. Every track is
    checked against Ultralytics on the same frames first; a mismatch is recorded, not hidden.
    """
    say = progress or (lambda _m: None)
    source = DetectorSource.of(pt_file, max_batch=max_batch)
    det = load_detector(source, imgsz)
    batches = list(batches or (1, source.max_batch))
    out_dir = Path(export_dir) if export_dir else Path(pt_file).parent
    settings = NmsSettings(conf, IOU, source.topk)
    reference = UltralyticsReference(source.pt_file, imgsz, settings, det.labels)
    reference.detect(street_scenes(1))  # its predictor's setup chooses the torch threads Ultralytics uses
    import torch

    shipped_threads, cores = torch.get_num_threads(), physical_cores()
    cands = [Contender("ultralytics-pytorch", "ultralytics", "ultralytics", reference, source.pt_file,
                       threads=shipped_threads)]
    if cores != shipped_threads:
        cands.append(Contender(f"ultralytics-pytorch-{cores}t", "ultralytics", "ultralytics",
                               UltralyticsReference(source.pt_file, imgsz, settings, det.labels), source.pt_file,
                               threads=cores))
    for tid, fmt_id, flavor, dynamic in TRACKS:
        if tracks and tid not in tracks:
            continue
        cand = Contender(tid, fmt_id, f"e2e-{flavor}" if flavor else "raw")
        fmt = get_format(fmt_id)
        reason = fmt.unavailable_reason("cpu")
        if reason:
            cand.status, cand.reason = "unavailable", reason
            cands.append(cand)
            continue
        nms = NmsConfig(flavor=flavor, topk=source.topk, iou=IOU, conf=conf) if flavor else None
        folder = out_dir / DYNAMIC_DIR if dynamic else out_dir
        path = artifact_path(fmt, folder, source.name, flavor)
        fresh = False
        if path.exists():
            try:
                spec = fmt.read_spec(path)
                fresh = spec.source.sha256 == det.spec.source.sha256 and spec.extra.get("nms") == (
                    None if nms is None else e2e_spec(det.spec, flavor=flavor, topk=nms.topk, iou=nms.iou,
                                                      conf=nms.conf, normalized=False).extra["nms"]) \
                    and spec.preprocess.height == imgsz and spec.extra.get("max_batch") == source.max_batch \
                    and bool(spec.preprocess.stride) == dynamic
            except ModelportError:
                fresh = False
        if not fresh:
            say(f"exporting {tid}")
            result = export_detector(source, [fmt_id], nms=nms, out=folder, imgsz=imgsz, verify=False,
                                     dynamic_hw=dynamic)[0]
            cand.export_s = round(result.seconds, 2)
            if not result.ok:
                cand.status, cand.reason = "export-failed", result.error or ""
                cands.append(cand)
                continue
        cand.path = path
        start = time.perf_counter()
        cand.runner = DetectRunner(load_runtime(fmt, path), settings)
        cand.load_s = round(time.perf_counter() - start, 3)
        cand.threads = cores if fmt_id == "torchscript" else None
        cands.append(cand)
    live = [c for c in cands if c.status == "ok"]
    frames = street_scenes(8, seed=99)
    ref = reference.detect(frames)
    for c in live[1:]:
        if c.format == "ultralytics":
            continue
        check = compare_detections(ref, c.runner.detect(frames), label=c.id, format=c.format, track=c.track)
        c.parity = {"passed": check.passed, "detections": check.detections, "min_iou": check.min_iou,
                    "max_score_diff": check.max_score_diff, "summary": check.summary()}
        if not check.passed:
            c.status, c.reason = "parity-failed", check.summary()
    rows: list[tuple[Contender, int, list[Timings] | None]] = []
    loads: dict[int, dict] = {}
    for batch in batches:
        say(f"timing batch {batch}")
        images = street_scenes(batch, seed=7)
        n_rounds = rounds.get(batch, 4) if isinstance(rounds, dict) else rounds
        load_before = os.getloadavg()[0]
        release = batch > RELEASE_ABOVE
        samples = _time_round_robin(live, images, seconds, n_rounds, release)
        loads[batch] = {"rounds": n_rounds, "release_memory_between_pipelines": release,
                        "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]}
        rows += [(c, batch, samples.get(c.id)) for c in cands]
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        det.module(torch.zeros(1, 3, imgsz, imgsz))
    gflop = counter.get_total_flops() / 1e9
    records = [row(c.id, c.format, batch, status=c.status, reason=c.reason, path=c.path, size_mb=size_mb(c.path),
                   export_s=c.export_s, load_s=c.load_s, parity=c.parity,
                   latencies=[t.total for t in timed] if timed else None, gflop=gflop, track=c.track,
                   split_ms=_split(timed) if timed else None, torch_threads=c.threads)
               for c, batch, timed in rows]
    base: dict[int, float] = {}  # the faster Ultralytics configuration per batch
    for r in records:
        if r["format"] == "ultralytics" and r["throughput"]:
            base[r["batch"]] = max(base.get(r["batch"], 0.0), r["throughput"])
    for r in records:
        r["x_ultralytics"] = r["throughput"] / base[r["batch"]] if r["throughput"] and base.get(r["batch"]) else None
    model = {"name": source.name, "task": "detect", "source": asdict(det.spec.source), "untrained": det.spec.is_random,
             "gflop_per_image": gflop, "imgsz": imgsz, "classes": len(det.labels), "max_batch": source.max_batch}
    settings = {"batches": batches, "device": "cpu", "threads": cores, "seconds_per_batch": seconds,
                "rounds": {str(b): v["rounds"] for b, v in loads.items()}, "formats": sorted({c.format for c in cands}),
                "export_dir": str(out_dir), "conf": conf, "iou": IOU, "topk": source.topk,
                "torch_threads_ultralytics_default": shipped_threads, "load": {str(b): v for b, v in loads.items()},
                "frames": "synthetic street scenes, sizes cycling 480x640, 720x1280, 640x480, 375x500, 640x640, "
                          "360x640"}
    return {**header("yolo", model, settings), "rows": records}


def markdown_table(report: dict) -> str:
    """The record as a markdown table (one row per pipeline and batch)."""
    lines = ["| pipeline | track | batch | status | pre ms | infer ms | NMS ms | post ms | total p50 ms | img/s | "
             "x best Ultralytics | GFLOP/s |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        if not r["throughput"]:
            lines.append(f"| {r['runtime']} | {r['track']} | {r['batch']} | {r['status']}: {r['reason'][:60]} "
                         "| - | - | - | - | - | - | - | - |")
            continue
        s = r["split_ms"]
        nms = "in graph" if r["track"].startswith("e2e") else f"{s['nms']:.1f}"
        ratio = f"{r['x_ultralytics']:.2f}x" if r.get("x_ultralytics") else "-"
        threads = f" ({r['torch_threads']} torch thr)" if r.get("torch_threads") else ""
        lines.append(f"| {r['runtime']}{threads} | {r['track']} | {r['batch']} | {r['status']} | "
                     f"{s['preprocess']:.1f} | "
                     f"{s['inference']:.1f} | {nms} | {s['postprocess']:.1f} | {r['latency_ms']['p50']:.1f} | "
                     f"{r['throughput']:.1f} | {ratio} | {r['gflops_achieved']:.0f} |")
    return "\n".join(lines)
