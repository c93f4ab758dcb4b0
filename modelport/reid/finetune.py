"""`reid finetune`: train a ReID model on the database's own tracks, without ground truth.

Each track is a pseudo-identity: crops of one track are one person. Two tracks seen in the same frame are
certainly two people, so they are the negatives; tracks that never meet may be the same person and are never
pushed apart. The loss is torchreid's batch-hard triplet loss (Hermans et al., 2017) over P tracks x K crops
per batch, each batch built around tracks with co-occurring partners; an epoch is one pass over the training
crops in such batches, as torchreid's identity sampler makes it. By default only the normalisation layers'
scale and shift are trained (``train="norm"``): a few thousand parameters that can re-weight what the network
already computes, not learn the few training people by heart (benchmarks/REID_FINETUNE.md measures both).
Some people are held out (with ground truth) and their tracks measure cross-track rank-1, mAP and ARI before and
after. A resumable checkpoint (model, optimizer, epoch) is written atomically after every epoch and read back
with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modelport.atomic import atomic_file
from modelport.reid.db import database_name, describe
from modelport.reid.tuning import (
    Retrieval,
    Split,
    TuningError,
    eval_crops,
    held_out_scores,
    load_split,
    provenance,
    read_crops,
    save_checkpoint,
)

log = logging.getLogger(__name__)

METHOD = ("triplet loss (batch-hard, margin {margin}) over the database's tracks as pseudo-identities: "
          "positives are crops of the anchor's track, negatives crops of tracks seen in the same frame; no ground "
          "truth used for training; Adam (lr {lr}), {trained} trained, BatchNorm running statistics kept")
TRAINED = {"norm": "only the normalisation layers' scale and shift", "all": "every weight"}
DEFAULT_LR = {"norm": 1e-3, "all": 3e-4}  # "all": torchreid's default; "norm": measured on the synthetic cameras
RESUME_KEY = "modelport_finetune_resume"
Progress = Callable[[int, int, int, float], None]  # (epoch, step, steps per epoch, last loss)


@dataclass(frozen=True, slots=True)
class FinetuneResult:
    path: Path
    source: Path
    source_sha256: str
    arch: str  # the zoo architecture (to export or load a checkpoint whose name does not tell it)
    epochs: int
    train: str  # "norm" or "all": what was trained
    lr: float
    steps: int  # optimiser steps, this run and any it resumed
    crops: int  # crops trained on
    tracks: int  # tracks they came from
    pairs: int  # co-occurring track pairs among them (the negatives)
    camera: str | None
    held_out_people: int
    held_out_by: str  # "people": all their tracks held out; "tracks": some of their tracks
    held_out_tracks: int
    before: Retrieval | None  # None without ground truth
    after: Retrieval | None
    losses: list[float]  # mean loss per epoch
    resumed_from: int  # epochs already done by an interrupted run (0: a fresh start)
    device: str
    seconds: float


def default_output(weights: Path, camera: str | None) -> Path:
    tag = f"_finetuned_{camera}" if camera else "_finetuned"
    return weights.with_name(f"{weights.stem}{tag}{weights.suffix or '.pt'}")


def resume_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.resume{out.suffix or '.pt'}")


def finetune(db: str | Path, weights: str | Path, *, out: str | Path | None = None, epochs: int = 5,
             camera: str | None = None, class_name: str | None = "person", tracks_per_batch: int = 8,
             crops_per_track: int = 4, crops: int = 1024, lr: float | None = None, margin: float = 0.3,
             holdout: float = 0.5, holdout_by: str = "people", train: str = "norm", device: str = "cpu",
             seed: int = 0, force: bool = False, progress: Progress | None = None) -> FinetuneResult:
    """Train ``weights`` (``train``: "norm", the normalisation layers' scale and shift, or "all" weights) on up to
    ``crops`` crops of ``db``'s tracks (of one camera when given) for ``epochs`` and write a torchreid-layout
    checkpoint whose ``modelport_finetune`` entry records how. ``lr`` defaults to ``DEFAULT_LR[train]``. An
    interrupted run resumes from its last finished epoch when called again with the same settings."""
    import torch

    from modelport.zoo import build
    from modelport.zoo.checkpoints import read_checkpoint

    start = time.perf_counter()
    weights = Path(weights)
    out = Path(out) if out else default_output(weights, camera)
    if train not in TRAINED:
        raise TuningError(f"--train must be one of {', '.join(TRAINED)}, not {train!r}")
    lr = DEFAULT_LR[train] if lr is None else lr
    if epochs < 1 or tracks_per_batch < 2 or crops_per_track < 2 or lr <= 0 or margin <= 0:
        raise TuningError(f"need --epochs >= 1, >= 2 tracks and >= 2 crops per batch, lr > 0 and margin > 0 "
                          f"(got {epochs}, {tracks_per_batch}, {crops_per_track}, {lr}, {margin})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TuningError(f"--device {device}: CUDA is not available here", hint="pass --device cpu")
    hint = "choose another --out, or pass --force to replace it"
    with atomic_file(out, force=force, hint=hint) as staged:  # refuses an existing --out before the work
        state, extras = read_checkpoint(weights)
        built = build(weights)
        split = load_split(db, class_name=class_name, camera=camera, holdout=holdout, seed=seed, by=holdout_by)
        pre = built.spec.preprocess
        pixels, owner, pairs = _training_crops(split, pre, crops, db)
        module = built.module.to(device)
        measured = len(split.eval_tracks) > 0
        held = eval_crops(split, pre, 32) if measured else None
        before = held_out_scores(module, split, held, 32, device) if measured else None
        settings = {"source_sha256": _sha(weights), "database": database_name(db), "camera": camera,
                    "class_name": class_name, "tracks_per_batch": tracks_per_batch,
                    "crops_per_track": crops_per_track, "crops": crops, "lr": lr, "margin": margin,
                    "holdout": holdout, "holdout_by": holdout_by, "train": train, "seed": seed}
        optimizer = torch.optim.Adam(trainable(module, train), lr=lr, weight_decay=5e-4)
        done, losses = _resume(resume_path(out), module, optimizer, settings, device)
        steps_per_epoch = max(1, -(-len(owner) // (tracks_per_batch * crops_per_track)))
        for epoch in range(done, epochs):
            losses.append(_epoch(module, optimizer, pixels, owner, pairs, epoch, steps_per_epoch, tracks_per_batch,
                                 crops_per_track, margin, seed, device, progress))
            _save_resume(resume_path(out), module, optimizer, epoch + 1, losses, settings)
            log.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
        after = held_out_scores(module, split, held, 32, device) if measured else None
        trained_tracks = int(len(np.unique(owner)))
        method = METHOD.format(margin=margin, lr=lr, trained=TRAINED[train])
        record = provenance(method, weights, db, camera=camera, class_name=class_name,
                            held_out_people=len(split.held_people), before=before, after=after, crops=len(owner),
                            held_out_by=holdout_by, held_out_tracks=len(split.eval_tracks),
                            tracks=trained_tracks, co_occurring_pairs=len(pairs), epochs=epochs,
                            steps=epochs * steps_per_epoch, losses=[round(v, 5) for v in losses],
                            settings={k: v for k, v in settings.items() if k not in ("source_sha256", "database")})
        trained = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        save_checkpoint(staged, {**state, **trained}, extras, "modelport_finetune", record, epoch=epochs)
    with contextlib.suppress(FileNotFoundError):
        resume_path(out).unlink()
    log.info("fine-tuned %s for %d epochs on %d crops of %s -> %s", weights, epochs, len(owner), db, out)
    return FinetuneResult(out, weights, record["source_sha256"], built.entry.name, epochs, train, lr,
                          epochs * steps_per_epoch, len(owner), trained_tracks, len(pairs), camera,
                          len(split.held_people), holdout_by, len(split.eval_tracks), before, after, losses, done,
                          device, time.perf_counter() - start)


def trainable(module, train: str) -> list:
    """The parameters ``train`` names: every one ("all") or the normalisation layers' ("norm"; the rest are
    frozen so that they also get no gradient)."""
    import torch

    if train == "all":
        return list(module.parameters())
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    chosen = {id(p) for layer in module.modules() if isinstance(layer, norms) for p in layer.parameters(False)}
    for p in module.parameters():
        p.requires_grad_(id(p) in chosen)
    if not chosen:
        raise TuningError("--train norm: this model has no normalisation layers with a scale and shift",
                          hint="pass --train all")
    return [p for p in module.parameters() if id(p) in chosen]


def _sha(path: Path) -> str:
    from modelport.spec import sha256_file

    return sha256_file(path)


def _training_crops(split: Split, pre: Any, limit: int, db: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``limit`` crops of the learnable tracks that have a co-occurring partner (float16, spread evenly
    along each track), each crop's track (0-based among them) and the co-occurring pairs among them."""
    pairs = split.co_occurring
    learn = np.isin(pairs, split.learn_tracks).all(axis=1)
    pairs = pairs[learn]
    tracks = np.unique(pairs)
    if len(tracks) < 2:
        raise TuningError(f"{describe(db)}: no two learnable tracks are ever seen in the same frame, so nothing tells "
                          f"people apart", hint="fine-tune on footage where people meet, or lower --holdout")
    order = np.lexsort((split.det.frame, split.tracks.index))  # by track, then frame
    starts = np.searchsorted(split.tracks.index[order], tracks)
    ends = np.searchsorted(split.tracks.index[order], tracks, side="right")
    members = [order[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
    per_track = max(2, limit // len(tracks))
    rows = np.concatenate([m[np.unique(np.linspace(0, len(m) - 1, min(per_track, len(m))).astype(int))]
                           for m in members])
    track_of = np.repeat(np.arange(len(tracks)), [min(per_track, len(m)) for m in members])
    pixels, order = read_crops(split.det, rows, pre, 64)
    position = np.searchsorted(tracks, pairs)
    return pixels.astype(np.float16), track_of[order], position


def _batch(rng: np.random.Generator, seeds: np.ndarray, partners: list[np.ndarray], count: int, p: int,
           k: int, by_track: list[np.ndarray]) -> np.ndarray:
    """Crop positions of ``p`` tracks (each seed with one of its co-occurring partners) x ``k`` crops each."""
    chosen: list[int] = []
    for s in seeds.tolist():
        for t in (s, int(rng.choice(partners[s]))):
            if t not in chosen and len(chosen) < p:
                chosen.append(t)
    while len(chosen) < min(p, count):
        t = int(rng.integers(count))
        if t not in chosen:
            chosen.append(t)
    return np.concatenate([rng.choice(by_track[t], k, replace=len(by_track[t]) < k) for t in chosen])


def _epoch(module, optimizer, pixels: np.ndarray, owner: np.ndarray, pairs: np.ndarray, epoch: int, steps: int,
           p: int, k: int, margin: float, seed: int, device: str, progress: Progress | None) -> float:
    """One pass over the crops in ``steps`` P x K batches, each seeded by tracks taken in turn from a shuffled
    order (every track seeds before any seeds again); seeded by (seed, epoch), so a resumed run repeats it."""
    import torch

    rng = np.random.default_rng([seed, epoch])
    torch.manual_seed(seed * 100003 + epoch)
    count = int(owner.max()) + 1
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    partners = np.split(both[:, 1], np.searchsorted(both[:, 0], np.arange(1, count)))
    crops = np.argsort(owner, kind="stable")
    by_track = np.split(crops, np.searchsorted(owner[crops], np.arange(1, count)))
    negative = torch.zeros((count, count), dtype=torch.bool, device=device)
    negative[pairs[:, 0], pairs[:, 1]] = negative[pairs[:, 1], pairs[:, 0]] = True
    per_step = max(1, p // 2)
    rounds = -(-steps * per_step // count)
    order = np.concatenate([rng.permutation(count) for _ in range(rounds)])
    module.train()
    for layer in module.modules():  # BatchNorm keeps the source statistics: a P x K batch of one camera's
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):  # crops is too small to re-estimate them
            layer.eval()
    total = 0.0
    for step in range(steps):
        index = _batch(rng, order[step * per_step:(step + 1) * per_step], partners, count, p, k, by_track)
        x = torch.from_numpy(pixels[index].astype(np.float32)).to(device)
        flip = torch.from_numpy(rng.random(len(index)) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)  # torchreid's random horizontal flip
        loss = triplet_loss(module(x), torch.from_numpy(owner[index]).to(device), negative, margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.detach().item()
        total += value
        if progress:
            progress(epoch, step + 1, steps, value)
    return total / steps


def triplet_loss(features, labels, negative, margin: float):
    """Batch-hard triplet loss on L2-normalised ``features``: for each anchor its farthest crop of the same
    track against its nearest crop of a track ``negative`` says is another person; anchors without one in the
    batch are left out (so is a batch without any: the loss is 0)."""
    import torch

    unit = torch.nn.functional.normalize(features.float(), dim=1)
    dist = torch.cdist(unit, unit)
    same = labels[:, None] == labels[None, :]
    other = negative[labels][:, labels]
    hardest_positive = torch.where(same, dist, torch.zeros_like(dist)).max(dim=1).values
    hardest_negative = torch.where(other, dist, torch.full_like(dist, float("inf"))).min(dim=1).values
    valid = other.any(dim=1)
    if not bool(valid.any()):
        return (features * 0).sum()
    return torch.relu(hardest_positive[valid] - hardest_negative[valid] + margin).mean()


def _resume(path: Path, module, optimizer, settings: dict, device: str) -> tuple[int, list[float]]:
    """Epochs done and their losses from ``path`` (model and optimizer restored), or (0, []) when none."""
    import torch

    if not path.exists():
        return 0, []
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        record = saved[RESUME_KEY]
    except Exception as exc:  # any unreadable file: say which and what to do
        raise TuningError(f"{path}: unreadable resume checkpoint ({type(exc).__name__})",
                          hint="delete it to start over") from None
    differs = [k for k, v in settings.items() if record.get("settings", {}).get(k) != v]
    if differs:
        raise TuningError(f"{path}: an interrupted fine-tuning with other settings ({', '.join(differs)})",
                          hint="rerun with the same settings to resume, or delete it to start over")
    module.load_state_dict(saved["state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    log.info("resuming %s after epoch %d", path, saved["epoch"])
    return int(saved["epoch"]), [float(v) for v in record["losses"]]


def _save_resume(path: Path, module, optimizer, epoch: int, losses: list[float], settings: dict) -> None:
    import torch

    with atomic_file(path, force=True) as staged:
        torch.save({"state_dict": module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                    RESUME_KEY: {"settings": settings, "losses": losses}}, staged)
