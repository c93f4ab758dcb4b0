"""What ``POST /predict/{model}`` does with an uploaded image, chosen by the model spec's ``task``.

A task turns a decoded image into the model's input and the model's outputs into JSON. ``embed``
(ReID, CLIP image encoders) is built in; other tasks (``detect``) register themselves with
``register_image_task`` from the module that owns their pre- and post-processing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
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
# Modules that register a task when imported, so serving a model costs nothing for tasks it does not use.
TASK_PROVIDERS: dict[str, str] = {"detect": "modelport.detect.serve"}


def register_image_task(task: str, handler: ImageTask) -> None:
    IMAGE_TASKS[task] = handler


def image_task(spec: ModelSpec, model: str) -> ImageTask:
    if spec.task not in IMAGE_TASKS and spec.task in TASK_PROVIDERS:
        try:
            importlib.import_module(TASK_PROVIDERS[spec.task])
        except ImportError:
            pass
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
