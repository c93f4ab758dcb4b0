"""What the dashboard finds under its root: weights, exports (format, precision, verification, freshness),
Triton repositories, edge packages and ReID databases. Reads only; never opens a checkpoint's pickle."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modelport.errors import ModelportError
from modelport.formats import Format, format_of_path
from modelport.spec import sha256_file
from modelport.ui.paths import relative
from modelport.ui.verifications import VerificationLog

MAX_DEPTH = 6
MAX_ENTRIES = 20_000  # a root with more files than this is listed in part
WEIGHT_SUFFIXES = (".pt", ".pth", ".pth.tar")
SKIP_DIRS = {"__pycache__", "node_modules", ".git", ".venv", "venv"}
VARIANT_TAGS = tuple(sep + tag for tag in ("fp16", "int8", "uint8in", "nms", "trtnms") for sep in (".", "_"))


@dataclass
class Weights:
    path: str
    size_mb: float
    detector: bool


@dataclass
class Export:
    path: str
    format: str
    format_name: str
    precision: str
    model: str
    weights: str | None  # the weights file beside it (same stem), relative to the root
    fresh: str  # fresh | stale | unknown (no weights here) | unreadable
    verified: str  # passed | failed | not checked
    problem: str = ""


@dataclass
class Repository:
    path: str
    models: list[str]


@dataclass
class Package:
    path: str
    size_mb: float
    verified: str = "not checked"  # against its golden outputs, by the dashboard


@dataclass
class Database:
    path: str
    detections: int
    videos: int
    models: list[dict] = field(default_factory=list)
    problem: str = ""


@dataclass
class Listing:
    root: str
    weights: list[Weights] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    repositories: list[Repository] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    databases: list[Database] = field(default_factory=list)
    truncated: bool = False


class _Digests:
    """sha256 of weights files, recomputed only when size or mtime change."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int], str]] = {}

    def __call__(self, path: Path) -> str:
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        hit = self._known.get(path)
        if hit is None or hit[0] != key:
            hit = (key, sha256_file(path))
            self._known[path] = hit
        return hit[1]


DIGESTS = _Digests()


def _artifact_format(path: Path) -> Format | None:
    try:
        fmt = format_of_path(path)
    except ModelportError:
        return None
    return fmt if fmt.matches(path) else None


def _is_weights(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(WEIGHT_SUFFIXES) and _artifact_format(path) is not None \
        and _artifact_format(path).is_weights


def _stem(path: Path, fmt: Format) -> str:
    name = path.name
    suffix = max((s for s in fmt.suffixes if name.lower().endswith(s)), key=len)
    stem = name[: -len(suffix)]
    # variants: x.int8.onnx, x_int8_openvino_model; detectors with NMS inside: x.nms.onnx, x.trtnms.engine
    for tag in VARIANT_TAGS:
        if stem.endswith(tag):
            return stem[: -len(tag)]
    return stem


def weights_for(path: Path, fmt: Format) -> Path | None:
    """The weights file an export belongs to: same stem, beside it or one folder up (``exported_models/``)."""
    stem = _stem(path, fmt)
    for folder in (path.parent, path.parent.parent):
        for suffix in WEIGHT_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def describe_export(root: Path, path: Path, fmt: Format, log: VerificationLog) -> Export:
    weights = weights_for(path, fmt)
    item = Export(relative(root, path), fmt.id, fmt.name, "?", "?",
                  relative(root, weights) if weights else None, "unknown", log.status(path))
    try:
        spec = fmt.read_spec(path)
    except ModelportError as exc:
        item.fresh, item.problem = "unreadable", exc.message
        return item
    except Exception as exc:  # noqa: BLE001 - a foreign file with our suffix: listed, not fatal
        item.fresh, item.problem = "unreadable", f"{type(exc).__name__}: {exc}"
        return item
    item.precision, item.model = spec.precision, spec.name
    made = spec.source.made_from(DIGESTS(weights)) if weights is not None else None
    if made is not None:
        item.fresh = "fresh" if made else "stale"
    elif spec.is_random:
        item.fresh = "unknown"
    return item


def _database(root: Path, path: Path) -> Database | None:
    """A SQLite file with an ``object_detections`` table, read in read-only mode (nothing added to it)."""
    with open(path, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            return None
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "object_detections" not in tables:
            return None
        return store_contents(conn.execute, tables, relative(root, path))
    except sqlite3.Error as exc:
        return Database(relative(root, path), 0, 0, problem=str(exc))
    finally:
        conn.close()


def store_contents(execute: Callable[..., Any], tables: set[str], name: str) -> Database:
    """Counts and models of a store holding ``object_detections``, by the engine's ``execute`` (SQLite's, or a
    server store's: the same SQL)."""
    detections, videos = execute("SELECT COUNT(*), COUNT(DISTINCT video) FROM object_detections").fetchone()
    item = Database(name, detections, videos)
    if "reid_models" in tables:
        for key, model_name, model_type, dim in execute(
                "SELECT model_key, name, model_type, dim FROM reid_models ORDER BY created").fetchall():
            count = execute("SELECT COUNT(*) FROM reid_embeddings WHERE model_key = ?", (key,)).fetchone()[0]
            ids = execute("SELECT COUNT(DISTINCT person_id) FROM reid_identities WHERE model_key = ?",
                          (key,)).fetchone()[0] if "reid_identities" in tables else 0
            item.models.append({"key": key, "name": model_name, "model_type": model_type, "dim": dim,
                                "embeddings": count, "identities": ids})
    return item


def scan(root: Path, log: VerificationLog | None = None) -> Listing:
    """Walk ``root`` (symlinks not followed, hidden folders skipped, at most MAX_DEPTH deep)."""
    root = Path(root).resolve()
    log = log or VerificationLog.default()
    listing = Listing(str(root))
    seen = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith(".") or d in SKIP_DIRS or sub.is_symlink():
                continue
            fmt = _artifact_format(sub)
            if fmt is not None and fmt.is_dir:
                listing.exports.append(describe_export(root, sub, fmt, log))
                continue
            models = sorted(m.name for m in sub.iterdir() if (m / "config.pbtxt").is_file() and not m.is_symlink())
            if models:
                listing.repositories.append(Repository(relative(root, sub), models))
                continue
            if depth < MAX_DEPTH:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            seen += 1
            if seen > MAX_ENTRIES:
                listing.truncated = True
                return listing
            path = here / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            lower = name.lower()
            if lower.endswith(".tar.gz"):
                listing.packages.append(Package(relative(root, path), round(path.stat().st_size / 1e6, 2),
                                                log.status(path)))
            elif _is_weights(path):
                from modelport.detect.safe_load import is_ultralytics_checkpoint

                detector = lower.endswith(".pt") and is_ultralytics_checkpoint(path)
                listing.weights.append(Weights(relative(root, path), round(path.stat().st_size / 1e6, 2), detector))
            elif (fmt := _artifact_format(path)) is not None and not fmt.is_weights and not fmt.is_dir:
                listing.exports.append(describe_export(root, path, fmt, log))
            elif lower.endswith((".db", ".sqlite", ".sqlite3")):
                db = _database(root, path)
                if db is not None:
                    listing.databases.append(db)
    return listing


def exports_of(listing: Listing, weights: str) -> list[Export]:
    return [e for e in listing.exports if e.weights == weights]


__all__ = ["Database", "Export", "Listing", "Package", "Repository", "Weights", "describe_export", "exports_of",
           "scan", "weights_for"]
