"""Export a zoo model to several formats: write to a hidden staging folder, verify, then move into place."""

from __future__ import annotations

import copy
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, cast

from modelport.errors import ExportError, ModelportError, VerificationError
from modelport.formats import EXPORTABLE, ExportOptions, Format, get_format
from modelport.formats.base import example_batch
from modelport.formats.feeds import Feed, feed_rows, first_rows
from modelport.formats.pytorch import PyTorchRunner
from modelport.int8.settings import Int8Settings
from modelport.quantize import (
    MAX_CALIBRATION,
    PRECISIONS,
    VARIANT_FORMATS,
    Calibration,
    calibration_batch,
    calibration_for,
)
from modelport.spec import ModelSpec
from modelport.verify import TOLERANCES, RunnerResult, Tolerance, compare_output, compare_runner

if TYPE_CHECKING:  # torch-backed: imported when a model is exported, so `import modelport` stays light
    from modelport.zoo import BuiltModel

VERIFY_ROWS = 5  # odd on purpose: a dynamic batch must accept a size it was not traced with
FP16_VERIFY_ROWS = 16  # a worst-row cosine needs more rows once errors are no longer at rounding level


@dataclass(slots=True)
class ExportResult:
    format: str
    path: Path | None
    seconds: float
    check: RunnerResult | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and (self.check is None or self.check.passed)


def available_formats(device: str = "cpu") -> list[Format]:
    """Exportable formats whose runtime works here (so the export can be verified)."""
    return [f for f in EXPORTABLE if f.unavailable_reason(device) is None]


def parse_formats(formats: str | Iterable[str] | None, device: str = "cpu", precision: str = "fp32") -> list[Format]:
    """The formats to export; by default every usable one (that can be written in ``precision``)."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}", hint=f"choose from: {', '.join(PRECISIONS)}")
    if formats is None:
        usable = available_formats(device)
        # Engines are left to an explicit --format: ONNX and OpenVINO are the variants made by default.
        return usable if precision == "fp32" else [f for f in usable if f.id in VARIANT_FORMATS]
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = [get_format(n.strip()) for n in names if n.strip()]
    for fmt in chosen:
        if fmt.is_weights:
            raise ExportError("pytorch is the source format; choose from: " + ", ".join(f.id for f in EXPORTABLE))
        if precision not in fmt.precisions:
            able = [f.id for f in EXPORTABLE if precision in f.precisions]
            raise ExportError(f"{fmt.name} cannot be exported in {precision}",
                              hint=f"{precision} variants are made for: {', '.join(able)}")
    return chosen


def verification_batch(spec: ModelSpec, options: ExportOptions) -> Feed:
    """The rows an export of ``spec`` is checked on: INT8 on the held-out part of its calibration data (real
    crops when given, never used to calibrate or to steer the accuracy search), where nearest-neighbour
    agreement has enough rows to mean something."""
    if spec.precision == "int8":
        return calibration_for(spec, options).judged
    rows = FP16_VERIFY_ROWS if spec.precision == "fp16" else VERIFY_ROWS
    return example_batch(spec.with_batch(None), count=rows, seed=1234)


def verification_chunk(module: object, spec: ModelSpec, batch: Feed) -> int:
    """Rows per runtime call while ``batch`` is verified: as many as fit ``bench_memory.CALL_BYTES`` by the
    module's activation memory per row, at least two (so a dynamic batch still runs at a size it was not
    traced with: 5 rows in calls of 2 run batches 2 and 1)."""
    from modelport.bench_memory import activation_bytes, rows_per_call

    rows = feed_rows(batch)
    return rows_per_call(activation_bytes(module, first_rows(batch, 1), spec), rows) if rows > 2 else max(rows, 1)


@dataclass
class ReferenceCache:
    """PyTorch's outputs on the verification rows, computed once per export run and shared by its formats: at
    a large input the reference costs seconds per format. Made per run (never kept across runs), so a module
    changed in place between two exports is never judged against outputs of its earlier weights."""

    entries: dict[tuple[str, str], tuple[Feed, Any, int]] = field(default_factory=dict)

    def get(self, built: BuiltModel, options: ExportOptions) -> tuple[Feed, Any, int]:
        """(rows, PyTorch's outputs on them, rows per call) for ``built`` as ``options`` verify it."""
        key = (built.spec.to_json(), options.device)  # the spec holds precision, input and calibration record
        if key not in self.entries:
            # A copy, because moving a module to the GPU is in place and later formats trace on the CPU.
            module = built.module if options.device == "cpu" else copy.deepcopy(built.module)
            reference = PyTorchRunner(module, built.spec, None, options.device)
            batch = verification_batch(built.spec, options)
            # The same rows and comparison, run in calls small enough to keep memory bounded at a large input.
            reference.chunk = chunk = verification_chunk(built.module, built.spec, batch)
            self.entries[key] = (batch, reference(batch), chunk)
        return self.entries[key]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


class Check(Protocol):
    """What a family's comparison gives back (``verify.RunnerResult``, ``detect.verify.DetectionCheck``)."""

    @property
    def passed(self) -> bool: ...

    def summary(self) -> str: ...


def publish_verified(fmt: Format, dest: Path, options: ExportOptions, write: Callable[[Path], object],
                     judge: Callable[[Path], Check | None] | None, *, source: Path | None = None,
                     also: Callable[[Path], str | None] | None = None,
                     before_publish: Callable[[Path], None] | None = None) -> tuple[Check | None, str | None]:
    """The one export pipeline every family goes through: ``write(staged)`` the artifact into a hidden staging
    sibling of ``dest``, ``judge(staged)`` it against the family's reference (None: not verified), and only
    when it passes move it to ``dest``. Returns (check, error); ``dest`` is written exactly when error is None.

    A family brings the hooks: its writer (a plain format export, a graph with NMS inside...), its judge (a
    PyTorch reference and a numeric comparison, Ultralytics' boxes...), ``also``: a further check once the
    judge passed (an error message or None; CLIP: no re-parameterisable block left un-merged), and
    ``before_publish``: what goes beside the artifact (``labels.txt``). A writer's or judge's ModelportError
    becomes the error.
    """
    if source is not None and dest.resolve() == source.resolve():
        raise ExportError(f"{dest}: refusing to overwrite the source file with an export", hint="use --out DIR")
    fmt.check_replaceable(dest, options.force)  # before the costly part, and again when publishing
    # Staging in a hidden sibling folder keeps the final file name (OpenVINO names its xml after it)
    # and means a crash mid-export never leaves a file the loader would pick up.
    staging = dest.parent / f".modelport-staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    staged = staging / dest.name
    try:
        try:
            write(staged)
            check = judge(staged) if judge is not None else None
            if check is not None and not check.passed:
                return check, f"verification failed: {check.summary()}"
            problem = also(staged) if also is not None and judge is not None else None
        except ModelportError as exc:
            return None, exc.message
        if problem:
            return check, f"verification failed: {problem}"
        if before_publish is not None:
            before_publish(staged)
        fmt.publish(staged, dest, options.force)
        return check, None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_one(built: BuiltModel, fmt: Format, dest: Path, options: ExportOptions, *,
               verify: bool = True, tolerance: Tolerance | None = None, source: Path | None = None,
               also: Callable[[Path], str | None] | None = None,
               references: ReferenceCache | None = None) -> ExportResult:
    """Export ``built`` to ``dest`` through ``publish_verified``, judged against its PyTorch module.

    ``tolerance`` defaults to the one for the spec's precision (``verify.TOLERANCES``); ``also``: a family's
    further check of the staged artifact (``publish_verified``); ``references``: the run's reference outputs,
    shared by the formats of one export run.
    """
    start = time.perf_counter()
    fmt.require(options.device)

    def write(staged: Path) -> None:
        fmt.export(built.module, built.spec, staged, options)

    def judge(staged: Path) -> RunnerResult:
        batch, expected, chunk = (references or ReferenceCache()).get(built, options)
        runner = fmt.load(staged, options.device)
        try:
            runner.chunk = min(runner.chunk, chunk)
            return compare_runner(expected, runner, batch, tolerance or TOLERANCES[built.spec.precision],
                                  label=str(dest))
        finally:
            runner.close()

    check, error = publish_verified(fmt, dest, options, write, judge if verify else None, source=source, also=also)
    return ExportResult(fmt.id, None if error else dest, time.perf_counter() - start,
                        check=cast("RunnerResult | None", check), error=error)


def variant_spec(spec: ModelSpec, precision: str, calib: str | Path | None = None, calib_count: int = MAX_CALIBRATION,
                 int8: Int8Settings | None = None) -> tuple[ModelSpec, Calibration | None]:
    """``spec`` in ``precision``, and for int8 its calibration (read once, so every format of a run calibrates on
    the same rows and is judged on the same held-out ones), recorded in the spec. The INT8 search is judged
    like the export's verification (``verify.compare_output`` at ``verify.INT8``)."""
    spec = replace(spec, precision=precision)
    if precision != "int8":
        return spec, None
    settings = int8 or Int8Settings()  # its tolerance: the user's --int8-target, else verify.INT8
    settings = replace(settings, judge=compare_output, tolerance=settings.tolerance or TOLERANCES["int8"])
    calibration = calibration_batch(spec, calib, calib_count, settings)
    return calibration.record(spec), calibration


def export_all(
    weights: str | Path | None = None,
    formats: str | Iterable[str] | None = None,
    *,
    arch: str | None = None,
    out: str | Path | None = None,
    batch: int | None = None,
    opset: int = 17,
    simplify: bool = False,
    allow_random: bool = False,
    device: str = "cpu",
    verify: bool = True,
    built: BuiltModel | None = None,
    precision: str = "fp32",
    calib: str | Path | None = None,
    calib_count: int = MAX_CALIBRATION,
    uint8_input: bool = False,
    force: bool = False,
    int8: Int8Settings | None = None,
) -> list[ExportResult]:
    """Export to every requested format; one result per format, failures included.

    ``precision`` fp16 / int8 writes tagged variants (``x.int8.onnx``, ``x_int8_openvino_model/``) of
    ONNX and OpenVINO; int8 is calibrated on the crops under ``calib`` (synthetic ones when None; other
    precisions ignore it). ``uint8_input`` folds the cast and mean/std into the graph (``modelport.fold``)
    and tags the files ``x.uint8in.onnx``, ``x_uint8in_openvino_model/``. An earlier modelport export at a
    destination is replaced; any other file there only with ``force``. ``int8`` sets the calibration method
    and accuracy control (``modelport.int8``); the INT8 search is judged like the verification below.
    """
    from modelport.fold import TAG as FOLD_TAG, fold
    from modelport.naming import weights_stem
    from modelport.zoo import BuiltModel, build

    if batch is not None and batch < 1:
        raise ExportError(f"batch must be a positive integer, got {batch}")
    chosen = parse_formats(formats, device, precision)
    built = built or build(weights, arch=arch, allow_random=allow_random)
    if batch is not None:
        built = BuiltModel(built.module, built.spec.with_batch(batch), built.entry)
    if uint8_input:
        if precision != "fp32":
            raise ExportError("--uint8-input is made in fp32 only", hint=f"export without --{precision}")
        module, folded = fold(built.module, built.spec)
        built = BuiltModel(module, folded, built.entry)
    source = Path(weights) if weights is not None else None
    out_dir = Path(out) if out is not None else (source.parent if source is not None else Path.cwd())
    stem = weights_stem(source) if source is not None else f"{built.spec.name}_untrained"
    out_dir.mkdir(parents=True, exist_ok=True)
    spec, calibration = variant_spec(built.spec, precision, calib, calib_count, int8) if chosen else (
        replace(built.spec, precision=precision), None)
    built = BuiltModel(built.module, spec, built.entry)
    options = ExportOptions(opset=opset, simplify=simplify, device=device, calib=Path(calib) if calib else None,
                            calib_count=calib_count, calibration=calibration, force=force)
    tag = FOLD_TAG if uint8_input else "" if precision == "fp32" else precision
    references = ReferenceCache()
    return [
        export_one(built, fmt, fmt.artifact_path(out_dir, stem, tag), options, verify=verify, source=source,
                   references=references, tolerance=calibration.settings.tolerance if calibration else None)
        for fmt in chosen
    ]


def export(weights: str | Path | None = None, formats: str | Iterable[str] | None = None, **kwargs) -> list[Path]:
    """Export ``weights`` to ``formats`` (default: every format usable here) and return the written paths.

    Raises ExportError / VerificationError naming each failed format; the successful ones stay written.
    """
    results = export_all(weights, formats, **kwargs)
    failed = [r for r in results if not r.ok]
    if failed:
        written = ", ".join(str(r.path) for r in results if r.ok) or "none"
        detail = "; ".join(f"{r.format}: {r.error}" for r in failed)
        kind = VerificationError if all(r.check is not None for r in failed) else ExportError
        raise kind(f"export of {weights or 'the model'} failed for {detail} (written: {written})",
                   hint="no artifact was left for a failed format")
    return [r.path for r in results if r.path is not None]
