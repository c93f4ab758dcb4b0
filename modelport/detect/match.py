"""Match one image's export detections to the reference's, and explain the boxes only one side kept.

Two runtimes computing the same function within float tolerance can still keep different boxes, because NMS
makes hard decisions on soft numbers. A box kept by one side only is a *tie* (not a failure) when one of these
decisions could legitimately go either way:

- ``conf``: its score is at the confidence threshold.
- ``nms-threshold``: it overlaps a higher-scoring kept box of its class at an IoU at the NMS threshold.
- ``equal-score``: it competes with an equally scored box the other side kept instead.
- ``class-argmax``: two classes score alike, so the box may carry either class: matched to the same box of
  another class, or (scores saturated at 1.0, where many anchors tie) competing as that class;
  ``saturated-argmax``: the same box, both classes at 1.0.
- ``cascade``: the other side kept a tied box this side dropped (or the reverse), and that box suppresses
  this one there: one decision at a threshold changes what the tied box suppresses next.
- ``max-det``: the other side is full (``max_det`` boxes) and this box ranks at or below its last one: a tie
  earlier in the order pushed it out. At most as many as the other side has one-sided boxes.

Boxes are compared in image pixels, clipped to the image; NMS saw them before clipping, which moves the IoU of
a pair near the threshold by up to 0.29 (median 0.06, measured on a seeded yolo11n). A pair with a box on the
image border is therefore at the threshold when its clipped IoU is within ``border_slack`` of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelport.detect.runner import Detections

DEGENERATE_PX = 1.0
BORDER_PX = 1e-3  # clipping writes the image edge exactly; a coordinate this close to it touches it
SATURATED = 1.0 - 1e-6  # a score fp32 sigmoid rounds to 1.0 (or the float below): many classes of a box tie there
TIE_KINDS = ("conf", "nms-threshold", "equal-score", "class-argmax", "saturated-argmax", "cascade", "max-det")
UNCAPPED_KINDS = ("saturated-argmax",)  # proven by the boxes themselves: see DetTolerance.max_tie_share


@dataclass(frozen=True, slots=True)
class DetTolerance:
    min_iou: float = 0.99
    max_score_diff: float = 1e-3
    nms_iou: float | None = None  # the NMS IoU threshold both sides used (ties need it)
    conf: float | None = None  # the confidence threshold both sides used
    max_det: int | None = None  # the most boxes NMS keeps per image (max-det ties need it)
    tie_eps: float = 2e-3  # how close to nms_iou an overlap counts as a tie
    border_slack: float = 0.3  # the same for a pair with a box clipped at the image border (see module doc)
    # More ties than this share of reference boxes is not NMS any more (a shifted export makes nearly every box a
    # tie; legitimate ones measured 0.1-0.3% on seeded yolo11n). Not counted: the same box (IoU >= min_iou) at
    # the same saturated score under another class, which only a class permutation could fake, and that shows
    # in the unsaturated boxes; a saturating model has hundreds of them (12% of boxes measured).
    max_tie_share: float = 0.05
    min_tie_cap: int = 3  # ties always allowed: one threshold decision, the box it cascades to, a max-det shift
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
    tie_kinds: tuple[str, ...] = ()  # each tie's kind (TIE_KINDS), in the order of ``ties``

    @property
    def passed(self) -> bool:
        return not self.failures


def _area(x: np.ndarray) -> np.ndarray:
    return (x[..., 2] - x[..., 0]).clip(0) * (x[..., 3] - x[..., 1]).clip(0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, (len(a), len(b))."""
    a, b = a[:, None, :].astype(np.float64), b[None, :, :].astype(np.float64)
    w = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    h = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = w * h
    union = _area(a) + _area(b) - inter
    iou = inter / np.where(union > 0, union, 1)
    # Boxes clipped to an image edge can collapse to zero area, where IoU means nothing: such a pair
    # matches when its corners agree to within DEGENERATE_PX pixels.
    degenerate = (_area(a) == 0) | (_area(b) == 0)
    close = np.abs(a - b).max(-1) <= DEGENERATE_PX
    return np.where(degenerate, np.where(close, 1.0, 0.0), iou)


class _Sides:
    """Both sides of one image with what the tie rules ask of them: side 0 the reference, side 1 the export."""

    def __init__(self, ref: Detections, got: Detections, tol: DetTolerance, size: tuple[int, int] | None) -> None:
        self.dets, self.tol = (ref, got), tol
        self.border = (self._on_border(ref, size), self._on_border(got, size))
        self.iou = tuple(iou_matrix(d.boxes, d.boxes) for d in self.dets)
        cross = iou_matrix(ref.boxes, got.boxes) if len(ref) and len(got) else np.zeros((len(ref), len(got)))
        self.cross = (cross, cross.T)

    @staticmethod
    def _on_border(dets: Detections, size: tuple[int, int] | None) -> np.ndarray:
        """Which boxes touch the image border (none when the size is unknown: IoUs are then taken as NMS saw them)."""
        if size is None:
            return np.zeros(len(dets), bool)
        edge = np.array([size[1], size[0]], np.float64)
        return np.asarray((dets.boxes[:, :2] <= BORDER_PX).any(1) | (dets.boxes[:, 2:] >= edge - BORDER_PX).any(1))

    def overlap(self, s: int, i: int, t: int, k: int) -> tuple[float, bool]:
        """IoU of box ``i`` of side ``s`` with box ``k`` of side ``t``, and whether either is on the border."""
        iou = self.iou[s][i, k] if s == t else self.cross[s][i, k]
        return float(iou), bool(self.border[s][i] or self.border[t][k])

    def at_threshold(self, iou: float, border: bool, loose: bool) -> bool:
        """Whether NMS may have seen the pair at its IoU threshold; ``loose``: allow for clipping at the border."""
        assert self.tol.nms_iou is not None
        return abs(iou - self.tol.nms_iou) <= (self.tol.border_slack if loose and border else self.tol.tie_eps)

    def suppresses(self, iou: float, border: bool) -> bool:
        """Whether NMS could have suppressed one box of the pair with the other."""
        assert self.tol.nms_iou is not None
        return iou > self.tol.nms_iou - (self.tol.border_slack if border else self.tol.tie_eps)


Reason = tuple[str, str]  # (kind, why)
Explained = tuple[dict[int, Reason], dict[int, Reason]]  # per side: {one-sided box: reason}


def _threshold_reason(sides: _Sides, s: int, i: int, loose: bool) -> Reason | None:
    """Box ``i`` of side ``s`` overlaps a higher-scoring kept box of its class at the NMS threshold (the pair
    closest to it is named)."""
    side, thr = sides.dets[s], sides.tol.nms_iou
    assert thr is not None
    found = []
    for k in range(len(side)):
        if k != i and side.classes[k] == side.classes[i] and side.scores[k] >= side.scores[i]:
            iou, border = sides.overlap(s, i, s, k)
            if sides.at_threshold(iou, border, loose):
                found.append((abs(iou - thr), iou, border, k))
    if not found:
        return None
    _, iou, border, k = min(found)
    where = " (clipped at the image border, where NMS saw other corners)" if border else ""
    return "nms-threshold", (f"IoU {iou:.4f}{where} with kept box {k} (score {side.scores[k]:.4f}) is at the "
                             f"NMS threshold {thr:g}")


def _root_reason(sides: _Sides, s: int, i: int, one_sided: tuple[list[int], list[int]]) -> Reason | None:
    """A decision at a threshold that box ``i`` of side ``s``, kept by that side only, could go either way by."""
    tol, side, other, t = sides.tol, sides.dets[s], sides.dets[1 - s], 1 - s
    score, cls = float(side.scores[i]), side.classes[i]
    if tol.conf is not None and abs(score - tol.conf) <= tol.max_score_diff:
        return "conf", f"score {score:.4f} at the confidence threshold {tol.conf:g}"
    if tol.nms_iou is None:
        return None
    reason = _threshold_reason(sides, s, i, loose=False)
    if reason:
        return reason
    saturated = score >= SATURATED
    for k in one_sided[t] if not saturated else range(len(other)):
        if abs(float(other.scores[k]) - score) > tol.max_score_diff:
            continue
        iou, border = sides.overlap(s, i, t, k)
        if not sides.suppresses(iou, border):
            continue
        if other.classes[k] == cls and k in one_sided[t]:
            return "equal-score", (f"competes with box {k} of equal score ({other.scores[k]:.4f} vs {score:.4f}): "
                                   "either may be kept")
        if saturated and other.classes[k] != cls:
            return "class-argmax", (f"score saturated at {score:.4f}, so it may carry class {other.classes[k]}, "
                                    f"where it competes with box {k} of equal score (IoU {iou:.3f})")
    return None


def _cascade(sides: _Sides, one_sided: tuple[list[int], list[int]], explained: Explained) -> None:
    """Explain boxes suppressed, on the other side, by a tie kept there only; until nothing changes, since a box
    explained so may in turn explain a lower one."""
    tol = sides.tol
    changed = tol.nms_iou is not None
    while changed:
        changed = False
        for s in (0, 1):
            side, t = sides.dets[s], 1 - s
            other = sides.dets[t]
            for i in one_sided[s]:
                if i in explained[s]:
                    continue
                for k in sorted(explained[t], key=lambda k: -other.scores[k]):
                    iou, border = sides.overlap(s, i, t, k)
                    if (other.classes[k] == side.classes[i] and other.scores[k] >= side.scores[i] - tol.max_score_diff
                            and sides.suppresses(iou, border)):
                        name = "the export" if s == 0 else "the reference"
                        explained[s][i] = ("cascade", f"{name} suppresses it with box {k} (IoU {iou:.3f}), a tie "
                                                      f"({explained[t][k][0]}) kept on that side only")
                        changed = True
                        break


def _max_det(sides: _Sides, one_sided: tuple[list[int], list[int]], explained: Explained) -> None:
    """Explain the lowest one-sided boxes of a side whose other side is full: pushed out by a box kept earlier."""
    tol = sides.tol
    for s in (0, 1):
        side, other = sides.dets[s], sides.dets[1 - s]
        if tol.max_det is None or not len(other) or len(other) < tol.max_det:
            continue
        last = float(other.scores.min())
        budget = len(one_sided[1 - s])  # each box the other side kept instead pushes out at most one
        for i in sorted(one_sided[s], key=lambda i: side.scores[i]):
            if budget <= 0 or side.scores[i] > last + tol.max_score_diff:
                break
            if i not in explained[s]:
                explained[s][i] = ("max-det", f"score {side.scores[i]:.4f} ranks at or below the last of the "
                                              f"{len(other)} boxes (max_det) the other side kept ({last:.4f})")
                budget -= 1


def explain_one_sided(ref: Detections, got: Detections, one_sided: tuple[list[int], list[int]],
                      tol: DetTolerance, size: tuple[int, int] | None = None) -> Explained:
    """For each side, {box: (kind, why)} of its one-sided boxes that a tie explains (``TIE_KINDS``).

    Exact reasons first, each followed by its cascades; then max_det; last, pairs clipped at the border (whose
    IoU at NMS time is only known loosely), so that a box gets the most specific reason that holds."""
    sides = _Sides(ref, got, tol, size)
    explained: Explained = ({}, {})

    def stage(rule) -> None:
        for s in (0, 1):
            for i in one_sided[s]:
                reason = None if i in explained[s] else rule(s, i)
                if reason:
                    explained[s][i] = reason
        _cascade(sides, one_sided, explained)

    stage(lambda s, i: _root_reason(sides, s, i, one_sided))
    _max_det(sides, one_sided, explained)
    if tol.nms_iou is not None:
        stage(lambda s, i: _threshold_reason(sides, s, i, loose=True))
    return explained


def _match(ref: Detections, got: Detections, ious: np.ndarray, tol: DetTolerance,
           same_class: bool) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs at IoU >= ``min_iou``, best reference score first; among the candidates for a box
    (all the same box at that IoU) the closest score wins, so near-identical neighbours are not crossed."""
    pairs: list[tuple[int, int]] = []
    taken = np.zeros(len(got), bool)
    wanted = ref.classes[:, None] == got.classes[None, :]
    if not same_class:
        wanted = ~wanted & (np.abs(ref.scores[:, None] - got.scores[None, :]) <= tol.max_score_diff)
    for r in np.argsort(-ref.scores, kind="stable"):
        ok = np.flatnonzero(wanted[r] & ~taken & (ious[r] >= tol.min_iou))
        if ok.size:
            j = int(ok[np.lexsort((-ious[r, ok], np.abs(got.scores[ok] - ref.scores[r])))[0]])
            taken[j] = True
            pairs.append((int(r), j))
    return pairs


def compare_image(index: int, ref: Detections, got: Detections, tol: DetTolerance = DetTolerance(),
                  size: tuple[int, int] | None = None) -> ImageComparison:
    """Match boxes one to one (same class, IoU >= ``min_iou``; then another class at an equal score, a
    class-argmax tie); boxes left on either side are failures unless a tie explains them. ``size``: the image's
    (height, width), which tells boxes clipped at its border (without it, none is taken to be)."""
    ious = iou_matrix(ref.boxes, got.boxes) if len(ref) and len(got) else np.zeros((len(ref), len(got)))
    failures, ties, kinds = [], [], []
    worst_iou, worst_score = 1.0, 0.0
    pairs = _match(ref, got, ious, tol, same_class=True)
    for r, j in pairs:
        worst_iou = min(worst_iou, float(ious[r, j]))
        diff = abs(float(ref.scores[r]) - float(got.scores[j]))
        worst_score = max(worst_score, diff)
        if diff > tol.max_score_diff:
            failures.append(f"score {got.scores[j]:.5f} vs {ref.scores[r]:.5f} "
                            f"(diff {diff:.2g} > {tol.max_score_diff:g})")
    left = ([r for r in range(len(ref)) if r not in {p[0] for p in pairs}],
            [j for j in range(len(got)) if j not in {p[1] for p in pairs}])
    keep = (np.asarray(left[0], int), np.asarray(left[1], int))
    sub = (Detections(ref.boxes[keep[0]], ref.scores[keep[0]], ref.classes[keep[0]]),
           Detections(got.boxes[keep[1]], got.scores[keep[1]], got.classes[keep[1]]))
    for a, b in _match(*sub, ious[np.ix_(keep[0], keep[1])], tol, same_class=False):
        r, j = left[0][a], left[1][b]
        worst_iou = min(worst_iou, float(ious[r, j]))
        ties.append(f"reference box {r} (class {ref.classes[r]}) is export box {j} (class {got.classes[j]}) at an "
                    f"equal score {ref.scores[r]:.4f}: the two classes tie for the argmax")
        kinds.append("saturated-argmax" if min(ref.scores[r], got.scores[j]) >= SATURATED else "class-argmax")
        pairs.append((r, j))
    matched = {p[0] for p in pairs}, {p[1] for p in pairs}
    one_sided = ([r for r in left[0] if r not in matched[0]], [j for j in left[1] if j not in matched[1]])
    explained = explain_one_sided(ref, got, one_sided, tol, size)
    for r in one_sided[0]:
        if r in explained[0]:
            ties.append(f"reference box {r}: {explained[0][r][1]}")
            kinds.append(explained[0][r][0])
            continue
        row = np.where(ref.classes[r] == got.classes, ious[r], 0.0) if len(got) else np.zeros(1)
        best, best_any = float(row.max()), float(ious[r].max()) if len(got) else 0.0
        failures.append(f"reference box {r} (class {ref.classes[r]}, score {ref.scores[r]:.4f}) unmatched "
                        f"(best IoU {best:.3f} same class, {best_any:.3f} any)")
        worst_iou = min(worst_iou, best)
    for j in one_sided[1]:
        if j in explained[1]:
            ties.append(f"export box {j}: {explained[1][j][1]}")
            kinds.append(explained[1][j][0])
        else:
            failures.append(f"export box {j} (class {got.classes[j]}, score {got.scores[j]:.4f}) has no reference box")
    return ImageComparison(index, len(ref), len(got), len(pairs), worst_iou, worst_score, tuple(failures[:5]),
                           tuple(ties), tuple(kinds))
