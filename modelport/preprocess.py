"""Images and crops -> model input, driven by the spec. The one implementation every runner shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelport.errors import CorruptFileError, WeightsNotFoundError
from modelport.spec import Preprocess

ImageLike = Any  # np.ndarray (HxWx3 uint8, BGR as OpenCV gives it), PIL.Image.Image, str or Path


def _to_rgb_image(item: ImageLike) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: image file not found")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise CorruptFileError(f"{path}: not a readable image ({exc})") from None
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ValueError(
                f"crop arrays must be HxWx3 uint8 (OpenCV BGR); got shape {item.shape} dtype {item.dtype}"
            )
        return Image.fromarray(np.ascontiguousarray(item[..., ::-1]))
    raise TypeError(f"cannot preprocess a {type(item).__name__}; give a BGR uint8 array, a PIL image or a path")


def resize_all(items: Iterable[ImageLike], pre: Preprocess) -> np.ndarray:
    """Resize every item to the spec's size: an (N, H, W, 3) uint8 RGB array."""
    size = (pre.width, pre.height)
    arrays = [np.asarray(_to_rgb_image(it).resize(size, Image.BILINEAR)) for it in items]
    if not arrays:
        return np.zeros((0, pre.height, pre.width, 3), np.uint8)
    return np.stack(arrays)


def normalize(rgb: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 with the spec's scale, mean and std."""
    if pre.channel_order == "BGR":
        rgb = rgb[..., ::-1]
    # Fold scale into the affine so each pixel costs one multiply-add.
    mul = (pre.scale / np.asarray(pre.std, np.float32)).astype(np.float32)
    add = (-np.asarray(pre.mean, np.float32) / np.asarray(pre.std, np.float32)).astype(np.float32)
    out = rgb.astype(np.float32) * mul + add
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def prepare(items: Sequence[ImageLike] | np.ndarray, pre: Preprocess) -> np.ndarray:
    """Model input for a list of crops, or a single (N, 3, H, W) float32 batch passed through unchanged."""
    if isinstance(items, np.ndarray) and items.ndim == 4 and items.shape[1] == 3 and items.dtype == np.float32:
        return items
    if isinstance(items, (np.ndarray, Image.Image, str, Path)) and not (
        isinstance(items, np.ndarray) and items.ndim == 4
    ):
        items = [items]
    return normalize(resize_all(items, pre), pre)
