"""Compare detections of an export with Ultralytics' own predictions, image by image.

Pass criteria (all must hold for every image): every reference box matched one-to-one by a box of the same
class with IoU >= 0.99, score differences <= 1e-3, and no unmatched box on either side except NMS ties. Boxes
clipped to zero area at an image edge (common with untrained models) match when their corners agree
within one pixel.

A box kept by one side only is a *tie*, not a failure, when NMS could legitimately decide it either way: it
overlaps a higher-scoring kept box of its class at an IoU within ``tie_eps`` of the NMS threshold, or its
score is within the score tolerance of a box it competes with or of the confidence threshold. Ties are
counted and reported. A check that compared no reference box at all fails (``allow_empty`` makes it pass
with a warning): it proves nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from modelport.detect.runner import Detections
from modelport.preprocess import ImageLike

log = logging.getLogger(__name__)
DEGENERATE_PX = 1.0


@dataclass(frozen=True, slots=True)
class DetTolerance:
    min_iou: float = 0.99
    max_score_diff: float = 1e-3
    nms_iou: float | None = None  # the NMS IoU threshold both sides used (ties need it)
    conf: float | None = None  # the confidence threshold both sides used
    tie_eps: float = 2e-3  # how close to nms_iou an overlap counts as a tie
    max_tie_share: float = 0.05  # more ties than this share of reference boxes is not NMS any more
    allow_empty: bool = False  # pass, with a warning, when the reference found no box at all


@dataclass(frozen=True, slots=True)
class ImageComparison:
    image: int
    ref_count: int
    count: int
    matched: int
    min_iou: float  # worst IoU among matched pairs (1.0 when there is nothing to match)
    max_score_diff: float
    failures: tuple[str, ...]
    ties: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class DetectionCheck:
    """One artifact against the reference on a set of images."""

    label: str
    format: str
    track: str
    images: list[ImageComparison] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    conf: float | None = None  # the confidence threshold the comparison ran at

    @property
    def passed(self) -> bool:
        return self.error is None and all(i.passed for i in self.images)

    @property
    def ties(self) -> int:
        return sum(len(i.ties) for i in self.images)

    @property
    def detections(self) -> int:
        return sum(i.ref_count for i in self.images)

    @property
    def min_iou(self) -> float:
        return min((i.min_iou for i in self.images), default=1.0)

    @property
    def max_score_diff(self) -> float:
        return max((i.max_score_diff for i in self.images), default=0.0)

    def summary(self) -> str:
        if self.error:
            return self.error
        bad = [f"image {i.image}: {', '.join(i.failures)}" for i in self.images if i.failures]
        return "; ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "") if bad else "ok"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(passed=self.passed, detections=self.detections, ties=self.ties, min_iou=self.min_iou,
                    max_score_diff=self.max_score_diff)
        return data


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, (len(a), len(b))."""
    a, b = a[:, None, :].astype(np.float64), b[None, :, :].astype(np.float64)
    w = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    h = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]).clip(0) * (x[..., 3] - x[..., 1]).clip(0)  # noqa: E731
    union = area(a) + area(b) - inter
    iou = inter / np.where(union > 0, union, 1)
    # Boxes clipped to an image edge can collapse to zero area, where IoU means nothing: such a pair
    # matches when its corners agree to within DEGENERATE_PX pixels.
    degenerate = (area(a) == 0) | (area(b) == 0)
    close = np.abs(a - b).max(-1) <= DEGENERATE_PX
    return np.where(degenerate, np.where(close, 1.0, 0.0), iou)


def compare_image(index: int, ref: Detections, got: Detections, tol: DetTolerance = DetTolerance()) -> ImageComparison:
    """Greedy one-to-one matching, best reference score first, within the same class; boxes left unmatched on
    either side are failures unless they are NMS ties (``tie_reason``)."""
    ious = iou_matrix(ref.boxes, got.boxes) if len(ref) and len(got) else np.zeros((len(ref), len(got)))
    same_class = ref.classes[:, None] == got.classes[None, :]
    candidates = np.where(same_class, ious, -1.0)
    taken = np.zeros(len(got), bool)
    failures, ties = [], []
    worst_iou, worst_score, matched = 1.0, 0.0, 0
    unmatched_ref = []
    for r in np.argsort(-ref.scores, kind="stable"):
        row = np.where(taken, -1.0, candidates[r]) if len(got) else np.zeros(0)
        j = int(row.argmax()) if row.size else -1
        if j < 0 or row[j] < tol.min_iou:
            unmatched_ref.append((int(r), max(float(row[j]) if j >= 0 else 0.0, 0.0)))
            continue
        taken[j] = True
        matched += 1
        worst_iou = min(worst_iou, float(row[j]))
        diff = abs(float(ref.scores[r]) - float(got.scores[j]))
        worst_score = max(worst_score, diff)
        if diff > tol.max_score_diff:
            failures.append(f"score {got.scores[j]:.5f} vs {ref.scores[r]:.5f} "
                            f"(diff {diff:.2g} > {tol.max_score_diff:g})")
    extra = [int(j) for j in np.flatnonzero(~taken)]
    for r, best in unmatched_ref:
        reason = tie_reason(ref, r, got, extra, tol)
        if reason:
            ties.append(f"reference box {r}: {reason}")
            continue
        best_any = float(ious[r].max()) if len(got) else 0.0
        failures.append(f"reference box {r} (class {ref.classes[r]}, score {ref.scores[r]:.4f}) unmatched "
                        f"(best IoU {best:.3f} same class, {best_any:.3f} any)")
        worst_iou = min(worst_iou, best)
    for j in extra:
        reason = tie_reason(got, j, ref, [r for r, _ in unmatched_ref], tol)
        if reason:
            ties.append(f"export box {j}: {reason}")
        else:
            failures.append(f"export box {j} (class {got.classes[j]}, score {got.scores[j]:.4f}) has no reference box")
    return ImageComparison(index, len(ref), len(got), matched, worst_iou, worst_score, tuple(failures[:5]),
                           tuple(ties))


def tie_reason(side: Detections, i: int, other: Detections, other_unmatched: list[int], tol: DetTolerance) -> str:
    """Why box ``i``, kept by ``side`` only, may legitimately be kept or dropped by NMS ('' when it may not)."""
    score, cls = float(side.scores[i]), side.classes[i]
    if tol.conf is not None and abs(score - tol.conf) <= tol.max_score_diff:
        return f"score {score:.4f} at the confidence threshold {tol.conf:g}"
    kept = [k for k in range(len(side)) if k != i and side.classes[k] == cls and side.scores[k] >= score]
    if tol.nms_iou is not None and kept:
        overlaps = iou_matrix(side.boxes[i:i + 1], side.boxes[kept])[0]
        near = np.abs(overlaps - tol.nms_iou) <= tol.tie_eps
        if near.any():
            k = kept[int(near.argmax())]
            return (f"IoU {overlaps[near.argmax()]:.4f} with kept box {k} (score {side.scores[k]:.4f}) is at the "
                    f"NMS threshold {tol.nms_iou:g}")
    rivals = [k for k in other_unmatched if other.classes[k] == cls
              and abs(float(other.scores[k]) - score) <= tol.max_score_diff]
    if rivals and tol.nms_iou is not None:
        overlaps = iou_matrix(side.boxes[i:i + 1], other.boxes[rivals])[0]
        if (overlaps > tol.nms_iou - tol.tie_eps).any():
            k = rivals[int(overlaps.argmax())]
            return f"competes with box {k} of equal score ({other.scores[k]:.4f} vs {score:.4f}): either may be kept"
    return ""


def compare_detections(reference: Sequence[Detections], got: Sequence[Detections], *, label: str, format: str,
                       track: str, tol: DetTolerance = DetTolerance()) -> DetectionCheck:
    check = DetectionCheck(label, format, track, conf=tol.conf)
    if len(reference) != len(got):
        check.error = f"{len(got)} results for {len(reference)} images"
        return check
    check.images = [compare_image(i, r, g, tol) for i, (r, g) in enumerate(zip(reference, got))]
    if check.ties > max(1, tol.max_tie_share * check.detections):
        check.error = (f"{check.ties} ties among {check.detections} reference boxes: more than NMS decisions at "
                       "a threshold explain; the boxes or scores differ")
    elif check.detections == 0:
        message = (f"the reference found no box in {len(reference)} images, so nothing was compared "
                   f"(confidence {tol.conf if tol.conf is not None else 'as set'})")
        if tol.allow_empty:
            check.warnings.append(message + "; passed only because empty results were allowed")
        else:
            check.error = message + ": use images with objects (--images) or pass --allow-empty"
    return check


def verification_conf(reference, images: Sequence, default: float, per_image: int = 4) -> float:
    """A verification-only confidence threshold at which the reference finds boxes: ``default`` when it finds at
    least one per image on average there, else the score of the ``per_image``-th best box per image over
    ``images`` (an untrained detector's scores sit far below any deployment threshold, and comparing zero or a
    handful of boxes proves little)."""
    from modelport.detect.nms import NmsSettings

    saved = reference.settings
    reference.settings = NmsSettings(0.001, saved.iou, saved.topk)
    try:
        scores = np.sort(np.concatenate([d.scores for d in reference.detect(images)] or [np.zeros(0)]))[::-1]
    finally:
        reference.settings = saved
    if not len(scores) or (scores >= default).sum() >= len(images):
        return default
    # Half-way to the next lower score: no box sits at the threshold itself.
    k = min(len(scores), per_image * len(images)) - 1
    below = scores[k + 1] if k + 1 < len(scores) else 0.001
    return float(max(0.001, (scores[k] + below) / 2))


def detect_both(reference, runner, images: Sequence) -> tuple[list[Detections], list[Detections]]:
    """Ultralytics' and the runner's detections of ``images``, as one batch and, for a dynamic-shape model,
    also image by image: a lone image takes the rectangular letterbox path, a mixed batch the full size."""
    theirs, ours = list(reference.detect(images)), list(runner.detect(images))
    if runner.spec.preprocess.stride:
        for image in images:
            theirs += reference.detect([image])
            ours += runner.detect([image])
    return theirs, ours


@dataclass(slots=True)
class DetectReport:
    """``modelport.verify`` of detector artifacts: each one's detections against Ultralytics' predict."""

    reference: str
    results: list[DetectionCheck]

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(c.passed for c in self.results)

    def summary(self) -> str:
        return "; ".join(f"{c.label}: {c.summary()}" for c in self.results)

    def to_dict(self) -> dict:
        return {"reference": self.reference, "passed": self.passed, "results": [c.to_dict() for c in self.results]}


def verify_artifacts(pt_file: Path, artifacts: Sequence[Path] = (), *, conf: float = 0.25,
                     images: Sequence[ImageLike] | None = None, count: int = 8, seed: int = 1234,
                     allow_empty: bool = False) -> list[DetectionCheck]:
    """Compare each artifact's detections (default: every export of ``pt_file`` found) with Ultralytics'
    predict on ``images`` (default: ``count`` synthetic scenes of ``seed``, the scenes export verifies on).
    Raw tracks are judged at a verification-only threshold at which the reference finds boxes; end-to-end
    graphs at their own. One check per artifact."""
    from modelport.detect.discover import candidates
    from modelport.detect.model import IOU, TOPK, load_ultralytics
    from modelport.detect.nms import NmsSettings
    from modelport.detect.runner import DetectRunner, UltralyticsReference, load_runtime
    from modelport.detect.samples import street_scenes
    from modelport.errors import WeightsNotFoundError
    from modelport.formats import format_of_path

    load_ultralytics(pt_file)  # a missing, corrupt or unsafe reference says so before its exports are looked for
    artifacts = list(artifacts) or candidates(pt_file)
    if not artifacts:
        raise WeightsNotFoundError(f"{pt_file}: no exports found to verify",
                                   hint="give artifact paths or run `modelport export` first")
    frames = list(images) if images is not None else street_scenes(count, seed=seed)
    checks = []
    for path in artifacts:
        runner = DetectRunner(load_runtime(format_of_path(path), path), NmsSettings(conf, IOU, TOPK))
        ref = UltralyticsReference(pt_file, runner.spec.preprocess.height, runner.nms, runner.spec.labels)
        if runner.track == "raw":
            runner.nms = ref.settings = NmsSettings(verification_conf(ref, frames, conf), IOU, TOPK)
        tol = DetTolerance(nms_iou=runner.nms.iou, conf=runner.nms.conf, allow_empty=allow_empty)
        try:
            checks.append(compare_detections(*detect_both(ref, runner, frames), label=str(path),
                                             format=runner.format, track=runner.track, tol=tol))
        finally:
            runner.close()
        log.info("%s: %s", path, checks[-1].summary())
    return checks
