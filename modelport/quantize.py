"""FP16 and INT8 variants of ONNX and OpenVINO artifacts, and the calibration data INT8 needs.

INT8 is static post-training quantisation: activation ranges are measured on calibration images,
which should be crops like the deployment's (``--calib DIR``). Each variant is verified against the
fp32 PyTorch model with its own thresholds (``verify.FP16`` / ``verify.INT8``) before it is kept.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelport.errors import CalibrationError, ExportError
from modelport.int8.settings import Int8Settings
from modelport.preprocess import prepare
from modelport.spec import ModelSpec

if TYPE_CHECKING:
    import onnx

    from modelport.formats.base import ExportOptions

PRECISIONS = ("fp32", "fp16", "int8")
VARIANT_FORMATS = ("onnx", "openvino")  # the formats that can be written in fp16 / int8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_CALIBRATION = 300  # images; NNCF's default subset size, and plenty for stable activation ranges
CALIBRATION_BATCH = 16


class SyntheticCalibrationWarning(UserWarning):
    """INT8 activation ranges were measured on synthetic crops, not on images like the deployment's."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """Preprocessed calibration images (N, 3, H, W) float32 and where they came from."""

    batch: np.ndarray
    source: str  # the folder, or "synthetic"
    settings: Int8Settings = Int8Settings()  # calibration method and accuracy target (modelport.int8)

    @property
    def info(self) -> dict[str, object]:
        return {"source": self.source, "count": int(len(self.batch))}

    def record(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with the calibration's provenance in ``extra["calibration"]``."""
        return replace(spec, extra={**spec.extra, "calibration": self.info})


def calibration_batch(spec: ModelSpec, calib_dir: str | Path | None = None, count: int = MAX_CALIBRATION,
                      settings: Int8Settings | None = None) -> Calibration:
    """Every image under ``calib_dir`` (sorted, at most ``count``), or synthetic crops when it is None; INT8
    exports calibrate and search as ``settings`` says (default ``Int8Settings()``: no judge, no search)."""
    settings = settings or Int8Settings()
    if count < 1:
        raise CalibrationError(f"calibration needs at least one image, got count={count}")
    pre = spec.preprocess
    if calib_dir is None:
        from modelport.samples import person_tracks

        warnings.warn(
            f"INT8 calibration uses {count} SYNTHETIC crops: the activation ranges and the accuracy check do "
            "not reflect real images; give a folder of crops like the deployment's with --calib DIR",
            SyntheticCalibrationWarning, stacklevel=2,
        )
        # Two views per person so the nearest-neighbour check has a true neighbour to find.
        crops = person_tracks((count + 1) // 2, 2, pre.height, pre.width, seed=2024)[:count]
        return Calibration(prepare(crops, pre), "synthetic", settings)
    folder = Path(calib_dir)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: calibration folder not found",
                               hint="give a folder of crops with --calib DIR")
    try:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise CalibrationError(f"{folder}: cannot read the calibration folder ({exc})") from None
    if not files:
        raise CalibrationError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) to calibrate INT8 with",
                               hint="put crops like the deployment's in it (a few hundred is plenty)")
    return Calibration(prepare(files[:count], pre), str(folder), settings)


def calibration_for(spec: ModelSpec, options: "ExportOptions") -> Calibration:
    """The calibration prepared by ``export_all``, or one read now from ``options.calib``."""
    if options.calibration is not None:
        return options.calibration
    return calibration_batch(spec, options.calib, options.calib_count)


def _chunk(spec: ModelSpec) -> int:
    return spec.max_batch or CALIBRATION_BATCH


# ---- ONNX -------------------------------------------------------------------------------------------


def onnx_to_fp16(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """fp16 weights and compute; inputs and outputs stay float32 so callers and the spec do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = OnnxModel(convert_float_to_float16(model, keep_io_types=True))
    half.topological_sort()  # the converter appends the input casts after the nodes that read them
    return half.model


def quantize_onnx_int8(src: Path, dst: Path, calibration: Calibration, spec: ModelSpec) -> ModelSpec:
    """Static QDQ INT8 with ONNX Runtime (``modelport.int8.onnxrt``), calibrated on ``calibration``; returns
    ``spec`` with the run's record (method, points measured, nodes kept in fp32) in ``extra["int8"]``.

    Per-channel QInt8 weights and QUInt8 activations in QDQ form (ORT's recommendation for x86 CPUs), 7-bit
    weights in the first convolution (int16 saturation without VNNI), BatchNormalization left in float.
    """
    from modelport.int8.onnxrt import quantize_onnx

    result = quantize_onnx(src, dst, calibration.batch, spec.inputs[0].name, _chunk(spec), calibration.settings)
    return replace(spec, extra={**spec.extra, "int8": result.record})


def onnx_variant(model: "onnx.ModelProto", spec: ModelSpec,
                 options: "ExportOptions") -> tuple["onnx.ModelProto", ModelSpec]:
    """The fp16 / int8 version of an fp32 ONNX model, as ``spec.precision`` asks, and its spec (an int8
    one records what its quantisation did)."""
    import onnx

    if spec.precision == "fp16":
        return onnx_to_fp16(model), spec
    if spec.precision != "int8":
        raise ExportError(f"unknown precision {spec.precision!r}", hint=f"choose from: {', '.join(PRECISIONS)}")
    calibration = calibration_for(spec, options)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        spec = quantize_onnx_int8(src, dst, calibration, spec)
        return onnx.load(str(dst)), spec


# ---- OpenVINO ---------------------------------------------------------------------------------------


def quantize_openvino_int8(model, calibration: Calibration, spec: ModelSpec):
    """NNCF INT8 of an ``openvino.Model`` (``modelport.int8.nncf_ov``), calibrated on ``calibration``; returns the
    quantised model and ``spec`` with the run's record (method, points, layers kept in fp32) in ``extra["int8"]``.
    """
    from modelport.int8.nncf_ov import quantize_openvino

    result = quantize_openvino(model, calibration.batch, _chunk(spec), calibration.settings)
    return result.model, replace(spec, extra={**spec.extra, "int8": result.record})
