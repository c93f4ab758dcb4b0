"""The one CPU NMS for raw-track detectors: vectorised numpy, class-aware, best class per box.

It returns the same padded arrays as the end-to-end graphs (num_dets, det_boxes, det_scores,
det_classes), so every track is read back by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_NMS = 30000  # candidates kept before NMS, highest scores first (as Ultralytics does)
CLASS_OFFSET = 7680.0  # shifts boxes of different classes apart so one NMS pass is class-aware


@dataclass(frozen=True, slots=True)
class NmsSettings:
    conf: float = 0.25
    iou: float = 0.7
    topk: int = 300


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    xy, half = boxes[..., :2], boxes[..., 2:4] / 2
    return np.concatenate([xy - half, xy + half], axis=-1)


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Greedy NMS over xyxy ``boxes``; indices of kept boxes, best first, at most ``limit``.

    Each step compares the current best box with all remaining ones in one vector operation and
    stops as soon as ``limit`` boxes are kept.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def nms_raw(raw: np.ndarray, settings: NmsSettings = NmsSettings()) -> dict[str, np.ndarray]:
    """``[B, 4 + C, anchors]`` head output -> padded ``num_dets [B,1]``, ``det_boxes [B,k,4]`` (xyxy),
    ``det_scores [B,k]``, ``det_classes [B,k]`` with k = min(topk, anchors)."""
    batch, channels, anchors = raw.shape
    k = min(settings.topk, anchors)
    num = np.zeros((batch, 1), np.int32)
    out_boxes = np.zeros((batch, k, 4), np.float32)
    out_scores = np.zeros((batch, k), np.float32)
    out_classes = np.zeros((batch, k), np.int32)
    for b in range(batch):
        cls_scores = raw[b, 4:]  # [C, A]
        best = cls_scores.argmax(0)
        conf = np.take_along_axis(cls_scores, best[None], 0)[0]
        cand = np.flatnonzero(conf > settings.conf)
        if cand.size > MAX_NMS:
            cand = cand[np.argsort(-conf[cand], kind="stable")[:MAX_NMS]]
        if not cand.size:
            continue
        boxes = xywh_to_xyxy(raw[b, :4][:, cand].T)
        scores = conf[cand]
        classes = best[cand]
        keep = nms_indices(boxes + (classes * CLASS_OFFSET)[:, None], scores, settings.iou, k)
        n = len(keep)
        num[b, 0] = n
        out_boxes[b, :n] = boxes[keep]
        out_scores[b, :n] = scores[keep]
        out_classes[b, :n] = classes[keep]
    return {"num_dets": num, "det_boxes": out_boxes, "det_scores": out_scores, "det_classes": out_classes}
