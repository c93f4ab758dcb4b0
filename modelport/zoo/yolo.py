"""YOLO11 detectors (Ultralytics): names, default batch limits and untrained builders from Ultralytics' YAML.

Trained weights are Ultralytics ``.pt`` files loaded by ``modelport.detect.model``; the builders here give the
same architectures with random weights (tests, demos), built from Ultralytics' own model definitions.
"""

from __future__ import annotations

import importlib.util
from functools import partial

from torch import nn

from modelport.zoo.registry import register_model

SIZES = ("n", "s", "m", "l", "x")
# Largest batch a dynamic export is sized for, per model size (bigger models need more memory per image).
DEFAULT_MAX_BATCH = {"n": 128, "s": 64, "m": 32, "l": 16, "x": 8}
IMGSZ = 640
COCO_CLASSES = 80


def yolo_yaml(name: str) -> str:
    """Ultralytics' model definition for a zoo name (``yolo11n`` -> ``yolo11n.yaml``)."""
    return f"{name}.yaml"


def build_untrained(name: str, nc: int = COCO_CLASSES) -> nn.Module:
    """An Ultralytics DetectionModel for ``name`` with random weights, in eval mode."""
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(yolo_yaml(name), nc=nc, verbose=False).eval()


def build_layers(name: str, nc: int = COCO_CLASSES) -> nn.Module:
    """The layers of ``name`` as Ultralytics parses its YAML, without the forward pass its DetectionModel runs
    to find the strides (which the meta device cannot run), on the meta device.

    Ultralytics is imported before the meta device is entered: imported inside it, its module-level tensors
    would be meta tensors for the rest of the process (every later Ultralytics model then failed with
    "Cannot copy out of meta tensor")."""
    import torch
    from ultralytics.nn.tasks import parse_model, yaml_model_load

    cfg = {**yaml_model_load(yolo_yaml(name)), "nc": nc}
    with torch.device("meta"):
        layers, _save = parse_model(cfg, ch=3, verbose=False)
    return layers


def default_max_batch(name: str) -> int | None:
    """n 128, s 64, m 32, l 16, x 8 for ``yolo11<size>`` names (a custom model name gives None)."""
    size = name[-1:] if name.startswith("yolo11") and len(name) == len("yolo11") + 1 else ""
    return DEFAULT_MAX_BATCH.get(size)


def _register() -> None:
    for size in SIZES:
        name = f"yolo11{size}"
        builder = partial(build_untrained, name)
        builder.__name__ = name  # register_model names entries after their builder
        register_model(family="yolo11", feature_dim=4 + COCO_CLASSES, height=IMGSZ, width=IMGSZ,
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), task="detect", ignored_prefixes=(),
                       layers=partial(build_layers, name))(builder)


# Ultralytics is an optional extra (modelport[yolo]): without it the detectors are simply not in the zoo.
if importlib.util.find_spec("ultralytics") is not None:
    _register()
