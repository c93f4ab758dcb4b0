"""Crops for the pages: best crops per group read back from the video, animated WebP, data URIs."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from modelport.atomic import atomic_write_bytes
from modelport.reid.frames import crop, read_frames
from modelport.reid.store import DetectionTable

THUMB = (64, 128)  # width, height


def fetch_crops(det: DetectionTable, rows: Sequence[int]) -> dict[int, Image.Image]:
    """RGB thumbnails of the given detection rows, reading each video once in frame order."""
    wanted: dict[str, dict[int, list[int]]] = {}
    for r in rows:
        wanted.setdefault(str(det.video[r]), {}).setdefault(int(det.frame[r]), []).append(int(r))
    out: dict[int, Image.Image] = {}
    for video, frames in wanted.items():
        for index, frame in read_frames(video, frames):
            for r in frames[index]:
                piece = crop(frame, tuple(det.boxes[r]))
                if piece is not None:
                    out[r] = Image.fromarray(np.ascontiguousarray(piece[..., ::-1])).resize(THUMB, Image.BILINEAR)
    return out


def spread(groups: Sequence[Sequence[int]], limit: int) -> list[int]:
    """Up to ``limit`` rows taken round-robin from best-first groups (so every track shows up)."""
    picked: list[int] = []
    depth = 0
    while len(picked) < limit and any(depth < len(g) for g in groups):
        for g in groups:
            if depth < len(g) and len(picked) < limit:
                picked.append(int(g[depth]))
        depth += 1
    return picked


def animated_webp(images: Sequence[Image.Image], path: Path | None = None, duration_ms: int = 300, *,
                  force: bool = False) -> bytes:
    """An animated WebP (a still one for a single image); written to ``path`` when given (atomically, and over
    an existing file only with ``force``)."""
    buf = io.BytesIO()
    first, rest = images[0], list(images[1:])
    first.save(buf, format="WEBP", save_all=bool(rest), append_images=rest, duration=duration_ms, loop=0,
               quality=80)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data, force=force)
    return data


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return data_uri(buf.getvalue(), "image/jpeg")
