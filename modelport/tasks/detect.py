"""The ``detect`` task: images in, letterboxed as Ultralytics' predict does (uint8 pixels for an export with
preprocessing in its graph); padded detections out (``num_dets``, ``det_boxes``, ``det_scores``, ``det_classes``:
what end-to-end graphs give and modelport's CPU NMS makes of a raw head), decoded to boxes in each image's own
pixels. Runners (``DetectRunner.detect``) and the server's ``/predict`` both decode through ``decode``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from modelport.preprocess import (
    ImageLike,
    Letterbox,
    _to_bgr_array,
    letterbox,
    prepare as prepare_pixels,
    prepare_letterboxed,
    scale_boxes,
)
from modelport.spec import ModelSpec, Preprocess


def example(spec: ModelSpec, rows: int, seed: int = 0) -> np.ndarray:
    """Seeded synthetic images at the model's input size (tracing needs values, not scenes)."""
    from modelport.samples import person_crops

    pre = spec.preprocess
    return prepare_pixels(person_crops(rows, pre.height, pre.width, seed=seed), pre)


def prepare(spec: ModelSpec, images: Sequence[ImageLike]) -> np.ndarray:
    """Letterboxed images: uint8 (N, H, W, 3) RGB for a pixels-in export, else normalised (N, 3, H, W) float."""
    return letterboxed(images, spec.preprocess)[0]


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


def image_sizes(items: Sequence[ImageLike]) -> list[tuple[int, int]]:
    """Each image's own (height, width): the frame its decoded boxes are clipped to."""
    return [(int(a.shape[0]), int(a.shape[1])) for a in map(_to_bgr_array, items)]


def input_size(batch: np.ndarray, pre: Preprocess) -> tuple[int, int]:
    """The (height, width) a prepared batch runs at: NHWC pixels or NCHW floats."""
    return (int(batch.shape[1]), int(batch.shape[2])) if pre.in_graph else (int(batch.shape[2]), int(batch.shape[3]))



def padded(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An end-to-end graph's outputs as the four padded arrays: as they are, or from the ultralytics layout's one
    ``[B, k, 6]`` (x1, y1, x2, y2, score, class; its boxes come first, zero rows after them)."""
    nms = spec.extra.get("nms") or {}
    if nms.get("layout") != "ultralytics" or "num_dets" in outputs:
        return outputs
    rows = outputs[spec.outputs[0].name]
    return {"num_dets": (rows[..., 4] > 0).sum(1, keepdims=True).astype(np.int32),
            "det_boxes": rows[..., :4], "det_scores": rows[..., 4], "det_classes": rows[..., 5].astype(np.int32)}


def decode(spec: ModelSpec, outputs: dict[str, np.ndarray], boxes: Sequence[Letterbox],
           size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (xyxy boxes in its own pixels, float32 scores, int64 classes), best first. ``size``: the
    (height, width) the batch ran at (``input_size``); ``boxes``: each image's letterbox; ``outputs``: the padded
    arrays, or an end-to-end graph's own outputs (``padded``)."""
    padded_out = padded(spec, outputs)
    nms = spec.extra.get("nms") or {}
    normalized = bool(nms.get("normalized"))
    out = []
    for i, info in enumerate(boxes):
        n = int(padded_out["num_dets"][i, 0])
        out.append((scale_boxes(padded_out["det_boxes"][i, :n], info, normalized=normalized, input_size=size),
                    padded_out["det_scores"][i, :n].astype(np.float32),
                    padded_out["det_classes"][i, :n].astype(np.int64)))
    return out
