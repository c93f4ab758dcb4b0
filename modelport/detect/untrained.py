"""Untrained YOLO checkpoints for tests and demos: Ultralytics' YAML model, seeded weights, BatchNorm
calibrated on synthetic scenes (so outputs depend on the input), saved as Ultralytics saves models."""

from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from modelport.detect.samples import street_scenes
from modelport.preprocess import prepare_letterboxed
from modelport.spec import Preprocess
from modelport.zoo.calibrate import calibrate_batchnorm

RANDOM_KEY = "modelport_random"  # in train_args: load_detector labels the model's source "random"


def save_untrained(path: str | Path, name: str = "yolo11n", *, seed: int = 0, labels: tuple[str, ...] | None = None,
                   imgsz: int = 640, calib_images: int = 8) -> Path:
    """Write ``path`` as an Ultralytics checkpoint of ``name`` (``yolo11n`` ... or a model YAML) with random weights."""
    from ultralytics import YOLO

    from modelport.zoo.yolo import COCO_CLASSES, yolo_yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    nc = len(labels) if labels else COCO_CLASSES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yolo = YOLO(name if name.endswith(".yaml") else yolo_yaml(name), task="detect", verbose=False)
    if nc != COCO_CLASSES or labels:
        from ultralytics.nn.tasks import DetectionModel

        torch.manual_seed(seed)
        yolo.model = DetectionModel(yolo.cfg, nc=nc, verbose=False)
    yolo.model.names = dict(enumerate(labels)) if labels else coco_names()
    pre = Preprocess(height=imgsz, width=imgsz, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="letterbox")
    batches = [torch.from_numpy(prepare_letterboxed(street_scenes(4, seed=seed * 100 + i), pre)[0])
               for i in range(max(1, calib_images // 4))]
    calibrate_batchnorm(yolo.model, batches)
    yolo.ckpt = {"train_args": {RANDOM_KEY: True, "imgsz": imgsz, "task": "detect"}}
    yolo.save(path)
    return path


def coco_names() -> dict[int, str]:
    """The 80 COCO class names as Ultralytics ships them (its coco.yaml)."""
    from ultralytics.utils import ROOT, YAML

    return dict(YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"])


@contextmanager
def untrained_checkpoint(missing: str | Path, *, imgsz: int = 640, seed: int = 0) -> Iterator[Path]:
    """A temporary checkpoint standing in for the missing zoo file ``missing`` (``yolo11n.pt`` ...): Ultralytics'
    YAML model with seeded random weights, announced with a RandomWeightsWarning. Removed on exit."""
    from modelport.zoo import RandomWeightsWarning

    missing = Path(missing)
    name = missing.name.removesuffix(".pt")
    warnings.warn(f"{missing}: not found; building {name} from Ultralytics' {name}.yaml with seeded RANDOM weights "
                  "(allowed by --allow-random): its detections mean nothing", RandomWeightsWarning, stacklevel=3)
    with tempfile.TemporaryDirectory(prefix="modelport-random-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ultralytics' own chatter while building from YAML
            path = save_untrained(Path(tmp) / missing.name, name, seed=seed, imgsz=imgsz)
        yield path
