"""`reid report`: a timeline of who appears when in each video (tracks, or identities with ReID)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.atomic import atomic_write_text, refuse_existing
from modelport.errors import ModelportError
from modelport.reid import crops, pages, store
from modelport.reid.db import describe
from modelport.reid.frames import probe
from modelport.reid.models import resolve_model

GAP_S = 1.0  # appearances closer than this are drawn as one segment
OUTPUT_HINT = "choose another --output, or pass --force to replace it"


@dataclass(frozen=True, slots=True)
class ReportResult:
    path: Path
    rows: int
    videos: int
    use_reid: bool
    model: str | None


def _segments(times: np.ndarray) -> list[list[float]]:
    times = np.sort(times)
    breaks = np.flatnonzero(np.diff(times) > GAP_S)
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, len(times) - 1]
    return [[round(float(times[a]), 3), round(float(times[b]), 3)] for a, b in zip(starts, ends)]


def build_report(db: str | Path, *, use_reid: bool = False, model: str | None = None,
                 class_name: str | None = "person", title: str | None = None) -> dict:
    """The report's data: per video, one row per track (or identity) with segments and a thumbnail."""
    conn = store.connect(db)
    try:
        det, _, _ = store.load_detections(conn, class_name)
        record = resolve_model(conn, model) if use_reid else None
        assigned = store.identities(conn, record.key) if record else {}
    finally:
        conn.close()
    if len(det) == 0:
        raise ModelportError(f"{describe(db)}: no {class_name or ''} detections to report")
    if record is not None:  # use_reid
        if not assigned:
            raise ModelportError(f"{describe(db)}: no identities for {record.key}",
                                 hint=f"run `modelport reid cluster --db {describe(db)} --model {record.key}` first")
        group = np.array([assigned.get(int(i), -1) for i in det.ids])  # persons count from 0
        names = {g: f"person {g}" if g >= 0 else "unassigned" for g in np.unique(group)}
    else:
        group = det.track.copy()
        names = {g: f"track {g}" if g >= 0 else "no track" for g in np.unique(group)}
    videos, thumbs_for = [], []
    for video in sorted(set(det.video.tolist())):
        in_video = det.video == video
        try:
            duration = probe(video).frames / probe(video).fps
        except ModelportError:
            duration = float(det.timestamp[in_video].max())
        rows = []
        for g in np.unique(group[in_video]):
            idx = np.flatnonzero(in_video & (group == g))
            best = int(idx[np.argmax(det.confidence[idx])])
            thumbs_for.append(best)
            rows.append({"key": int(g), "label": names[g], "count": int(len(idx)), "thumb": best,
                         "first": float(det.timestamp[idx].min()), "segments": _segments(det.timestamp[idx]),
                         "detections": det.ids[idx].tolist()})
        rows.sort(key=lambda r: r["first"])
        videos.append({"video": video, "duration": max(duration, float(det.timestamp[in_video].max())),
                       "rows": rows})
    images = crops.fetch_crops(det, thumbs_for)
    for video in videos:
        for row in video["rows"]:
            row["thumb"] = crops.jpeg_uri(images[row["thumb"]].resize((32, 64))) if row["thumb"] in images else ""
    kind = f"identities by ReID ({record.key}, {record.model_type})" if record else "tracks (no ReID)"
    n_rows = sum(len(v["rows"]) for v in videos)
    return {"title": title or f"Who appears when: {kind}", "use_reid": use_reid,
            "model": record.key if record else None, "model_type": record.model_type if record else None,
            "summary": f"{len(det)} detections in {len(videos)} video(s); {n_rows} rows, one per "
                       f"{'identity' if use_reid else 'track'} and video",
            "videos": videos}


def write_report(db: str | Path, output: str | Path, *, force: bool = False, **options) -> ReportResult:
    output = refuse_existing(output, force, OUTPUT_HINT)  # before the report is built
    data = build_report(db, **options)
    atomic_write_text(output, pages.timeline(data), force=force, hint=OUTPUT_HINT)
    return ReportResult(output, sum(len(v["rows"]) for v in data["videos"]), len(data["videos"]),
                        data["use_reid"], data["model"])


def compare_reports(left: str | Path, right: str | Path, output: str | Path, force: bool = False, *,
                    db: str | Path | None = None, class_name: str | None = "person") -> Path:
    """Two report pages side by side, with the agreement of their groupings on shared detections.

    With ``db``, ``left`` and ``right`` are models instead (weights files or exports, matched by sha256, or
    model keys) and their identity timelines are built from the database's `reid cluster` results.
    """
    from sklearn.metrics import adjusted_rand_score

    output = refuse_existing(output, force, OUTPUT_HINT)
    if db is None:
        a, b = pages.read_report(left), pages.read_report(right)
    else:
        a, b = (build_report(db, use_reid=True, model=str(m), class_name=class_name) for m in (left, right))

    def assignment(data: dict) -> dict[int, str]:
        return {d: f"{v['video']}#{r['key']}" if not data["use_reid"] else str(r["key"])
                for v in data["videos"] for r in v["rows"] for d in r["detections"]}

    la, lb = assignment(a), assignment(b)
    shared = sorted(set(la) & set(lb))
    agreement = float(adjusted_rand_score([la[d] for d in shared], [lb[d] for d in shared])) if shared else None
    atomic_write_text(output, pages.comparison(a, b, agreement), force=force, hint=OUTPUT_HINT)
    return output
