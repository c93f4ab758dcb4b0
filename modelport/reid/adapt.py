"""`reid adapt`: fit a ReID model's BatchNorm statistics to the user's own cameras (AdaBN), without labels.

A model trained on one dataset normalises every layer with that dataset's statistics; on other cameras
(light, resolution, viewpoint) the activations drift. AdaBN re-estimates BatchNorm's running mean and
variance on crops from the new domain and changes nothing else (Li et al., 2016). The crops come from the
database's own detections; when ground truth exists, some people are held out of the adaptation and their
tracks measure cross-track rank-1 and mAP before and after.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from modelport.atomic import atomic_file
from modelport.errors import ModelportError
from modelport.reid import store
from modelport.reid.cluster import group_tracks, l2_normalize, quality
from modelport.reid.scores import majority

log = logging.getLogger(__name__)

METHOD = ("AdaBN: BatchNorm running mean and variance re-estimated (cumulative average, train mode, no "
          "gradients) on the database's own crops; no labels used, no other weight changed")
EVAL_CROPS = 8  # best crops per held-out track whose mean embedding represents it


class AdaptError(ModelportError, ValueError):
    """Nothing to adapt on (no detections, no such camera) or a bad setting."""


@dataclass(frozen=True, slots=True)
class Retrieval:
    rank1: float  # share of query tracks whose most similar other track is the same person
    mAP: float  # mean average precision of each query's ranking of the other held-out tracks
    queries: int  # held-out tracks whose person has another held-out track


@dataclass(frozen=True, slots=True)
class AdaptResult:
    path: Path
    source: Path
    source_sha256: str
    crops: int  # crops the statistics were estimated on
    tracks: int  # tracks they came from
    camera: str | None
    held_out_people: int
    before: Retrieval | None  # None without ground truth
    after: Retrieval | None
    seconds: float


def default_output(weights: Path, camera: str | None) -> Path:
    tag = f"_adabn_{camera}" if camera else "_adabn"
    return weights.with_name(f"{weights.stem}{tag}{weights.suffix or '.pt'}")


def adapt(db: str | Path, weights: str | Path, *, out: str | Path | None = None, camera: str | None = None,
          class_name: str | None = "person", crops: int = 2048, holdout: float = 0.5, batch: int = 32,
          seed: int = 0, force: bool = False) -> AdaptResult:
    """Write ``weights`` with BatchNorm statistics re-estimated on up to ``crops`` crops of ``db`` (of one
    camera when given) as a torchreid-layout checkpoint whose ``modelport_adapt`` entry records how."""
    import torch

    from modelport.reid.extract import _batches
    from modelport.spec import sha256_file
    from modelport.zoo import build
    from modelport.zoo.calibrate import calibrate_batchnorm
    from modelport.zoo.checkpoints import RANDOM_MARKER, read_checkpoint

    start = time.perf_counter()
    weights = Path(weights)
    out = Path(out) if out else default_output(weights, camera)
    hint = "choose another --out, or pass --force to replace it"
    if crops < batch or not 0.0 <= holdout < 1.0:
        raise AdaptError(f"need --crops >= the batch ({batch}) and 0 <= holdout < 1 (got {crops}, {holdout})")
    with atomic_file(out, force=force, hint=hint) as staged:  # refuses an existing --out before the work
        state, extras = read_checkpoint(weights)
        built = build(weights)
        conn = store.connect(db)
        try:
            det, _, sharp = store.load_detections(conn, class_name, with_vectors=False)
            keep = _camera_rows(conn, det, camera)
            det = _subset(det, keep)
            truth = store.ground_truth(conn, det.ids)
        finally:
            conn.close()
        if len(det) == 0:
            raise AdaptError(f"{db}: no {class_name or ''} detections{f' of camera {camera!r}' if camera else ''}")
        tracks = group_tracks(det, quality(det.confidence, sharp[keep]), EVAL_CROPS)
        track_truth = majority(truth, tracks.index, len(tracks.keys))
        held = _held_out_people(track_truth, holdout, seed)
        eval_tracks = np.flatnonzero(np.isin(track_truth, held))
        adapt_rows = np.flatnonzero(~np.isin(tracks.index, eval_tracks))
        if len(adapt_rows) < batch:
            raise AdaptError(f"{db}: {len(adapt_rows)} crops to adapt on, fewer than one batch of {batch}")
        chosen = adapt_rows[np.unique(np.linspace(0, len(adapt_rows) - 1, min(crops, len(adapt_rows))).astype(int))]
        pre = built.spec.preprocess
        module = built.module.eval()

        def embed_tracks() -> np.ndarray:
            rows = np.concatenate([tracks.best[t] for t in eval_tracks])
            owner = np.repeat(np.arange(len(eval_tracks)), [len(tracks.best[t]) for t in eval_tracks])
            order = np.lexsort((det.ids[rows], det.frame[rows], det.video[rows].astype(str)))
            vectors = []
            with torch.no_grad():
                for item in _batches(_rows(det, rows[order]), pre, batch):
                    vectors.append(module(torch.from_numpy(item.inputs)).numpy())
            sums = np.zeros((len(eval_tracks), vectors[0].shape[1]))
            np.add.at(sums, owner[order], l2_normalize(np.concatenate(vectors)))
            return l2_normalize(sums)

        before = retrieval(embed_tracks(), track_truth[eval_tracks]) if len(eval_tracks) else None
        order = np.lexsort((det.ids[chosen], det.frame[chosen], det.video[chosen].astype(str)))
        batches = (torch.from_numpy(item.inputs) for item in _batches(_rows(det, chosen[order]), pre, batch)
                   if len(item.ids) == batch)  # a short last batch would weigh as much as a full one
        calibrate_batchnorm(module, batches)
        after = retrieval(embed_tracks(), track_truth[eval_tracks]) if len(eval_tracks) else None
        used = (len(chosen) // batch) * batch
        record = {"method": METHOD, "source_weights": str(weights.resolve()), "source_sha256": sha256_file(weights),
                  "database": str(Path(db).resolve()), "camera": camera, "class_name": class_name, "crops": used,
                  "tracks": int(len(np.unique(tracks.index[chosen]))), "held_out_people": len(held),
                  "before": asdict(before) if before else None, "after": asdict(after) if after else None,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        adapted = {**state, **module.state_dict()}  # the training head (classifier) stays as it was
        checkpoint = {"state_dict": adapted, "epoch": extras.get("epoch", 0), "modelport_adapt": record}
        if RANDOM_MARKER in extras:  # untrained stays labelled untrained
            checkpoint[RANDOM_MARKER] = extras[RANDOM_MARKER]
        torch.save(checkpoint, staged)
    log.info("adapted %s on %d crops of %s -> %s", weights, used, db, out)
    return AdaptResult(out, weights, record["source_sha256"], used, record["tracks"], camera, len(held),
                       before, after, time.perf_counter() - start)


def retrieval(embeddings: np.ndarray, truth: np.ndarray) -> Retrieval:
    """Cross-track rank-1 and mAP: each track queries all the others (L2-normalised embeddings)."""
    sim = embeddings @ embeddings.T
    np.fill_diagonal(sim, -np.inf)
    hits, precisions = [], []
    for q in range(len(truth)):
        ranked = truth[np.argsort(-sim[q], kind="stable")[:-1]] == truth[q]  # the last is the query itself
        if not ranked.any():
            continue
        hits.append(bool(ranked[0]))
        found = np.flatnonzero(ranked)
        precisions.append(float(np.mean(np.arange(1, len(found) + 1) / (found + 1))))
    if not hits:
        return Retrieval(float("nan"), float("nan"), 0)
    return Retrieval(float(np.mean(hits)), float(np.mean(precisions)), len(hits))


def _held_out_people(track_truth: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A ``share`` of the people seen in at least two tracks (they can be queried), chosen at random."""
    people, counts = np.unique(track_truth[track_truth >= 0], return_counts=True)
    candidates = people[counts >= 2]
    count = int(round(share * len(candidates)))
    if share > 0 and len(candidates) >= 2:
        count = max(count, 2)  # one person alone cannot be told apart from anyone
    return np.sort(np.random.default_rng(seed).permutation(candidates)[:count])


def _camera_rows(conn, det: store.DetectionTable, camera: str | None) -> np.ndarray:
    """Positions of ``det`` seen by ``camera``: the table's ``camera`` column when it has one, else the video's
    file name, stem or folder name."""
    if camera is None:
        return np.arange(len(det))
    columns = {row[1] for row in conn.execute("PRAGMA table_info(object_detections)")}
    if "camera" in columns:
        ids = {r[0] for r in conn.execute("SELECT id FROM object_detections WHERE camera = ?", (camera,))}
        names = sorted({str(r[0]) for r in conn.execute("SELECT DISTINCT camera FROM object_detections")})
        mask = np.array([i in ids for i in det.ids.tolist()], bool)
    else:
        paths = {v: Path(v) for v in set(det.video.tolist())}
        names = sorted({p.stem for p in paths.values()})
        match = {v for v, p in paths.items() if camera in (p.name, p.stem, p.parent.name)}
        mask = np.array([v in match for v in det.video.tolist()], bool)
    if not mask.any():
        raise AdaptError(f"no detections of camera {camera!r}", hint=f"cameras: {', '.join(names[:20])}")
    return np.flatnonzero(mask)


def _subset(det: store.DetectionTable, rows: np.ndarray) -> store.DetectionTable:
    return store.DetectionTable(det.ids[rows], det.video[rows], det.frame[rows], det.timestamp[rows],
                                det.confidence[rows], det.boxes[rows], det.track[rows])


def _rows(det: store.DetectionTable, rows: np.ndarray) -> list[tuple]:
    """``rows`` of ``det`` as extraction reads them: (id, video, frame, x1, y1, x2, y2)."""
    return [(int(det.ids[r]), str(det.video[r]), int(det.frame[r]), *map(float, det.boxes[r])) for r in rows]
