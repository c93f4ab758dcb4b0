"""`reid cluster`: detections -> identities, with every output file and (given ground truth) scores."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.atomic import atomic_dir
from modelport.errors import ExportError, ModelportError
from modelport.reid import crops, pages, store
from modelport.reid.cluster import (
    DEFAULT_THRESHOLD,
    Standardizer,
    cluster_tracks,
    co_occurring,
    group_tracks,
    quality,
    track_embeddings,
)
from modelport.reid.db import describe
from modelport.reid.models import resolve_model
from modelport.reid.scores import Scores, score

log = logging.getLogger(__name__)
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
        # Embeddings are streamed from the database (twice with standardisation), never all in memory.
        det, _, sharp = store.load_detections(conn, class_name, record.key, with_vectors=False)
        if len(det) == 0:
            raise ModelportError(f"{describe(db)}: no {class_name or ''} detections with {record.key} embeddings",
                                 hint=f"run `modelport reid extract --db {describe(db)} --model ...` first")
        log.info("clustering %d detections with %s", len(det), record.key)
        stats = Standardizer.fit(v for _, v in store.table_embeddings(conn, record.key, det)) if standardize else None
        tracks = group_tracks(det, quality(det.confidence, sharp), per_track)
        tracks.embeddings = track_embeddings(tracks, len(det), store.table_embeddings(conn, record.key, det), stats)
        first_seen = _first_seen(det.timestamp, tracks.index, len(tracks.keys))
        links = co_occurring(det, tracks) if cooccurrence else None
        result = cluster_tracks(tracks.embeddings, first_seen, threshold, max_persons, links)
        del links
        det_labels = result.labels[tracks.index]
        scores = None
        truth = store.ground_truth(conn, det.ids)
        if (truth >= 0).any():
            scores = score(truth, tracks.index, result.labels, result.nearest)

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
            _write_similarity(staged, meta, tracks.keys, result)
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
            store.write_identities(conn, record.key, zip(det.ids.tolist(), det_labels.tolist()))
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


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    """Per label 0..max: the positions holding it, in increasing order."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(int(labels.max()) + 2))
    return [order[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def _identities(det, tracks, labels: np.ndarray) -> list[dict]:
    rows = []
    for person, (members, mask) in enumerate(zip(_groups(labels), _groups(labels[tracks.index]))):
        times = det.timestamp[mask]
        rows.append({"person": person, "tracks": [tracks.keys[i] for i in members.tolist()],
                     "detections": int(len(mask)), "videos": sorted({str(v) for v in det.video[mask]}),
                     "first_seen": round(float(times.min()), 3), "last_seen": round(float(times.max()), 3)})
    return rows


def _write_similarity(folder: Path, meta: dict, keys: list[str], result) -> None:
    """The dense path's track x track matrix (.npy, and in the JSON up to MAX_JSON_MATRIX tracks); the graph
    path's k-nearest-neighbour graph instead (.npz: track, neighbour, similarity), which is what it clustered."""
    note = None
    if result.similarity is not None:
        np.save(folder / "similarity_matrix.npy", result.similarity.astype(np.float32))
        matrix = np.round(result.similarity, 4).tolist() if len(keys) <= MAX_JSON_MATRIX else None
        if matrix is None:
            note = f"{len(keys)} tracks: see similarity_matrix.npy"
    else:
        rows, cols, sims = result.edges
        np.savez(folder / "similarity_matrix.npz", track=rows.astype(np.int32), neighbour=cols.astype(np.int32),
                 similarity=sims.astype(np.float32))
        matrix = None
        note = (f"{len(keys)} tracks: too many for a dense matrix ({len(keys) ** 2 * 4 / 1e9:.1f} GB); "
                "similarity_matrix.npz holds the k-nearest-neighbour graph of the tracks that clustering used "
                "(arrays track, neighbour, similarity; rows of embeddings.npy)")
    _write_json(folder / "similarity_matrix.json", {**meta, "tracks": keys, "candidates": result.candidates,
                                                    "matrix": matrix, "note": note})


def _webps(det, tracks, labels: np.ndarray, folder: Path) -> dict[int, str]:
    """person_N.webp (N from 0, as in identities.json) with up to 16 best crops of each identity; returns
    their data URIs by person."""
    chosen: dict[int, list[int]] = {}
    for person, members in enumerate(_groups(labels)):
        groups = [tracks.best[i] for i in members.tolist()]
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
