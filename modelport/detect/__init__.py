"""YOLO detectors (Ultralytics .pt): raw and end-to-end exports, verification against Ultralytics, benchmarks.

    from modelport.detect import export_detector, open_detector, NmsConfig
    export_detector("yolo11n.pt", "onnx", nms=NmsConfig())       # yolo11n.nms.onnx + labels.txt, verified
    runner = open_detector("yolo11n.pt")                         # best fresh export, else PyTorch
    dets = runner.detect(frames)                                 # per image: boxes (xyxy), scores, classes
"""

from modelport.detect.discover import open_detector
from modelport.detect.export import DetectExportResult, export_detector, export_models
from modelport.detect.graph import NmsConfig
from modelport.detect.model import DetectorSource, load_detector, parse_model_arg, read_model_list
from modelport.detect.runner import Detections, DetectRunner, UltralyticsReference

__all__ = ["DetectExportResult", "DetectRunner", "Detections", "DetectorSource", "NmsConfig", "UltralyticsReference",
           "export_detector", "export_models", "load_detector", "open_detector", "parse_model_arg", "read_model_list"]
