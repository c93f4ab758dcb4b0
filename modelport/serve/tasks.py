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
    from modelport.tasks import get_task

    return get_task("embed").prepare(spec, [image]), None


def _embed_finish(spec: ModelSpec, outputs: dict[str, np.ndarray], context: Any) -> dict:
    from modelport.tasks.embed import normalised

    norm = float(np.linalg.norm(outputs[spec.outputs[0].name].astype(np.float32)))
    unit = normalised(spec, outputs, 1)[0]
    return {"embedding": unit.tolist(), "dim": int(unit.size), "norm": norm}


register_image_task("embed", ImageTask(_embed_prepare, _embed_finish))


def _detect_prepare(spec: ModelSpec, image: Image.Image) -> tuple[np.ndarray, Any]:
    from modelport.tasks.detect import letterboxed

    # Full size even for a dynamic-shape model: requests are batched together, so they must share one shape.
    # A graph that normalises itself (--uint8-input) is sent letterboxed uint8 pixels, the others floats.
    batch, boxes = letterboxed([image], replace(spec.preprocess, stride=0))
    return batch, boxes


def _detect_finish(spec: ModelSpec, outputs: dict[str, np.ndarray], boxes: Any) -> dict:
    """Boxes in the uploaded image's pixels (xyxy), best first; raw heads get modelport's CPU NMS."""
    from modelport.detect.model import CONF, IOU, TOPK
    from modelport.detect.nms import NmsSettings, nms_raw
    from modelport.tasks.detect import decode

    if not spec.extra.get("nms"):
        outputs = nms_raw(outputs[spec.outputs[0].name], NmsSettings(CONF, IOU, int(spec.extra.get("topk") or TOPK)))
    pre = spec.preprocess
    ((xyxy, scores, classes),) = decode(spec, outputs, boxes, (pre.height, pre.width))
    return {"detections": [
        {"box": [round(float(v), 2) for v in b], "score": float(s), "class_id": int(c),
         "label": spec.labels[c] if 0 <= c < len(spec.labels) else str(c)}
        for b, s, c in zip(xyxy, scores, classes)]}


register_image_task("detect", ImageTask(_detect_prepare, _detect_finish))
