"""The ``embed`` task: crops or images in, one L2-normalised embedding per row out."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from modelport.preprocess import ImageLike, prepare as prepare_pixels
from modelport.spec import ModelSpec


def example(spec: ModelSpec, rows: int, seed: int = 0) -> np.ndarray:
    """Seeded synthetic person crops, prepared as the spec says (resize, scale, mean/std or in-graph)."""
    from modelport.samples import person_crops

    pre = spec.preprocess
    return prepare_pixels(person_crops(rows, pre.height, pre.width, seed=seed), pre)


def prepare(spec: ModelSpec, items: Sequence[ImageLike]) -> np.ndarray:
    return prepare_pixels(items, spec.preprocess)


def normalised(spec: ModelSpec, outputs: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """(rows, D) float32 unit vectors from the first output."""
    feats = outputs[spec.outputs[0].name]
    feats = feats.reshape(rows, int(np.prod(feats.shape[1:]))).astype(np.float32)  # -1 fails when rows == 0
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
