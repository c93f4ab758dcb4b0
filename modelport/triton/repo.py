"""Look after a model repository: status (what is there and what is wrong), validate (load and run every
version with modelport's runners), clean (remove the exports, configs backed up first)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelport.errors import ModelportError
from modelport.triton.config import (CONFIG_FILE, LABELS_FILE, config_dtype, config_problems,
                                     format_of_config, model_file, read_config, read_plan_spec, read_signature)
from modelport.triton.layout import model_dirs, open_version, outputs_by_config, served_versions, versions


@dataclass(slots=True)
class VersionStatus:
    version: int
    files: list[str]
    size_bytes: int
    served: bool
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ModelStatus:
    name: str
    format: str | None
    platform: str
    max_batch_size: int | None
    dynamic_batching: bool
    versions: list[VersionStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(not v.problems for v in self.versions)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def version_signature(model_dir: Path, version: int, config):
    """The signature of one version's artifact, as the artifact declares it."""
    fmt_id = format_of_config(config)
    path = model_dir / str(version) / model_file(config)
    spec = read_plan_spec(path) if fmt_id == "tensorrt" else None
    return read_signature(fmt_id, path, spec)


def model_status(model_dir: Path) -> ModelStatus:
    present = versions(model_dir)
    try:
        config = read_config(model_dir / CONFIG_FILE)
        fmt_id = format_of_config(config)
    except ModelportError as exc:
        status = ModelStatus(model_dir.name, None, "", None, False, problems=[exc.message])
        status.versions = [VersionStatus(v, sorted(p.name for p in (model_dir / str(v)).iterdir()),
                                         _size(model_dir / str(v)), False) for v in present]
        return status
    status = ModelStatus(model_dir.name, fmt_id, config.platform or config.backend, config.max_batch_size,
                         config.HasField("dynamic_batching"))
    if config.name and config.name != model_dir.name:
        status.problems.append(f"config name {config.name!r} differs from the folder name {model_dir.name!r}")
    if not present:
        status.problems.append("no version folders")
    served = served_versions(config, present)
    if config.version_policy.WhichOneof("policy_choice") == "specific":
        missing = sorted(set(config.version_policy.specific.versions) - set(present))
        if missing:
            status.problems.append(f"version policy names versions that are missing: {missing}")
    for out in config.output:
        if out.label_filename and not (model_dir / out.label_filename).is_file():
            status.problems.append(f"output {out.name!r} names {out.label_filename}, which is missing")
    for v in present:
        vdir = model_dir / str(v)
        row = VersionStatus(v, sorted(p.name for p in vdir.iterdir()), _size(vdir), v in served)
        if not (vdir / model_file(config)).exists():
            row.problems.append(f"{model_file(config)} missing")
        else:
            try:
                row.problems += config_problems(config, version_signature(model_dir, v, config))
            except ModelportError as exc:
                row.problems.append(exc.message)
        status.versions.append(row)
    return status


def repository_status(repo: str | Path) -> list[ModelStatus]:
    return [model_status(d) for d in model_dirs(Path(repo))]


@dataclass(slots=True)
class ValidationResult:
    name: str
    version: int | None
    ok: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outputs: dict[str, list[int]] = field(default_factory=dict)


def request_for(config, spec) -> np.ndarray:
    """One request's input for the config's first input: the spec's own example (synthetic crops, token
    ids) when it has the config's shape, else zeros of that shape."""
    from modelport.formats.base import example_batch

    first = config.input[0]
    dims = list(first.dims)
    batched = config.max_batch_size > 0
    known = list(spec.inputs[0].shape[1:]) if batched else list(spec.inputs[0].shape)
    try:
        sample = example_batch(spec.with_batch(None) if batched else spec, count=1 if batched else None)
    except Exception:  # a spec whose preprocessing cannot make an example: zeros still exercise the model
        sample = None
    # A named dimension (a detector's height and width) takes the example's size: 1 may be too small.
    made = list(sample.shape[1:] if batched else sample.shape) if sample is not None else []
    made += [1] * (len(dims) - len(made))
    shape = [d if d != -1 else (k if isinstance(k, int) else m) for d, k, m in zip(dims, known + [1] * len(dims), made)]
    if batched:
        shape = [1, *shape]
    dtype = config_dtype(first.data_type)
    if sample is not None and list(sample.shape) == shape and np.can_cast(sample.dtype, dtype, "same_kind"):
        return sample.astype(dtype)
    return np.zeros(shape, dtype)


def validate_version(model_dir: Path, version: int, config, device: str = "cpu") -> ValidationResult:
    start = time.perf_counter()
    result = ValidationResult(model_dir.name, version, False)
    try:
        result.problems += config_problems(config, version_signature(model_dir, version, config))
        with open_version(model_dir, version, config, device) as runner:
            batch = request_for(config, runner.spec)
            outs = outputs_by_config(config, runner, runner(batch))
    except (ModelportError, ValueError, RuntimeError) as exc:
        result.problems.append(getattr(exc, "message", str(exc)))
        result.seconds = time.perf_counter() - start
        return result
    rows = len(batch) if config.max_batch_size > 0 else None
    for declared in config.output:
        value = outs[declared.name]
        want = [rows, *declared.dims] if rows is not None else list(declared.dims)
        got = list(value.shape)
        result.outputs[declared.name] = got
        if len(got) != len(want) or any(w not in (-1, None, g) for g, w in zip(got, want)):
            result.problems.append(f"output {declared.name!r} has shape {got}, the config says {want}")
        if value.dtype != config_dtype(declared.data_type):
            result.problems.append(f"output {declared.name!r} is {value.dtype}, the config says "
                                   f"{config_dtype(declared.data_type)}")
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            result.problems.append(f"output {declared.name!r} has non-finite values")
    result.ok = not result.problems
    result.seconds = time.perf_counter() - start
    return result


def validate_repository(repo: str | Path, device: str = "cpu") -> list[ValidationResult]:
    """Load every version of every model with modelport's runners and run one request against its config."""
    results = []
    for model_dir in model_dirs(Path(repo)):
        try:
            config = read_config(model_dir / CONFIG_FILE)
            format_of_config(config)
        except ModelportError as exc:
            results.append(ValidationResult(model_dir.name, None, False, [exc.message]))
            continue
        present = versions(model_dir)
        if not present:
            results.append(ValidationResult(model_dir.name, None, False, ["no version folders"]))
        results += [validate_version(model_dir, v, config, device) for v in present]
    return results


@dataclass(slots=True)
class CleanResult:
    backup: Path
    removed: list[Path]


def clean_repository(repo: str | Path, models: list[str] | None = None,
                     backup: str | Path | None = None) -> CleanResult:
    """Remove the version folders (the exports) of ``models`` (default all), after copying every
    config.pbtxt and labels.txt to ``backup`` (default ``REPO-configs-<UTC time>`` beside the repository).

    Files modelport did not write are left alone, so a model folder holding them is kept.
    """
    repo = Path(repo)
    dirs = model_dirs(repo)
    if models:
        unknown = sorted(set(models) - {d.name for d in dirs})
        if unknown:
            raise ModelportError(f"{repo}: no models named {unknown}",
                                 hint=f"models here: {', '.join(d.name for d in dirs) or 'none'}")
        dirs = [d for d in dirs if d.name in models]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = Path(backup) if backup else repo.resolve().parent / f"{repo.resolve().name}-configs-{stamp}"
    if target.exists() and any(target.iterdir()):
        raise ModelportError(f"{target}: backup folder exists and is not empty", hint="choose another --backup")
    # Back everything up before deleting anything: a failed copy leaves the repository untouched.
    for d in dirs:
        for name in [CONFIG_FILE, LABELS_FILE, *(p.name for p in d.glob(f"{CONFIG_FILE}.*.bak"))]:
            if (d / name).is_file():
                (target / d.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(d / name, target / d.name / name)
    target.mkdir(parents=True, exist_ok=True)
    removed: list[Path] = []
    written = {"model.onnx", "model.plan", "model.pt", "model.xml", "model.bin", "metadata.json"}
    for d in dirs:
        for v in versions(d):
            vdir = d / str(v)
            if {p.name for p in vdir.iterdir()} <= written:
                shutil.rmtree(vdir)
                removed.append(vdir)
        for name in [CONFIG_FILE, LABELS_FILE, *(p.name for p in d.glob(f"{CONFIG_FILE}.*.bak"))]:
            if (d / name).is_file():
                (d / name).unlink()
        if not any(d.iterdir()):
            d.rmdir()
            removed.append(d)
    return CleanResult(target, removed)


__all__ = ["CleanResult", "ModelStatus", "ValidationResult", "VersionStatus", "clean_repository",
           "model_status", "repository_status", "request_for", "validate_repository", "validate_version"]
