"""The `modelport` command: each command is a thin call into the library, printed with rich."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
import typer.main
from rich.console import Console
from rich.table import Table

from modelport.cli_options import TRUST_CHECKPOINT, YOLO_PANEL, apply_trust
from modelport.errors import MissingRuntimeError, ModelportError

# A bare `modelport` (or `modelport triton`) is a usage error ("Missing command."), as on any other command line.
app = typer.Typer(add_completion=False, help="Export, verify and load vision models.")
out = Console()
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from modelport.version import __version__

        out.print(f"modelport {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    """Export, verify and load vision models."""


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
        raise WeightsNotFoundError(f"{artifact}: not found", hint="give an exported artifact or a weights file that "
                                   "exists (modelport downloads nothing)")
    from modelport.families import family_for

    own = family_for(str(artifact)).hook("read_spec") if fmt.is_weights else None
    spec = own(artifact) if own is not None else fmt.read_spec(artifact)  # a detector: through its allow-list
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
             image: Optional[Path] = typer.Option(None, "--image", help="Run a detector on this image (default: a "
                                                  "synthetic scene).", rich_help_panel=YOLO_PANEL),
             trust: bool = TRUST_CHECKPOINT) -> None:
    """Show which runtime the loader picks for PATH, and run it once."""
    apply_trust(trust)
    from modelport.families import family_for

    family = family_for(str(path))
    if family.name == "yolo":  # boxes, in the detectors' own priority order
        from modelport.detect.cli import load_cmd as load_detector

        family.refuse_flags({"--fastest": fastest})
        return load_detector(path, format=format, device=device, allow_random=allow_random, image=image, trust=False)
    family.refuse_flags({"--image": image}, "yolo")
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


from modelport.cli_bench import BENCH_COLUMNS, bench_cmd, bench_notes, bench_table  # noqa: E402

app.command("bench")(bench_cmd)
__all__ = ["BENCH_COLUMNS", "app", "bench_notes", "bench_table", "main"]


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

from modelport.detect.cli import detect_app  # noqa: E402

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


# The optional packages (by import name) and the extra that installs each: a command of the default install that
# reaches one says which extra to install instead of reporting a crash.
EXTRA_OF = {"fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "tritonclient": "serve", "pytriton": "serve",
            "ultralytics": "yolo", "open_clip": "clip", "tensorrt": "tensorrt", "ray": "ray"}


def _missing_extra(exc: BaseException) -> tuple[str, str] | None:
    """The package ``exc`` found missing and the extra that installs it, or None (an unexpected import failure
    is a bug)."""
    name = exc.name if isinstance(exc, ModuleNotFoundError) and exc.name else ""
    extra = EXTRA_OF.get(name.partition(".")[0])
    return (name, extra) if extra else None


def _check_device(ctx: typer.Context, param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
    """A --device value: cpu, cuda or cuda:N (or auto, where that is the option's default); a CUDA device only
    where torch can see one, since falling back to the CPU would time or verify something else than asked."""
    if value is None or value == "cpu" or (value == "auto" and param.default == "auto"):
        return value
    kind, colon, index = value.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        auto = ", auto" if param.default == "auto" else ""
        raise typer.BadParameter(f"{value!r} is not a device: give cpu, cuda or cuda:N{auto}")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise MissingRuntimeError(f"--device {value}: CUDA is unavailable on this machine (torch {torch.__version__} "
                                  "sees no CUDA device)", hint="use --device cpu (the default), or run on a machine "
                                  "with an NVIDIA GPU and a CUDA build of torch")
    if index and int(index) >= count:
        raise MissingRuntimeError(f"--device {value}: this machine has {count} CUDA device(s)",
                                  hint=f"give cuda or cuda:0 to cuda:{count - 1}")
    return value


def _chained(check, prior):
    return check if prior is None else (lambda ctx, param, value: prior(ctx, param, check(ctx, param, value)))


def _with_contract(command):
    """Hold every command of the tree to one contract, so that a command added later is held to it too: every
    --device is checked the same way, a bare group is a usage error like any other missing argument, and a
    flag's help shows no value type (typer 0.29's rich help prints ``<bool>`` after a flag, as if it took one)."""
    for param in [*command.params, command.get_help_option(typer.Context(command))]:
        if param is not None and "--device" in param.opts:
            param.callback = _chained(_check_device, param.callback)
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        sub.no_args_is_help = False
        _with_contract(sub)
    return command


def _show_usage_error(exc: typer.TyperException) -> int:
    """A usage error (an unknown command or option, a bad or missing value): the command's usage, then one
    error line; returns the exit code (2)."""
    ctx = getattr(exc, "ctx", None)  # the command the error was found in, where the parser knows it
    if ctx is not None:
        err.print(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.", highlight=False, markup=False,
                  soft_wrap=True)
    err.print(f"error: {_one_line(exc.format_message())}", highlight=False, markup=False, soft_wrap=True)
    return exc.exit_code


def main() -> None:
    """Run the CLI under its contract: a usage error prints the usage and one error line (exit 2); a typed
    error prints ``error:`` and ``hint:`` and exits with its code; a missing optional package names the extra
    that installs it (exit 2); anything else prints one line naming a log file with the traceback and exits
    with INTERNAL_ERROR_EXIT. No traceback reaches the terminal."""
    from modelport.errors import RandomWeightsWarning

    warnings.showwarning = _show_warning
    warnings.simplefilter("once", RandomWeightsWarning)
    try:
        command = _with_contract(typer.main.get_command(app))
        # Without standalone mode every error arrives here, to be printed as the contract says; a command's
        # exit code is returned instead of raised.
        code = command.main(args=sys.argv[1:], prog_name="modelport", standalone_mode=False)
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
    except typer.TyperException as exc:  # usage errors: typer >= 0.28's parser errors derive from it (pinned)
        sys.exit(_show_usage_error(exc))
    except Exception as exc:
        missing = _missing_extra(exc)
        if missing:
            package, extra = missing
            err.print(f"error: {package} is not installed, and this command needs it", highlight=False, markup=False)
            err.print(f"  hint: pip install 'modelport[{extra}]'", highlight=False, markup=False)
            sys.exit(2)
        log = _crash_log(exc)
        where = f"traceback written to {log}" if log else "the traceback could not be written"
        err.print(f"internal error: {type(exc).__name__}: {_one_line(exc)[:200]} ({where}); please report it",
                  highlight=False, soft_wrap=True, markup=False)
        sys.exit(INTERNAL_ERROR_EXIT)


if __name__ == "__main__":
    main()
