"""Compare detections of an export with Ultralytics' own predictions, image by image.

Pass criteria (all must hold for every image): the same number of detections, every reference box
matched one-to-one by a box of the same class with IoU >= 0.99, and score differences <= 1e-3. Boxes
clipped to zero area at an image edge (common with untrained models) match when their corners agree
within one pixel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from modelport.detect.runner import Detections

DEGENERATE_PX = 1.0


@dataclass(frozen=True, slots=True)
class DetTolerance:
    min_iou: float = 0.99
    max_score_diff: float = 1e-3


@dataclass(frozen=True, slots=True)
class ImageComparison:
    image: int
    ref_count: int
    count: int
    matched: int
    min_iou: float  # worst IoU among matched pairs (1.0 when there is nothing to match)
    max_score_diff: float
    failures: tuple[str, ...]

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

    @property
    def passed(self) -> bool:
        return self.error is None and all(i.passed for i in self.images)

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
        data.update(passed=self.passed, detections=self.detections, min_iou=self.min_iou,
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
    """Greedy one-to-one matching, best reference score first, within the same class."""
    failures = []
    if len(got) != len(ref):
        failures.append(f"{len(got)} detections, reference has {len(ref)}")
    ious = iou_matrix(ref.boxes, got.boxes) if len(ref) and len(got) else np.zeros((len(ref), len(got)))
    same_class = ref.classes[:, None] == got.classes[None, :]
    candidates = np.where(same_class, ious, -1.0)
    taken = np.zeros(len(got), bool)
    worst_iou, worst_score, matched = 1.0, 0.0, 0
    for r in np.argsort(-ref.scores, kind="stable"):
        row = np.where(taken, -1.0, candidates[r]) if len(got) else np.zeros(0)
        j = int(row.argmax()) if row.size else -1
        if j < 0 or row[j] < tol.min_iou:
            best_any = float(ious[r].max()) if len(got) else 0.0
            failures.append(f"reference box {r} (class {ref.classes[r]}, score {ref.scores[r]:.4f}) unmatched "
                            f"(best IoU {max(float(row[j]) if j >= 0 else 0.0, 0.0):.3f} same class, {best_any:.3f} any)")
            worst_iou = min(worst_iou, max(float(row[j]) if j >= 0 else 0.0, 0.0))
            continue
        taken[j] = True
        matched += 1
        worst_iou = min(worst_iou, float(row[j]))
        diff = abs(float(ref.scores[r]) - float(got.scores[j]))
        worst_score = max(worst_score, diff)
        if diff > tol.max_score_diff:
            failures.append(f"score {got.scores[j]:.5f} vs {ref.scores[r]:.5f} (diff {diff:.2g} > {tol.max_score_diff:g})")
    return ImageComparison(index, len(ref), len(got), matched, worst_iou, worst_score, tuple(failures[:5]))


def compare_detections(reference: Sequence[Detections], got: Sequence[Detections], *, label: str, format: str,
                       track: str, tol: DetTolerance = DetTolerance()) -> DetectionCheck:
    check = DetectionCheck(label, format, track)
    if len(reference) != len(got):
        check.error = f"{len(got)} results for {len(reference)} images"
        return check
    check.images = [compare_image(i, r, g, tol) for i, (r, g) in enumerate(zip(reference, got))]
    return check


def detect_both(reference, runner, images: Sequence) -> tuple[list[Detections], list[Detections]]:
    """Ultralytics' and the runner's detections of ``images``, as one batch and, for a dynamic-shape model,
    also image by image: a lone image takes the rectangular letterbox path, a mixed batch the full size."""
    theirs, ours = list(reference.detect(images)), list(runner.detect(images))
    if runner.spec.preprocess.stride:
        for image in images:
            theirs += reference.detect([image])
            ours += runner.detect([image])
    return theirs, ours
