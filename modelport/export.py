"""Export a zoo model to several formats: write to a hidden staging folder, verify, then move into place."""

from __future__ import annotations

import copy
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from modelport.errors import ExportError, ModelportError, VerificationError
from modelport.formats import EXPORTABLE, ExportOptions, Format, get_format
from modelport.formats.base import example_batch
from modelport.formats.pytorch import PyTorchRunner
from modelport.verify import FP32, RunnerResult, Tolerance, compare_runner
from modelport.zoo import BuiltModel, build
from modelport.zoo.checkpoints import weights_stem

VERIFY_ROWS = 5  # odd on purpose: a dynamic batch must accept a size it was not traced with


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


def parse_formats(formats: str | Iterable[str] | None, device: str = "cpu") -> list[Format]:
    if formats is None:
        return available_formats(device)
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = [get_format(n.strip()) for n in names if n.strip()]
    for fmt in chosen:
        if fmt.id == "pytorch":
            raise ExportError("pytorch is the source format; choose from: " + ", ".join(f.id for f in EXPORTABLE))
    return chosen


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def export_one(built: BuiltModel, fmt: Format, dest: Path, options: ExportOptions, *,
               verify: bool = True, tolerance: Tolerance = FP32, source: Path | None = None) -> ExportResult:
    """Export, verify against the PyTorch module, and only then move the artifact to ``dest``."""
    start = time.perf_counter()
    if source is not None and dest.resolve() == source.resolve():
        raise ExportError(f"{dest}: refusing to overwrite the source file with an export", hint="use --out DIR")
    fmt.require(options.device)
    # Staging in a hidden sibling folder keeps the final file name (OpenVINO names its xml after it)
    # and means a crash mid-export never leaves a file the loader would pick up.
    staging = dest.parent / f".modelport-staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    staged = staging / dest.name
    try:
        try:
            fmt.export(built.module, built.spec, staged, options)
            runner = fmt.load(staged, options.device) if verify else None
        except ModelportError as exc:
            return ExportResult(fmt.id, None, time.perf_counter() - start, error=exc.message)
        check = None
        if runner is not None:
            # A copy, because moving a module to the GPU is in place and later formats trace on the CPU.
            module = built.module if options.device == "cpu" else copy.deepcopy(built.module)
            reference = PyTorchRunner(module, built.spec, None, options.device)
            batch = example_batch(built.spec.with_batch(None), count=VERIFY_ROWS, seed=1234)
            check = compare_runner(reference(batch), runner, batch, tolerance, label=str(dest))
            runner.close()
            if not check.passed:
                return ExportResult(fmt.id, None, time.perf_counter() - start, check=check,
                                    error=f"verification failed: {check.summary()}")
        _remove(dest)
        staged.rename(dest)
        return ExportResult(fmt.id, dest, time.perf_counter() - start, check=check)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
) -> list[ExportResult]:
    """Export to every requested format; one result per format, failures included."""
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be a positive integer, got {batch}")
    built = built or build(weights, arch=arch, allow_random=allow_random)
    if batch is not None:
        built = BuiltModel(built.module, built.spec.with_batch(batch), built.entry)
    source = Path(weights) if weights is not None else None
    out_dir = Path(out) if out is not None else (source.parent if source is not None else Path.cwd())
    stem = weights_stem(source) if source is not None else f"{built.spec.name}_untrained"
    out_dir.mkdir(parents=True, exist_ok=True)
    options = ExportOptions(opset=opset, simplify=simplify, device=device)
    return [
        export_one(built, fmt, fmt.artifact_path(out_dir, stem), options, verify=verify, source=source)
        for fmt in parse_formats(formats, device)
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
