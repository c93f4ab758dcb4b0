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
from typing import TYPE_CHECKING, Sequence, TypeVar

import numpy as np

from modelport.errors import CalibrationError, ExportError
from modelport.formats.feeds import Feed
from modelport.int8.settings import Int8Settings
from modelport.preprocess import prepare
from modelport.spec import ModelSpec

T = TypeVar("T")

if TYPE_CHECKING:
    import onnx

    from modelport.formats.base import ExportOptions

PRECISIONS = ("fp32", "fp16", "int8")
VARIANT_FORMATS = ("onnx", "openvino")  # the formats that can be written in fp16 / int8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_CALIBRATION = 300  # images; NNCF's default subset size, and plenty for stable activation ranges
CALIBRATION_BATCH = 16
# Held out: every HOLDOUT_EVERY-th run of HOLDOUT_RUN consecutive items (sorted by path, or rows of an .npz). They
# never set an activation range or steer the accuracy search; the export's verdict is judged on them alone. Runs,
# not single items, because neighbours in a sorted folder are usually the same track or person: a held-out set
# keeps true nearest neighbours to agree on, and no held-out crop has a near-duplicate frame among the
# calibration ones.
HOLDOUT_EVERY = 4
HOLDOUT_RUN = 4
MAX_HOLDOUT = 100
MAX_NPZ_BYTES = 2 << 30  # an .npz bigger than this when read is refused before anything is allocated
SPLIT = (f"every {HOLDOUT_EVERY}th run of {HOLDOUT_RUN} consecutive items held out (sorted by path, or rows of "
         "an .npz)")


class SyntheticCalibrationWarning(UserWarning):
    """INT8 activation ranges were measured on synthetic crops, not on images like the deployment's."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """Prepared calibration rows, the held-out rows the export is judged on, and where they came from.

    ``batch`` sets the activation ranges and is what an accuracy search is tuned on; ``holdout`` never touches
    the quantiser. Both are one array (the model's single input, ``input_name``).
    """

    batch: np.ndarray
    source: str  # the folder or .npz file, or "synthetic"
    settings: Int8Settings = Int8Settings()  # calibration method and accuracy target (modelport.int8)
    holdout: np.ndarray | None = None
    input_name: str | None = None  # set for plain-tensor models: their feeds are arrays by input name

    @property
    def info(self) -> dict[str, object]:
        info: dict[str, object] = {"source": self.source, "count": int(len(self.batch))}
        if self.holdout is not None:
            info.update(held_out=int(len(self.holdout)), split=SPLIT if self.source != "synthetic"
                        else "held-out crops drawn with another seed")
        return info

    @property
    def judged(self) -> Feed:
        """What the export's verdict is judged on: the held-out rows (the calibration rows only where a caller
        made a Calibration without any)."""
        rows = self.batch if self.holdout is None else self.holdout
        return {self.input_name: rows} if self.input_name else rows

    def record(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with the calibration's provenance in ``extra["calibration"]``."""
        return replace(spec, extra={**spec.extra, "calibration": self.info})


def split_holdout(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """(calibration, held out): every ``HOLDOUT_EVERY``-th run of ``HOLDOUT_RUN`` consecutive items is held out;
    with too few items for one such run, the last quarter (at least one item)."""
    if len(items) < 2:
        raise CalibrationError(f"INT8 needs at least 2 calibration items, got {len(items)}: a quarter of them is "
                               "held out to judge the result on",
                               hint="give a few hundred crops like the deployment's (--calib DIR)")
    held = {i for i in range(len(items)) if (i // HOLDOUT_RUN) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1} or set(
        range(len(items) - max(1, len(items) // HOLDOUT_EVERY), len(items)))
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def calibration_batch(spec: ModelSpec, calib: str | Path | None = None, count: int = MAX_CALIBRATION,
                      settings: Int8Settings | None = None) -> Calibration:
    """Calibration rows for ``spec`` and a held-out split of them (``split_holdout``): images under a folder
    ``calib`` prepared through the spec's task, rows of an ``.npz`` for a plain-tensor model, or synthetic
    inputs (with a warning) when ``calib`` is None; at most ``count`` calibrate. INT8 exports calibrate and
    search as ``settings`` says (default ``Int8Settings()``: no judge, no search)."""
    settings = settings or Int8Settings()
    if count < 1:
        raise CalibrationError(f"calibration needs at least one image, got count={count}")
    tensors = spec.task == "tensors"
    if len(spec.inputs) != 1:
        raise CalibrationError(f"{spec.name}: INT8 calibrates models with one input; this one takes "
                               f"{len(spec.inputs)} ({', '.join(t.name for t in spec.inputs)})",
                               hint="export it in fp32 or with --half")
    name = spec.inputs[0].name if tensors else None
    if calib is None:
        batch, holdout = _synthetic(spec, count)
        return Calibration(batch, "synthetic", settings, holdout, name)
    path = Path(calib)
    if tensors:
        rows = _npz_rows(path, spec)
        fit, held = split_holdout(list(range(len(rows))))
        return Calibration(rows[fit[:count]], str(path), settings, rows[held[:MAX_HOLDOUT]], name)
    if not path.is_dir():
        raise CalibrationError(f"{path}: calibration folder not found",
                               hint="give a folder of crops with --calib DIR")
    try:
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read the calibration folder ({exc})") from None
    if not files:
        raise CalibrationError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) to calibrate INT8 with",
                               hint="put crops like the deployment's in it (a few hundred is plenty)")
    fit_files, held_files = split_holdout(files)
    return Calibration(prepare(fit_files[:count], spec.preprocess), str(path), settings,
                       prepare(held_files[:MAX_HOLDOUT], spec.preprocess))


def _synthetic(spec: ModelSpec, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded inputs of the spec's task: calibration rows, and held-out rows drawn with another seed."""
    warnings.warn(
        f"INT8 calibration uses {count} SYNTHETIC inputs: the activation ranges and the accuracy check do "
        "not reflect real data; give crops like the deployment's with --calib DIR (an .npz for plain tensors)",
        SyntheticCalibrationWarning, stacklevel=3,
    )
    held = min(MAX_HOLDOUT, max(2, count // 3))
    if spec.task == "tensors":
        from modelport.tasks import get_task

        task, one = get_task("tensors"), spec.with_batch(None)
        name = spec.inputs[0].name
        return task.example(one, count, seed=2024)[name], task.example(one, held, seed=2025)[name]
    from modelport.samples import person_tracks

    pre = spec.preprocess
    # Two views per person so the nearest-neighbour check has a true neighbour to find.
    batch = prepare(person_tracks((count + 1) // 2, 2, pre.height, pre.width, seed=2024)[:count], pre)
    return batch, prepare(person_tracks((held + 1) // 2, 2, pre.height, pre.width, seed=2025)[:held], pre)


def _npz_rows(path: Path, spec: ModelSpec) -> np.ndarray:
    """The rows of the spec's one input from an ``.npz`` (arrays by input name), checked before loading:
    no pickles, the declared dtype kind and trailing shape, and a bounded size."""
    import zipfile

    tensor = spec.inputs[0]
    if path.is_dir() or path.suffix.lower() != ".npz":
        raise CalibrationError(f"{path}: a plain-tensor model calibrates from an .npz of arrays by input name",
                               hint=f"save them with numpy.savez(FILE, {tensor.name}=rows) and give --calib FILE")
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found")
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{tensor.name}.npy") as member:
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            version = np.lib.format.read_magic(member)
            if version not in read:
                raise ValueError(f"unknown .npy format version {version}")
            shape, _, dtype = read[version](member)  # the header only: nothing is allocated yet
    except KeyError:
        raise CalibrationError(f"{path}: no array named {tensor.name!r} (the model's input)",
                               hint=f"save it as numpy.savez(FILE, {tensor.name}=rows)") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CalibrationError(f"{path}: not a readable .npz ({exc})") from None
    want = tuple(d if isinstance(d, int) else None for d in tensor.shape[1:])
    if len(shape) != len(tensor.shape) or any(w is not None and w != d for w, d in zip(want, shape[1:])):
        raise CalibrationError(f"{path}: {tensor.name} has shape {shape}; the model takes {tensor.shape}")
    if dtype.kind != np.dtype(tensor.dtype).kind:
        raise CalibrationError(f"{path}: {tensor.name} is {dtype}; the model takes {tensor.dtype}")
    if int(np.prod(shape)) * dtype.itemsize > MAX_NPZ_BYTES:
        raise CalibrationError(f"{path}: {tensor.name} holds {shape} values, over {MAX_NPZ_BYTES >> 30} GiB",
                               hint="a few hundred rows are plenty to calibrate with")
    with np.load(path, allow_pickle=False) as data:
        return np.ascontiguousarray(data[tensor.name], dtype=tensor.dtype)


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
