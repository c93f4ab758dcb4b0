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
from typing import TYPE_CHECKING, Iterator

import numpy as np

from modelport.errors import CalibrationError, ExportError
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

    @property
    def info(self) -> dict[str, object]:
        return {"source": self.source, "count": int(len(self.batch))}

    def record(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with the calibration's provenance in ``extra["calibration"]``."""
        return replace(spec, extra={**spec.extra, "calibration": self.info})


def calibration_batch(spec: ModelSpec, calib_dir: str | Path | None = None,
                      count: int = MAX_CALIBRATION) -> Calibration:
    """Every image under ``calib_dir`` (sorted, at most ``count``), or synthetic crops when it is None."""
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
        return Calibration(prepare(crops, pre), "synthetic")
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
    return Calibration(prepare(files[:count], pre), str(folder))


def calibration_for(spec: ModelSpec, options: "ExportOptions") -> Calibration:
    """The calibration prepared by ``export_all``, or one read now from ``options.calib``."""
    if options.calibration is not None:
        return options.calibration
    return calibration_batch(spec, options.calib, options.calib_count)


def _batches(batch: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Chunks of exactly ``size`` rows; the last wraps around to real rows (padding would skew the ranges)."""
    for start in range(0, len(batch), size):
        yield batch[np.arange(start, start + size) % len(batch)]


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


def quantize_onnx_int8(src: Path, dst: Path, batch: np.ndarray, spec: ModelSpec) -> Path:
    """Static QDQ INT8 with ONNX Runtime, calibrated on ``batch``.

    Settings, as measured on BN-calibrated OSNet (see the export tests):
    - QDQ, per-channel QInt8 weights, QUInt8 activations: ORT's recommendation for x86 CPUs.
    - MinMax calibration. Entropy gave identical results and Percentile (99.999) the same accuracy
      within 1e-3 of cosine, but both keep every intermediate tensor of every calibration batch in
      memory (7.4 GB for 64 crops on OSNet x1_0), while MinMax reduces each to its min and max in the
      graph. Outlier clipping matters less here than it would for detectors: ReID heads average-pool.
    - The first convolution gets 7-bit weights: its input is the whole image range, and on x86 CPUs
      without VNNI the u8 x s8 pair sums saturate int16 there (OSNet x0_25: min cosine 0.957, against
      0.9995 for the same ranges simulated in float). 7 bits cannot overflow; on OSNet x1_0 that gave
      min cosine 0.9985 and ran 10% faster than keeping the layer float (0.9992). Deeper layers see
      mostly small activations and did not saturate, so they keep 8 bits (reduce_range everywhere:
      0.997). This is what NNCF does by default for OpenVINO (overflow fix on the first layer).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name, size = spec.inputs[0].name, _chunk(spec)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._chunks = _batches(batch, size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._chunks, None)
            return None if chunk is None else {name: chunk}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared))  # shape inference + graph clean-up, as ORT advises
            nodes = onnx.load(str(prepared)).graph.node
            convs = [n for n in nodes if n.op_type == "Conv"]
            seven_bit = {convs[0].input[1]: [{"axis": 0, "reduce_range": True}]} if convs else {}
            # A BatchNormalization left unfused (after a Gemm) has rank-1 weights that ORT cannot quantize
            # per channel (it warns and falls back); as a per-feature affine it costs nothing in float.
            keep_float = [n.name for n in nodes if n.op_type == "BatchNormalization"]
            quantize_static(
                str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
                extra_options={"TensorQuantOverrides": seven_bit},
            )
        except Exception as exc:  # the quantisation tools raise many unrelated types
            raise ExportError(f"{dst}: ONNX Runtime INT8 quantisation failed: {exc}") from exc
    return dst


def onnx_variant(model: "onnx.ModelProto", spec: ModelSpec, options: "ExportOptions") -> "onnx.ModelProto":
    """The fp16 / int8 version of an fp32 ONNX model, as ``spec.precision`` asks."""
    import onnx

    if spec.precision == "fp16":
        return onnx_to_fp16(model)
    if spec.precision != "int8":
        raise ExportError(f"unknown precision {spec.precision!r}", hint=f"choose from: {', '.join(PRECISIONS)}")
    calibration = calibration_for(spec, options)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        quantize_onnx_int8(src, dst, calibration.batch, spec)
        return onnx.load(str(dst))


# ---- OpenVINO ---------------------------------------------------------------------------------------


def quantize_openvino_int8(model, batch: np.ndarray, spec: ModelSpec):
    """NNCF post-training INT8 of an ``openvino.Model``, calibrated on ``batch``.

    PERFORMANCE preset (symmetric activations; MIXED measured no better here), fast bias correction
    and NNCF's default overflow fix (7-bit weights in the first layer, see ``quantize_onnx_int8``).
    On OSNet x1_0 keeping the first layer float instead gave the same accuracy 5% slower, and the
    overflow fix on every layer was 0.002 worse in min cosine for no speed gain.
    """
    import nncf

    items = list(_batches(batch, _chunk(spec)))
    try:
        return nncf.quantize(
            model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(items),  # counts dataset items (batches), not images
        )
    except Exception as exc:  # NNCF raises many unrelated types
        raise ExportError(f"OpenVINO INT8 quantisation (NNCF) failed: {exc}") from exc
