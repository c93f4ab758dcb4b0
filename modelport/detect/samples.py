"""Seeded synthetic street scenes of varied sizes: inputs for verification, calibration and benchmarks."""

from __future__ import annotations

import numpy as np

from modelport.samples import person_crops

# Landscape, portrait and square frames, so letterboxing pads on either axis (and sometimes not at all).
SIZES = ((480, 640), (720, 1280), (640, 480), (375, 500), (640, 640), (360, 640))


def street_scenes(count: int, seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES) -> list[np.ndarray]:
    """``count`` HxWx3 uint8 BGR frames: a textured background with a few synthetic people pasted in."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        sky, ground = rng.integers(30, 230, size=3), rng.integers(30, 230, size=3)
        img = (sky * (1 - yy) + ground * yy) + rng.normal(0, 10, size=(h, w, 3))
        for _ in range(int(rng.integers(2, 7))):  # buildings / cars as blocks
            y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            img[y0 : y0 + int(rng.integers(8, h // 2)),
                x0 : x0 + int(rng.integers(8, w // 3))] = rng.integers(0, 256, 3)
        people = int(rng.integers(2, 6))
        for crop in person_crops(people, 128, 64, seed=int(rng.integers(1 << 30))):
            ph = int(rng.integers(h // 6, h // 2))
            pw = max(ph // 2, 4)
            import cv2

            crop = cv2.resize(crop, (pw, ph), interpolation=cv2.INTER_AREA)
            y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
            img[y0 : y0 + ph, x0 : x0 + pw] = crop
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames
