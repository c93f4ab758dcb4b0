"""INT8 with an accuracy target: calibration settings, ONNX Runtime's layer-sensitivity search and NNCF's
accuracy control for OpenVINO, and the points (accuracy, speed, nodes left in fp32) each run measured."""

from modelport.int8.settings import METHODS, Int8Settings, Int8TargetError, Point

__all__ = ["METHODS", "Int8Settings", "Int8TargetError", "Point"]
