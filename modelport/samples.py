"""Seeded synthetic person crops: varied enough that a model's output depends on its input.

Used to verify exports, to calibrate BatchNorm of untrained models, and by the demo and tests.
"""

from __future__ import annotations

import numpy as np


def person_crops(count: int, height: int = 256, width: int = 128, seed: int = 0) -> list[np.ndarray]:
    """``count`` HxWx3 uint8 BGR crops: background, head, torso and legs in random colours and textures."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    crops = []
    for _ in range(count):
        bg = rng.integers(40, 200, size=3)
        img = np.empty((height, width, 3), np.float32)
        img[:] = bg + rng.normal(0, 12, size=(height, width, 3))
        img += (yy[..., None] / height) * rng.normal(0, 40, size=3)  # lighting gradient
        cx = width / 2 + rng.normal(0, width * 0.06)
        half = width * rng.uniform(0.18, 0.3)
        # head, torso, legs as vertical bands, each with its own colour and optional stripes
        bands = ((0.06, 0.2, half * 0.55), (0.2, 0.55, half), (0.55, 0.97, half * 0.8))
        for top, bottom, w in bands:
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            mask = (yy >= top * height) & (yy < bottom * height) & (np.abs(xx - cx) < w)
            region = np.broadcast_to(colour, img.shape).copy()
            if rng.random() < 0.5:
                period = rng.integers(6, 24)
                stripe = ((yy // period) % 2 == 0)[..., None]
                region = np.where(stripe, region, region * rng.uniform(0.2, 0.7))
            img[mask] = region[mask]
        crops.append(np.clip(img, 0, 255).astype(np.uint8))
    return crops


def person_tracks(people: int, views: int = 2, height: int = 256, width: int = 128, seed: int = 0) -> list[np.ndarray]:
    """``people`` synthetic persons, each seen ``views`` times as in consecutive frames of a track
    (exposure and sensor noise change), in person order.

    A gallery with this structure gives every crop a clear nearest neighbour (its other view), so
    nearest-neighbour agreement measures the model rather than near-ties between strangers.
    """
    rng = np.random.default_rng(seed + 1)
    crops = []
    for base in person_crops(people, height, width, seed=seed):
        for _ in range(views):
            img = base.astype(np.float32) * rng.uniform(0.97, 1.03) + rng.normal(0, 2, base.shape)
            crops.append(np.clip(img, 0, 255).astype(np.uint8))
    return crops
