"""Run any detector artifact on images: letterbox -> runtime -> (CPU NMS for raw tracks) -> boxes in the image.

``DetectRunner`` wraps a format Runner; ``UltralyticsReference`` runs Ultralytics' own ``predict`` and is
what every export is verified against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from modelport.detect.model import CONF, IOU, TOPK, e2e_track
from modelport.detect.nms import NmsSettings, nms_raw
from modelport.errors import ModelportError
from modelport.formats import Runner
from modelport.preprocess import ImageLike
from modelport.tasks.detect import decode, input_size, letterboxed, padded


@dataclass(frozen=True, slots=True)
class Detections:
    """One image's detections in its own pixel coordinates (xyxy), best first."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    classes: np.ndarray  # (N,) int
    labels: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.scores)

    def names(self) -> list[str]:
        return [self.labels[c] if c < len(self.labels) else str(c) for c in self.classes]


@dataclass(slots=True)
class Timings:
    """Seconds spent per stage over one call."""

    preprocess: float = 0.0
    inference: float = 0.0
    nms: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.nms + self.postprocess


class DetectRunner(Runner):
    """A detector artifact (raw or end-to-end) as a Runner: ``runner(batch)`` gives the artifact's own
    outputs, ``detect(images)`` boxes in each image's coordinates. ``nms`` holds the thresholds (a raw
    track's CPU NMS; an end-to-end graph's own, read from its spec)."""

    def __init__(self, runner: Runner, nms: NmsSettings | None = None) -> None:
        if runner.spec.task != "detect":
            raise ModelportError(f"{runner.describe()}: a {runner.spec.task!r} model, not a detector")
        super().__init__(runner.spec, runner.path, runner.device)
        self.runner = runner
        self.nms = nms or NmsSettings()
        self.last = Timings()
        self.settings = runner.settings  # the runtime's tuning, for benchmark records
        self.format_id = runner.format
        # Dynamic exports still run in chunks of the model's maximum batch.
        self.runner.chunk = int(self.spec.extra.get("max_batch") or self.runner.chunk)
        if self.end_to_end:  # the thresholds are part of the graph
            graph = self.spec.extra["nms"]
            self.nms = NmsSettings(conf=graph["conf"], iou=graph["iou"], topk=graph["topk"])

    def __call__(self, batch):  # the inner runner chunks and pads in its own way
        return self.runner(batch)

    def stream(self, batches):
        return self.runner.stream(batches)

    @property
    def model_type(self) -> str:
        return self.runner.model_type

    @property
    def end_to_end(self) -> bool:
        return bool(self.spec.extra.get("nms"))

    @property
    def track(self) -> str:
        if not self.end_to_end:
            return "raw"
        nms = self.spec.extra["nms"]
        return e2e_track(nms["flavor"], nms.get("layout", "efficientnms"))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Padded detections (num_dets, det_boxes, det_scores, det_classes) in model-input coordinates."""
        start = time.perf_counter()
        out = self.runner(batch)
        mid = time.perf_counter()
        if not self.end_to_end:
            out = nms_raw(out[self.spec.outputs[0].name], self.nms)
        else:
            out = padded(self.spec, out)  # the ultralytics layout's one [B,k,6] as the four padded arrays
        self.last.inference += mid - start
        self.last.nms += time.perf_counter() - mid
        return out

    def detect(self, images: Sequence[ImageLike] | ImageLike) -> list[Detections]:
        """Detections for BGR uint8 arrays, PIL images or paths, in each image's own coordinates; a pixels-in
        artifact (``--uint8-input``) is fed letterboxed uint8 RGB, any other the normalised float batch."""
        self.last = Timings()
        start = time.perf_counter()
        batch, boxes = letterboxed(images, self.spec.preprocess)
        self.last.preprocess = time.perf_counter() - start
        out = self.infer(batch)
        start = time.perf_counter()
        size = input_size(batch, self.spec.preprocess)  # the letterboxed size this batch ran at
        results = [Detections(b, s, c, self.spec.labels) for b, s, c in decode(self.spec, out, boxes, size)]
        self.last.postprocess = time.perf_counter() - start
        return results

    def close(self) -> None:
        self.runner.close()

    def release_memory(self) -> None:
        """Hand the runtime's scratch memory back to the system while idle (``Runner.release_memory``)."""
        self.runner.release_memory()


def load_runtime(fmt, path: str | Path, device: str = "cpu") -> Runner:
    """Open an artifact for detection. ONNX Runtime's workers do not busy-wait here: a detection pipeline
    leaves the CPU to letterboxing and NMS between calls, and spinning threads would compete with them.
    On the CPU every batch that fills the streams runs as one single-threaded session per core
    (``OnnxRunner``), because a 640x640 image is work enough for a core on its own."""
    if fmt.id != "onnx":
        return fmt.load(Path(path), device)
    return fmt.load(Path(path), device, spin=False, split_from=1)  # raised to the stream count: one row each


class UltralyticsReference:
    """Ultralytics' own pipeline (``YOLO(pt).predict``): the reference for verification and benchmarks."""

    format = "ultralytics"
    track = "ultralytics"

    def __init__(self, pt_file: str | Path, imgsz: int, settings: NmsSettings = NmsSettings(CONF, IOU, TOPK),
                 labels: tuple[str, ...] = ()) -> None:
        from modelport.detect.model import load_ultralytics

        load_ultralytics(pt_file)  # typed errors for a missing or foreign file
        from ultralytics import YOLO

        self.path = Path(pt_file)
        self.model = YOLO(str(pt_file), task="detect")
        self.imgsz = imgsz
        self.settings = settings
        self.labels = labels
        self.last = Timings()

    def detect(self, images: Sequence[ImageLike] | ImageLike) -> list[Detections]:
        from modelport.preprocess import _to_bgr_array

        if isinstance(images, (np.ndarray, str, Path)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        arrays = [_to_bgr_array(im) for im in images]
        results = self.model.predict(arrays, imgsz=self.imgsz, conf=self.settings.conf, iou=self.settings.iou,
                                     max_det=self.settings.topk, device="cpu", verbose=False, batch=len(arrays))
        speed = results[0].speed if results else {}
        n = len(arrays)
        # Ultralytics reports milliseconds per image for each stage; its NMS is in "postprocess".
        self.last = Timings(preprocess=speed.get("preprocess", 0) * n / 1e3,
                            inference=speed.get("inference", 0) * n / 1e3,
                            nms=speed.get("postprocess", 0) * n / 1e3)
        return [Detections(r.boxes.xyxy.numpy().astype(np.float32), r.boxes.conf.numpy().astype(np.float32),
                           r.boxes.cls.numpy().astype(np.int64), self.labels) for r in results]
