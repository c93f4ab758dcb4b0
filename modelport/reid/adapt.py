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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.atomic import atomic_file
from modelport.reid.db import describe
from modelport.reid.tuning import (
    Retrieval,
    TuningError,
    detection_rows,
    eval_crops,
    held_out_scores,
    load_split,
    provenance,
    save_checkpoint,
)

log = logging.getLogger(__name__)

METHOD = ("AdaBN: BatchNorm running mean and variance re-estimated (cumulative average, train mode, no "
          "gradients) on the database's own crops; no labels used, no other weight changed")
AdaptError = TuningError  # nothing to adapt on (no detections, no such camera) or a bad setting


@dataclass(frozen=True, slots=True)
class AdaptResult:
    path: Path
    source: Path
    source_sha256: str
    arch: str  # the zoo architecture (to export or load a checkpoint whose name does not tell it)
    crops: int  # crops the statistics were estimated on
    tracks: int  # tracks they came from
    camera: str | None
    held_out_people: int
    held_out_by: str  # "people": all their tracks held out; "tracks": some of their tracks
    held_out_tracks: int
    before: Retrieval | None  # None without ground truth
    after: Retrieval | None
    seconds: float


def default_output(weights: Path, camera: str | None) -> Path:
    tag = f"_adabn_{camera}" if camera else "_adabn"
    return weights.with_name(f"{weights.stem}{tag}{weights.suffix or '.pt'}")


def adapt(db: str | Path, weights: str | Path, *, out: str | Path | None = None, camera: str | None = None,
          class_name: str | None = "person", crops: int = 2048, holdout: float = 0.5, batch: int = 32,
          seed: int = 0, holdout_by: str = "people", force: bool = False) -> AdaptResult:
    """Write ``weights`` with BatchNorm statistics re-estimated on up to ``crops`` crops of ``db`` (of one
    camera when given) as a torchreid-layout checkpoint whose ``modelport_adapt`` entry records how."""
    import torch

    from modelport.reid.extract import _batches
    from modelport.zoo import build
    from modelport.zoo.calibrate import calibrate_batchnorm
    from modelport.zoo.checkpoints import read_checkpoint

    start = time.perf_counter()
    weights = Path(weights)
    out = Path(out) if out else default_output(weights, camera)
    hint = "choose another --out, or pass --force to replace it"
    if crops < batch or not 0.0 <= holdout < 1.0:
        raise AdaptError(f"need --crops >= the batch ({batch}) and 0 <= holdout < 1 (got {crops}, {holdout})")
    with atomic_file(out, force=force, hint=hint) as staged:  # refuses an existing --out before the work
        state, extras = read_checkpoint(weights)
        built = build(weights)
        split = load_split(db, class_name=class_name, camera=camera, holdout=holdout, seed=seed, by=holdout_by)
        det, tracks = split.det, split.tracks
        adapt_rows = np.flatnonzero(np.isin(tracks.index, split.learn_tracks))
        if len(adapt_rows) < batch:
            raise AdaptError(f"{describe(db)}: {len(adapt_rows)} crops to adapt on, fewer than one batch of {batch}")
        chosen = adapt_rows[np.unique(np.linspace(0, len(adapt_rows) - 1, min(crops, len(adapt_rows))).astype(int))]
        pre = built.spec.preprocess
        module = built.module.eval()
        measured = len(split.eval_tracks) > 0
        held = eval_crops(split, pre, batch) if measured else None
        before = held_out_scores(module, split, held, batch) if measured else None
        batches = (torch.from_numpy(item.inputs) for item in _batches(detection_rows(det, chosen), pre, batch)
                   if len(item.ids) == batch)  # a short last batch would weigh as much as a full one
        calibrate_batchnorm(module, batches)
        after = held_out_scores(module, split, held, batch) if measured else None
        used = (len(chosen) // batch) * batch
        record = provenance(METHOD, weights, db, camera=camera, class_name=class_name,
                            held_out_people=len(split.held_people), before=before, after=after, crops=used,
                            held_out_by=holdout_by, held_out_tracks=len(split.eval_tracks),
                            tracks=int(len(np.unique(tracks.index[chosen]))))
        # The training head (classifier) stays as it was.
        save_checkpoint(staged, {**state, **module.state_dict()}, extras, "modelport_adapt", record)
    log.info("adapted %s on %d crops of %s -> %s", weights, used, db, out)
    return AdaptResult(out, weights, record["source_sha256"], built.entry.name, used, record["tracks"], camera,
                       len(split.held_people), holdout_by, len(split.eval_tracks), before, after,
                       time.perf_counter() - start)
