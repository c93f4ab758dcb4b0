"""YOLO detectors (Ultralytics .pt): raw and end-to-end exports, verification against Ultralytics, benchmarks.

    from modelport.detect import export_detector, open_detector, NmsConfig
    export_detector("yolo11n.pt", "onnx", nms=NmsConfig())       # yolo11n.nms.onnx + labels.txt, verified
    runner = open_detector("yolo11n.pt")                         # best fresh export, else PyTorch
    dets = runner.detect(frames)                                 # per image: boxes (xyxy), scores, classes
"""

from importlib import import_module
from typing import Any

# Resolved on first use: the CLI imports this package for its commands, and Ultralytics and torch should load
# only when a detector is actually opened.
_HOME = {
    "open_detector": "discover", "DetectExportResult": "export", "export_detector": "export",
    "export_models": "export", "NmsConfig": "graph", "DetectorSource": "model", "load_detector": "model",
    "parse_model_arg": "model", "read_model_list": "model", "Detections": "runner", "DetectRunner": "runner",
    "UltralyticsReference": "runner",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'modelport.detect' has no attribute {name!r}")
    return getattr(import_module(f"modelport.detect.{_HOME[name]}"), name)
