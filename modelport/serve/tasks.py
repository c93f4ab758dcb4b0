"""What ``POST /predict/{model}`` does with an uploaded image, chosen by the model spec's ``task``.

A task turns a decoded image into the model's input and the model's outputs into JSON: ``embed`` (ReID,
CLIP image encoders) and ``detect`` (YOLO, raw or with NMS in the graph) are registered here; another task
registers itself with ``register_image_task``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
from PIL import Image

from modelport.serve.protocol import ProtocolError
from modelport.spec import ModelSpec

Prepare = Callable[[ModelSpec, Image.Image], tuple[np.ndarray, Any]]
Finish = Callable[[ModelSpec, dict[str, np.ndarray], Any], dict]


@dataclass(frozen=True, slots=True)
class ImageTask:
    prepare: Prepare  # spec, RGB image -> (1-row model input, context for finish)
    finish: Finish  # spec, outputs keyed by the spec's output names (1 row), context -> JSON-able dict


IMAGE_TASKS: dict[str, ImageTask] = {}


def register_image_task(task: str, handler: ImageTask) -> None:
    IMAGE_TASKS[task] = handler


def image_task(spec: ModelSpec, model: str) -> ImageTask:
    if spec.task not in IMAGE_TASKS:
        raise ProtocolError(f"model {model!r} (task {spec.task!r}) does not take images at /predict; "
                            f"image tasks served here: {', '.join(sorted(IMAGE_TASKS))}", 400)
    return IMAGE_TASKS[spec.task]


def _embed_prepare(spec: ModelSpec, image: Image.Image) -> tuple[np.ndarray, Any]:
    from modelport.preprocess import prepare

    return prepare([image], spec.preprocess), None


def _embed_finish(spec: ModelSpec, outputs: dict[str, np.ndarray], context: Any) -> dict:
    feats = outputs[spec.outputs[0].name].reshape(-1).astype(np.float32)
    norm = float(np.linalg.norm(feats))
    return {"embedding": (feats / max(norm, 1e-12)).tolist(), "dim": int(feats.size), "norm": norm}


register_image_task("embed", ImageTask(_embed_prepare, _embed_finish))


def _detect_prepare(spec: ModelSpec, image: Image.Image) -> tuple[np.ndarray, Any]:
    from modelport.tasks.detect import letterboxed

    # Full size even for a dynamic-shape model: requests are batched together, so they must share one shape.
    # A graph that normalises itself (--uint8-input) is sent letterboxed uint8 pixels, the others floats.
    batch, (box,) = letterboxed([image], replace(spec.preprocess, stride=0))
    return batch, box


def _detect_finish(spec: ModelSpec, outputs: dict[str, np.ndarray], box: Any) -> dict:
    """Boxes in the uploaded image's pixels (xyxy), best first; raw heads get modelport's CPU NMS."""
    from modelport.detect.model import CONF, IOU, TOPK
    from modelport.detect.nms import NmsSettings, nms_raw
    from modelport.preprocess import scale_boxes

    nms = spec.extra.get("nms")
    if not nms:
        settings = NmsSettings(CONF, IOU, int(spec.extra.get("topk") or TOPK))
        outputs = nms_raw(outputs[spec.outputs[0].name], settings)
    n = int(outputs["num_dets"][0, 0])
    pre = spec.preprocess
    boxes = scale_boxes(outputs["det_boxes"][0, :n], box, normalized=bool(nms and nms.get("normalized")),
                        input_size=(pre.height, pre.width))
    classes = outputs["det_classes"][0, :n].astype(int)
    return {"detections": [
        {"box": [round(float(v), 2) for v in b], "score": float(s), "class_id": int(c),
         "label": spec.labels[c] if 0 <= c < len(spec.labels) else str(c)}
        for b, s, c in zip(boxes, outputs["det_scores"][0, :n], classes)]}


register_image_task("detect", ImageTask(_detect_prepare, _detect_finish))
