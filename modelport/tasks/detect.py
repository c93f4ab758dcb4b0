"""The ``detect`` task: images in, letterboxed as Ultralytics' predict does; decoding boxes back to each image
(and NMS for raw tracks) is ``modelport.detect.runner.DetectRunner.detect``."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from modelport.preprocess import ImageLike, prepare as prepare_pixels, prepare_letterboxed
from modelport.spec import ModelSpec


def example(spec: ModelSpec, rows: int, seed: int = 0) -> np.ndarray:
    """Seeded synthetic images at the model's input size (tracing needs values, not scenes)."""
    from modelport.samples import person_crops

    pre = spec.preprocess
    return prepare_pixels(person_crops(rows, pre.height, pre.width, seed=seed), pre)


def prepare(spec: ModelSpec, images: Sequence[ImageLike]) -> np.ndarray:
    return prepare_letterboxed(images, spec.preprocess)[0]
