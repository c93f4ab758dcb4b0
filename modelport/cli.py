"""The `modelport` command: each command is a thin call into the library, printed with rich."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.atomic import atomic_write_text
from modelport.cli_options import TRUST_CHECKPOINT, WIDE, apply_trust
from modelport.cli_table import Col, breakable, fitted_table, left, notes, print_table
from modelport.errors import ModelportError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Export, verify and load vision models.")
out = Console()
err = Console(stderr=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[bold yellow]warning:[/] {message}", highlight=False)



@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the model zoo with feature dimensions and parameter counts."""
    from modelport.catalog import model_rows

    rows = model_rows()  # data: nothing is built or imported to list them
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="modelport zoo")
    for col in ("name", "family", "task", "feature dim", "input", "params"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["family"], r["task"], str(r["feature_dim"]),
                      "x".join(map(str, r["input"])), f"{r['params'] / 1e6:.2f} M" if r["params"] else "-")
    out.print(table)


from modelport.cli_export import export_cmd  # noqa: E402

app.command("export")(export_cmd)


@app.command("info")
def info_cmd(artifact: Path = typer.Argument(..., help="An exported artifact (or a weights file)."),
             as_json: bool = typer.Option(False, "--json"),
             trust: bool = TRUST_CHECKPOINT) -> None:
    """Print the model spec embedded in an artifact."""
    apply_trust(trust)
    from modelport.errors import WeightsNotFoundError
    from modelport.formats import format_of_path

    fmt = format_of_path(artifact)
    if not artifact.exists():
        raise WeightsNotFoundError(f"{artifact}: not found")
    from modelport.detect.safe_load import is_ultralytics_checkpoint

    if fmt.is_weights and is_ultralytics_checkpoint(artifact):  # a detector: read through the allow-list
        from modelport.detect.model import load_detector

        spec = load_detector(artifact).spec
    else:
        spec = fmt.read_spec(artifact)
    if as_json:
        out.print_json(spec.to_json())
        return
    table = Table(title=f"{artifact} ({fmt.name})", show_header=False)
    table.add_row("model", spec.name)
    table.add_row("task", spec.task)
    for t in spec.inputs:
        table.add_row("input", f"{t.name} {t.dtype} {list(t.shape)}")
    for t in spec.outputs:
        table.add_row("output", f"{t.name} {t.dtype} {list(t.shape)}")
    pre = spec.preprocess
    table.add_row("preprocess", f"{pre.resize} to {pre.height}x{pre.width} {pre.channel_order}, "
                                f"x{pre.scale:.6g}, mean {pre.mean}, std {pre.std}")
    src = spec.source
    label = "[bold red]RANDOM (untrained)[/]" if spec.is_random else "weights"
    table.add_row("source", f"{label} {src.file or ''} sha256={src.sha256 or '-'}")
    table.add_row("precision", spec.precision)
    table.add_row("modelport", spec.modelport_version)
    out.print(table)


@app.command("load")
def load_cmd(path: Path = typer.Argument(..., help="Weights file or artifact."),
             format: Optional[str] = typer.Option(None, "--format", help="Force one format."),
             device: str = typer.Option("cpu", "--device"),
             fastest: bool = typer.Option(False, "--fastest", help="Pick what this machine's benchmark measured "
                                          "fastest."),
             allow_random: bool = typer.Option(False, "--allow-random"),
             trust: bool = TRUST_CHECKPOINT) -> None:
    """Show which runtime the loader picks for PATH, and run it once."""
    apply_trust(trust)
    from modelport import load
    from modelport.samples import person_crops

    runner = load(path, format=format, device=device, allow_random=allow_random,
                  prefer="fastest" if fastest else "priority")
    if runner.spec.task == "embed_text":  # a CLIP text encoder: run it on captions
        from modelport.tasks.embed_text import example_captions

        emb = runner.embed_text(example_captions(2))
    else:
        emb = runner.embed(person_crops(2, runner.spec.preprocess.height, runner.spec.preprocess.width))
    out.print(f"model_type={runner.model_type} path={runner.path} batch={runner.max_batch or 'dynamic'} "
              f"embedding={emb.shape[1]}-d")


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"batch sizes must be positive integers, got {text!r}")
    return values


@app.command("bench")
def bench_cmd(
    source: Optional[str] = typer.Argument(None, help="Weights file, or a zoo name with --allow-random; a MobileCLIP "
                                           "name, open_clip checkpoint or encoder artifact benchmarks both encoders; "
                                           "none with --factory/--config."),
    formats: Optional[str] = typer.Option(None, "--formats", "--format",
                                          help="Comma-separated formats (default: all)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Comma-separated batch sizes (default 1,16,64; "
                                        "MobileCLIP 1,16)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads per runtime (default: physical cores)."),
    seconds: float = typer.Option(3.0, "--seconds", help="Timed seconds per batch size, shared by all runtimes."),
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
                                                "name, yours for --factory."),
    factory: Optional[str] = typer.Option(None, "--factory", help="mypkg.models:build (your code; runs as such)."),
    config: Optional[Path] = typer.Option(None, "--config", help="The factory model's export YAML."),
    size: str = typer.Option("1280x720", "--size", help="WxH an image-to-image factory model is timed at, where its "
                             "input's height and width are dynamic."),
    wide: bool = WIDE,
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Measure every runtime side by side: latency, throughput, parity, size, export and load time."""
    apply_trust(trust)
    from modelport.formats.remote import is_endpoint

    if source is not None and is_endpoint(source):  # a served model, timed from this client (needs no torch)
        from modelport.triton.cli import bench_remote

        bench_remote(source, batches=_csv_ints(batch or "1,16,64"), seconds=seconds, json_path=json_path,
                     unsupported={"--formats": formats, "--device": device != "cpu", "--threads": threads,
                                  "--half": half, "--int8": int8, "--calib": calib, "--baseline": baseline,
                                  "--export-here": export_here, "--plot": plot, "--allow-random": allow_random,
                                  "--arch": arch, "--weights": clip_weights, "--factory": factory, "--config": config})
        return
    from modelport.bench import run_benchmark, write_plot
    from modelport.clip.bench import is_clip_source

    built = None
    if factory is not None or config is not None:
        built = _factory_for_bench(factory, config, clip_weights, size)
        source = built.spec.source.file
        batch = batch or "1,4"
    if source is None:
        raise typer.BadParameter("give a weights file or zoo name, or --factory/--config for your own model")

    if is_clip_source(source, arch):  # two encoders, fp32 only: see modelport.clip.bench
        from modelport.clip.cli import bench_command

        bench_command(source, weights=clip_weights, arch=arch, formats=formats, batches=_csv_ints(batch) if batch
                      else None, device=device, threads=threads, seconds=seconds, export_here=export_here,
                      json_path=json_path, plot=plot, allow_random=allow_random, console=out, status=err, wide=wide,
                      unsupported={"--half": half, "--int8": int8, "--calib": calib, "--baseline": baseline})
        return
    batches = _csv_ints(batch or "1,16,64")
    with err.status("benchmarking ...") as status:
        report = run_benchmark(
            source, formats=formats.split(",") if formats else None, batches=batches, device=device,
            threads=threads, seconds=seconds, half=half, int8=int8, calib=calib, baseline=baseline,
            export_dir=Path(source).parent if export_here else None, allow_random=allow_random, arch=arch,
            progress=lambda msg: status.update(f"benchmarking: {msg}"), built=built,
            family="factory" if built is not None else "reid",
        )
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
                     f"{r['size_mb']:.1f}" if r["size_mb"] else "-",
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


@app.command("package")
def package_cmd(
    source: Path = typer.Argument(..., help="Weights file (packages its fastest verified export) or an artifact."),
    out_path: Path = typer.Option(..., "--out", help="The .tar.gz to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing package."),
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Bundle an artifact with its benchmark, a sample input and expected output, and its spec."""
    apply_trust(trust)
    from modelport.package import package

    path = package(source, out_path, force=force)
    out.print(f"package: {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command("demo")
def demo_cmd(workdir: Path = typer.Option(Path("modelport_demo"), "--workdir", help="Where to write everything."),
             arch: str = typer.Option("osnet_x0_25", "--arch")) -> None:
    """Build an untrained OSNet, export every available format, verify, and load the best one."""
    from modelport.demo import run_demo

    if not run_demo(workdir, arch, out, err):
        raise typer.Exit(1)


from modelport.cli_verify import verify_cmd  # noqa: E402

app.command("verify")(verify_cmd)

from modelport.triton.cli import serve_cmd, triton_app  # noqa: E402

app.add_typer(triton_app, name="triton")
app.command("serve")(serve_cmd)

from modelport.detect.cli import detect_app, route as route_detection  # noqa: E402

app.add_typer(detect_app, name="detect")

from modelport.search.cli import search_app  # noqa: E402

app.add_typer(search_app, name="search")

from modelport.reid.cli import reid_app  # noqa: E402

app.add_typer(reid_app, name="reid")

from modelport.ui.cli import ui_cmd  # noqa: E402

app.command("ui")(ui_cmd)


INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: a bug in modelport, not a problem with the user's input


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected exception to a log file and return its path."""
    import os
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("MODELPORT_LOG_DIR") or Path(tempfile.gettempdir()) / "modelport-logs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        path.write_text(f"modelport {' '.join(sys.argv[1:])}\n\n"
                        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return path
    except OSError:
        return None


def _click_errors() -> tuple[type, ...]:
    """Usage errors: click's own, and typer's vendored copy of click's (typer >= 0.20 raises those)."""
    import click

    vendored = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return click.ClickException, vendored


def main() -> None:
    """Run the CLI: typed errors print one line (and a hint) and exit with their code; anything unexpected
    prints one line naming a log file with the traceback and exits with INTERNAL_ERROR_EXIT."""
    from modelport.errors import RandomWeightsWarning

    warnings.showwarning = _show_warning
    warnings.simplefilter("once", RandomWeightsWarning)
    try:
        # Without standalone mode click returns a command's exit code instead of exiting.
        # export/verify/bench/load of a YOLO detector go to `modelport detect ...`.
        code = app(args=route_detection(sys.argv[1:]), standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except ModelportError as exc:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(_one_line(exc.message))}", highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"  [dim]hint:[/] {escape(_one_line(exc.hint))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        if isinstance(exc, _click_errors()):
            exc.show()
            sys.exit(exc.exit_code)
        log = _crash_log(exc)
        where = f"traceback written to {log}" if log else "the traceback could not be written"
        err.print(f"internal error: {type(exc).__name__}: {_one_line(exc)[:200]} ({where}); please report it",
                  highlight=False, soft_wrap=True, markup=False)
        sys.exit(INTERNAL_ERROR_EXIT)


if __name__ == "__main__":
    main()
