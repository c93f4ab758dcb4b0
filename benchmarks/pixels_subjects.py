"""The models ``pixels_in.py`` measures: each one's two exports (float input, uint8 input), what the client starts
from, and how it prepares a request and reads the answer, both as the served spec says (the ``modelport.tasks``
functions a modelport client uses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modelport.spec import ModelSpec
from modelport.triton import ConfigOptions


@dataclass(frozen=True)
class Subject:
    """One model measured: its two exports, what the client starts from, and how it prepares a request and reads
    the answer, both as the served spec says (the ``modelport.tasks`` functions a modelport client uses)."""

    stem: str  # the record is results/pixels_in_<stem>.json
    models: dict[str, str]  # input kind -> served model name
    options: ConfigOptions
    batches: str  # default images per request
    seconds: float  # default seconds per cell and round
    rounds: int
    recipe: str
    images: str  # what the client starts from
    count: int  # distinct images
    client: str  # what the client does per request
    exports: Callable[[Path], tuple[Path, Path]]  # the float-input and the uint8-input export, both verified
    sample: Callable[[int], list[np.ndarray]]  # decoded BGR uint8 images
    prepare: Callable[[ModelSpec, list[np.ndarray]], tuple[np.ndarray, Any]]  # -> (batch, what finish needs)
    finish: Callable[[ModelSpec, dict[str, np.ndarray], Any, int], list]  # -> one result per image
    compare: Callable[[list, list], dict]  # the two exports' results for the same images


CROP_SIZES = ((192, 80), (288, 112), (384, 160), (480, 208))  # (height, width) of the decoded crops


def _osnet_exports(work: Path) -> tuple[Path, Path]:
    from modelport.export import export
    from modelport.zoo.calibrate import make_untrained_checkpoint

    weights = make_untrained_checkpoint(work, "osnet_x0_25")
    (plain,) = export(weights, "onnx", out=work)
    (folded,) = export(weights, "onnx", out=work, uint8_input=True)
    return plain, folded


def _crops(count: int, seed: int = 42) -> list[np.ndarray]:
    """``count`` decoded BGR uint8 person crops, cycling through CROP_SIZES."""
    from modelport.samples import person_crops

    sizes = [CROP_SIZES[i % len(CROP_SIZES)] for i in range(count)]
    return [person_crops(1, h, w, seed=seed + i)[0] for i, (h, w) in enumerate(sizes)]


def _embed_prepare(spec: ModelSpec, items: list[np.ndarray]) -> tuple[np.ndarray, None]:
    from modelport.tasks.embed import prepare

    return prepare(spec, items), None


def _embed_finish(spec: ModelSpec, outputs: dict[str, np.ndarray], context: None, rows: int) -> list:
    from modelport.tasks.embed import normalised

    return list(normalised(spec, outputs, rows))


def _embed_compare(a: list, b: list) -> dict:
    a, b = np.stack(a), np.stack(b)
    return {"min_cosine": float((a * b).sum(axis=1).min()), "max_abs_diff": float(np.abs(a - b).max())}


def _yolo_exports(work: Path) -> tuple[Path, Path]:
    from modelport.detect.export import export_detector
    from modelport.detect.untrained import save_untrained

    weights = save_untrained(work / "yolo11n.pt", "yolo11n", seed=0, imgsz=640)
    results = [export_detector(weights, "onnx", out=work, uint8_input=u)[0] for u in (False, True)]
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"yolo11n export failed: {failed}")
    return results[0].path, results[1].path


def _scenes(count: int, seed: int = 42) -> list[np.ndarray]:
    """``count`` decoded BGR uint8 synthetic street scenes of 375x500 to 720x1280 (detect.samples.SIZES)."""
    from modelport.detect.samples import street_scenes

    return street_scenes(count, seed=seed)


def _detect_prepare(spec: ModelSpec, items: list[np.ndarray]) -> tuple[np.ndarray, Any]:
    from modelport.tasks.detect import letterboxed

    return letterboxed(items, spec.preprocess)


def _detect_finish(spec: ModelSpec, outputs: dict[str, np.ndarray], boxes: Any, rows: int) -> list:
    """Each image's detections in its own pixels, as ``DetectRunner.detect`` reads a raw head: modelport's CPU NMS
    at the served defaults, then the task's decoding (``tasks.detect.decode``)."""
    from modelport.detect.model import CONF, IOU, TOPK
    from modelport.detect.nms import NmsSettings, nms_raw
    from modelport.detect.runner import Detections
    from modelport.tasks.detect import decode

    out = nms_raw(outputs[spec.outputs[0].name], NmsSettings(CONF, IOU, int(spec.extra.get("topk") or TOPK)))
    size = (spec.preprocess.height, spec.preprocess.width)
    return [Detections(b, s, c) for b, s, c in decode(spec, out, boxes, size)]


def _detect_compare(a: list, b: list) -> dict:
    same = all(len(x) == len(y) and (x.classes == y.classes).all() for x, y in zip(a, b, strict=True))
    diffs = [float(np.abs(x.boxes - y.boxes).max()) for x, y in zip(a, b) if len(x) and len(x) == len(y)]
    return {"detections": [len(x) for x in a], "same_count_and_classes": same,
            "max_box_diff_px": max(diffs) if diffs else None}


SUBJECTS = {
    "osnet": Subject(
        stem="osnet_x0_25",
        models={"float": "osnet", "uint8": "osnet_uint8in"},
        options=ConfigOptions(max_batch_size=16, preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=2000),
        batches="1,16", seconds=6.0, rounds=4,
        recipe="OSNet x0_25, untrained: random weights, BatchNorm-calibrated on synthetic crops "
        "(make_untrained_checkpoint); ONNX exports (float input, and --uint8-input) verified against PyTorch",
        images="decoded BGR uint8 synthetic person crops (modelport.samples.person_crops, seeds 42..) of "
        + ", ".join(f"{h}x{w}" for h, w in CROP_SIZES),
        count=64,
        client="tasks.embed.prepare -> infer -> tasks.embed.normalised",
        exports=_osnet_exports, sample=_crops, prepare=_embed_prepare, finish=_embed_finish, compare=_embed_compare,
    ),
    "yolo11n": Subject(
        stem="yolo11n",
        models={"float": "yolo11n", "uint8": "yolo11n_uint8in"},
        options=ConfigOptions(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=2000),
        batches="1,4", seconds=6.0, rounds=4,
        recipe="yolo11n, untrained: Ultralytics' yolo11n.yaml with torch seed 0, BatchNorm-calibrated on 8 synthetic "
        "street scenes at 640 (detect.untrained.save_untrained); raw-head ONNX exports ([B, 84, 8400]; float input, "
        "and --uint8-input) verified against Ultralytics' predict",
        images="decoded BGR uint8 synthetic street scenes (modelport.detect.samples.street_scenes, seed 42) of "
        "480x640, 720x1280, 640x480, 375x500, 640x640, 360x640",
        count=12,
        client="tasks.detect.letterboxed -> infer -> detect.nms.nms_raw (conf 0.25, iou 0.7) -> "
        "tasks.detect.decode (boxes scaled back per image)",
        exports=_yolo_exports, sample=_scenes, prepare=_detect_prepare, finish=_detect_finish, compare=_detect_compare,
    ),
}
