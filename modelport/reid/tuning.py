"""What `reid adapt` and `reid finetune` share: the database's tracks split into those a method may learn from
and those of held-out people that measure it, before/after scores on the held-out tracks, the checkpoint they
write (torchreid's layout, with a record of where it came from) and its export and verification.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from modelport.errors import ModelportError
from modelport.reid import store
from modelport.reid.cluster import Tracks, cluster_tracks, group_tracks, l2_normalize, quality
from modelport.reid.db import Database, database_name, describe
from modelport.reid.scores import majority

if TYPE_CHECKING:
    import torch

EVAL_CROPS = 8  # best crops per held-out track whose mean embedding represents it


class TuningError(ModelportError, ValueError):
    """Nothing to learn from (no detections, no such camera) or a bad setting."""


@dataclass(frozen=True, slots=True)
class Retrieval:
    rank1: float  # share of query crops whose most similar crop of another track is the same person
    mAP: float  # mean average precision of each query crop's ranking of the other tracks' crops
    queries: int  # held-out crops whose person has another held-out track
    ari: float | None = None  # adjusted Rand index of the held-out tracks clustered (threshold auto) vs the truth


@dataclass
class Split:
    """A database's detections (of one camera when asked), grouped into tracks, and who is held out."""

    det: store.DetectionTable
    tracks: Tracks
    track_truth: np.ndarray  # per track: its person (-1 unknown)
    held_people: np.ndarray  # people whose tracks only measure
    eval_tracks: np.ndarray  # their tracks (rows of ``tracks``)
    learn_tracks: np.ndarray  # every other track: what a method may use
    co_occurring: np.ndarray  # (P, 2) track pairs seen in one frame: certainly two people


def load_split(db: str | Path, *, class_name: str | None, camera: str | None, holdout: float, seed: int,
               by: str = "people") -> Split:
    """Read ``db``'s detections and hold out ``holdout`` of the people seen in two or more tracks (``by``
    "people": all their tracks), or of those people's tracks (``by`` "tracks": other tracks of the same people
    may be learnt from, unlabelled). Ground truth only chooses; without it nothing is held out or measured."""
    from modelport.reid.cluster import co_occurring

    if not 0.0 <= holdout < 1.0:
        raise TuningError(f"--holdout must be in [0, 1), got {holdout}")
    conn = store.connect(db)
    try:
        det, _, sharp = store.load_detections(conn, class_name, with_vectors=False)
        keep = camera_rows(conn, det, camera)
        det = subset(det, keep)
        truth = store.ground_truth(conn, det.ids)
    finally:
        conn.close()
    if len(det) == 0:
        where = f" of camera {camera!r}" if camera else ""
        raise TuningError(f"{describe(db)}: no {class_name or ''} detections{where}",
                          hint="import detections first with `modelport reid import`")
    tracks = group_tracks(det, quality(det.confidence, sharp[keep]), EVAL_CROPS)
    track_truth = majority(truth, tracks.index, len(tracks.keys))
    if by not in ("people", "tracks"):
        raise TuningError(f"hold out by 'people' or 'tracks', not {by!r}")
    held = held_out_people(track_truth, 1.0 if by == "tracks" and holdout > 0 else holdout, seed)
    held_mask = np.isin(track_truth, held)
    if by == "tracks":  # a share of those people's tracks, at random
        candidates = np.flatnonzero(held_mask)
        chosen = np.random.default_rng(seed).permutation(candidates)[:int(round(holdout * len(candidates)))]
        held_mask = np.isin(np.arange(len(track_truth)), chosen)
        held = np.unique(track_truth[chosen])
    return Split(det, tracks, track_truth, held, np.flatnonzero(held_mask), np.flatnonzero(~held_mask),
                 co_occurring(det, tracks))


def held_out_people(track_truth: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A ``share`` of the people seen in at least two tracks (they can be queried), chosen at random."""
    people, counts = np.unique(track_truth[track_truth >= 0], return_counts=True)
    candidates = people[counts >= 2]
    count = int(round(share * len(candidates)))
    if share > 0 and len(candidates) >= 2:
        count = max(count, 2)  # one person alone cannot be told apart from anyone
    return np.sort(np.random.default_rng(seed).permutation(candidates)[:count])


def camera_rows(conn: Database, det: store.DetectionTable, camera: str | None) -> np.ndarray:
    """Positions of ``det`` seen by ``camera``: the table's ``camera`` column when it has one, else the video's
    file name, stem or folder name."""
    if camera is None:
        return np.arange(len(det))
    columns = conn.columns("object_detections")
    if "camera" in columns:
        ids = {r[0] for r in conn.execute("SELECT id FROM object_detections WHERE camera = ?", (camera,))}
        names = sorted({str(r[0]) for r in conn.execute("SELECT DISTINCT camera FROM object_detections")})
        mask = np.array([i in ids for i in det.ids.tolist()], bool)
    else:
        paths = {v: Path(v) for v in set(det.video.tolist())}
        names = sorted({p.stem for p in paths.values()} | {p.parent.name for p in paths.values()})
        match = {v for v, p in paths.items() if camera in (p.name, p.stem, p.parent.name)}
        mask = np.array([v in match for v in det.video.tolist()], bool)
    if not mask.any():
        raise TuningError(f"no detections of camera {camera!r}", hint=f"cameras: {', '.join(names[:20])}")
    return np.flatnonzero(mask)


def subset(det: store.DetectionTable, rows: np.ndarray) -> store.DetectionTable:
    return store.DetectionTable(det.ids[rows], det.video[rows], det.frame[rows], det.timestamp[rows],
                                det.confidence[rows], det.boxes[rows], det.track[rows])


def detection_rows(det: store.DetectionTable, rows: np.ndarray) -> list[tuple]:
    """``rows`` of ``det`` in (video, frame) order as extraction reads them: (id, video, frame, x1, y1, x2, y2)."""
    rows = rows[np.lexsort((det.ids[rows], det.frame[rows], det.video[rows].astype(str)))]
    return [(int(det.ids[r]), str(det.video[r]), int(det.frame[r]), *map(float, det.boxes[r])) for r in rows]


def read_crops(det: store.DetectionTable, rows: np.ndarray, pre: Any, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The preprocessed crops of ``rows`` (N, 3, H, W float32) and, per crop, its position in ``rows``."""
    from modelport.reid.extract import _batches

    position = {int(det.ids[r]): i for i, r in enumerate(rows.tolist())}
    pixels, order = [], []
    for item in _batches(detection_rows(det, rows), pre, batch):
        pixels.append(item.inputs)
        order.extend(position[i] for i in item.ids)
    return np.concatenate(pixels), np.asarray(order, np.int64)


def embed_crops(module: "torch.nn.Module", pixels: np.ndarray, batch: int, device: str = "cpu") -> np.ndarray:
    """L2-normalised embeddings of preprocessed crops, the module in eval mode."""
    import torch

    module.eval()
    vectors = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            chunk = torch.from_numpy(pixels[i:i + batch].astype(np.float32, copy=False)).to(device)
            vectors.append(module(chunk).float().cpu().numpy())
    return l2_normalize(np.concatenate(vectors))


def eval_crops(split: Split, pre: Any, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out tracks' best crops, preprocessed, and each crop's held-out track (0-based)."""
    rows = np.concatenate([split.tracks.best[t] for t in split.eval_tracks])
    owner = np.repeat(np.arange(len(split.eval_tracks)), [len(split.tracks.best[t]) for t in split.eval_tracks])
    pixels, order = read_crops(split.det, rows, pre, batch)
    return pixels, owner[order]


def held_out_scores(module: "torch.nn.Module", split: Split, crops: tuple[np.ndarray, np.ndarray], batch: int = 32,
                    device: str = "cpu") -> Retrieval:
    """Scores of ``module`` on the held-out tracks' ``crops`` (from ``eval_crops``, so that before and after see
    the same pixels): crop-level cross-track retrieval, and the ARI of the tracks (mean of their crops) clustered
    with the co-occurrence between them as cannot-link pairs."""
    pixels, owner = crops
    vectors = embed_crops(module, pixels, batch, device)
    sums = np.zeros((len(split.eval_tracks), vectors.shape[1]))
    np.add.at(sums, owner, vectors)
    position = np.full(len(split.tracks.keys), -1, np.int64)
    position[split.eval_tracks] = np.arange(len(split.eval_tracks))
    pairs = position[split.co_occurring] if len(split.co_occurring) else np.zeros((0, 2), np.int64)
    pairs = pairs[(pairs >= 0).all(axis=1)]
    truth = split.track_truth[split.eval_tracks]
    return retrieval(vectors, truth[owner], owner, l2_normalize(sums), truth, pairs)


def retrieval(vectors: np.ndarray, truth: np.ndarray, track: np.ndarray, track_vectors: np.ndarray | None = None,
              track_truth: np.ndarray | None = None, cannot_link: np.ndarray | None = None) -> Retrieval:
    """Cross-track retrieval of L2-normalised crop ``vectors``: each crop queries the crops of every other
    ``track`` (never its own), ranked by cosine similarity; rank-1 and mAP against ``truth``. With
    ``track_vectors``, also the ARI of those tracks clustered (average linkage, threshold auto, ``cannot_link``
    pairs kept apart) against ``track_truth``."""
    from sklearn.metrics import adjusted_rand_score

    sim = vectors @ vectors.T
    hits, precisions = [], []
    for q in range(len(truth)):
        gallery = np.flatnonzero(track != track[q])
        ranked = truth[gallery[np.argsort(-sim[q, gallery], kind="stable")]] == truth[q]
        if not ranked.any():
            continue
        hits.append(bool(ranked[0]))
        found = np.flatnonzero(ranked)
        precisions.append(float(np.mean(np.arange(1, len(found) + 1) / (found + 1))))
    if not hits:
        return Retrieval(float("nan"), float("nan"), 0)
    ari = None
    if track_vectors is not None and track_truth is not None and len(track_vectors) > 1:
        labels = cluster_tracks(track_vectors, np.arange(len(track_vectors), dtype=float), "auto",
                                cannot_link=cannot_link).labels
        ari = float(adjusted_rand_score(track_truth, labels))
    return Retrieval(float(np.mean(hits)), float(np.mean(precisions)), len(hits), ari)


def provenance(method: str, weights: Path, db: str | Path, *, camera: str | None, class_name: str | None,
               held_out_people: int, before: Retrieval | None, after: Retrieval | None, **used: Any) -> dict:
    """The record a written checkpoint carries: method, source weights + sha256, database, what was used."""
    from modelport.spec import sha256_file

    return {"method": method, "source_weights": str(weights.resolve()), "source_sha256": sha256_file(weights),
            "database": database_name(db), "camera": camera, "class_name": class_name, **used,
            "held_out_people": held_out_people, "before": asdict(before) if before else None,
            "after": asdict(after) if after else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def save_checkpoint(staged: Path, state: dict[str, "torch.Tensor"], extras: dict[str, Any], key: str, record: dict,
                    epoch: int | None = None) -> None:
    """Write torchreid's layout (``state_dict``, ``epoch``) plus ``key``: ``record``; an untrained source stays
    labelled untrained."""
    import torch

    from modelport.zoo.checkpoints import RANDOM_MARKER

    checkpoint = {"state_dict": state, "epoch": extras.get("epoch", 0) if epoch is None else epoch, key: record}
    if RANDOM_MARKER in extras:
        checkpoint[RANDOM_MARKER] = extras[RANDOM_MARKER]
    torch.save(checkpoint, staged)


def export_checkpoint(path: Path, formats: str | Iterable[str] | None, arch: str | None = None) -> list:
    """Export and verify ``path`` like any other checkpoint (modelport.export.export_all): one result per format.
    ``arch`` names the architecture when the file name does not tell it."""
    from modelport.export import export_all

    return list(export_all(path, formats, arch=arch, verify=True))
