"""ReID jobs for a detections database: extract, cluster, timeline, comparison (what ``modelport reid`` calls)."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from modelport.sqlstore import is_url
from modelport.ui import params as P
from modelport.ui.paths import relative
from modelport.ui.stores import ServerStores, read_store

log = logging.getLogger("modelport.ui.job")


@dataclass(frozen=True, slots=True)
class Store:
    """The store a ReID job works on: a SQLite file under the root, or one of the dashboard's server stores."""

    name: str  # what job parameters, pages and messages hold: the file's absolute path, or the URL sans password
    location: str  # what the library opens: the file, or the full URL
    folder: Path  # where its outputs go unless the form says otherwise

    @property
    def label(self) -> str:
        return self.name if is_url(self.name) else Path(self.name).name


def _db(root: Path, params: dict, stores: ServerStores) -> Store:
    value = P.text(params, "db", max_len=1000)
    if value is not None and is_url(value):
        name, url = stores.resolve(value)
        database = urlsplit(name).path.strip("/") or "postgres"
        return Store(name, url, root / f"{_slug(database)}_reid")
    db = P.path(root, params, "db")
    if not db.is_file():
        raise P.ParamError(f"{db.name}: not a database file")
    return Store(str(db), str(db), db.parent)


def location(name: str) -> str:
    """In the worker: what the library opens for a job's ``db`` (a server store's URL comes from the
    environment the dashboard gave the worker, never from the job's parameters)."""
    return ServerStores.from_env().resolve(name)[1] if is_url(name) else name


def stored_models(store: Store) -> list[str]:
    """The model keys whose embeddings the store holds, read without changing it."""
    if is_url(store.location):
        return [m["key"] for m in read_store(store.name, store.location).models]
    db = Path(store.location)
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            return [r[0] for r in conn.execute("SELECT model_key FROM reid_models ORDER BY created")]
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _model_key(store: Store, params: dict, key: str, required: bool = False) -> str | None:
    """A model the database holds: only its stored keys are accepted (never a path to read)."""
    value = P.text(params, key)
    known = stored_models(store)
    if value is None and not required:
        return None
    if value not in known:
        raise P.ParamError(f"{key}: {value!r} has no embeddings in {store.label}",
                           hint=f"extract with it first; stored: {', '.join(known) or 'none'}")
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "model"


def validate_extract(root: Path, params: dict, stores: ServerStores) -> dict:
    from modelport.formats import format_of_path

    db = _db(root, params, stores)
    model = P.path(root, params, "model")
    format_of_path(model)  # a typed error naming accepted suffixes
    return {"db": db.name, "model": str(model), "batch": P.integer(params, "batch", 16, 1, 1024),
            "allow_random": P.flag(params, "allow_random"), "set_default": P.flag(params, "set_default")}


def run_extract(p: dict) -> dict:
    from modelport.reid.extract import extract, load_model

    runner = load_model(p["model"], allow_random=p["allow_random"])
    log.info("model %s (%s): %s", runner.spec.name, runner.model_type, runner.path)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 0.5 or done == total:
            last[0] = time.monotonic()
            log.info("embedded %d / %d crops", done, total)

    try:
        result = extract(location(p["db"]), runner, batch=p["batch"], make_default=p["set_default"], progress=progress)
    finally:
        runner.close()
    m = result.model
    return {"model": m.key, "model_type": m.model_type, "dim": m.dim, "computed": result.computed,
            "already": result.already, "crops_per_s": round(result.crops_per_s, 1), "default": result.is_default}


def validate_cluster(root: Path, params: dict, stores: ServerStores) -> dict:
    db = _db(root, params, stores)
    model = _model_key(db, params, "model", required=True)
    default = (db.folder if is_url(db.name) else db.folder / f"{Path(db.name).stem}_reid") / _slug(model)
    out = P.path(root, params, "out", must_exist=False, default=relative(root, default))
    threshold = P.text(params, "threshold", "auto")
    if threshold != "auto":
        threshold = P.number(params, "threshold", 0.5, -1.0, 1.0)
    return {"db": db.name, "model": model, "out": str(out), "threshold": threshold,
            "standardize": P.flag(params, "standardize", True), "force": P.flag(params, "force")}


def run_cluster(p: dict) -> dict:
    from modelport.reid.identify import run_cluster as cluster

    log.info("clustering %s by %s", p["db"] if is_url(p["db"]) else Path(p["db"]).name, p["model"])
    report = cluster(location(p["db"]), p["out"], model=p["model"], threshold=p["threshold"],
                     standardize=p["standardize"], force=p["force"])
    s = report.scores
    return {"out": str(report.out), "model": report.model.key, "model_type": report.model.model_type,
            "identities": report.identities, "tracks": report.tracks, "detections": report.detections,
            "threshold": round(report.threshold, 4), "threshold_mode": report.threshold_mode,
            "selection": str(report.out / "person_selection.html"),
            "scores": {"ARI": s.ari, "pairwise precision": s.pairwise_precision, "pairwise recall": s.pairwise_recall,
                       "rank-1": s.rank1, "people": s.people} if s else None}


def validate_report(root: Path, params: dict, stores: ServerStores) -> dict:
    db = _db(root, params, stores)
    use_reid = P.flag(params, "use_reid", True)
    model = _model_key(db, params, "model", required=use_reid) if use_reid else None
    name = f"timeline_{_slug(model)}.html" if model else "timeline_tracks.html"
    out = P.path(root, params, "output", must_exist=False, default=relative(root, db.folder / "report" / name))
    return {"db": db.name, "use_reid": use_reid, "model": model, "output": str(out), "force": P.flag(params, "force")}


def run_report(p: dict) -> dict:
    from modelport.reid.report import write_report

    Path(p["output"]).parent.mkdir(parents=True, exist_ok=True)
    result = write_report(location(p["db"]), p["output"], use_reid=p["use_reid"], model=p["model"], force=p["force"])
    return {"page": str(result.path), "rows": result.rows, "videos": result.videos, "model": result.model}


def validate_compare(root: Path, params: dict, stores: ServerStores) -> dict:
    db = _db(root, params, stores)
    left, right = _model_key(db, params, "left", True), _model_key(db, params, "right", True)
    name = f"compare_{_slug(left)}_vs_{_slug(right)}.html"
    out = P.path(root, params, "output", must_exist=False, default=relative(root, db.folder / "report" / name))
    return {"db": db.name, "left": left, "right": right, "output": str(out), "force": P.flag(params, "force")}


def run_compare(p: dict) -> dict:
    from modelport.reid.report import compare_reports

    Path(p["output"]).parent.mkdir(parents=True, exist_ok=True)
    path = compare_reports(p["left"], p["right"], p["output"], force=p["force"], db=location(p["db"]))
    return {"page": str(path), "left": p["left"], "right": p["right"]}
