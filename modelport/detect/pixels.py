"""Detectors with pixels in the graph (``--uint8-input``): the client letterboxes to uint8 NHWC RGB and sends
only that; the cast, the /255 and the NHWC -> NCHW transpose run inside the exported graph."""

from __future__ import annotations

from dataclasses import replace

from modelport.detect.model import ULTRALYTICS_KEY, LoadedDetector
from modelport.errors import ExportError
from modelport.fold import TAG, FoldedPreprocess, folded_spec


def pixels_in(det: LoadedDetector) -> LoadedDetector:
    """``det`` taking (B, H, W, 3) uint8 RGB letterboxed pixels; its spec says so (uint8 input,
    ``preprocess.in_graph``), so ``DetectRunner.detect`` and the task's ``prepare`` feed it pixels
    (``modelport.tasks.detect.letterbox_pixels``)."""
    pre = det.spec.preprocess
    if pre.in_graph:
        return det
    if any(pre.mean) or any(s != 1.0 for s in pre.std):
        raise ExportError(f"{det.spec.name}: a detector normalised with mean {pre.mean}, std {pre.std}; "
                          "YOLO detectors only scale pixels by 1/255", hint="export without --uint8-input")
    spec = folded_spec(det.spec)
    # Ultralytics feeds float NCHW images in [0, 1]: its metadata would make YOLO(path) feed this graph the wrong input.
    spec = replace(spec, extra={k: v for k, v in spec.extra.items() if k != ULTRALYTICS_KEY})
    return replace(det, module=FoldedPreprocess(det.module, det.spec).eval(), spec=spec)


def tag(flavor_tag: str, sep: str = ".") -> str:
    """The file-name tag of a pixels-in export: ``uint8in``, or ``nms.uint8in`` after a track's own tag."""
    return f"{flavor_tag}{sep}{TAG}" if flavor_tag else TAG


__all__ = ["pixels_in", "tag"]
