"""``modelport verify``: artifacts side by side, edge packages against their golden outputs, and why a
failing export fails (per-output tolerances, an error plot, the first departing graph node)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.atomic import atomic_write_text
from modelport.cli_options import TRUST_CHECKPOINT, YOLO_PANEL, apply_trust, fmt_number as _fmt
from modelport.errors import ModelportError

out = Console()


def verify_cmd(
    paths: List[Path] = typer.Argument(..., help="Artifacts and/or a weights file; the weights (or the first) is "
                                       "the reference. Or one edge package (.tar.gz) or one Triton model "
                                       "repository: re-checked against the golden outputs it carries."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Rows in the seeded test batch (default 8)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the test batch (default 0)."),
    device: str = typer.Option("cpu", "--device"),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of the weights file, if its name does "
                                       "not say."),
    as_json: Optional[str] = typer.Option(None, "--json", help="Write the report as JSON to this file ('-' for "
                                          "stdout)."),
    tol: Optional[List[str]] = typer.Option(None, "--tol", help="Per-output tolerance, OUTPUT:KEY=VALUE (keys: "
                                            "max_abs, min_cosine, min_centered_cosine, min_nn_agreement; 'none' "
                                            "disables), repeatable."),
    localize: bool = typer.Option(False, "--localize", help="For a failing ONNX or OpenVINO export, name the first "
                                  "graph node whose output departs from the PyTorch model's."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="On failure, write an error-vs-magnitude plot (PNG)."),
    url: Optional[str] = typer.Option(None, "--url", help="Triton model repository only: also run the golden "
                                      "inputs on the server serving it (http://HOST:8000 or grpc://HOST:8001)."),
    local: bool = typer.Option(True, "--local/--no-local", help="Triton model repository: run each version with "
                               "the runtime installed here (--no-local: only on the --url server)."),
    conf: Optional[float] = typer.Option(None, "--conf", help="Confidence threshold for raw tracks (NMS graphs use "
                                         "their own; default 0.25).", rich_help_panel=YOLO_PANEL),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of images (default: synthetic scenes).",
                                          rich_help_panel=YOLO_PANEL),
    count: Optional[int] = typer.Option(None, "--count", help="Synthetic scenes when no --images (default 8).",
                                        rich_help_panel=YOLO_PANEL),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Pass (with a warning) when the reference finds "
                                     "no box.", rich_help_panel=YOLO_PANEL),
    trust: bool = TRUST_CHECKPOINT,
) -> None:
    """Compare artifacts side by side on one seeded batch; exit 1 on any mismatch. A package or a Triton
    repository is re-checked against its golden outputs. Detectors are compared box by box with Ultralytics'
    predict."""
    apply_trust(trust)
    from modelport.families import family_for

    for path in paths:  # verify compares files: none is built or downloaded
        if not path.exists():
            from modelport.errors import WeightsNotFoundError

            raise WeightsNotFoundError(f"{path}: not found", hint="verify compares files that exist: weights, "
                                       "exports, an edge package or a Triton model repository")
    detector = {"--conf": conf, "--images": images, "--count": count, "--allow-empty": allow_empty}
    family = next((f for f in map(family_for, map(str, paths)) if f.name == "yolo"), family_for(str(paths[0])))
    if family.name == "yolo":  # boxes against Ultralytics' predict
        from modelport.detect.cli import verify_cmd as verify_detector

        family.refuse_flags({"--batch": batch, "--seed": seed, "--device": device if device != "cpu" else None,
                             "--arch": arch, "--tol": tol or None, "--localize": localize, "--plot": plot, "--url": url,
                             "--no-local": not local})
        return verify_detector(paths, conf=0.25 if conf is None else conf, images=images,
                               count=8 if count is None else count, as_json=as_json, allow_empty=allow_empty,
                               trust=False)
    family.refuse_flags(detector, "yolo")
    batch, seed = 8 if batch is None else batch, 0 if seed is None else seed
    from modelport.clip.verify import verify_runners
    from modelport.discover import open_artifact
    from modelport.formats import format_of_path
    from modelport.triton.golden import is_repository
    from modelport.verify import verify

    if len(paths) == 1 and is_repository(paths[0]):  # a Triton model repository: each version's golden outputs
        return _verify_repository(paths[0], device, as_json, url, local)
    if url is not None or not local:
        raise typer.BadParameter("--url and --no-local apply to a Triton model repository (a folder of "
                                 "MODEL/config.pbtxt)")
    if len(paths) == 1 and paths[0].name.endswith(".tar.gz"):  # an edge package: its golden outputs
        return _verify_package(paths[0], device, as_json)
    clip = verify_runners(paths, device)  # CLIP encoders: open_clip's PyTorch model is the reference
    if clip is None:
        _refuse_lone_clip_checkpoint(paths)
    weights = [] if clip else [p for p in paths if format_of_path(p).is_weights]
    reference_path = weights[0] if weights else paths[0]
    reference = clip[0] if clip else open_artifact(reference_path, device, arch=arch)
    others = clip[1] if clip else [open_artifact(p, device) for p in paths if p != reference_path]
    if not others:
        raise typer.BadParameter("give at least two things to compare (e.g. weights and an export)")
    report = verify(others, reference, count=batch, seed=seed, tolerance=_tolerances(tol or []))
    if not report.passed and (localize or plot):
        _explain_failures(report, reference, others, batch, seed, localize, plot)
    if as_json:
        text = json.dumps(report.to_dict(), indent=2, default=str)
        if as_json == "-":
            out.print_json(text)
        else:
            atomic_write_text(as_json, text, force=True)
    if as_json != "-":
        table = Table(title=f"verify vs {report.reference} (batch {report.batch}, seed {report.seed})")
        for col in ("artifact", "format", "output", "max abs", "p99 abs", "rel max", "min cos", "centred cos",
                    "NN agree", "result"):
            table.add_column(col)
        for res in report.results:
            if res.error:
                table.add_row(res.label, res.format, "-", "-", "-", "-", "-", "-", "-", f"[red]{res.error}[/]")
            for o in res.outputs:
                verdict = "[green]pass[/]" if o.passed else f"[red]{'; '.join(o.failures)}[/]"
                table.add_row(res.label, res.format, o.output, _fmt(o.max_abs), _fmt(o.p99_abs), _fmt(o.rel_max),
                              _fmt(o.min_cosine, ".6f"), _fmt(o.min_centered_cosine, ".6f"),
                              f"{o.nn_agreement:.2f}", verdict)
        out.print(table)
    if not report.passed:
        raise typer.Exit(1)


def _refuse_lone_clip_checkpoint(paths: List[Path]) -> None:
    """An open_clip checkpoint is checked beside the encoder artifacts exported from it, not on its own."""
    import importlib.util

    from modelport.clip.verify import OPEN_CLIP_SUFFIXES

    for path in paths:
        if path.suffix.lower() in OPEN_CLIP_SUFFIXES:
            extra = " (MobileCLIP needs pip install 'modelport[clip]')" if importlib.util.find_spec("open_clip") \
                is None else ""
            raise ModelportError(f"{path}: an open_clip (MobileCLIP) checkpoint, verified only beside the encoder "
                                 "artifacts exported from it", hint=f"export them first (modelport export MODEL "
                                 f"--weights {path}), then: modelport verify MODEL_image.onnx {path}{extra}")


def _tolerances(items: list[str]):
    """``--tol embeddings:max_abs=1e-3`` -> {"embeddings": Tolerance(max_abs=1e-3, ...)} on top of FP32."""
    from dataclasses import fields, replace

    from modelport.verify import FP32

    keys = {f.name for f in fields(FP32)}
    per: dict = {}
    for item in items:
        output, _, setting = item.partition(":")
        key, _, value = setting.partition("=")
        if not output or key not in keys or not value:
            raise typer.BadParameter(f"--tol {item!r}: expected OUTPUT:KEY=VALUE with KEY one of "
                                     f"{', '.join(sorted(keys))}")
        try:
            number = None if value.lower() == "none" else float(value)
        except ValueError:
            raise typer.BadParameter(f"--tol {item!r}: {value!r} is not a number or 'none'") from None
        per[output] = replace(per.get(output, FP32), **{key: number})
    return per or FP32


def _explain_failures(report, reference, others, count: int, seed: int, localize: bool, plot: Optional[Path]) -> None:
    """What the failing artifacts' numbers look like (--plot) and where their graphs depart (--localize)."""
    from modelport.verify import SeededInputs

    inputs = SeededInputs.of(reference.spec, count, seed)
    failing = [(res, r) for res, r in zip(report.results, others) if not res.passed]
    if plot:
        from modelport.verify_plot import error_plot

        expected = reference(inputs.for_spec(reference.spec))
        error_plot(expected, {res.label: r(inputs.for_spec(r.spec)) for res, r in failing}, plot)
        out.print(f"error-vs-magnitude plot: {plot}")
    if localize:
        from modelport.localize import localize as find_departure

        module = getattr(reference, "module", None)
        if module is None:
            raise ModelportError("--localize needs the PyTorch model as the reference",
                                 hint="pass the weights file first, then the failing export")
        for res, r in failing:
            if r.path is not None and r.format in ("onnx", "openvino"):
                where = find_departure(r.path, module, inputs.for_spec(reference.spec),
                                       artifact_batch=inputs.for_spec(r.spec))
                out.print(where.summary(), highlight=False)
            else:
                out.print(f"{res.label}: --localize reads ONNX and OpenVINO graphs, not {r.format}")


def _verify_package(package: Path, device: str, as_json: Optional[str]) -> None:
    from dataclasses import asdict

    from modelport.golden import verify_package

    result = verify_package(package, device)
    if as_json:
        text = json.dumps({**asdict(result), "passed": result.passed}, indent=2, default=str)
        out.print_json(text) if as_json == "-" else atomic_write_text(as_json, text, force=True)
    if as_json != "-":
        for o in result.outputs:
            out.print(f"{result.label} {o.output}: max abs {_fmt(o.max_abs)}, min cosine {_fmt(o.min_cosine, '.6f')}"
                      f", NN agreement {o.nn_agreement:.2f}")
        verdict = "[green]pass[/]" if result.passed else f"[red]FAIL[/]: {result.summary()}"
        out.print(f"{result.label} against its golden outputs: {verdict}")
    if not result.passed:
        raise typer.Exit(1)


def _verify_repository(repo: Path, device: str, as_json: Optional[str], url: Optional[str], local: bool) -> None:
    from dataclasses import asdict

    from modelport.triton.golden import verify_repository

    checks = verify_repository(repo, device, url=url, local=local)
    if as_json:
        rows = [{**asdict(c), "passed": c.passed} for c in checks]
        text = json.dumps({"repository": str(repo), "checks": rows, "passed": all(c.passed for c in checks)},
                          indent=2, default=str)
        out.print_json(text) if as_json == "-" else atomic_write_text(as_json, text, force=True)
    if as_json != "-":
        table = Table(title=f"{repo} against its golden outputs")
        for col in ("model", "version", "where", "golden from", "output", "max abs", "min cos", "result"):
            table.add_column(col)
        for c in checks:
            version, reference = str(c.version or "-"), c.reference or "-"
            if c.result.error:
                table.add_row(c.model, version, c.target, reference, "-", "-", "-", f"[red]{c.result.error}[/]")
            for o in c.result.outputs:
                verdict = "[green]pass[/]" if o.passed else f"[red]{'; '.join(o.failures)}[/]"
                table.add_row(c.model, version, c.target, reference, o.output, _fmt(o.max_abs),
                              _fmt(o.min_cosine, ".6f"), verdict)
        out.print(table)
        failed = sum(not c.passed for c in checks)
        tail = f", [red]{failed} FAIL[/]" if failed else ""
        out.print(f"{len(checks) - failed} of {len(checks)} checks pass{tail}")
    if not all(c.passed for c in checks):
        raise typer.Exit(1)
