"""``modelport triton build|status|clean|validate`` and ``modelport serve``; thin calls into the library."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.cli_table import Col, fitted_table, print_table

if TYPE_CHECKING:
    from modelport.triton.repo import CleanResult

triton_app = typer.Typer(help="Triton model repositories: build, status, validate, clean.")
out = Console()


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@triton_app.command("build")
def build_cmd(
    sources: List[str] = typer.Argument(None, help="Weights files, exports, or zoo names (with --allow-random)."),
    repo: Path = typer.Option(..., "--repo", help="The model repository folder."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML listing several models (models: [...])."),
    format: Optional[str] = typer.Option(None, "--format", "-f",
                                         help="onnx | openvino | torchscript | tensorrt (default: an export's own "
                                              "format; from weights the --backend's own, else onnx)."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (one source only); default: file stem."),
    version: Optional[int] = typer.Option(None, "--version", help="Version number; default: the next one."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Fixed batch export (max_batch_size becomes 0)."),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="For a dynamic batch dimension."),
    preferred: str = typer.Option("4,8", "--preferred", help="Preferred batch sizes for dynamic batching."),
    delay_us: int = typer.Option(2000, "--max-queue-delay-us", help="Dynamic batching queue delay."),
    no_batching: bool = typer.Option(False, "--no-dynamic-batching", help="Leave dynamic batching off."),
    instances: int = typer.Option(1, "--instances", help="Instance count."),
    kind: str = typer.Option("auto", "--kind", help="cpu | gpu | auto (gpu for TensorRT)."),
    version_policy: str = typer.Option("latest:1", "--version-policy", help="latest:N | all | specific:1,2"),
    backend: str = typer.Option("native", "--backend", help="native: Triton's backend for the format (the "
                                "Triton container); or one by name: onnxruntime (ONNX), openvino (OpenVINO IR or "
                                "ONNX), pytorch (TorchScript), tensorrt; python: modelport's model.py runs the "
                                "artifact in Triton's Python backend (the pip tritonserver)."),
    arch: Optional[str] = typer.Option(None, "--arch"),
    allow_random: bool = typer.Option(False, "--allow-random", help="Allow untrained models."),
    device: str = typer.Option("cpu", "--device", help="Where exports are made and verified."),
    force: bool = typer.Option(False, "--force", help="Replace an existing version folder."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write models into a Triton repository: REPO/{name}/{version}/model.* and golden/ (seeded inputs, reference
    outputs: `modelport verify REPO`), plus config.pbtxt."""
    from modelport.triton import ConfigOptions, ModelEntry, build_repository, read_models_yaml

    options = ConfigOptions(max_batch_size=max_batch_size, preferred_batch_sizes=_ints(preferred),
                            max_queue_delay_us=delay_us, dynamic_batching=not no_batching, instances=instances,
                            kind=kind, version_policy=version_policy, backend=backend)
    sources = sources or []
    if not sources and config is None:
        raise typer.BadParameter("give SOURCE files or --config models.yaml")
    if name and len(sources) != 1:
        raise typer.BadParameter("--name needs exactly one SOURCE")
    entries = [ModelEntry(s, name=name, format=format, version=version, batch=batch, arch=arch,
                          allow_random=allow_random, options=options) for s in sources]
    if config is not None:
        entries += read_models_yaml(config, options)
    built = build_repository(entries, repo, force=force, device=device)
    if as_json:
        out.print_json(json.dumps([{k: str(v) if isinstance(v, Path) else v for k, v in asdict(b).items()}
                                   for b in built]))
        return
    table = Table(title=f"model repository {repo}")
    for col in ("model", "version", "format", "folder", "config", "golden outputs"):
        table.add_column(col)
    for b in built:
        note = f" (previous saved as {b.backup.name})" if b.backup else ""
        golden = "PyTorch's" if b.golden == "pytorch" else "the artifact's own"
        table.add_row(b.name, str(b.version), b.format, str(b.path), f"{b.config}{note}", golden)
    out.print(table)


def _repository(repo: Path) -> None:
    """``repo`` must be a model repository (a folder of MODEL/config.pbtxt): serving, checking or cleaning any
    other folder would start an empty server, report nothing, or touch files modelport did not write."""
    from modelport.errors import CorruptFileError, WeightsNotFoundError
    from modelport.triton.golden import is_repository

    if not repo.is_dir():
        raise WeightsNotFoundError(f"{repo}: model repository not found",
                                   hint="build one with `modelport triton build MODEL --repo FOLDER`")
    if not is_repository(repo):
        raise CorruptFileError(f"{repo}: not a Triton model repository (no MODEL/config.pbtxt in it)",
                               hint="give the folder `modelport triton build --repo` wrote")


@triton_app.command("status")
def status_cmd(repo: Path = typer.Argument(..., help="The model repository folder."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Models, versions, formats, sizes and config problems; exit 1 when any problem is found."""
    from modelport.triton import repository_status

    _repository(repo)

    rows = repository_status(repo)
    if as_json:
        out.print_json(json.dumps([{**asdict(r), "ok": r.ok} for r in rows]))
    else:
        table = Table(title=f"model repository {repo}")
        for col in ("model", "format", "max batch", "dyn. batching", "versions (served*)", "MB", "problems"):
            table.add_column(col)
        for r in rows:
            problems = r.problems + [f"v{v.version}: {p}" for v in r.versions for p in v.problems]
            shown = ", ".join(f"{v.version}{'*' if v.served else ''}" for v in r.versions) or "-"
            table.add_row(r.name, r.format or "?", str(r.max_batch_size) if r.max_batch_size is not None else "-",
                          "yes" if r.dynamic_batching else "no", shown,
                          f"{sum(v.size_bytes for v in r.versions) / 1e6:.1f}",
                          "[green]none[/]" if not problems else "[red]" + "; ".join(problems) + "[/]")
        out.print(table)
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


@triton_app.command("validate")
def validate_cmd(repo: Path = typer.Argument(..., help="The model repository folder."),
                 device: str = typer.Option("cpu", "--device"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Load every version with modelport's runners and run one request against its config."""
    from modelport.triton import validate_repository

    _repository(repo)

    results = validate_repository(repo, device)
    if as_json:
        out.print_json(json.dumps([asdict(r) for r in results]))
    else:
        table = Table(title=f"validate {repo}")
        for col in ("model", "version", "result", "outputs", "seconds"):
            table.add_column(col)
        for r in results:
            verdict = "[green]ok[/]" if r.ok else "[red]" + "; ".join(r.problems) + "[/]"
            shapes = ", ".join(f"{k} {v}" for k, v in r.outputs.items()) or "-"
            table.add_row(r.name, str(r.version or "-"), verdict, shapes, f"{r.seconds:.2f}")
        out.print(table)
    if not results or not all(r.ok for r in results):
        raise typer.Exit(1)


@triton_app.command("clean")
def clean_cmd(repo: Path = typer.Argument(..., help="The model repository folder."),
              model: Optional[List[str]] = typer.Option(None, "--model", help="Only these models (repeatable)."),
              backup: Optional[Path] = typer.Option(None, "--backup", help="Where configs are copied first."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed and what left "
                                                                    "alone; change nothing."),
              yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Remove the exports (version folders) after backing every config.pbtxt and labels.txt up.

    Only model folders holding a config.pbtxt are touched; symlinks and files modelport did not write are
    left alone and listed.
    """
    from modelport.triton import clean_repository

    _repository(repo)
    if not yes and not dry_run:
        plan = clean_repository(repo, model or None, backup, dry_run=True)
        _print_clean(plan)
        if not plan.removed:
            return
        typer.confirm(f"remove the {len(plan.removed)} paths above from {repo}?", abort=True)
    _print_clean(clean_repository(repo, model or None, backup, dry_run=dry_run))


def _print_clean(result: "CleanResult") -> None:
    would = "would be " if result.dry_run else ""
    if result.removed:
        out.print(f"configs {would}backed up to {result.backup}; {len(result.removed)} paths {would}removed:",
                  highlight=False, markup=False)
    else:
        out.print("nothing to remove")
    for path in result.removed:
        out.print(f"  {'would remove' if result.dry_run else 'removed'} {path}", highlight=False, markup=False)
    if result.left_alone:
        out.print(f"left alone ({len(result.left_alone)}):")
    for kept in result.left_alone:
        out.print(f"  {kept.path}: {kept.reason}", highlight=False, markup=False)


def serve_cmd(
    repo: Path = typer.Argument(..., help="A Triton model repository (see `modelport triton build`)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", help="HTTP port."),
    engine: str = typer.Option("builtin", "--engine", help="builtin: modelport's own server (HTTP, /predict); "
                               "triton: Triton Inference Server from the nvidia-pytriton wheel (HTTP, gRPC, "
                               "metrics; Triton's dynamic batcher, one process per instance)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port (--engine triton)."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus metrics port (--engine triton)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto (cuda where available)."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="Largest request body accepted (builtin)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads per model instance "
                                          "(ONNX Runtime, OpenVINO); default: physical cores."),
    log_level: str = typer.Option("info", "--log-level"),
    max_queue: Optional[int] = typer.Option(None, "--max-queue", help="Requests waiting per model before 429 "
                                            "(default: the config's queue policy, else a few full batches)."),
    timeout_s: float = typer.Option(60.0, "--timeout-s", help="Longest a request may take before 504 (0: no limit)."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Serve the other models when one cannot load "
                                    "(it is marked not ready) instead of stopping, as Triton's --exit-on-error=false."),
) -> None:
    """Serve a model repository over the KServe v2 protocol (the one Triton speaks): modelport's own HTTP
    server (plus /predict), or with --engine triton a real Triton Inference Server (HTTP and gRPC)."""
    from modelport.discover import resolve_device
    from modelport.errors import ModelportError

    _repository(repo)
    if engine == "triton":
        from modelport.serve.triton_engine import serve_triton

        serve_triton(repo, host, port, grpc_port, metrics_port, device=resolve_device(device), threads=threads,
                     keep_going=keep_going, log_level=log_level)
        return
    if engine != "builtin":
        raise ModelportError(f"unknown engine {engine!r}", hint="choose builtin or triton")
    from modelport.serve import serve

    serve(repo, host, port, device=resolve_device(device), max_body=int(max_body_mb * (1 << 20)), threads=threads,
          log_level=log_level, max_queue=max_queue, timeout_s=timeout_s or None, keep_going=keep_going)


REMOTE_BENCH_COLUMNS = (Col("batch"), Col("p50 ms"), Col("p90 ms"), Col("p99 ms"), Col("mean ms", "wide"),
                        Col("img/s"), Col("calls"), Col("connect s", "wide"))


def remote_bench_table(report: dict, source: str, *, wide: bool = False) -> Table:
    """A served model's record as a table: batch, p50/p90/p99 (a served model's tail is what its callers feel),
    img/s and the calls timed fit 80 columns; ``wide`` adds the mean latency and the time to connect."""
    machine = report["machine"]
    title = (f"{report['model']['name']} served at {source}, timed from {machine['cpu']} "
             f"({machine['physical_cores']} cores)")
    rows = []
    for r in report["rows"]:
        lat = r["latency_ms"]
        rows.append([str(r["batch"]), *(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "mean")),
                     f"{r['throughput']:.1f}", str(lat["n"]), f"{r['load_s']:.2f}" if r["load_s"] is not None else "-"])
    return fitted_table(REMOTE_BENCH_COLUMNS, rows, wide=wide, title=title)


def bench_remote(source: str, *, batches: list[int], seconds: float, json_path: Path,
                 unsupported: dict[str, object], wide: bool = False) -> None:
    """``modelport bench URL``: time a served model from here and write the record to ``json_path``."""
    from modelport.atomic import atomic_write_text
    from modelport.triton.remote_bench import bench_endpoint

    given = [option for option, value in unsupported.items() if value]
    if given:
        raise typer.BadParameter(f"{', '.join(given)} do not apply to a served model: it is timed as the server "
                                 "runs it (give a weights file to compare runtimes here)")
    with Console(stderr=True).status("benchmarking ...") as status:
        report = bench_endpoint(source, batches=batches, seconds=seconds,
                                progress=lambda msg: status.update(f"benchmarking: {msg}"))
    atomic_write_text(json_path, json.dumps(report, indent=1), force=True)
    print_table(out, remote_bench_table(report, source, wide=wide), wide=wide)
    spread = ", ".join(f"{e['url']}: {e['requests']}" for e in report["requests_per_endpoint"])
    out.print(f"requests per endpoint: {spread}", highlight=False, markup=False)
    out.print(f"record: {json_path}")
