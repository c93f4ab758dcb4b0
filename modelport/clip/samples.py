"""Seeded synthetic scenes (sky/ground, coloured shapes, texture) for CLIP calibration, checks and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def scene_image(rng: np.random.Generator, height: int = 256, width: int = 256) -> np.ndarray:
    """One HxWx3 uint8 BGR scene (OpenCV order, like ``modelport.samples``)."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    horizon = int(height * rng.uniform(0.3, 0.7))
    sky, ground = rng.integers(0, 256, size=(2, 3))
    draw.rectangle((0, 0, width, horizon), fill=tuple(int(v) for v in sky))
    draw.rectangle((0, horizon, width, height), fill=tuple(int(v) for v in ground))
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        w, h = rng.uniform(width * 0.08, width * 0.5), rng.uniform(height * 0.08, height * 0.5)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        box = (x0, y0, min(width, x0 + w), min(height, y0 + h))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle(box, fill=colour)
        elif shape == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) / 2, box[1]), (box[2], box[3])], fill=colour)
    arr = np.asarray(img, np.float32)
    arr += rng.normal(0, rng.uniform(2, 14), size=arr.shape)  # sensor noise / texture
    arr *= np.linspace(rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.3), width, dtype=np.float32)[None, :, None]
    return np.ascontiguousarray(np.clip(arr, 0, 255).astype(np.uint8)[..., ::-1])


def scene_images(count: int, height: int = 256, width: int = 256, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [scene_image(rng, height, width) for _ in range(count)]


def write_scenes(folder: str | Path, count: int, *, seed: int = 0, size: tuple[int, int] = (240, 320),
                 suffix: str = ".jpg", start: int = 0) -> list[Path]:
    """Write ``count`` scenes as image files (default 320x240 JPEG, so the centre crop is exercised)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(start, start + count):
        path = folder / f"scene_{i:05d}{suffix}"
        Image.fromarray(scene_image(rng, *size)[..., ::-1]).save(path, quality=90)
        paths.append(path)
    return paths
