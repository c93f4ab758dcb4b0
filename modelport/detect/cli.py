"""`modelport detect ...` commands; `modelport export/verify/bench/load` call them for a source the ``yolo``
family claims (``modelport.families``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.atomic import atomic_write_text
from modelport.cli_options import TRUST_CHECKPOINT, WIDE, apply_trust
from modelport.cli_table import Col, breakable, fitted_table, left, notes, print_table

detect_app = typer.Typer(add_completion=False,
                         help="YOLO detectors (Ultralytics .pt): export with or without NMS, verify, bench, load.")
out = Console()
err = Console(stderr=True)


def _nms_config(nms: bool, flavor: str, topk: Optional[int], iou: float, conf: float, normalize: bool,
                layout: str = "efficientnms"):
    from modelport.detect.graph import FLAVORS, LAYOUTS, NmsConfig

    if flavor not in FLAVORS:
        raise typer.BadParameter(f"--nms-flavor must be one of {', '.join(FLAVORS)}, not {flavor!r}")
    if layout not in LAYOUTS:
        raise typer.BadParameter(f"--nms-layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if not nms:
        if normalize:
            raise typer.BadParameter("--normalize-boxes applies to the end-to-end track (--nms)")
        if layout != "efficientnms":
            raise typer.BadParameter("--nms-layout applies to the end-to-end track (--nms)")
        return None
    config = NmsConfig(flavor=flavor, topk=topk, iou=iou, conf=conf, normalize=normalize, layout=layout)
    if (problem := config.problem()) is not None:
        raise typer.BadParameter(problem)
    return config


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
    layout: str = typer.Option("efficientnms", "--nms-layout", help="efficientnms (four outputs) or ultralytics "
                               "(one [B,k,6] output0, as Ultralytics' nms=True export)."),
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
    wide: bool = WIDE,
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
    config = _nms_config(nms, flavor, topk, iou, conf, normalize, layout)
    if topk is not None:
        sources = [DetectorSource.of(s.pt_file, s.name, s.max_batch, topk, s.labels) for s in sources]
    kwargs = dict(nms=config, imgsz=imgsz, verify=not no_verify, verify_conf=conf, device=device,
                  images=_image_files(images) if images else None, allow_random=allow_random,
                  dynamic_hw=dynamic_shape, force=force, allow_empty=allow_empty)
    if len(sources) == 1 and not models:
        results = export_detector(sources[0], formats, out=out_dir, **kwargs)
    else:
        results = export_models(sources, formats, out=out_dir, **kwargs)
    _print_exports(results, as_json, wide)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _image_files(folder: Path) -> list[Path]:
    from modelport.families.yolo import image_files

    return image_files(folder)


def export_table(results, *, wide: bool = False) -> Table:
    """Detector exports: format, status, boxes, min IoU and file name fit 80 columns (with several models, the
    model in place of min IoU and the file name); the track goes in the title when all share it (one command
    exports one track). ``wide`` adds the model, track, max score diff, seconds and the full path."""
    several = len({r.model for r in results}) > 1
    tracks = list(dict.fromkeys(r.track for r in results))
    columns = (left("model", "always" if several else "wide"), left("format"),
               left("track", "always" if len(tracks) > 1 else "wide"), left("status"), Col("boxes"),
               Col("min IoU", "wide" if several else "always"), Col("max score diff", "wide"), Col("s", "wide"),
               left("file", "narrow"), left("path", "wide"))
    title = "detector exports" + (f", {tracks[0]} track" if len(tracks) == 1 else "")
    rows = []
    for r in results:
        c = r.check
        status = "[green]ok[/]" if r.ok and c else "[yellow]unverified[/]" if r.ok else "[red]failed[/]"
        boxes = f"{c.detections}" + (f" ({c.ties} ties)" if c.ties else "") if c else "-"
        kept = r.path if r.ok and r.path else None  # a failed artifact is not kept; why is under the table
        rows.append([r.model, r.format, r.track, status, boxes, f"{c.min_iou:.4f}" if c else "-",
                     f"{c.max_score_diff:.1e}" if c else "-", f"{r.seconds:.1f}", Path(kept).name if kept else "-",
                     str(kept) if kept else "-"])
    if several:  # each file name starts with its model's name: the model column says it, the path is --wide's
        keep = [i for i, c in enumerate(columns) if c.header != "file"]
        columns, rows = tuple(columns[i] for i in keep), [[row[i] for i in keep] for row in rows]
    return fitted_table(columns, rows, wide=wide, title=title + " (verified against Ultralytics predict)")


def _print_exports(results, as_json: bool, wide: bool = False) -> None:
    if as_json:
        rows = [{"model": r.model, "format": r.format, "track": r.track, "path": str(r.path) if r.path else None,
                 "ok": r.ok, "seconds": r.seconds, "error": r.error, "note": r.note,
                 "check": r.check.to_dict() if r.check else None} for r in results]
        out.print_json(json.dumps(rows, default=str))
        return
    print_table(out, export_table(results, wide=wide), wide=wide)
    for line in notes((f"{r.model} {r.format} {r.track}", (r.note if r.ok else r.error) or "") for r in results):
        out.print(line, markup=False, highlight=False)
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
        from modelport.errors import ConfigError

        raise ConfigError(f"{', '.join(map(str, paths))}: {'no' if not pts else 'more than one'} Ultralytics .pt "
                          "among them", hint="give exactly one Ultralytics .pt as the reference, then its exports")
    _existing_checkpoint(pts[0])
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


def _existing_checkpoint(pt: Path) -> None:
    """The reference of verify and bench is the checkpoint itself: these commands build no random model."""
    if not pt.is_file():
        from modelport.errors import WeightsNotFoundError

        raise WeightsNotFoundError(f"{pt}: is a directory, not an Ultralytics checkpoint" if pt.is_dir() else
                                   f"{pt}: weights file not found (weights cannot be downloaded here)",
                                   hint=f"put the checkpoint at {pt.resolve()} ({pt.name} from the Ultralytics "
                                        "releases, or your own trained best.pt)")


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
    wide: bool = WIDE,
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Ultralytics' pipeline vs each track: preprocess / inference / NMS latency and images/s."""
    apply_trust(trust)
    from modelport.bench_record import check_record_target
    from modelport.detect.bench import run_detect_benchmark

    try:
        batches = [int(b) for b in batch.split(",")] if batch else None
    except ValueError:
        raise typer.BadParameter(f"{batch!r}: expected comma-separated integers, e.g. 1,8", param_hint="'--batch'") \
            from None
    _existing_checkpoint(weights)
    with err.status("benchmarking ...") as status:
        report = run_detect_benchmark(weights, batches=batches, imgsz=imgsz, conf=conf, seconds=seconds,
                                      max_batch=max_batch, tracks=tracks.split(",") if tracks else None,
                                      progress=lambda m: status.update(f"benchmarking: {m}"))
    check_record_target(json_path, report["model"])  # another model's record is never replaced
    atomic_write_text(json_path, json.dumps(report, indent=1), force=True)
    print_table(out, bench_table(report, wide=wide), wide=wide)
    for line in notes((f"{r['runtime']} b{r['batch']} {r['status']}", r["reason"]) for r in report["rows"]
                      if r["status"] != "ok"):
        out.print(line, markup=False, highlight=False)
    out.print(f"record: {json_path}")


BENCH_COLUMNS = (left("pipeline"), left("track", "wide"), Col("torch threads", "wide"), Col("batch"), left("status"),
                 Col("pre ms", "wide"), Col("infer ms", "wide"), Col("NMS ms", "wide"), Col("post ms", "wide"),
                 Col("p50 ms"), Col("img/s"), Col("x Ultralytics"), Col("GFLOP/s", "wide"))


def bench_table(report: dict, *, wide: bool = False) -> Table:
    """The detector record (``markdown_table``'s rows): pipeline, batch, status, p50, img/s and speed-up over the
    best Ultralytics pipeline fit 80 columns; ``wide`` adds the track, torch threads, the latency split and
    GFLOP/s."""
    m = report["machine"]
    title = (f"{report['model']['name']} at {report['model']['imgsz']} on {m['cpu']} ({m['physical_cores']} cores"
             f"{', ' + m['gpu'] if m.get('gpu') else ''}); x Ultralytics = img/s over its best pipeline's")
    rows = []
    for r in report["rows"]:
        status = "[green]ok[/]" if r["status"] == "ok" else f"[red]{r['status']}[/]"  # the reason: under the table
        timed = bool(r["throughput"])
        s = r["split_ms"] if timed else {}
        split = [f"{s[k]:.1f}" if timed else "-" for k in ("preprocess", "inference", "nms", "postprocess")]
        if timed and r["track"].startswith("e2e"):
            split[2] = "in graph"
        rows.append([breakable(r["runtime"]), r["track"], str(r.get("torch_threads") or "-"), str(r["batch"]), status,
                     *split, f"{r['latency_ms']['p50']:.1f}" if timed else "-",
                     f"{r['throughput']:.1f}" if timed else "-",
                     f"{r['x_ultralytics']:.2f}x" if timed and r.get("x_ultralytics") else "-",
                     f"{r['gflops_achieved']:.0f}" if timed else "-"])
    return fitted_table(BENCH_COLUMNS, rows, wide=wide, title=title)


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
