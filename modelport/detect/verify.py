"""Compare detections of an export with Ultralytics' own predictions, image by image, and report.

Pass criteria (all must hold for every image): every reference box matched one-to-one by a box of the same
class with IoU >= 0.99, score differences <= 1e-3, and no unmatched box on either side except NMS ties
(``modelport.detect.match``: threshold decisions, their cascades, class-argmax ties, max_det shifts). Boxes
clipped to zero area at an image edge match when their corners agree within one pixel.

Ties are counted by kind and reported, and capped: more than ``max_tie_share`` of the reference boxes (at least
``min_tie_cap``) is not NMS deciding near a threshold but boxes or scores that differ. A check that compared no
reference box at all fails (``allow_empty`` makes it pass with a warning): it proves nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from modelport.detect.match import (  # compare_image and iou_matrix: public here too
    TIE_KINDS,
    UNCAPPED_KINDS,
    DetTolerance,
    ImageComparison,
    compare_image as compare_image,
    iou_matrix as iou_matrix,
)
from modelport.detect.runner import Detections
from modelport.preprocess import ImageLike

log = logging.getLogger(__name__)


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
    def tie_counts(self) -> dict[str, int]:
        """Ties by kind (``TIE_KINDS``), kinds that occurred only."""
        kinds = [k for i in self.images for k in i.tie_kinds]
        return {k: kinds.count(k) for k in TIE_KINDS if k in kinds}

    @property
    def capped_ties(self) -> int:
        """The ties ``max_tie_share`` limits (all but ``UNCAPPED_KINDS``)."""
        return self.ties - sum(n for kind, n in self.tie_counts.items() if kind in UNCAPPED_KINDS)

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
        data.update(passed=self.passed, detections=self.detections, ties=self.ties, tie_counts=self.tie_counts,
                    min_iou=self.min_iou, max_score_diff=self.max_score_diff)
        return data


def compare_detections(reference: Sequence[Detections], got: Sequence[Detections], *, label: str, format: str,
                       track: str, tol: DetTolerance = DetTolerance(),
                       sizes: Sequence[tuple[int, int]] | None = None) -> DetectionCheck:
    """Image by image (``sizes``: each one's (height, width), so that boxes clipped at its border are known),
    then the tie cap over all images."""
    check = DetectionCheck(label, format, track, conf=tol.conf)
    if len(reference) != len(got) or (sizes is not None and len(sizes) != len(reference)):
        check.error = f"{len(got)} results for {len(reference)} images"
        return check
    check.images = [compare_image(i, r, g, tol, sizes[i] if sizes is not None else None)
                    for i, (r, g) in enumerate(zip(reference, got))]
    if check.capped_ties > max(tol.min_tie_cap, tol.max_tie_share * check.detections):
        kinds = ", ".join(f"{n} {kind}" for kind, n in check.tie_counts.items())
        check.error = (f"{check.ties} ties ({kinds}) among {check.detections} reference boxes: more than NMS "
                       "decisions at a threshold explain; the boxes or scores differ")
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


def detected_sizes(runner, images: Sequence) -> list[tuple[int, int]]:
    """The (height, width) of each result ``detect_both`` gives, in its order."""
    from modelport.tasks.detect import image_sizes

    sizes = image_sizes(images)
    return sizes + sizes if runner.spec.preprocess.stride else sizes


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
        tol = DetTolerance(nms_iou=runner.nms.iou, conf=runner.nms.conf, max_det=runner.nms.topk,
                           allow_empty=allow_empty)
        try:
            checks.append(compare_detections(*detect_both(ref, runner, frames), label=str(path),
                                             format=runner.format, track=runner.track, tol=tol,
                                             sizes=detected_sizes(runner, frames)))
        finally:
            runner.close()
        log.info("%s: %s", path, checks[-1].summary())
    return checks
