"""`reid cluster`: detections -> identities, with every output file and (given ground truth) scores."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.atomic import atomic_dir
from modelport.errors import ExportError, ModelportError
from modelport.reid import crops, pages, store
from modelport.reid.cluster import (DEFAULT_THRESHOLD, Standardizer, cluster_tracks, co_occurring, group_tracks,
                                    l2_normalize, quality)
from modelport.reid.models import resolve_model
from modelport.reid.scores import Scores, score

MAX_JSON_MATRIX = 1000  # larger similarity matrices go to the .npy only
WEBP_CROPS = 16
OUT_HINT = "choose another --out folder, or pass --force to replace the earlier clustering"


@dataclass
class ClusterReport:
    out: Path
    model: store.ModelRecord
    threshold: float
    threshold_mode: str
    standardized: bool
    tracks: int
    identities: int
    detections: int
    silhouette: float | None
    scores: Scores | None
    seconds: float


def run_cluster(db: str | Path, out: str | Path, *, model: str | None = None,
                threshold: float | str = DEFAULT_THRESHOLD, max_persons: int | None = None,
                standardize: bool = False, class_name: str | None = "person", per_track: int = 16,
                cooccurrence: bool = True, webp: bool = True, force: bool = False) -> ClusterReport:
    """Cluster the detections of ``db`` by ``model``'s embeddings (the default model when None).

    Every file is written into a hidden folder beside ``out`` that replaces it in one rename, so readers see
    the old clustering or the new one, never a mix; ``out`` is only replaced with ``force`` (see check_out).
    """
    start = time.perf_counter()
    out = Path(out)
    check_out(out, force)  # before the costly work
    conn = store.connect(db)
    try:
        record = resolve_model(conn, model)
        if record.model_type == "random":
            warnings.warn(f"{record.key}: clustering embeddings of a RANDOM, UNTRAINED model (model_type: random)",
                          UserWarning, stacklevel=2)
        det, vectors, sharp = store.load_detections(conn, class_name, record.key)
        if len(det) == 0:
            raise ModelportError(f"{db}: no {class_name or ''} detections with {record.key} embeddings",
                                 hint=f"run `modelport reid extract --db {db} --model ...` first")
        truth_map = store.ground_truth(conn)
        stats = Standardizer.fit(vectors) if standardize else None
        unit = l2_normalize(stats(vectors) if stats else vectors)
        del vectors
        tracks = group_tracks(det, unit, quality(det.confidence, sharp), per_track)
        first_seen = _first_seen(det.timestamp, tracks.index, len(tracks.keys))
        links = co_occurring(det, tracks) if cooccurrence else None
        result = cluster_tracks(tracks.embeddings, first_seen, threshold, max_persons, links)
        del links
        det_labels = result.labels[tracks.index]
        scores = None
        if truth_map:
            truth = np.array([truth_map.get(int(i), -1) for i in det.ids])
            if (truth >= 0).any():
                scores = score(truth, tracks.index, result.labels, result.similarity)

        meta = {"model": record.key, "model_name": record.name, "model_sha256": record.sha256,
                "model_type": record.model_type, "threshold": round(result.threshold, 4),
                "threshold_mode": result.mode, "standardized": standardize, "cooccurrence": cooccurrence,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        identities = _identities(det, tracks, result.labels)
        if out.is_dir() and not force:
            with contextlib.suppress(OSError):
                out.rmdir()  # an empty folder holds nothing to replace; rmdir refuses one that filled meanwhile
        with atomic_dir(out, force=force, hint=OUT_HINT) as staged:
            _write_json(staged / "identities.json", {
                **meta, "silhouette": result.silhouette, "scores": scores.to_dict() if scores else None,
                "identities": identities,
                "tracks": {k: int(result.labels[i]) for i, k in enumerate(tracks.keys)},
                "detections": {str(i): int(p) for i, p in zip(det.ids.tolist(), det_labels.tolist())}})
            np.save(staged / "similarity_matrix.npy", result.similarity.astype(np.float32))
            small = len(tracks.keys) <= MAX_JSON_MATRIX
            _write_json(staged / "similarity_matrix.json", {
                **meta, "tracks": tracks.keys, "candidates": result.candidates,
                "matrix": np.round(result.similarity, 4).tolist() if small else None,
                "note": None if small else f"{len(tracks.keys)} tracks: see similarity_matrix.npy"})
            np.save(staged / "embeddings.npy", tracks.embeddings)
            _write_json(staged / "embeddings.json", {
                **meta, "feature_dim": int(tracks.embeddings.shape[1]), "rows": tracks.keys,
                "aggregation": f"mean of up to {per_track} best crops per track (confidence, sharpness), L2-normalised",
                "standardization": {"mean": stats.mean.tolist(), "std": stats.std.tolist()} if stats else None})
            if webp:
                images = _webps(det, tracks, result.labels, staged / "webp")
                summary = (f"{len(identities)} identities from {len(tracks.keys)} tracks and {len(det)} detections; "
                           f"model {record.key} ({record.model_type}), threshold {result.threshold:.3f} "
                           f"({result.mode})" + (", standardised embeddings" if standardize else ""))
                (staged / "person_selection.html").write_text(pages.person_selection(
                    identities, images, model=record.key, model_type=record.model_type, summary=summary))
            # Last, so that a failure before leaves the database's identities as they were.
            store.write_identities(conn, record.key, list(zip(det.ids.tolist(), det_labels.tolist())))
    finally:
        conn.close()
    return ClusterReport(out, record, result.threshold, result.mode, standardize, len(tracks.keys),
                         len(identities), len(det), result.silhouette, scores, time.perf_counter() - start)


def check_out(out: Path, force: bool) -> None:
    """ExportError unless ``out`` is free (missing or an empty folder), or ``force`` is given and ``out`` holds
    an earlier clustering. Even ``force`` never replaces a folder of other files: the whole folder is replaced."""
    if not (out.exists() or out.is_symlink()) or (out.is_dir() and not any(out.iterdir())):
        return
    if not (out / "identities.json").is_file() or out.is_symlink():
        raise ExportError(f"{out}: exists and is not a `reid cluster` output folder (no identities.json); "
                          "not replaced, even with --force", hint="choose another --out folder")
    if not force:
        raise ExportError(f"{out} already holds a clustering (identities.json)", hint=OUT_HINT)


def _first_seen(timestamp: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    first = np.full(n, np.inf)
    np.minimum.at(first, index, timestamp)
    return first


def _identities(det, tracks, labels: np.ndarray) -> list[dict]:
    rows = []
    det_labels = labels[tracks.index]
    for person in range(int(labels.max()) + 1):
        mask = det_labels == person
        members = [k for i, k in enumerate(tracks.keys) if labels[i] == person]
        rows.append({"person": person, "tracks": members, "detections": int(mask.sum()),
                     "videos": sorted({str(v) for v in det.video[mask]}),
                     "first_seen": round(float(det.timestamp[mask].min()), 3),
                     "last_seen": round(float(det.timestamp[mask].max()), 3)})
    return rows


def _webps(det, tracks, labels: np.ndarray, folder: Path) -> dict[int, str]:
    """person_N.webp (N from 0, as in identities.json) with up to 16 best crops of each identity; returns
    their data URIs by person."""
    chosen: dict[int, list[int]] = {}
    for person in range(int(labels.max()) + 1):
        groups = [tracks.best[i] for i in np.flatnonzero(labels == person)]
        groups.sort(key=lambda g: -len(g))
        chosen[person] = crops.spread(groups, WEBP_CROPS)
    thumbs = crops.fetch_crops(det, [r for rows in chosen.values() for r in rows])
    uris = {}
    for person, rows in chosen.items():
        images = [thumbs[r] for r in rows if r in thumbs]
        data = crops.animated_webp(images, folder / f"person_{person}.webp")
        uris[person] = crops.data_uri(data, "image/webp")
    return uris


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))  # into the staged folder, published whole
