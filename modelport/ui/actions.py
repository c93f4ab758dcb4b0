"""The jobs the dashboard runs: each checks its form values in the server (``validate``) and runs in the
worker process (``run``) as the very library call the matching CLI command makes. Results are plain JSON."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from modelport.errors import ModelportError
from modelport.ui import params as P
from modelport.ui.listing import WEIGHT_SUFFIXES, weights_for
from modelport.ui.stores import ServerStores

log = logging.getLogger("modelport.ui.job")
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    title: str
    validate: Callable[..., dict]  # (root, form values[, server stores]) -> checked parameters (paths as text)
    run: Callable[[dict], dict]  # in the worker: the library call -> JSON result
    target: str  # the parameter naming the file (or server store) whose page shows the job
    stores: bool = False  # validate also takes the dashboard's server stores (ReID jobs: a store may be a URL)

    def check(self, root: Path, params: dict, stores: ServerStores) -> dict:
        return self.validate(root, params, stores) if self.stores else self.validate(root, params)


def _weights(root: Path, params: dict) -> Path:
    path = P.path(root, params, "weights")
    if not path.is_file() or not path.name.lower().endswith(WEIGHT_SUFFIXES):
        raise P.ParamError(f"{path.name}: not a weights file", hint=f"weights end in {', '.join(WEIGHT_SUFFIXES)}")
    return path


def _family(path: Path) -> str:
    """The name of the family that claims ``path`` (asked of the registry, as the CLI asks it): "yolo" for a
    detector, whose jobs take Ultralytics' options and compare boxes."""
    from modelport.families import family_for

    return family_for(str(path)).name


def _exportable() -> list[str]:
    from modelport.formats import EXPORTABLE

    return [f.id for f in EXPORTABLE]


def _output(root: Path, params: dict, key: str, default: Path) -> str:
    from modelport.ui.paths import relative

    return str(P.path(root, params, key, must_exist=False, default=relative(root, default)))


# ---- export -------------------------------------------------------------------------------------------

def validate_export(root: Path, params: dict) -> dict:
    weights = _weights(root, params)
    detector = _family(weights) == "yolo"
    checked = {"weights": str(weights), "detector": detector,
               "formats": P.choices(params, "formats", _exportable()),
               "force": P.flag(params, "force")}
    if detector:
        checked.update(nms=P.flag(params, "nms"), conf=P.number(params, "conf", 0.25, 0.0, 1.0),
                       iou=P.number(params, "iou", 0.7, 0.0, 1.0), imgsz=P.integer(params, "imgsz", 640, 32, 4096),
                       topk=P.integer(params, "topk", 300, 1, 10_000))
        if checked["imgsz"] % 32:
            raise P.ParamError(f"imgsz: {checked['imgsz']} is not a multiple of 32 (the detector's stride)")
    else:
        checked.update(precision=P.choice(params, "precision", "fp32", ("fp32", "fp16", "int8")),
                       batch=P.integer(params, "batch", None, 1, 1024), uint8_input=P.flag(params, "uint8_input"))
    return checked


def run_export(p: dict) -> dict:
    """Through the one export (``api.export_rows``): the family is the one that claims the weights."""
    from modelport.api import export_rows
    from modelport.families import ExportRequest
    from modelport.ui.verifications import VerificationLog

    weights = Path(p["weights"])
    if p["detector"]:
        request = ExportRequest(formats=tuple(p["formats"]), force=p["force"], nms=p["nms"], conf=p["conf"],
                                iou=p["iou"], imgsz=p["imgsz"], topk=p["topk"])
    else:
        request = ExportRequest(formats=tuple(p["formats"]), force=p["force"], batch=p["batch"],
                                precision=p["precision"], uint8_input=p["uint8_input"])
    log.info("exporting %s to %s", weights.name, ", ".join(p["formats"]))
    rows = []
    for r in export_rows(weights, request):
        log.info("%s%s: %s", r.format, f" ({r.part})" if r.part else "", "ok" if r.ok else r.error)
        rows.append({"format": f"{r.format} ({r.part})" if r.part else r.format, "ok": r.ok,
                     "path": str(r.path) if r.path else None, "seconds": round(r.seconds, 2), "error": r.error,
                     "check": r.found or r.note or "not verified"})
    record = VerificationLog.default()
    for row in rows:
        if row["path"]:
            record.record(Path(row["path"]), row["ok"])
    return {"rows": rows, "guide": guide(weights, [Path(r["path"]) for r in rows if r["ok"] and r["path"]])}


def guide(weights: Path, written: list[Path]) -> list[str]:
    """What the CLI's guide says after an export: where the files are, that they are found automatically,
    and which one ``modelport.load`` takes (asked of the loader itself)."""
    from modelport.api import load
    from modelport.discover import search_dirs

    lines = []
    if written:
        lines.append(f"Files written to {written[0].parent}: {', '.join(p.name for p in written)}.")
    lines.append(f"modelport.load('{weights.name}') picks them up automatically: it looks for "
                 f"{weights.stem}.* in {', '.join(str(d) for d in search_dirs(weights))}, skips stale or unusable "
                 "exports, then falls back to the PyTorch weights.")
    try:
        runner = load(weights, verbose=False)
    except ModelportError as exc:
        lines.append(f"The loader cannot open it here: {exc.message}")
        return lines
    try:
        lines.append(f"The loader will take: {getattr(runner, 'format', '?')} — {runner.path}")
    finally:
        runner.close()
    return lines


# ---- bench --------------------------------------------------------------------------------------------

def validate_bench(root: Path, params: dict) -> dict:
    weights = _weights(root, params)
    if _family(weights) == "yolo":
        from modelport.ui.detect_actions import validate_detect_bench

        return validate_detect_bench(weights, params)
    return {"weights": str(weights), "detector": False, "formats": P.choices(params, "formats", _exportable()),
            "batches": P.int_list(params, "batches", "1,16", 1, 1024),
            "seconds": P.number(params, "seconds", 3.0, 0.05, 600.0)}


def run_bench(p: dict) -> dict:
    import json

    if p["detector"]:  # `modelport bench yolo.pt` routes to `modelport detect bench`: the same call
        from modelport.ui.detect_actions import run_detect_bench

        return run_detect_bench(p)

    from modelport.atomic import atomic_write_text
    from modelport.bench import fastest, run_benchmark, write_plot

    weights = Path(p["weights"])
    report = run_benchmark(weights, formats=p["formats"], batches=p["batches"], seconds=p["seconds"],
                           progress=lambda msg: log.info("benchmark: %s", msg))
    folder = weights.parent / "benchmarks"
    folder.mkdir(exist_ok=True)
    record = atomic_write_text(folder / f"{weights.stem}.json", json.dumps(report, indent=1), force=True)
    plot = write_plot(report, folder / f"{weights.stem}.png")
    best = fastest(weights)
    rows = [{"runtime": r["runtime"], "batch": r["batch"], "status": r["status"], "reason": r["reason"],
             "p50_ms": (r["latency_ms"] or {}).get("p50"), "throughput": r["throughput"],
             "min_cosine": (r["parity"] or {}).get("min_cosine")} for r in report["rows"]]
    return {"rows": rows, "plot": str(plot), "record": str(record),
            "fastest": {"runtime": best["runtime"], "batch": best["batch"], "throughput": best["throughput"],
                        "path": best["path"]} if best else None}


# ---- Triton, package, verify ---------------------------------------------------------------------------

def validate_triton(root: Path, params: dict) -> dict:
    from modelport.triton.config import TRITON_FORMATS

    source = P.path(root, params, "weights")
    return {"weights": str(source), "repo": _output(root, params, "repo", root / "model_repository"),
            "name": P.text(params, "name"), "format": P.choice(params, "format", "onnx", list(TRITON_FORMATS)),
            "batch": P.integer(params, "batch", None, 1, 1024), "force": P.flag(params, "force")}


def run_triton(p: dict) -> dict:
    from modelport.triton.build import ModelEntry, build_repository

    log.info("adding %s to the Triton repository %s", Path(p["weights"]).name, p["repo"])
    built = build_repository([ModelEntry(p["weights"], name=p["name"], format=p["format"], batch=p["batch"])],
                             p["repo"], force=p["force"])
    return {"repo": p["repo"], "models": [{"name": b.name, "version": b.version, "format": b.format,
                                           "path": str(b.path), "config": str(b.config),
                                           "config_text": b.config.read_text()[:4000]} for b in built]}


def validate_package(root: Path, params: dict) -> dict:
    source = P.path(root, params, "weights")
    default = source.parent / "packages" / f"{source.name.split('.')[0]}_edge.tar.gz"
    out = Path(_output(root, params, "out", default))
    if not out.name.endswith(".tar.gz"):
        raise P.ParamError(f"out: {out.name} must end in .tar.gz")
    return {"weights": str(source), "out": str(out), "force": P.flag(params, "force"),
            "seconds": P.number(params, "seconds", 2.0, 0.05, 600.0)}


def run_package(p: dict) -> dict:
    from modelport.package import package

    out = Path(p["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("packaging %s into %s", Path(p["weights"]).name, out)
    path = package(Path(p["weights"]), out, force=p["force"], seconds=p["seconds"])
    return {"package": str(path), "size_mb": round(path.stat().st_size / 1e6, 2)}


def validate_verify(root: Path, params: dict) -> dict:
    from modelport.formats import format_of_path

    target = P.path(root, params, "path")
    if target.name.endswith(".tar.gz"):
        return {"path": str(target), "package": True}
    fmt = format_of_path(target)
    reference = params.get("reference")
    weights = P.path(root, params, "reference") if reference else weights_for(target, fmt)
    if weights is None or fmt.is_weights:
        raise P.ParamError(f"{target.name}: no weights file with its stem beside it to compare with",
                           hint="verify compares an export with the weights it came from")
    # A detector's export is compared with Ultralytics' predictions, as `modelport verify yolo.pt yolo.onnx` does.
    return {"path": str(target), "package": False, "reference": str(weights), "detector": _family(weights) == "yolo"}


def run_verify(p: dict) -> dict:
    from modelport.ui.verifications import VerificationLog

    target = Path(p["path"])
    if p["package"]:
        from modelport.golden import verify_package

        result = verify_package(target)
        label = result.label
    elif p.get("detector"):
        from modelport.detect.verify import verify_artifacts

        (check,) = verify_artifacts(Path(p["reference"]), [target])
        VerificationLog.default().record(target, check.passed)
        return {"label": check.label, "passed": check.passed, "summary": check.summary(), "outputs": [],
                "boxes": check.detections, "ties": check.ties, "min_iou": check.min_iou,
                "max_score_diff": check.max_score_diff}
    else:
        from modelport.discover import open_artifact
        from modelport.verify import verify

        reference, other = open_artifact(p["reference"]), open_artifact(target)
        try:
            result = verify([other], reference).results[0]
        finally:
            other.close()
            reference.close()
        label = result.label
    VerificationLog.default().record(target, result.passed)
    return {"label": label, "passed": result.passed, "summary": result.summary(),
            "outputs": [{"output": o.output, "max_abs": o.max_abs, "min_cosine": o.min_cosine,
                         "nn_agreement": o.nn_agreement, "passed": o.passed, "failures": list(o.failures)}
                        for o in result.outputs]}


def _registry() -> dict[str, Action]:
    from modelport.ui import reid_actions as R

    table = [
        Action("export", "Export", validate_export, run_export, "weights"),
        Action("bench", "Benchmark", validate_bench, run_bench, "weights"),
        Action("triton", "Triton repository", validate_triton, run_triton, "weights"),
        Action("package", "Edge package", validate_package, run_package, "weights"),
        Action("verify", "Verify", validate_verify, run_verify, "path"),
        Action("reid_extract", "ReID extract", R.validate_extract, R.run_extract, "db", stores=True),
        Action("reid_cluster", "ReID cluster", R.validate_cluster, R.run_cluster, "db", stores=True),
        Action("reid_report", "ReID timeline", R.validate_report, R.run_report, "db", stores=True),
        Action("reid_compare", "ReID comparison", R.validate_compare, R.run_compare, "db", stores=True),
    ]
    return {a.kind: a for a in table}


ACTIONS = _registry()


def get_action(kind: str) -> Action:
    try:
        return ACTIONS[kind]
    except KeyError:
        raise P.ParamError(f"unknown job kind {kind!r}", hint=f"known: {', '.join(ACTIONS)}") from None
