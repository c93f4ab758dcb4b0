"""What every family's export takes and gives back: one typed request, one row per written artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelport.int8.settings import Int8Settings


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """Everything an export can be asked for. Options of one family are refused by the others
    (``Family.options`` lists each family's own; ``refuse_foreign`` checks them)."""

    formats: tuple[str, ...] | None = None
    out: Path | None = None
    opset: int | None = None  # None: the family's default (17; a factory config's own)
    device: str = "cpu"
    verify: bool = True
    force: bool = False
    allow_random: bool = False
    # reid (torchreid zoo)
    arch: str | None = None
    batch: int | None = None
    simplify: bool = False
    precision: str = "fp32"  # fp32 | fp16 | int8
    calib: Path | None = None
    int8: Int8Settings | None = None  # calibration method and accuracy search (None: modelport.int8's defaults)
    uint8_input: bool = False
    # yolo (Ultralytics detectors)
    nms: bool = False
    nms_flavor: str = "portable"
    nms_layout: str = "efficientnms"
    topk: int | None = None
    iou: float | None = None
    conf: float | None = None
    normalize_boxes: bool = False
    imgsz: int | None = None
    dynamic_shape: bool = False
    images: Path | None = None
    allow_empty: bool = False
    # clip and factory: the checkpoint beside a model name (open_clip's) or a factory (the user's)
    weights: Path | None = None
    # factory (any PyTorch model)
    factory: str | None = None
    config: Path | None = None
    trt_builder: str | None = None

    def given(self) -> dict[str, Any]:
        """The options set away from their defaults, by field name."""
        return _given(self)


@dataclass(slots=True)
class ExportRow:
    """One artifact of one export, whatever the family: where it went, and how its verification went."""

    family: str
    model: str
    format: str
    path: Path | None
    seconds: float
    ok: bool
    part: str = ""  # detector track (raw, e2e-portable...), CLIP encoder (image, text)
    error: str | None = None
    note: str = ""
    checked: str = ""  # what verification compared, in a few words
    found: str = ""  # what it found, in a line ("max abs 2.1e-06, min cosine 1.000000")
    max_abs: float | None = None
    min_cosine: float | None = None
    detail: Any = field(default=None, repr=False)  # the family's own result object

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "model": self.model, "format": self.format, "part": self.part,
                "path": str(self.path) if self.path else None, "ok": self.ok, "seconds": round(self.seconds, 3),
                "error": self.error, "note": self.note, "checked": self.checked, "found": self.found,
                "max_abs": self.max_abs, "min_cosine": self.min_cosine}


def rows_of(results, family: str, model: str, part: str = "") -> list[ExportRow]:
    """ExportRows from the pipeline's ExportResults (``modelport.export``)."""
    rows = []
    for r in results:
        first = r.check.outputs[0] if r.check is not None and r.check.outputs else None
        rows.append(ExportRow(family, model, r.format, r.path, r.seconds, r.ok, part=part, error=r.error,
                              checked="vs PyTorch: max abs diff, cosine" if r.check is not None else "",
                              max_abs=first.max_abs if first else None,
                              min_cosine=first.min_cosine if first else None, detail=r,
                              found="max abs {:.2e}, min cosine {:.6f}".format(first.max_abs, first.min_cosine)
                              if first else "" if r.check is None else r.check.summary()))
    return rows


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """What a benchmark can be asked for; family-only options are refused by the others as for exports."""

    formats: tuple[str, ...] | None = None
    batches: tuple[int, ...] | None = None  # None: the family's default
    device: str = "cpu"
    threads: int | None = None
    seconds: float = 3.0
    rounds: int = 5
    allow_random: bool = False
    arch: str | None = None  # reid
    precision: str = "fp32"  # reid: also time the fp16 or int8 variants
    calib: Path | None = None  # reid
    imgsz: int | None = None  # yolo
    conf: float | None = None  # yolo
    weights: Path | None = None  # clip, factory
    factory: str | None = None  # factory
    config: Path | None = None  # factory
    size: tuple[int, int] | None = None  # factory: (width, height) an image-to-image model is timed at

    def given(self) -> dict[str, Any]:
        return _given(self)


def _given(request: ExportRequest | BenchRequest) -> dict[str, Any]:
    defaults = type(request)()
    return {name: getattr(request, name) for name in request.__slots__
            if getattr(request, name) != getattr(defaults, name)}
