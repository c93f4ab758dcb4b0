"""Fill the detections database from a video (or image folder) and MOTChallenge text files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, ModelportError, WeightsNotFoundError
from modelport.reid import store
from modelport.reid.db import describe
from modelport.reid.frames import probe


@dataclass(frozen=True, slots=True)
class MotRow:
    frame: int  # 1-based, as in the file
    ident: int  # track id (det.txt) or person id (gt.txt); -1 for none
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    conf: float


@dataclass(frozen=True, slots=True)
class ImportResult:
    video: str
    detections: int
    tracks: int
    ground_truth: int  # detections matched to a ground-truth identity
    frames: int
    fps: float


def read_mot(path: str | Path) -> list[MotRow]:
    """Parse ``frame,id,x,y,w,h,conf,...`` lines; a bad line is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: MOTChallenge detections file not found")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(" ", "").split(",")
        try:
            if len(parts) < 6:
                raise ValueError(f"{len(parts)} fields, need at least 6")
            frame, ident = int(float(parts[0])), int(float(parts[1]))
            x, y, w, h = (float(v) for v in parts[2:6])
            conf = float(parts[6]) if len(parts) > 6 else 1.0
            if frame < 1 or w <= 0 or h <= 0:
                raise ValueError("frame must be >= 1 and width/height positive")
        except ValueError as exc:
            raise CorruptFileError(f"{path}:{number}: not a MOTChallenge line ({exc}): {line[:80]!r}",
                                   hint="expected frame,id,x,y,w,h,conf[,...] with 1-based frames") from None
        rows.append(MotRow(frame, ident, (x, y, x + w, y + h), conf))
    return rows


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1y1x2y2 boxes."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_ground_truth(dets: list[MotRow], gt: list[MotRow], min_iou: float = 0.5) -> list[int | None]:
    """The ground-truth identity of each detection: best one-to-one IoU match within its frame."""
    from scipy.optimize import linear_sum_assignment

    by_frame: dict[int, list[int]] = {}
    for j, g in enumerate(gt):
        by_frame.setdefault(g.frame, []).append(j)
    det_frames: dict[int, list[int]] = {}
    for i, d in enumerate(dets):
        det_frames.setdefault(d.frame, []).append(i)
    result: list[int | None] = [None] * len(dets)
    for frame, di in det_frames.items():
        gj = by_frame.get(frame, [])
        if not gj:
            continue
        iou = iou_matrix(np.array([dets[i].box for i in di]), np.array([gt[j].box for j in gj]))
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] >= min_iou:
                result[di[r]] = gt[gj[c]].ident
    return result


def import_mot(db: str | Path, video: str | Path, detections: str | Path, *, ground_truth: str | Path | None = None,
               class_name: str = "person", fps: float | None = None, min_conf: float = 0.0,
               replace: bool = False) -> ImportResult:
    """Import one video's MOT detections (and optional ground truth) in a single transaction."""
    info = probe(video, fps)
    dets = [d for d in read_mot(detections) if d.conf >= min_conf]
    beyond = [d.frame for d in dets if d.frame > info.frames] if info.frames > 0 else []
    if beyond:
        raise CorruptFileError(f"{detections}: detections for frame {max(beyond)} but {video} has {info.frames} frames",
                               hint="MOT frames count from 1; is this the right video?")
    gt_ids = match_ground_truth(dets, read_mot(ground_truth)) if ground_truth else [None] * len(dets)
    key = str(Path(video).resolve())
    conn = store.connect(db, create=True)
    try:
        existing = store.count_detections(conn, key)
        if existing and not replace:
            raise ModelportError(f"{describe(db)} already holds {existing} detections of {key}",
                                 hint="pass --replace to re-import this video (its embeddings are dropped too)")
        with conn:  # one transaction: the old rows go only if the new ones arrive
            if existing:
                old = "SELECT id FROM object_detections WHERE video = ?"
                for table in ("reid_embeddings", "reid_quality", "reid_ground_truth", "reid_identities"):
                    conn.execute(f"DELETE FROM {table} WHERE detection_id IN ({old})", (key,))
                conn.execute("DELETE FROM object_detections WHERE video = ?", (key,))
            pairs = []
            for d, person in zip(dets, gt_ids):
                det_id = store.add_detection(conn, (key, d.frame - 1, (d.frame - 1) / info.fps, class_name, d.conf,
                                                    *d.box, d.ident if d.ident >= 0 else None))
                if person is not None:
                    pairs.append((det_id, person))
            store.write_ground_truth(conn, pairs)
    finally:
        conn.close()
    return ImportResult(key, len(dets), len({d.ident for d in dets if d.ident >= 0}), len(pairs),
                        info.frames, info.fps)
