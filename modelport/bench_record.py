"""The one benchmark record every family writes (docs/benchmark-schema.md): one header and one row layout, so
reid, detector, CLIP, factory and remote records are read by the same code; a family adds its own row fields
beside the common ones, never instead of them. Also where this machine keeps its records and how a reader (discover's
``prefer="fastest"``, package) picks from one, so those readers need not import bench."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from modelport.machine import cpu_info, machine_info, machine_key, peak_gflops
from modelport.timing import percentiles
from modelport.version import __version__

# 2: every family writes this one layout (in 1, detector records had their own: ``kind``, ``fps``, a source string).
SCHEMA = 2
STATUSES = ("ok", "parity-failed", "export-failed", "unavailable")
# How the measured weights were made. ``none``: no network was measured (synthetic embeddings, say).
RECIPE_KINDS = ("untrained", "bn_calibrated", "damped", "trained", "none")
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the tree whose commit a record names
DIRTY_SCOPE = "git status --porcelain: whole tree, untracked files included"


@dataclass(frozen=True, slots=True)
class Recipe:
    """The measured model's recipe: ``kind`` (one of ``RECIPE_KINDS``), ``origin`` (where the weights came
    from: a file and its sha256, or a builder and seed), ``details``, and ``source``: ``recorded`` when the
    writer knew it, else where it was read afterwards (a write-up, cited)."""

    kind: str
    origin: str
    details: str = ""
    source: str = "recorded"

    def __post_init__(self) -> None:
        if self.kind not in RECIPE_KINDS:
            raise ValueError(f"recipe kind {self.kind!r}: expected one of {', '.join(RECIPE_KINDS)}")


def recipe_from_source(source: Mapping[str, Any] | None) -> Recipe:
    """What a spec's ``Source`` (as a dict) says of the weights: ``random`` is untrained, a weights file is
    taken as trained and named by its sha256 (modelport cannot tell more from the file)."""
    source = source or {}
    named = f"{Path(source['file']).name}, sha256 {source.get('sha256')}" if source.get("file") else ""
    if source.get("kind") == "random":
        return Recipe("untrained", f"random weights{' (' + named + ')' if named else ''}",
                      "labelled random; whether its BatchNorm was calibrated is not recorded in the checkpoint")
    if source.get("kind") == "weights":
        return Recipe("trained", f"weights file {named}", "a weights file not labelled random")
    raise ValueError(f"model source kind {source.get('kind')!r}: expected 'random' or 'weights'")


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """The commit of ``root`` and whether its tree differs from it (any change, untracked files included);
    ``commit`` None where ``root`` is not a git checkout (an installed package)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "commit_source": "not a git checkout", "dirty": None, "dirty_scope": "not recorded"}
    return {"commit": commit, "commit_source": "recorded", "dirty": dirty, "dirty_scope": DIRTY_SCOPE}


def provenance(recipe: Recipe, root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """What every record carries about where its numbers come from: ``commit`` and ``dirty`` of ``root``, ``cpu``
    (model, speed flags, VNNI or not, cores) and the model's ``recipe`` (docs/benchmark-schema.md, "Provenance")."""
    return {**git_state(root), "cpu": cpu_info(), "recipe": asdict(recipe)}


def header(family: str, model: dict[str, Any], settings: dict[str, Any], *, gpu: bool = True,
           peak: bool = True, recipe: Recipe | None = None) -> dict[str, Any]:
    """The record's common fields. ``gpu=False``/``peak=False`` where this machine's GPU and matrix-product
    peak play no part (a served model timed from a client), which also keeps torch out of the client.
    ``recipe``: how the weights were made; by default what ``model["source"]`` says."""
    info = machine_info(gpu=gpu)
    return {"schema": SCHEMA, "family": family, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "modelport": __version__, "machine": info, "machine_key": machine_key(info),
            "peak_gflops": peak_gflops() if peak else None, "model": model, "settings": settings,
            **provenance(recipe or recipe_from_source(model.get("source")))}


def row(runtime: str, fmt: str, batch: int, *, precision: str = "fp32", status: str = "ok", reason: str = "",
        path: object = None, size_mb: float | None = None, export_s: float | None = None,
        load_s: float | None = None, parity: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
        latencies: Sequence[float] | None = None, gflop: float | None = None, **extra: Any) -> dict[str, Any]:
    """One runtime at one batch size. ``latencies``: seconds per call (None or empty: not timed);
    throughput is ``batch`` over the mean latency, in items (images, captions) per second."""
    if status not in STATUSES:
        raise ValueError(f"row status {status!r}: expected one of {', '.join(STATUSES)}")
    out: dict[str, Any] = {"runtime": runtime, "format": fmt, "precision": precision, "batch": batch,
                           "status": status, "reason": reason, "path": None if path is None else str(path),
                           "size_mb": size_mb, "export_s": export_s, "load_s": load_s, "parity": parity or {},
                           "settings": settings or {}, "latency_ms": None, "throughput": None,
                           "gflops_achieved": None}
    if latencies:
        stats = percentiles(latencies)
        out["latency_ms"] = stats
        out["throughput"] = batch / (stats["mean"] / 1000.0)
        out["gflops_achieved"] = out["throughput"] * gflop if gflop else None
    out.update(extra)
    return out


def cache_root() -> Path:
    """modelport's own cache: ``$MODELPORT_CACHE``, else ``~/.cache/modelport``."""
    return Path(os.environ.get("MODELPORT_CACHE", Path.home() / ".cache" / "modelport"))


def record_path(sha256: str) -> Path:
    """The file holding every machine's latest benchmark record of the weights with this sha256."""
    return cache_root() / "benchmarks" / f"{sha256[:16]}.json"


def machine_record(sha256: str | None) -> dict[str, Any] | None:
    """This machine's latest benchmark record of the weights with this sha256, or None (none, or a damaged
    cache entry: the caller measures instead)."""
    if not sha256:
        return None
    path = record_path(sha256)
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text()).get(machine_key())
    except (OSError, ValueError, AttributeError):
        return None
    return report if isinstance(report, dict) else None


def verified_rows(report: Mapping[str, Any] | None, batch: int | None = None) -> list[dict[str, Any]]:
    """The verified rows of ``report`` at ``batch`` (default, or when not measured: the largest batch measured),
    fastest first, the ONNX baseline excluded; empty without a record."""
    if not report:
        return []
    sizes = report["settings"]["batches"]
    size = batch if batch in sizes else max(sizes)
    rows = [r for r in report["rows"] if r["batch"] == size and r["status"] == "ok" and r["throughput"]
            and not r["runtime"].startswith("onnx-baseline")]
    return sorted(rows, key=lambda r: r["throughput"], reverse=True)


def fastest_row(report: Mapping[str, Any] | None, batch: int | None = None) -> dict[str, Any] | None:
    """The first of ``verified_rows``: what this machine measured fastest; None without a verified row."""
    rows = verified_rows(report, batch)
    return rows[0] if rows else None


def size_mb(path: Path | None) -> float | None:
    """An artifact's size on disk (a file, or a folder such as OpenVINO's) in MB; None when it is absent."""
    if path is None or not path.exists():
        return None
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)


def same_model(record: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    """Whether ``record`` measured ``model`` (a record's ``model`` section): same name and weights."""
    theirs = record.get("model") if isinstance(record.get("model"), Mapping) else {}
    source = theirs.get("source") if isinstance(theirs.get("source"), Mapping) else {}
    return theirs.get("name") == model.get("name") and source.get("sha256") == (model.get("source") or {}).get("sha256")


def check_record_target(path: Path, model: Mapping[str, Any]) -> None:
    """Refuse to replace the file at ``path`` unless it is a benchmark record of the same ``model`` (a re-run):
    two models benchmarked in one folder would otherwise silently share one ``benchmark.json``."""
    from modelport.errors import ExportError

    if not path.exists():
        return
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and same_model(record, model):
        return
    what = (f"the benchmark record of {record['model'].get('name')!r}" if isinstance(record, dict)
            and isinstance(record.get("model"), dict) else "not a benchmark record")
    raise ExportError(f"{path}: already exists and holds {what}, not {model.get('name')!r}'s",
                      hint=f"write this one elsewhere (--json {model.get('name')}.benchmark.json) or remove {path}")
