"""`modelport detect ...` commands; `modelport export/verify/bench/load` are routed here for detectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.atomic import atomic_write_text
from modelport.cli_options import TRUST_CHECKPOINT, apply_trust

detect_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="YOLO detectors (Ultralytics .pt): export with or without NMS, verify, bench, load.")
out = Console()
err = Console(stderr=True)
ROUTED = ("export", "verify", "bench", "load")
DETECT_FLAGS = ("--nms", "--nms-flavor", "--model", "--models", "--normalize-boxes", "--dynamic-shape", "--allow-empty")


def _is_detector(arg: str) -> bool:
    from modelport.families.yolo import is_detector_source

    return is_detector_source(arg)


def route(argv: list[str]) -> list[str]:
    """``export yolo11n.pt ...`` -> ``detect export yolo11n.pt ...`` when the arguments name a detector."""
    from modelport.formats.remote import is_endpoint

    if not argv or argv[0] not in ROUTED:
        return argv
    rest = argv[1:]
    if any(a.split("=")[0] in ("--factory", "--config") for a in rest):  # the user's own model (factory family)
        return argv
    if argv[0] == "export":  # `modelport export` takes every family; only several detectors at once are here
        return ["detect", *argv] if any(a.split("=")[0] in ("--model", "--models") for a in rest) else argv
    if any(is_endpoint(a) for a in rest):  # a served model: the remote runner, whatever it serves (no torch here)
        return argv
    if any(a.split("=")[0] in DETECT_FLAGS for a in rest) or any(_is_detector(a) for a in rest
                                                                 if not a.startswith("-")):
        return ["detect", *argv]
    return argv


def _nms_config(nms: bool, flavor: str, topk: Optional[int], iou: float, conf: float, normalize: bool):
    from modelport.detect.graph import FLAVORS, NmsConfig

    if flavor not in FLAVORS:
        raise typer.BadParameter(f"--nms-flavor must be one of {', '.join(FLAVORS)}, not {flavor!r}")
    if not nms:
        if normalize:
            raise typer.BadParameter("--normalize-boxes applies to the end-to-end track (--nms)")
        return None
    return NmsConfig(flavor=flavor, topk=topk, iou=iou, conf=conf, normalize=normalize)


@detect_app.command("export")
def export_cmd(
    weights: Optional[List[str]] = typer.Argument(None, help="Ultralytics detection .pt file(s)."),
    model: Optional[List[str]] = typer.Option(None, "--model", help="path.pt[:name[:max_batch]] (repeatable)."),
    models: Optional[Path] = typer.Option(None, "--models", help="YAML list of models: pt_file, name, max_batch, "
                                          "topk, names."),
    formats: Optional[str] = typer.Option(None, "--format", "-f", help="Comma-separated formats (default: all of "
                                          "the track usable here)."),
    nms: bool = typer.Option(False, "--nms", help="End-to-end track: NMS inside the graph."),
    flavor: str = typer.Option("portable", "--nms-flavor", help="portable (ONNX NonMaxSuppression) or tensorrt "
                               "(EfficientNMS_TRT)."),
    topk: Optional[int] = typer.Option(None, "--topk", help="Detections kept per image (default 300, or the model "
                                       "list's)."),
    iou: float = typer.Option(0.7, "--iou", help="NMS IoU threshold."),
    conf: float = typer.Option(0.25, "--conf", help="Confidence threshold (NMS in the graph; verification of raw "
                               "tracks)."),
    normalize: bool = typer.Option(False, "--normalize-boxes", help="Boxes in [0,1] of the model input."),
    imgsz: int = typer.Option(640, "--imgsz", help="Square input size."),
    dynamic_shape: bool = typer.Option(False, "--dynamic-shape", help="Any input height and width up to --imgsz: "
                                       "same-sized images are letterboxed to the smallest stride-32 rectangle, as "
                                       "Ultralytics' predict does (onnx, openvino, tensorrt)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: next to the weights)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of images to verify on (default: synthetic "
                                          "scenes)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip verification against Ultralytics' predict."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda for TensorRT engines."),
    allow_random: bool = typer.Option(False, "--allow-random", help="A missing yolo11<size>.pt is built from "
                                      "Ultralytics' YAML with seeded random weights (untrained: boxes mean nothing)."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    force: bool = typer.Option(False, "--force", help="Replace files at the destination that are not modelport "
                               "exports."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Pass verification (with a warning) when the "
                                     "reference finds no box."),
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Export detectors (raw or with NMS inside), each verified against Ultralytics' own predictions."""
    apply_trust(trust)
    from modelport.detect.export import export_detector, export_models
    from modelport.detect.model import DetectorSource, parse_model_arg, read_model_list
    from modelport.zoo.yolo import SIZES

    # A bare zoo name stands for its Ultralytics file (``yolo11n`` -> ``yolo11n.pt``).
    named = [f"{w}.pt" if w in {f"yolo11{z}" for z in SIZES} and not Path(w).exists() else w for w in weights or []]
    sources = [DetectorSource.of(w) for w in named] + [parse_model_arg(m) for m in model or []]
    if models:
        sources += read_model_list(models)
    if not sources:
        raise typer.BadParameter("give a .pt file, --model path.pt:name:max_batch, or --models list.yaml")
    config = _nms_config(nms, flavor, topk, iou, conf, normalize)
    if topk is not None:
        sources = [DetectorSource.of(s.pt_file, s.name, s.max_batch, topk, s.labels) for s in sources]
    kwargs = dict(nms=config, imgsz=imgsz, verify=not no_verify, verify_conf=conf, device=device,
                  images=_image_files(images) if images else None, allow_random=allow_random,
                  dynamic_hw=dynamic_shape, force=force, allow_empty=allow_empty)
    if len(sources) == 1 and not models:
        results = export_detector(sources[0], formats, out=out_dir, **kwargs)
    else:
        results = export_models(sources, formats, out=out_dir, **kwargs)
    _print_exports(results, as_json)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _image_files(folder: Path) -> list[Path]:
    from modelport.families.yolo import image_files

    return image_files(folder)


def _print_exports(results, as_json: bool) -> None:
    if as_json:
        rows = [{"model": r.model, "format": r.format, "track": r.track, "path": str(r.path) if r.path else None,
                 "ok": r.ok, "seconds": r.seconds, "error": r.error, "note": r.note,
                 "check": r.check.to_dict() if r.check else None} for r in results]
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="detector exports (verified against Ultralytics predict)")
    for col in ("model", "format", "track", "status", "boxes", "min IoU", "max score diff", "s", "path / problem"):
        table.add_column(col)
    for r in results:
        c = r.check
        status = "[green]ok[/]" if r.ok and c else "[yellow]unverified[/]" if r.ok else "[red]failed[/]"
        boxes = f"{c.detections}" + (f" ({c.ties} ties)" if c.ties else "") if c else "-"
        table.add_row(r.model, r.format, r.track, status, boxes,
                      f"{c.min_iou:.4f}" if c else "-", f"{c.max_score_diff:.1e}" if c else "-", f"{r.seconds:.1f}",
                      str(r.path) + (f" ({r.note})" if r.note else "") if r.ok else (r.error or ""))
    out.print(table)
    for r in results:
        for w in r.check.warnings if r.check else ():
            err.print(f"[bold yellow]warning:[/] {r.model} {r.format}: {w}", highlight=False)


@detect_app.command("verify")
def verify_cmd(
    paths: List[Path] = typer.Argument(..., help="The Ultralytics .pt (reference) and artifacts; no artifacts: its "
                                       "exports."),
    conf: float = typer.Option(0.25, "--conf", help="Confidence threshold for raw tracks (NMS graphs use their own)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of images (default: synthetic scenes)."),
    count: int = typer.Option(8, "--count", help="Synthetic scenes when no --images."),
    as_json: Optional[str] = typer.Option(None, "--json", help="Write the report as JSON to this file ('-' for "
                                          "stdout)."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Pass (with a warning) when the reference finds "
                                     "no box."),
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Compare every artifact's detections with Ultralytics' predict; a table per format, exit 1 on mismatch."""
    apply_trust(trust)
    from modelport.detect.verify import verify_artifacts
    from modelport.formats import format_of_path

    pts = [p for p in paths if p.suffix == ".pt" and format_of_path(p).is_weights]
    if len(pts) != 1:
        raise typer.BadParameter("give exactly one Ultralytics .pt as the reference")
    checks = verify_artifacts(pts[0], [p for p in paths if p not in pts], conf=conf,
                              images=_image_files(images) if images else None, count=count, allow_empty=allow_empty)
    if as_json:
        text = json.dumps([c.to_dict() for c in checks], indent=2, default=str)
        if as_json == "-":
            out.print_json(text)
        else:
            atomic_write_text(as_json, text, force=True)
    if as_json != "-":
        for c in checks:
            table = Table(title=f"{c.label} ({c.format}, {c.track}) vs Ultralytics predict at conf {c.conf:g}: "
                                f"{c.detections} reference boxes compared, {c.ties} NMS ties")
            for col in ("image", "reference boxes", "boxes", "matched", "ties", "min IoU", "max score diff", "result"):
                table.add_column(col)
            for i in c.images:
                verdict = "[green]pass[/]" if i.passed else f"[red]{'; '.join(i.failures)}[/]"
                table.add_row(str(i.image), str(i.ref_count), str(i.count), str(i.matched), str(len(i.ties)),
                              f"{i.min_iou:.4f}", f"{i.max_score_diff:.1e}", verdict)
            if c.error:
                table.add_row("-", "-", "-", "-", "-", "-", "-", f"[red]{c.error}[/]")
            out.print(table)
            for w in c.warnings:
                err.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    if not all(c.passed for c in checks):
        raise typer.Exit(1)


@detect_app.command("bench")
def bench_cmd(
    weights: Path = typer.Argument(..., help="Ultralytics detection .pt."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Comma-separated batch sizes (default: 1 and the max "
                                        "batch)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Override the model's maximum batch."),
    imgsz: int = typer.Option(640, "--imgsz"),
    conf: float = typer.Option(0.25, "--conf"),
    seconds: float = typer.Option(20.0, "--seconds", help="Timed seconds per batch size, shared by all pipelines."),
    tracks: Optional[str] = typer.Option(None, "--tracks", help="Comma-separated, e.g. onnx-e2e,onnx-raw."),
    json_path: Path = typer.Option(Path("benchmark.json"), "--json", help="Where to write the JSON record."),
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Ultralytics' pipeline vs each track: preprocess / inference / NMS latency and images/s."""
    apply_trust(trust)
    from modelport.detect.bench import markdown_table, run_detect_benchmark

    batches = [int(b) for b in batch.split(",")] if batch else None
    with err.status("benchmarking ...") as status:
        report = run_detect_benchmark(weights, batches=batches, imgsz=imgsz, conf=conf, seconds=seconds,
                                      max_batch=max_batch, tracks=tracks.split(",") if tracks else None,
                                      progress=lambda m: status.update(f"benchmarking: {m}"))
    atomic_write_text(json_path, json.dumps(report, indent=1), force=True)
    out.print(markdown_table(report))
    out.print(f"record: {json_path}")


@detect_app.command("load")
def load_cmd(path: Path = typer.Argument(..., help="Ultralytics .pt or a detector artifact."),
             format: Optional[str] = typer.Option(None, "--format", help="Force one format."),
             device: str = typer.Option("cpu", "--device"),
             allow_random: bool = typer.Option(False, "--allow-random", help="No weights and no export of a "
                                               "yolo11<size>.pt: use seeded random weights."),
             image: Optional[Path] = typer.Option(None, "--image", help="Run it on this image (default: a synthetic "
                                                  "scene)."),
             trust: bool = TRUST_CHECKPOINT) -> None:
    """Show which runtime the loader picks and run it once."""
    apply_trust(trust)
    from modelport.detect.discover import open_detector
    from modelport.detect.samples import street_scenes

    runner = open_detector(path, format=format, device=device, allow_random=allow_random)
    dets = runner.detect([image] if image else street_scenes(1, seed=0))[0]
    out.print(f"format={runner.format} track={runner.track} path={runner.path} classes={len(runner.spec.labels)} "
              f"detections={len(dets)}")
    for box, score, name in list(zip(dets.boxes, dets.scores, dets.names()))[:10]:
        out.print(f"  {name:>16} {score:.3f} [{', '.join(f'{v:.1f}' for v in box)}]")
