"""A synthetic street scene for the demo and the tests: people with distinct clothing walk across,
occlude each other, leave and come back. Writes the video, MOTChallenge detections (with tracker-like
track breaks) and ground-truth identities, as seen by one of the synthetic cameras of ``cameras.py``."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.atomic import atomic_write_text, publish, refuse_existing
from modelport.errors import ModelportError
from modelport.reid.cameras import CameraConditions, camera as camera_named

# Clothing palette (BGR): far apart so that identities differ by colour, as real outfits mostly do.
TOPS = [(40, 40, 200), (200, 80, 30), (40, 160, 40), (30, 200, 230), (235, 235, 235), (35, 35, 35),
        (20, 120, 240), (150, 40, 140), (180, 180, 60), (90, 60, 150), (120, 120, 120), (60, 90, 40)]
BOTTOMS = [(120, 70, 30), (30, 30, 30), (110, 160, 190), (110, 110, 110), (210, 210, 210), (40, 50, 100),
           (70, 110, 70), (60, 60, 160), (150, 90, 150), (40, 140, 200)]
SKIN = [(140, 170, 220), (100, 130, 180), (60, 90, 140), (170, 190, 230)]
HAIR = [(20, 20, 20), (30, 60, 110), (80, 150, 200), (120, 120, 120)]
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "twotone")
DEMO_HINT = "choose another --out folder, or pass --force to replace the demo files"
MIN_HITS = 3  # consecutive detections before the simulated tracker reports a track (SORT's min_hits)


@dataclass(frozen=True, slots=True)
class Appearance:
    top: tuple[int, int, int]
    top2: tuple[int, int, int]
    pattern: str
    bottom: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_sleeves: bool
    bag: tuple[int, int, int] | None
    hat: tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class Visit:
    start: int  # first frame
    x0: float  # foot x at ``start``
    y0: float  # foot y at ``start`` (depth: larger is nearer)
    vx: float
    vy: float
    length: int


@dataclass(frozen=True, slots=True)
class DemoData:
    video: Path
    detections: Path  # MOT det.txt: frame,track,x,y,w,h,conf,-1,-1,-1
    ground_truth: Path  # MOT gt.txt: frame,person,x,y,w,h,1,1,visibility
    people: int
    frames: int
    fps: float
    detection_count: int
    track_count: int
    camera: CameraConditions


def _appearances(people: int, rng: np.random.Generator) -> list[Appearance]:
    tops = rng.permutation(len(TOPS))
    bottoms = rng.permutation(len(BOTTOMS))
    pats = rng.permutation(np.arange(max(people, len(PATTERNS))) % len(PATTERNS))
    looks = []
    for i in range(people):
        top = TOPS[tops[i % len(TOPS)]]
        top2 = TOPS[tops[(i + 5) % len(TOPS)]]
        looks.append(Appearance(
            top=top, top2=top2, pattern=PATTERNS[pats[i]], bottom=BOTTOMS[bottoms[i % len(BOTTOMS)]],
            skin=SKIN[int(rng.integers(len(SKIN)))], hair=HAIR[int(rng.integers(len(HAIR)))],
            long_sleeves=bool(rng.random() < 0.5),
            bag=TOPS[int(rng.integers(len(TOPS)))] if rng.random() < 0.4 else None,
            hat=BOTTOMS[int(rng.integers(len(BOTTOMS)))] if rng.random() < 0.3 else None))
    return looks


def _visits(frames: int, width: int, height: int, rng: np.random.Generator) -> list[Visit]:
    """Walks across the scene, one after another with gaps: every exit and re-entry starts a new track."""
    visits, t = [], int(rng.integers(0, frames // 4))
    while t < frames - 20:
        speed = rng.uniform(4.0, 6.5) * width / 640
        leftwards = rng.random() < 0.5
        y0 = rng.uniform(0.62, 0.97) * height
        x0 = width + 30 if leftwards else -30
        length = int((width + 60) / speed)
        vy = rng.uniform(-0.08, 0.08) * height / 270
        visits.append(Visit(t, x0, y0, -speed if leftwards else speed, vy, length))
        t += length + int(rng.integers(40, 150))
    return visits


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    img = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * 0.22)
    for y in range(horizon):  # sky
        img[y] = (200 - y // 3, 170 - y // 4, 140)
    x = 0
    while x < width:  # buildings with windows
        w = int(rng.integers(50, 110))
        top = int(rng.integers(5, horizon - 15))
        colour = tuple(int(c) for c in rng.integers(70, 170, 3))
        cv2.rectangle(img, (x, top), (x + w, horizon), colour, -1)
        for wy in range(top + 8, horizon - 10, 16):
            for wx in range(x + 6, x + w - 10, 14):
                cv2.rectangle(img, (wx, wy), (wx + 6, wy + 8), (60, 50, 40), -1)
        x += w
    img[horizon:] = (128, 128, 120)
    for y in range(horizon, height, 18):  # paving with perspective-free tiles
        cv2.line(img, (0, y), (width, y), (105, 105, 100), 1)
    for x in range(0, width, 36):
        cv2.line(img, (x, horizon), (x + (x - width // 2) // 2, height), (105, 105, 100), 1)
    return img


def _draw_person(canvas: np.ndarray, label: np.ndarray, pid: int, look: Appearance, cx: float, fy: float,
                 h: float, phase: float, facing: int) -> None:
    """Draw one person with its foot point at (cx, fy) and height ``h`` into the frame and the label map."""
    import cv2

    def both(fn, *args, colour, **kw) -> None:
        fn(canvas, *args, colour, **kw)
        fn(label, *args, pid + 1, **kw)

    swing = np.sin(phase) * 0.13 * h
    hip = (int(cx), int(fy - 0.48 * h))
    legw = max(2, int(0.1 * h))
    for side in (-1, 1):
        foot = (int(cx + side * swing), int(fy))
        both(cv2.line, hip, foot, colour=look.bottom, thickness=legw)
        both(cv2.ellipse, (foot[0] + facing * int(0.03 * h), foot[1]), (int(0.05 * h), int(0.02 * h) + 1), 0, 0, 360,
             colour=(30, 30, 30), thickness=-1)
    x1, x2 = int(cx - 0.15 * h), int(cx + 0.15 * h)
    y1, y2 = int(fy - 0.82 * h), int(fy - 0.46 * h)
    both(cv2.rectangle, (x1, y1), (x2, y2), colour=look.top, thickness=-1)
    step = max(3, int(0.06 * h))
    if look.pattern == "hstripes":
        for y in range(y1 + step // 2, y2, 2 * step):
            cv2.rectangle(canvas, (x1, y), (x2, min(y2, y + step - 1)), look.top2, -1)
    elif look.pattern == "vstripes":
        for x in range(x1 + step // 2, x2, 2 * step):
            cv2.rectangle(canvas, (x, y1), (min(x2, x + step - 1), y2), look.top2, -1)
    elif look.pattern == "checks":
        for y in range(y1, y2, step):
            for x in range(x1 + ((y - y1) // step % 2) * step, x2, 2 * step):
                cv2.rectangle(canvas, (x, y), (min(x2, x + step - 1), min(y2, y + step - 1)), look.top2, -1)
    elif look.pattern == "twotone":
        cv2.rectangle(canvas, (x1, (y1 + y2) // 2), (x2, y2), look.top2, -1)
    arm = look.top if look.long_sleeves else look.skin
    for side in (-1, 1):
        shoulder = (int(cx + side * 0.14 * h), int(fy - 0.79 * h))
        hand = (int(cx + side * 0.17 * h - side * swing * 0.5 * side), int(fy - 0.5 * h))
        both(cv2.line, shoulder, hand, colour=arm, thickness=max(2, int(0.06 * h)))
    if look.bag is not None:
        bx = int(cx - facing * 0.2 * h)
        both(cv2.rectangle, (bx - int(0.06 * h), int(fy - 0.62 * h)), (bx + int(0.06 * h), int(fy - 0.45 * h)),
             colour=look.bag, thickness=-1)
    head = (int(cx + facing * 0.01 * h), int(fy - 0.9 * h))
    r = max(3, int(0.075 * h))
    both(cv2.circle, head, r, colour=look.skin, thickness=-1)
    both(cv2.ellipse, head, (r, r), 0, 180, 360, colour=look.hair, thickness=-1)
    if look.hat is not None:
        both(cv2.rectangle, (head[0] - r - 1, head[1] - r - int(0.04 * h)), (head[0] + r + 1, head[1] - r // 3),
             colour=look.hat, thickness=-1)


def write_demo_data(out: str | Path, *, people: int = 8, frames: int = 450, width: int = 640, height: int = 360,
                    fps: float = 15.0, seed: int = 0, camera: str | CameraConditions = "A",
                    force: bool = False) -> DemoData:
    """Render the scene, as ``camera`` sees it, to ``out/video.mp4`` with ``det.txt`` and ``gt.txt`` beside it
    (each appears whole, and replaces an existing file only with ``force``). The same ``seed`` gives the same
    people, walks and detections through every camera."""
    out = Path(out)
    conditions = camera_named(camera)
    video, det_path, gt_path = out / "video.mp4", out / "det.txt", out / "gt.txt"
    for path in (video, det_path, gt_path):  # before rendering; each is published atomically at the end
        refuse_existing(path, force, DEMO_HINT)
    if people < 2 or frames < 30:
        raise ModelportError(f"need at least 2 people and 30 frames (got {people}, {frames})")
    out.mkdir(parents=True, exist_ok=True)
    # The video is written under its own name (OpenCV picks the container by suffix) in a hidden folder beside
    # its destination, then moved there in one rename.
    staging = Path(tempfile.mkdtemp(prefix=".video.", dir=out))
    try:
        det_lines, gt_lines, tracks = _render(staging / video.name, people, frames, width, height, fps, seed,
                                              conditions)
        atomic_write_text(det_path, "\n".join(det_lines) + "\n", force=force, hint=DEMO_HINT)
        atomic_write_text(gt_path, "\n".join(gt_lines) + "\n", force=force, hint=DEMO_HINT)
        publish(staging / video.name, video, force=force, hint=DEMO_HINT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DemoData(video, det_path, gt_path, people, frames, fps, len(det_lines), tracks, conditions)


def _render(video: Path, people: int, frames: int, width: int, height: int, fps: float, seed: int,
            conditions: CameraConditions) -> tuple[list[str], list[str], int]:
    """Write the scene's video to ``video``; returns the det.txt and gt.txt lines and the number of tracks."""
    import cv2

    rng = np.random.default_rng(seed)
    looks = _appearances(people, rng)
    plans = [_visits(frames, width, height, rng) for _ in range(people)]
    heights = [rng.uniform(0.95, 1.08) for _ in range(people)]
    background = _background(width, height, rng)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ModelportError(f"{video}: OpenCV cannot write an mp4v video here")
    det_lines, gt_lines = [], []
    next_track = 1
    # per person: [track id (0 until confirmed), last frame detected, visit index, consecutive hits]
    state = [[0, -10**9, -1, 0] for _ in range(people)]
    light = 1.0
    # Sensor noise from a small bank: drawing fresh Gaussian noise for every frame dominated the run time.
    noise = [rng.normal(0, 3.0, (height, width, 3)).astype(np.float32) for _ in range(8)]
    for t in range(frames):
        frame = background.copy()
        label = np.zeros((height, width), np.int32)
        present = []
        for p, plan in enumerate(plans):
            for v_index, v in enumerate(plan):
                if v.start <= t < v.start + v.length:
                    dt = t - v.start
                    fy = float(np.clip(v.y0 + v.vy * dt, 0.55 * height, height - 2))
                    present.append((fy, p, v.x0 + v.vx * dt, v_index, 1 if v.vx > 0 else -1))
        boxes = {}
        for fy, p, cx, v_index, facing in sorted(present):  # far to near: nearer people occlude
            h = heights[p] * (0.18 + 0.36 * fy / height) * height
            _draw_person(frame, label, p, looks[p], cx, fy, h, phase=t * 0.35 + p, facing=facing)
            boxes[p] = (cx - 0.2 * h, fy - 0.99 * h, cx + 0.2 * h, fy + 0.02 * h, v_index)
        light = float(np.clip(light + rng.normal(0, 0.01), 0.9, 1.1))
        noisy = conditions.apply(frame.astype(np.float32), t) * light + noise[int(rng.integers(len(noise)))]
        writer.write(np.clip(noisy, 0, 255).astype(np.uint8))
        for p, (x1, y1, x2, y2, v_index) in boxes.items():
            full = (x2 - x1) * (y2 - y1)
            ix1, iy1, ix2, iy2 = max(0, int(x1)), max(0, int(y1)), min(width, int(x2)), min(height, int(y2))
            own = (label[iy1:iy2, ix1:ix2] == p + 1).sum() if ix2 > ix1 and iy2 > iy1 else 0
            drawn = _mask_area(looks[p], x2 - x1)
            visibility = float(min(1.0, own / max(drawn, 1)))
            window = label[iy1:iy2, ix1:ix2]
            clutter = float(((window > 0) & (window != p + 1)).mean()) if window.size else 0.0
            inside = max(0, ix2 - ix1) * max(0, iy2 - iy1) / full
            gt_lines.append(f"{t + 1},{p + 1},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},1,1,{visibility:.3f}")
            if visibility < 0.6 or inside < 0.7:
                continue
            track, last, visit, hits = state[p]
            if visit != v_index or t - last > 4:  # the tracker lost them: a new, unconfirmed track
                track, hits = 0, 0
            hits = hits + 1 if t - last == 1 or hits == 0 else hits
            if track == 0 and hits >= MIN_HITS:  # confirmed, as SORT-style trackers do before reporting
                track, next_track = next_track, next_track + 1
            state[p] = [track, t, v_index, hits]
            if track == 0:
                continue
            j = rng.normal(0, 0.02 * (y2 - y1), 4)
            bx1, by1 = max(0.0, x1 + j[0]), max(0.0, y1 + j[1])
            bx2, by2 = min(width - 1.0, x2 + j[2]), min(height - 1.0, y2 + j[3])
            # Like a real detector: less sure when the person is cut off, hidden or in a crowd.
            score = visibility * inside * (1.0 - clutter)
            conf = float(np.clip(0.4 + 0.55 * score + rng.normal(0, 0.03), 0.05, 0.99))
            det_lines.append(f"{t + 1},{track},{bx1:.1f},{by1:.1f},{bx2 - bx1:.1f},{by2 - by1:.1f},{conf:.3f},-1,-1,-1")
    writer.release()
    return det_lines, gt_lines, next_track - 1


_AREA_CACHE: dict[tuple, float] = {}


def _mask_area(look: Appearance, box_width: float) -> float:
    """Pixels the person covers when nothing hides it, from a reference drawing (for visibility)."""
    h = box_width / 0.4
    key = (look, round(h))
    if key not in _AREA_CACHE:
        size = int(h * 1.3) + 4
        canvas = np.zeros((size, size, 3), np.uint8)
        label = np.zeros((size, size), np.int32)
        _draw_person(canvas, label, 0, look, size / 2, h * 1.05, h, phase=0.0, facing=1)
        _AREA_CACHE[key] = float((label == 1).sum())
    return _AREA_CACHE[key]


@dataclass(frozen=True, slots=True)
class EmbeddingScene:
    """A detections database holding synthetic embeddings (no video): for clustering at scale."""

    db: Path
    model_key: str
    detections: int
    tracks: int
    people: int


def write_embedding_db(db: str | Path, detections: int, *, per_track: int = 10, tracks_per_person: int = 10,
                       dim: int = 512, latent: int = 48, concurrency: int = 4, tracks_per_camera: int = 1000,
                       seed: int = 0, chunk_tracks: int = 2000) -> EmbeddingScene:
    """``detections`` detections, ``per_track`` consecutive frames per track, of people seen in
    ``tracks_per_person`` tracks on cameras that show ``concurrency`` tracks at a time, with ground truth.

    An embedding is ReLU(common + W (person + track) + detection noise): like real ReID features, ReLU outputs
    with a large shared component whose identity information lies near a low-dimensional subspace (``latent``
    dimensions mapped by a fixed random W). The track term (viewpoint, light) is 0.8 of the spread between
    people: with 100k tracks, a track's most similar other track is its person's 0.93 of the time (exact
    search). A person's tracks never overlap in time on one camera (they can be kept apart).
    Written a chunk of tracks at a time, so memory does not grow with ``detections``.
    """
    from modelport.reid import store

    tracks = max(detections // per_track, 2)
    people = max(tracks // tracks_per_person, 2)
    cameras = max(tracks // tracks_per_camera, 1)
    rng = np.random.default_rng(seed)
    mapping = rng.normal(0, 1 / np.sqrt(latent), (latent, dim)).astype(np.float32)
    centres = rng.normal(0, 1, (people, latent)).astype(np.float32)
    common = np.abs(rng.normal(2, 0.5, dim)).astype(np.float32)
    t = np.arange(tracks)
    camera = (t // people) % cameras  # a person's tracks go to different cameras, or far apart on one
    order = np.argsort(camera, kind="stable")
    slot = np.empty(tracks, np.int64)
    slot[order] = np.arange(tracks) - np.searchsorted(camera[order], camera[order])
    start = slot * per_track // concurrency
    record = store.ModelRecord("synthetic@000000000000", "synthetic", "0" * 64, "synthetic", None, dim)
    conn = store.connect(db, create=True)
    try:
        store.register_model(conn, record)
        for first in range(0, tracks, chunk_tracks):
            ts = t[first:first + chunk_tracks]
            person = ts % people
            det_ids = (ts[:, None] * per_track + np.arange(per_track)).ravel() + 1
            frames = (start[ts][:, None] + np.arange(per_track)).ravel()
            track = centres[person] + rng.normal(0, 0.8, (len(ts), latent)).astype(np.float32)
            vectors = common + (track @ mapping)[:, None]
            noise = rng.normal(0, 0.6, (len(ts), per_track, dim)).astype(np.float32)
            vectors = np.maximum(vectors + noise, 0).reshape(-1, dim)
            x = rng.uniform(0, 580, len(ts)).repeat(per_track)
            cams = camera[ts].repeat(per_track)
            with conn:
                conn.executemany(
                    "INSERT INTO object_detections (id, video, frame_index, timestamp, class_name, confidence, "
                    "x1, y1, x2, y2, track_id) VALUES (?, ?, ?, ?, 'person', ?, ?, 150, ?, 330, ?)",
                    zip(det_ids.tolist(), (f"/synthetic/camera_{c:05d}.mp4" for c in cams.tolist()),
                        frames.tolist(), (frames / 15.0).tolist(), rng.uniform(0.5, 0.99, len(det_ids)).tolist(),
                        x.tolist(), (x + 60).tolist(), (ts.repeat(per_track) + 1).tolist()))
                conn.executemany("INSERT INTO reid_embeddings (detection_id, model_key, embedding) VALUES (?, ?, ?)",
                                 zip(det_ids.tolist(), [record.key] * len(det_ids),
                                     (conn.vector(v) for v in vectors)))
                conn.executemany("INSERT INTO reid_quality (detection_id, sharpness) VALUES (?, ?)",
                                 zip(det_ids.tolist(), rng.uniform(50, 150, len(det_ids)).tolist()))
                conn.executemany("INSERT INTO reid_ground_truth (detection_id, person_id) VALUES (?, ?)",
                                 zip(det_ids.tolist(), person.repeat(per_track).tolist()))
                conn.after_explicit_ids("object_detections")
    finally:
        conn.close()
    return EmbeddingScene(Path(db), record.key, tracks * per_track, tracks, people)
