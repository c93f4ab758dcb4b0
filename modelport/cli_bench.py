"""`modelport bench`: every runtime of a model side by side; the family that claims the source says how it is
timed (a detector image in to boxes out, a MobileCLIP both encoders), and refuses other families' options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.atomic import atomic_write_text
from modelport.cli_options import OWN_PANEL, TRUST_CHECKPOINT, WIDE, YOLO_PANEL, apply_trust
from modelport.cli_table import Col, breakable, fitted_table, left, mb, notes, print_table

out = Console()
err = Console(stderr=True)


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"batch sizes must be positive integers, got {text!r}")
    return values


def bench_cmd(
    source: Optional[str] = typer.Argument(None, help="Weights file, or a zoo name with --allow-random; a MobileCLIP "
                                           "name, open_clip checkpoint or encoder artifact benchmarks both encoders; "
                                           "none with --factory/--config."),
    formats: Optional[str] = typer.Option(None, "--formats", "--format",
                                          help="Comma-separated formats (default: all)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Comma-separated batch sizes (default 1,16,64; "
                                        "MobileCLIP 1,16; --factory 1,4; a default that would not fit in "
                                        "memory is left out)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads per runtime (default: physical cores)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Timed seconds per batch size, shared by all "
                                            "runtimes (default 3; detectors 20)."),
    half: bool = typer.Option(False, "--half", help="Also measure FP16 variants (ONNX, OpenVINO)."),
    int8: bool = typer.Option(False, "--int8", help="Also measure INT8 variants (ONNX, OpenVINO)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of crops for INT8 calibration."),
    baseline: bool = typer.Option(False, "--baseline", help="Add an untuned opset-12 ONNX Runtime baseline."),
    export_here: bool = typer.Option(False, "--export-here", help="Export next to the weights, not into the cache."),
    json_path: Path = typer.Option(Path("benchmark.json"), "--json", help="Where to write the JSON record."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a throughput plot (PNG)."),
    allow_random: bool = typer.Option(False, "--allow-random"),
    arch: Optional[str] = typer.Option(None, "--arch"),
    clip_weights: Optional[Path] = typer.Option(None, "--weights", help="The checkpoint: open_clip's for a MobileCLIP "
                                                "name, yours for --factory.", rich_help_panel=OWN_PANEL),
    factory: Optional[str] = typer.Option(None, "--factory", help="mypkg.models:build (your code; runs as such).",
                                          rich_help_panel=OWN_PANEL),
    config: Optional[Path] = typer.Option(None, "--config", help="The factory model's export YAML.",
                                          rich_help_panel=OWN_PANEL),
    size: str = typer.Option("1280x720", "--size", help="WxH an image-to-image factory model is timed at, where its "
                             "input's height and width are dynamic.", rich_help_panel=OWN_PANEL),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Override the model's maximum batch.",
                                            rich_help_panel=YOLO_PANEL),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Square input size (default 640).",
                                        rich_help_panel=YOLO_PANEL),
    conf: Optional[float] = typer.Option(None, "--conf", help="Confidence threshold (default 0.25).",
                                         rich_help_panel=YOLO_PANEL),
    tracks: Optional[str] = typer.Option(None, "--tracks", help="Comma-separated, e.g. onnx-e2e,onnx-raw (default: "
                                         "every track).", rich_help_panel=YOLO_PANEL),
    wide: bool = WIDE,
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Measure every runtime side by side: latency, throughput, parity, size, export and load time."""
    apply_trust(trust)
    from modelport.formats.remote import is_endpoint

    if source is not None and is_endpoint(source):  # a served model, timed from this client (needs no torch)
        from modelport.triton.cli import bench_remote

        bench_remote(source, batches=_csv_ints(batch or "1,16,64"), seconds=3.0 if seconds is None else seconds,
                     json_path=json_path, wide=wide,
                     unsupported={"--formats": formats, "--device": device != "cpu", "--threads": threads,
                                  "--half": half, "--int8": int8, "--calib": calib, "--baseline": baseline,
                                  "--export-here": export_here, "--plot": plot, "--allow-random": allow_random,
                                  "--arch": arch, "--weights": clip_weights, "--factory": factory, "--config": config,
                                  "--max-batch": max_batch, "--imgsz": imgsz, "--conf": conf, "--tracks": tracks})
        return
    from modelport.bench import run_benchmark, write_plot
    from modelport.bench_record import check_record_target
    from modelport.families import BenchRequest, family_for
    from modelport.families.factory import BENCH_BATCHES as FACTORY_BATCHES

    if source is None and factory is None and config is None:
        raise typer.BadParameter("give a weights file or zoo name, or --factory/--config for your own model")
    detector = {"--max-batch": max_batch, "--imgsz": imgsz, "--conf": conf, "--tracks": tracks}
    family, built = family_for(source, BenchRequest(arch=arch, factory=factory, config=config)), None
    if family.name == "factory":
        family.refuse_flags(detector, "yolo")
        built = _factory_for_bench(factory, config, clip_weights, size)
        source = built.spec.source.file
    assert source is not None
    if family.name == "yolo":  # image in, boxes out: Ultralytics' pipeline vs each track
        from modelport.detect.cli import bench_cmd as bench_detector

        family.refuse_flags({"--formats": formats, "--device": device if device != "cpu" else None, "--threads":
                             threads, "--half": half, "--int8": int8, "--calib": calib, "--baseline": baseline,
                             "--export-here": export_here, "--plot": plot, "--allow-random": allow_random,
                             "--arch": arch, "--weights": clip_weights})
        return bench_detector(Path(source), batch=batch, max_batch=max_batch, imgsz=imgsz or 640,
                              conf=0.25 if conf is None else conf, seconds=20.0 if seconds is None else seconds,
                              tracks=tracks, json_path=json_path, wide=wide, trust=False)
    family.refuse_flags(detector, "yolo")
    seconds = 3.0 if seconds is None else seconds
    if family.name == "clip":  # two encoders, fp32 only: see modelport.clip.bench
        from modelport.clip.cli import bench_command

        bench_command(source, weights=clip_weights, arch=arch, formats=formats, batches=_csv_ints(batch) if batch
                      else None, device=device, threads=threads, seconds=seconds, export_here=export_here,
                      json_path=json_path, plot=plot, allow_random=allow_random, console=out, status=err, wide=wide,
                      unsupported={"--half": half, "--int8": int8, "--calib": calib, "--baseline": baseline})
        return
    batches = _csv_ints(batch) if batch else None  # None: the defaults, lowered where memory is short
    if built is not None:  # known before the run: refuse before spending it
        check_record_target(json_path, {"name": built.spec.name, "source": {"sha256": built.spec.source.sha256}})
    with err.status("benchmarking ...") as status:
        report = run_benchmark(
            source, formats=formats.split(",") if formats else None, batches=batches, device=device,
            threads=threads, seconds=seconds, half=half, int8=int8, calib=calib, baseline=baseline,
            export_dir=Path(source).parent if export_here else None, allow_random=allow_random, arch=arch,
            progress=lambda msg: status.update(f"benchmarking: {msg}"), built=built, family=family.name,
            default_batches=FACTORY_BATCHES if family.name == "factory" else (1, 16, 64),
        )
    check_record_target(json_path, report["model"])  # another model's record is never replaced
    atomic_write_text(json_path, json.dumps(report, indent=1), force=True)  # this run's record: replaced whole
    print_bench(report, wide)
    out.print(f"record: {json_path}")
    if plot:
        out.print(f"plot: {write_plot(report, plot)}")


def _factory_for_bench(factory: Optional[str], config: Optional[Path], weights: Optional[Path], size: str):
    from modelport.families import BenchRequest
    from modelport.families.factory_export import built_for_bench

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"--size {size!r}: write it as WIDTHxHEIGHT, e.g. 1280x720") from None
    err.print(f"note: --factory {factory or '(from the config)'} imports and runs your own code (trusted)",
              highlight=False)
    return built_for_bench(BenchRequest(factory=factory, config=config, weights=weights, size=(width, height)))


BENCH_COLUMNS = (left("runtime"), Col("batch"), left("status"), Col("p50 ms"), Col("p90 ms", "wide"),
                 Col("p99 ms", "wide"), Col("img/s"), Col("x pytorch"), Col("GFLOP/s", "wide"),
                 Col("max abs", "wide"), Col("min cos", "wide"), Col("MB", "wide"), Col("export s", "wide"),
                 Col("load s", "wide"))


def bench_table(report: dict, *, wide: bool = False) -> Table:
    """The benchmark record as a table: runtime, batch, status, p50, img/s and speed-up over PyTorch fit 80
    columns; ``wide`` adds the tail latencies, parity, size and export/load times."""
    machine = report["machine"]
    title = (f"{report['model']['name']} on {machine['cpu']} ({machine['physical_cores']} cores"
             f"{', ' + machine['gpu'] if machine['gpu'] else ''}), peak {report['peak_gflops']:.0f} GFLOP/s")
    base = {r["batch"]: r["throughput"] for r in report["rows"] if r["runtime"] == "pytorch"}
    rows = []
    for r in report["rows"]:
        lat = r["latency_ms"] or {}
        par = r["parity"] or {}
        status = "[green]ok[/]" if r["status"] == "ok" else f"[red]{r['status']}[/]"  # the reason: under the table
        ratio = r["throughput"] / base[r["batch"]] if r["throughput"] and base.get(r["batch"]) else None
        cells = [lat.get("p50"), lat.get("p90"), lat.get("p99"), r["throughput"], ratio, r["gflops_achieved"]]
        shown = [f"{v:.1f}" if v is not None else "-" for v in cells]
        shown[4] = f"{ratio:.2f}x" if ratio else "-"
        rows.append([breakable(r["runtime"]), str(r["batch"]), status, *shown,
                     f"{par['max_abs_diff']:.1e}" if par else "-", f"{par['min_cosine']:.5f}" if par else "-",
                     mb(r["size_mb"]),
                     f"{r['export_s']:.1f}" if r["export_s"] is not None else "-",
                     f"{r['load_s']:.2f}" if r["load_s"] is not None else "-"])
    return fitted_table(BENCH_COLUMNS, rows, wide=wide, title=title)


def bench_notes(report: dict) -> list[str]:
    """Why each runtime that is not ok is not, once per runtime (a reason is too long for a cell)."""
    return notes((f"{r['runtime']} {r['status']}", r["reason"]) for r in report["rows"] if r["status"] != "ok")


def print_bench(report: dict, wide: bool = False) -> None:
    print_table(out, bench_table(report, wide=wide), wide=wide)
    for line in bench_notes(report):
        out.print(line, markup=False, highlight=False)
