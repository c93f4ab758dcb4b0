"""Ultralytics detection checkpoints -> a traceable module and its ModelSpec; model lists for batch exports."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from modelport.detect.untrained import RANDOM_KEY
from modelport.errors import CorruptFileError, ModelportError, UnknownArchitectureError, WeightsNotFoundError
from modelport.formats.ultralytics_meta import KEY as ULTRALYTICS_KEY  # spec.extra: Ultralytics' metadata
from modelport.spec import ModelSpec, Preprocess, Source, TensorSpec, sha256_file
from modelport.version import __version__
from modelport.zoo.yolo import DEFAULT_MAX_BATCH, IMGSZ, default_max_batch

TOPK = 300
IOU = 0.7
CONF = 0.25
FALLBACK_MAX_BATCH = 16  # custom models whose name does not tell their size
RAW_OUTPUT = "output0"
E2E_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")


@dataclass(frozen=True, slots=True)
class DetectorSource:
    """One model to export: an Ultralytics ``.pt`` and how to publish it."""

    pt_file: Path
    name: str
    max_batch: int
    topk: int = TOPK
    labels: tuple[str, ...] = ()  # overrides the names stored in the checkpoint when given

    @classmethod
    def of(cls, pt_file: str | Path, name: str | None = None, max_batch: int | None = None, topk: int = TOPK,
           labels: tuple[str, ...] = ()) -> "DetectorSource":
        pt_file = Path(pt_file)
        name = name or pt_file.name.removesuffix(".pt")
        max_batch = max_batch or default_max_batch(name) or default_max_batch(pt_file.stem) or FALLBACK_MAX_BATCH
        if max_batch < 1 or topk < 1:
            raise ModelportError(f"{pt_file}: max_batch and topk must be positive (got {max_batch}, {topk})")
        return cls(pt_file, name, int(max_batch), int(topk), tuple(labels))


def parse_model_arg(text: str) -> DetectorSource:
    """``path.pt[:name[:max_batch]]`` from the command line."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ModelportError(f"--model {text!r}: expected path.pt[:name[:max_batch]]")
    name = parts[1] if len(parts) > 1 and parts[1] else None
    try:
        max_batch = int(parts[2]) if len(parts) > 2 and parts[2] else None
    except ValueError:
        raise ModelportError(f"--model {text!r}: max_batch {parts[2]!r} is not an integer") from None
    return DetectorSource.of(parts[0], name, max_batch)


def read_model_list(path: str | Path) -> list[DetectorSource]:
    """A YAML list of models: ``- {pt_file, name, max_batch, topk, names}`` (relative paths from the file)."""
    from modelport.yaml_file import read_yaml

    path = Path(path)
    data = read_yaml(path, "model list", missing=WeightsNotFoundError)
    items = data.get("models") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise CorruptFileError(f"{path}: expected a non-empty list of models (or a 'models:' key holding one)")
    known = {"pt_file", "name", "max_batch", "topk", "names"}
    sources = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "pt_file" not in item:
            raise CorruptFileError(f"{path}: entry {i} needs at least a pt_file")
        unknown = set(item) - known
        if unknown:
            raise CorruptFileError(f"{path}: entry {i} has unknown keys {sorted(unknown)}",
                                   hint=f"accepted keys: {', '.join(sorted(known))}")
        names = item.get("names") or ()
        if isinstance(names, dict):  # Ultralytics' dataset YAML style {0: person, 1: car}
            names = [names[k] for k in sorted(names)]
        pt = Path(item["pt_file"])
        sources.append(DetectorSource.of(pt if pt.is_absolute() else path.parent / pt, item.get("name"),
                                         item.get("max_batch"), int(item.get("topk", TOPK)),
                                         tuple(str(n) for n in names)))
    return sources


class RawDetector(nn.Module):
    """The model's decoded head output ``[B, 4 + C, anchors]`` (xywh in input pixels, class scores)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model(images)
        return out[0] if isinstance(out, (tuple, list)) else out


@dataclass(frozen=True)
class LoadedDetector:
    """A loaded Ultralytics detector: the traceable module, its raw spec and where it came from."""

    module: RawDetector
    spec: ModelSpec
    source: DetectorSource
    extra: dict = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels


def is_zoo_name(pt_file: str | Path) -> bool:
    """``yolo11n.pt`` ... ``yolo11x.pt``: Ultralytics' released detectors (the file itself may be missing)."""
    pt_file = Path(pt_file)
    return pt_file.suffix == ".pt" and default_max_batch(pt_file.name.removesuffix(".pt")) is not None


def _missing(pt_file: Path) -> WeightsNotFoundError:
    random = (f"; or pass --allow-random (allow_random=True) to build {pt_file.stem} from Ultralytics' YAML with "
              "seeded random weights") if is_zoo_name(pt_file) else ""
    return WeightsNotFoundError(
        f"{pt_file}: is a directory, not an Ultralytics checkpoint" if pt_file.is_dir() else
        f"{pt_file}: weights file not found (weights cannot be downloaded here)",
        hint=f"put the Ultralytics checkpoint at {pt_file.resolve()} (e.g. {pt_file.name} from the Ultralytics "
             f"releases, or your own trained best.pt){random}",
    )


def load_ultralytics(pt_file: str | Path) -> tuple[nn.Module, dict]:
    """The fp32 eval model and its checkpoint dict, read safely (``detect.safe_load``); a typed error when the
    file is missing, unsafe, corrupt or not a detector."""
    from modelport.detect.safe_load import model_from_checkpoint, read_detector_checkpoint

    pt_file = Path(pt_file)
    if not pt_file.is_file():
        raise _missing(pt_file)
    ckpt = read_detector_checkpoint(pt_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_from_checkpoint(pt_file, ckpt)
    task = getattr(model, "task", None)
    if task != "detect":
        raise UnknownArchitectureError(f"{pt_file}: an Ultralytics {task!r} model, not a detector",
                                       hint="modelport exports Ultralytics detection models (task 'detect')")
    return model, ckpt


class LastAxisDFL(nn.Module):
    """Ultralytics' DFL decode (softmax over each box side's ``bins``, then their expectation) with the softmax
    over the last axis. Same values; exported, ONNX Runtime's Softmax over axis 1 of ``[B,16,4,A]`` took 10.7 of
    yolo11n's 165 ms per image on one core, the last-axis form a fraction of that (benchmarks/YOLO_RESULTS.md)."""

    def __init__(self, weight) -> None:
        super().__init__()
        self.register_buffer("bins", weight.detach().reshape(-1, 1).float().clone())  # [bins, 1]
        self.count = int(self.bins.shape[0])

    def forward(self, x):
        b, _, a = x.shape
        probs = x.view(b, 4, self.count, a).transpose(2, 3).softmax(-1)  # [B,4,A,bins]
        return (probs @ self.bins).view(b, 4, a)


def prepare_module(model: nn.Module, dynamic_hw: bool = False) -> RawDetector:
    """Fuse Conv+BN as Ultralytics' exporter does, put the head in export mode (one output tensor) and give it
    the last-axis DFL; ``dynamic_hw`` makes the head compute its anchors from the input size in the graph."""
    from ultralytics.nn.modules.block import DFL
    from ultralytics.nn.modules.head import Detect

    model = copy.deepcopy(model).float().eval()
    if hasattr(model, "fuse"):
        model = model.fuse(verbose=False)
    for m in model.modules():
        if isinstance(m, Detect):
            m.export, m.format, m.dynamic = True, "onnx", dynamic_hw
            if isinstance(getattr(m, "dfl", None), DFL):
                m.dfl = LastAxisDFL(m.dfl.conv.weight)
    for p in model.parameters():
        p.requires_grad_(False)
    return RawDetector(model).eval()


def detector_spec(name: str, labels: tuple[str, ...], anchors: int, *, imgsz: int = IMGSZ, source: Source,
                  max_batch: int, extra: dict | None = None, stride: int = 0) -> ModelSpec:
    """The raw track's spec: ``images [B,3,imgsz,imgsz]`` -> ``output0 [B, 4+C, anchors]``; with ``stride``
    (dynamic shape) ``images [B,3,height,width]`` up to imgsz, letterboxed to the smallest stride multiple."""
    hw = ("height", "width") if stride else (imgsz, imgsz)
    return ModelSpec(
        name=name,
        task="detect",
        inputs=(TensorSpec("images", "float32", ("batch", 3, *hw)),),
        outputs=(TensorSpec(RAW_OUTPUT, "float32", ("batch", 4 + len(labels), "anchors" if stride else anchors)),),
        preprocess=Preprocess(height=imgsz, width=imgsz, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                              channel_order="RGB", resize="letterbox", stride=stride),
        source=source,
        labels=labels,
        modelport_version=__version__,
        # trt_max_batch sizes the TensorRT optimisation profile; max_batch the chunks runners feed.
        extra={"max_batch": max_batch, "trt_max_batch": max_batch, "nms": None, **(extra or {})},
    )


def count_anchors(imgsz: int, strides=(8, 16, 32)) -> int:
    return sum((imgsz // s) ** 2 for s in strides)


def load_detector(source: DetectorSource | str | Path, imgsz: int = IMGSZ, dynamic_hw: bool = False) -> LoadedDetector:
    """Load an Ultralytics ``.pt`` as a modelport Detector (class names from the model unless overridden);
    ``dynamic_hw``: any input height and width up to imgsz, for rectangular letterboxing."""
    if not isinstance(source, DetectorSource):
        source = DetectorSource.of(source)
    if imgsz % 32:
        raise ModelportError(f"imgsz must be a multiple of 32 (the model's largest stride), got {imgsz}")
    model, ckpt = load_ultralytics(source.pt_file)
    names = getattr(model, "names", None) or {}
    labels = source.labels or tuple(str(names[k]) for k in sorted(names))
    nc = int(model.model[-1].nc)
    if len(labels) != nc:
        raise ModelportError(f"{source.pt_file}: {len(labels)} class names given for a model with {nc} classes")
    strides = tuple(int(s) for s in model.stride.tolist())
    kind = "random" if (ckpt.get("train_args") or {}).get(RANDOM_KEY) else "weights"
    src = Source(kind=kind, file=str(source.pt_file.resolve()), sha256=sha256_file(source.pt_file))
    spec = detector_spec(source.name, labels, count_anchors(imgsz, strides), imgsz=imgsz, source=src,
                         max_batch=source.max_batch, stride=max(strides) if dynamic_hw else 0,
                         extra={"ultralytics_version": str(ckpt.get("version", "")), "topk": source.topk,
                                ULTRALYTICS_KEY: ultralytics_metadata(model, source.name, labels, imgsz, dynamic_hw)})
    return LoadedDetector(prepare_module(model, dynamic_hw), spec, source)


def ultralytics_metadata(model: nn.Module, name: str, labels: tuple[str, ...], imgsz: int,
                         dynamic_hw: bool) -> dict:
    """The metadata Ultralytics' exporter writes (``engine/exporter.py``), with the values the model object holds,
    so that ``ultralytics.YOLO(export)`` letterboxes, batches and names classes as for its own export.

    ``batch`` 1 with a fixed height and width: Ultralytics then feeds a fixed-size model one image at a time (our
    batch dimension is dynamic, but its loader would pad every call to a fixed ``batch``); with ``dynamic_hw``
    its ``dynamic=True``, whose batch is any."""
    import ultralytics

    yaml = getattr(model, "yaml", None) or {}
    return {
        "description": f"Ultralytics {name} model exported by modelport {__version__}",
        "version": ultralytics.__version__,
        "stride": int(max(model.stride.tolist())),
        "task": model.task,
        "head": type(model.model[-1]).__name__,
        "batch": 1,
        "imgsz": [imgsz, imgsz],
        "names": {str(i): label for i, label in enumerate(labels)},  # as the spec's JSON keeps them
        "args": {"batch": 1, "dynamic": dynamic_hw, "nms": None},
        "channels": int(yaml.get("channels", 3)),
        "end2end": bool(getattr(model, "end2end", False)),
    }


def e2e_track(flavor: str, layout: str) -> str:
    """``e2e-portable``, ``e2e-tensorrt``; the ultralytics output layout: ``e2e-portable-ultralytics``."""
    return f"e2e-{flavor}-ultralytics" if layout == "ultralytics" else f"e2e-{flavor}"


def e2e_spec(raw: ModelSpec, *, flavor: str, topk: int, iou: float, conf: float, normalized: bool,
             layout: str = "efficientnms") -> ModelSpec:
    """The end-to-end track's spec: NMS in the graph, fixed-size padded outputs. ``layout`` ``efficientnms``: the
    four outputs of TensorRT's EfficientNMS; ``ultralytics``: one ``output0 [B, k, 6]`` (x1, y1, x2, y2, score,
    class), as Ultralytics' ``nms=True`` export, whose metadata it then carries with ``args.nms`` set (the four
    outputs carry none: its loader cannot read them)."""
    anchors = raw.outputs[0].shape[2]
    k = min(topk, anchors) if isinstance(anchors, int) else topk
    nms = {"flavor": flavor, "topk": k, "iou": iou, "conf": conf, "normalized": normalized, "layout": layout}
    extra = {**raw.extra, "nms": nms}
    if layout == "ultralytics":
        outputs: tuple[TensorSpec, ...] = (TensorSpec(RAW_OUTPUT, "float32", ("batch", k, 6)),)
        meta = extra.get(ULTRALYTICS_KEY)
        if meta:
            extra[ULTRALYTICS_KEY] = {**meta, "args": {**meta["args"], "nms": True}}
    else:
        outputs = (
            TensorSpec("num_dets", "int32", ("batch", 1)),
            TensorSpec("det_boxes", "float32", ("batch", k, 4)),
            TensorSpec("det_scores", "float32", ("batch", k)),
            TensorSpec("det_classes", "int32", ("batch", k)),
        )
        extra.pop(ULTRALYTICS_KEY, None)
    return replace(raw, outputs=outputs, extra=extra)


__all__ = ["CONF", "DEFAULT_MAX_BATCH", "LoadedDetector", "DetectorSource", "IOU", "TOPK", "detector_spec", "e2e_spec",
           "e2e_track", "is_zoo_name", "load_detector", "load_ultralytics", "parse_model_arg", "prepare_module",
           "read_model_list", "ultralytics_metadata"]
