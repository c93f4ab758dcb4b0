"""The ``detect`` task: images in, letterboxed as Ultralytics' predict does (uint8 pixels for an export with
preprocessing in its graph); decoding boxes back to each image (and NMS for raw tracks) is
``modelport.detect.runner.DetectRunner.detect``."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from modelport.preprocess import ImageLike, prepare as prepare_pixels
from modelport.spec import ModelSpec


def example(spec: ModelSpec, rows: int, seed: int = 0) -> np.ndarray:
    """Seeded synthetic images at the model's input size (tracing needs values, not scenes)."""
    from modelport.samples import person_crops

    pre = spec.preprocess
    return prepare_pixels(person_crops(rows, pre.height, pre.width, seed=seed), pre)


def prepare(spec: ModelSpec, images: Sequence[ImageLike]) -> np.ndarray:
    """Letterboxed images: uint8 (N, H, W, 3) RGB for a pixels-in export, else normalised (N, 3, H, W) float."""
    from modelport.detect.pixels import letterboxed

    return letterboxed(images, spec.preprocess)[0]
