"""Detectors with pixels in the graph (``--uint8-input``): the client letterboxes to uint8 NHWC RGB and sends
only that; the cast, the /255 and the NHWC -> NCHW transpose run inside the exported graph."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from modelport.detect.model import LoadedDetector
from modelport.errors import ExportError
from modelport.fold import TAG, FoldedPreprocess, folded_spec
from modelport.preprocess import ImageLike, Letterbox, _to_bgr_array, letterbox, prepare_letterboxed
from modelport.spec import Preprocess


def pixels_in(det: LoadedDetector) -> LoadedDetector:
    """``det`` taking (B, H, W, 3) uint8 RGB letterboxed pixels; its spec says so (uint8 input,
    ``preprocess.in_graph``), so ``DetectRunner.detect`` and the task's ``prepare`` feed it pixels."""
    pre = det.spec.preprocess
    if pre.in_graph:
        return det
    if any(pre.mean) or any(s != 1.0 for s in pre.std):
        raise ExportError(f"{det.spec.name}: a detector normalised with mean {pre.mean}, std {pre.std}; "
                          "YOLO detectors only scale pixels by 1/255", hint="export without --uint8-input")
    return replace(det, module=FoldedPreprocess(det.module, det.spec).eval(), spec=folded_spec(det.spec))


def tag(flavor_tag: str, sep: str = ".") -> str:
    """The file-name tag of a pixels-in export: ``uint8in``, or ``nms.uint8in`` after a track's own tag."""
    return f"{flavor_tag}{sep}{TAG}" if flavor_tag else TAG


def letterbox_pixels(items: Sequence[ImageLike] | ImageLike, pre: Preprocess) -> tuple[np.ndarray, list[Letterbox]]:
    """(N, H, W, 3) uint8 RGB letterboxed images and each one's letterbox: the input of a pixels-in detector.

    Same letterbox and the same stride choice as ``prepare_letterboxed``; no float copy of the batch is made.
    """
    import cv2

    if isinstance(items, (np.ndarray, Image.Image, str, Path)):
        items = [items]
    arrays = [_to_bgr_array(item) for item in items]
    stride = pre.stride if pre.stride and len({a.shape for a in arrays}) == 1 else 0
    out = np.empty((len(arrays), pre.height, pre.width, 3), np.uint8)
    boxes = []
    for i, array in enumerate(arrays):
        img, info = letterbox(array, pre.height, pre.width, stride)
        if i == 0 and img.shape[:2] != out.shape[1:3]:  # same-sized images share the first one's rectangle
            out = np.empty((len(arrays), *img.shape[:2], 3), np.uint8)
        if pre.channel_order == "RGB":
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out[i])
        else:
            out[i] = img
        boxes.append(info)
    return out, boxes


def letterboxed(items: Sequence[ImageLike] | ImageLike, pre: Preprocess) -> tuple[np.ndarray, list[Letterbox]]:
    """A detector's input for ``items``: uint8 pixels when its graph normalises (``pre.in_graph``), else the
    float (N, 3, H, W) batch; and each image's letterbox."""
    return letterbox_pixels(items, pre) if pre.in_graph else prepare_letterboxed(items, pre)


def input_size(batch: np.ndarray, pre: Preprocess) -> tuple[int, int]:
    """The (height, width) a prepared batch runs at: NHWC pixels or NCHW floats."""
    return (int(batch.shape[1]), int(batch.shape[2])) if pre.in_graph else (int(batch.shape[2]), int(batch.shape[3]))


__all__ = ["input_size", "letterbox_pixels", "letterboxed", "pixels_in", "tag"]
