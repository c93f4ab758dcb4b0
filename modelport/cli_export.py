"""`modelport export`: every family through one command; each family's own options in their own help panel,
refused with a clear message where they do not apply (``modelport.families``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.bench_record import size_mb
from modelport.cli_options import (
    OWN_PANEL as OWN,
    REID_PANEL as REID,
    TRUST_CHECKPOINT,
    WIDE,
    YOLO_PANEL as YOLO,
    apply_trust,
    fmt_number as _fmt,
)
from modelport.cli_table import Col, fitted_table, left, mb, notes, print_table

out = Console()
err = Console(stderr=True)


def export_cmd(
    source: Optional[str] = typer.Argument(None, help="Weights file (.pt/.pth), a zoo name with --allow-random, a "
                                           "YOLO11 .pt or name, a MobileCLIP name; none with --factory/--config."),
    formats: Optional[str] = typer.Option(None, "--format", "--formats", "-f",
                                          help="Comma-separated formats; default: all usable here."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder; default: next to the weights."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 17, or the config's)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip verification against PyTorch / Ultralytics."),
    allow_random: bool = typer.Option(False, "--allow-random", help="Allow an untrained model."),
    force: bool = typer.Option(False, "--force", help="Replace files at the destination that are not modelport "
                               "exports."),
    family: Optional[str] = typer.Option(None, "--family", help="reid, yolo, clip or factory (default: the one "
                                         "that claims the source)."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    wide: bool = WIDE,
    trust: bool = TRUST_CHECKPOINT,
    # ReID
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture, when the file name does not say.",
                                       rich_help_panel=REID),
    batch: Optional[int] = typer.Option(None, "--batch", help="Fixed batch size (default: dynamic batch).",
                                        rich_help_panel=REID),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch dimension (the default).",
                                 rich_help_panel=REID),
    simplify: bool = typer.Option(False, "--simplify", help="Simplify the ONNX graph with onnxslim.",
                                  rich_help_panel=REID),
    half: bool = typer.Option(False, "--half", help="FP16 variants (x.fp16.onnx, x_fp16_openvino_model/).",
                              rich_help_panel=REID),
    int8: bool = typer.Option(False, "--int8", help="INT8 variants, statically quantised (x.int8.onnx, ...).",
                              rich_help_panel=REID),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of crops like the deployment's to calibrate "
                                         "--int8 with (default: synthetic crops, with a warning).",
                                         rich_help_panel=REID),
    int8_method: Optional[str] = typer.Option(None, "--int8-method", help="How --int8 reads activation ranges: "
                                              "minmax (default), percentile or entropy.", rich_help_panel=REID),
    int8_percentile: Optional[float] = typer.Option(None, "--int8-percentile", help="Percentile kept by "
                                                    "--int8-method percentile (default 99.999).",
                                                    rich_help_panel=REID),
    int8_search: Optional[bool] = typer.Option(None, "--int8-search/--no-int8-search", help="When full INT8 misses "
                                               "the accuracy target, keep the most sensitive nodes in fp32 until "
                                               "it holds (default on).", rich_help_panel=REID),
    int8_max_fp32: Optional[float] = typer.Option(None, "--int8-max-fp32", help="Largest share of the quantised "
                                                  "nodes the search may keep in fp32 (default 0.5).",
                                                  rich_help_panel=REID),
    int8_target: Optional[str] = typer.Option(None, "--int8-target", help="The accuracy INT8 must reach on the "
                                              "held-out crops, over the default (min_cosine=0.99, centered_cosine="
                                              "0.98, nn_agreement=0.99): e.g. median_cosine=0.99,min_cosine=0.97; "
                                              "=none drops a criterion.", rich_help_panel=REID),
    uint8_input: bool = typer.Option(False, "--uint8-input", help="Take uint8 HxWx3 RGB pixels, cast and mean/std "
                                     "inside the graph (x.uint8in.onnx, ...): less host CPU per image. ReID and "
                                     "YOLO (pixels letterboxed on the client, /255 and transpose in the graph).",
                                     rich_help_panel=REID),
    # Detectors
    nms: bool = typer.Option(False, "--nms", help="End-to-end track: NMS inside the graph.", rich_help_panel=YOLO),
    nms_flavor: str = typer.Option("portable", "--nms-flavor", help="portable (ONNX NonMaxSuppression) or tensorrt "
                                   "(EfficientNMS_TRT).", rich_help_panel=YOLO),
    nms_layout: str = typer.Option("efficientnms", "--nms-layout", help="efficientnms (num_dets, det_boxes, "
                                   "det_scores, det_classes) or ultralytics (one [B,k,6] output0, as Ultralytics' "
                                   "nms=True export: YOLO(path) runs it).", rich_help_panel=YOLO),
    topk: Optional[int] = typer.Option(None, "--topk", help="Detections kept per image (default 300).",
                                       rich_help_panel=YOLO),
    iou: Optional[float] = typer.Option(None, "--iou", help="NMS IoU threshold (default 0.7).", rich_help_panel=YOLO),
    conf: Optional[float] = typer.Option(None, "--conf", help="Confidence threshold (NMS in the graph; verification "
                                         "of raw tracks; default 0.25).", rich_help_panel=YOLO),
    normalize_boxes: bool = typer.Option(False, "--normalize-boxes", help="Boxes in [0,1] of the model input.",
                                         rich_help_panel=YOLO),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Square input size (default 640).",
                                        rich_help_panel=YOLO),
    dynamic_shape: bool = typer.Option(False, "--dynamic-shape", help="Any input height and width up to --imgsz, "
                                       "letterboxed as Ultralytics' predict does (onnx, openvino, tensorrt).",
                                       rich_help_panel=YOLO),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of images to verify on (default: synthetic "
                                          "scenes).", rich_help_panel=YOLO),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Pass verification (with a warning) when the "
                                     "reference finds no box.", rich_help_panel=YOLO),
    model: Optional[List[str]] = typer.Option(None, "--model", help="path.pt[:name[:max_batch]]: several detectors "
                                              "in one run (repeatable).", rich_help_panel=YOLO),
    models: Optional[Path] = typer.Option(None, "--models", help="YAML list of detectors: pt_file, name, max_batch, "
                                          "topk, names.", rich_help_panel=YOLO),
    # MobileCLIP and factory models
    weights: Optional[Path] = typer.Option(None, "--weights", help="The checkpoint: open_clip's for a MobileCLIP "
                                           "name, yours for --factory (read with weights_only=True).",
                                           rich_help_panel=OWN),
    factory: Optional[str] = typer.Option(None, "--factory", help="mypkg.models:build — your function that returns "
                                          "the nn.Module. It is your code and runs as such.", rich_help_panel=OWN),
    config: Optional[Path] = typer.Option(None, "--config", help="Export YAML: factory args, inputs (names, shapes, "
                                          "dtypes), dynamic axes, opset, formats, precision, TensorRT settings.",
                                          rich_help_panel=OWN),
    trt_builder: Optional[str] = typer.Option(None, "--trt-builder", help="python (TensorRT's API) or trtexec.",
                                              rich_help_panel=OWN),
) -> None:
    """Export any model to ONNX / TorchScript / OpenVINO / TensorRT, verifying each artifact before it is kept."""
    apply_trust(trust)
    from modelport.api import export_rows, format_names
    from modelport.families import ExportRequest

    if dynamic and batch is not None:
        raise typer.BadParameter("--batch and --dynamic exclude each other")
    if half and int8:
        raise typer.BadParameter("--half and --int8 exclude each other")
    if calib is not None and not int8:
        raise typer.BadParameter("--calib is only used with --int8")
    int8_settings = _int8_settings(int8, int8_method, int8_percentile, int8_search, int8_max_fp32, int8_target)
    if factory is not None:
        err.print(f"note: --factory {factory} imports and runs your own code (trusted); the weights are read with "
                  "weights_only=True", highlight=False)
    request = ExportRequest(
        formats=format_names(formats), out=out_dir, opset=opset, device=device, verify=not no_verify, force=force,
        allow_random=allow_random, arch=arch, batch=batch, simplify=simplify,
        precision="fp16" if half else "int8" if int8 else "fp32", calib=calib, int8=int8_settings,
        uint8_input=uint8_input, nms=nms, nms_flavor=nms_flavor, nms_layout=nms_layout, topk=topk, iou=iou, conf=conf,
        normalize_boxes=normalize_boxes, imgsz=imgsz, dynamic_shape=dynamic_shape, images=images,
        allow_empty=allow_empty, weights=weights, factory=factory, config=config, trt_builder=trt_builder)
    if model or models:  # several detectors in one run: the yolo family's
        return _export_detectors(source, model, models, request, family, as_json, wide)
    rows = export_rows(source, request, family)
    render(rows, as_json, wide)
    if formats is None:
        _say_left_out(rows, device)
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


def _export_detectors(source: Optional[str], model: Optional[List[str]], models: Optional[Path], request,
                      family: Optional[str], as_json: bool, wide: bool) -> None:
    """``--model``/``--models``: the detectors' own export of several models (``modelport detect export``)."""
    from modelport.detect.cli import export_cmd as export_detectors
    from modelport.detect.model import CONF, IMGSZ, IOU
    from modelport.families import family_for, get_family

    yolo = get_family("yolo")
    named = family_for(source, request, family) if source is not None or family is not None else yolo
    named.refuse_flags({"--model": model, "--models": models}, "yolo")
    yolo.refuse_foreign(request)
    if request.opset is not None or request.uint8_input:
        from modelport.errors import ConfigError

        raise ConfigError("--opset and --uint8-input apply to one model at a time, not to --model/--models",
                          hint="export that model by itself: modelport export MODEL.pt --uint8-input")
    export_detectors([source] if source else None, model=model, models=models,
                     formats=",".join(request.formats) if request.formats else None, nms=request.nms,
                     flavor=request.nms_flavor, layout=request.nms_layout, topk=request.topk,
                     iou=IOU if request.iou is None else request.iou,
                     conf=CONF if request.conf is None else request.conf, normalize=request.normalize_boxes,
                     imgsz=request.imgsz or IMGSZ, dynamic_shape=request.dynamic_shape, out_dir=request.out,
                     images=request.images, no_verify=not request.verify, device=request.device,
                     allow_random=request.allow_random, as_json=as_json, force=request.force,
                     allow_empty=request.allow_empty, wide=wide, trust=False)


def _say_left_out(rows: list, device: str) -> None:
    """The formats that "all usable here" left out, and why: the default list never shrinks silently."""
    from modelport.formats import EXPORTABLE

    made = {str(r.format) for r in rows}
    left_out = [f"{f.id} ({reason})" for f in EXPORTABLE if not any(m.startswith(f.id) for m in made)
                and (reason := f.unavailable_reason(device))]
    if left_out:
        err.print(f"note: not exported on {device} here: {'; '.join(left_out)}", highlight=False, markup=False,
                  soft_wrap=True)


def _int8_settings(int8: bool, method: Optional[str], percentile: Optional[float], search: Optional[bool],
                   max_fp32: Optional[float], target: Optional[str] = None):
    """The Int8Settings the --int8-* flags ask for (None when none is given: the library's defaults)."""
    given = {"method": method, "percentile": percentile, "accuracy_control": search, "max_fp32_share": max_fp32,
             "tolerance": target}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    if not int8:
        raise typer.BadParameter("--int8-method, --int8-percentile, --int8-search, --int8-max-fp32 and "
                                 "--int8-target are only used with --int8")
    from modelport.errors import CalibrationError
    from modelport.int8.settings import Int8Settings, parse_target
    from modelport.verify import INT8

    try:
        if target is not None:
            given["tolerance"] = parse_target(target, INT8)
        return Int8Settings(**given)
    except CalibrationError as exc:
        raise typer.BadParameter(f"{exc.message}{'; ' + exc.hint if exc.hint else ''}") from None


def render(rows: list, as_json: bool, wide: bool = False) -> None:
    """Each family's own table (its verification says different things); JSON rows are the same for all."""
    family = rows[0].family if rows else "reid"
    if family == "yolo":
        from modelport.detect.cli import _print_exports as detector_table

        detector_table([r.detail for r in rows], as_json, wide)
    elif family == "clip":
        from modelport.clip.cli import print_report

        print_report(rows[0].detail, as_json, out, wide)
    elif as_json:
        out.print_json(json.dumps([{**r.to_dict(), "format": r.format} for r in rows]))
    else:
        _print_exports(rows, wide)


EXPORT_COLUMNS = (left("format"), left("status"), Col("max abs"), Col("min cos", "wide"), Col("MB"),
                  Col("s", "wide"), left("file", "narrow"), left("path", "wide"))


def export_table(rows: list, *, wide: bool = False) -> Table:
    """ExportRows as a table: format, status, max abs diff, size and file name fit 80 columns; ``wide`` adds
    min cosine, seconds and the full path. Problems and notes go under the table (``export_notes``)."""
    # A row kept without a path is a format this machine cannot build, listed by a factory model's YAML.
    status = {True: "[green]ok[/]", None: "[yellow]unavailable[/]", False: "[red]failed[/]"}
    cells = [[r.format, status[r.ok and (True if r.path else None)], _fmt(r.max_abs) if r.max_abs is not None
              else "-", _fmt(r.min_cosine, ".6f") if r.min_cosine is not None else "-",
              mb(size_mb(r.path)) if r.ok else "-", f"{r.seconds:.1f}", r.path.name if r.ok and r.path else "-",
              str(r.path) if r.ok and r.path else "-"] for r in rows]
    return fitted_table(EXPORT_COLUMNS, cells, wide=wide, title="exports")


def export_notes(rows: list) -> list[str]:
    """Why an export failed, and any note on one that was kept (too long for a cell)."""
    return notes((r.format, (r.note if r.ok else r.error) or "") for r in rows)


def _print_exports(rows: list, wide: bool = False) -> None:
    print_table(out, export_table(rows, wide=wide), wide=wide)
    for line in export_notes(rows):
        out.print(line, markup=False, highlight=False)


def print_export_results(results: list) -> None:
    """The exports table for the pipeline's own ExportResults (``modelport.export.export_all``)."""
    from modelport.families.reid import rows_of

    _print_exports(rows_of(results, "reid", ""))
