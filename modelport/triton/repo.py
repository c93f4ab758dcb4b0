"""Look after a model repository: status (what is there and what is wrong), validate (load and run every
version with modelport's runners), clean (remove the exports, configs backed up first)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelport.errors import ModelportError
from modelport.triton.config import (
    CONFIG_FILE,
    LABELS_FILE,
    config_dtype,
    config_problems,
    format_of_config,
    model_file,
    read_config,
    read_plan_spec,
    read_signature,
)
from modelport.triton.golden import is_golden_dir
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


WRITTEN = frozenset({"model.onnx", "model.plan", "model.pt", "model.xml", "model.bin", "metadata.json", "model.py"})


@dataclass(frozen=True, slots=True)
class LeftAlone:
    path: Path
    reason: str


@dataclass(slots=True)
class CleanResult:
    backup: Path  # where configs were (or, in a dry run, would be) copied
    removed: list[Path]  # version folders, configs and emptied model folders (in a dry run: would be)
    left_alone: list[LeftAlone] = field(default_factory=list)
    dry_run: bool = False
    backed_up: list[Path] = field(default_factory=list)  # the files copied to ``backup``


def _link_reason(path: Path, root: Path) -> str:
    target = Path(os.readlink(path))
    # realpath, unlike Path.resolve, does not raise on a link loop.
    where = "inside" if Path(os.path.realpath(path)).is_relative_to(root) else "outside"
    return f"a symlink to {target} ({where} the repository); clean never follows links"


def _config_files(model_dir: Path) -> list[Path]:
    """config.pbtxt, labels.txt and the backups modelport made of them."""
    names = [CONFIG_FILE, LABELS_FILE, *(p.name for p in model_dir.glob(f"{CONFIG_FILE}.*.bak")),
             *(p.name for p in model_dir.glob(f"{LABELS_FILE}.*.bak"))]
    return [model_dir / n for n in dict.fromkeys(names) if (model_dir / n).exists() or (model_dir / n).is_symlink()]


def _plan_model(model_dir: Path, root: Path, result: CleanResult) -> list[Path]:
    """Add what cleaning one model folder removes and leaves alone to ``result``; returns the files to back up."""
    if model_dir.is_symlink():
        result.left_alone.append(LeftAlone(model_dir, _link_reason(model_dir, root)))
        return []
    config = model_dir / CONFIG_FILE
    if config.is_symlink():
        result.left_alone.append(LeftAlone(model_dir, f"its {CONFIG_FILE} is {_link_reason(config, root)}"))
        return []
    if not config.is_file():
        result.left_alone.append(LeftAlone(model_dir, f"no {CONFIG_FILE}: not a Triton model folder"))
        return []
    configs = _config_files(model_dir)
    versions_kept, kept = False, 0
    for entry in sorted(model_dir.iterdir()):
        if entry in configs:
            continue
        if entry.is_symlink():
            result.left_alone.append(LeftAlone(entry, _link_reason(entry, root)))
        elif entry.is_dir() and entry.name.isdigit() and int(entry.name) > 0:
            foreign = [p for p in sorted(entry.iterdir()) if not is_golden_dir(p)
                       and (p.is_symlink() or not p.is_file() or p.name not in WRITTEN)]
            if not foreign:
                result.removed.append(entry)
                continue
            what = ", ".join(f"{p.name} ({_link_reason(p, root)})" if p.is_symlink() else p.name for p in foreign)
            result.left_alone.append(LeftAlone(entry, f"holds what modelport did not write: {what}; "
                                                      "the version is kept whole"))
            versions_kept = True
        else:
            result.left_alone.append(LeftAlone(entry, "not a version folder or config modelport wrote"))
        kept += 1
    if versions_kept:
        # A version that stays needs its config to be served, so the model's configs stay with it.
        result.left_alone += [LeftAlone(p, "kept for the version(s) left in place") for p in configs]
        return []
    backed = []
    for path in configs:
        if path.is_symlink() or not path.is_file():
            result.left_alone.append(LeftAlone(path, _link_reason(path, root) if path.is_symlink()
                                               else "not a file"))
            kept += 1
        else:
            result.removed.append(path)
            backed.append(path)
    if not kept:
        result.removed.append(model_dir)
    return backed


def clean_repository(repo: str | Path, models: list[str] | None = None, backup: str | Path | None = None,
                     *, dry_run: bool = False) -> CleanResult:
    """Remove the exports of ``models`` (default all), after copying their config.pbtxt and labels.txt to
    ``backup`` (default ``REPO-configs-<UTC time>`` beside the repository).

    Only model folders holding a config.pbtxt are touched. Symlinks are never followed or removed, and
    anything modelport did not write stays (a version folder holding such a file is kept whole); both are
    listed in ``left_alone`` with the reason. ``dry_run`` returns the plan and changes nothing.
    """
    root = Path(repo).resolve()
    dirs = model_dirs(Path(repo))  # symlinked folders too: they are reported, not followed
    if models:
        unknown = sorted(set(models) - {d.name for d in dirs})
        if unknown:
            raise ModelportError(f"{repo}: no models named {unknown}",
                                 hint=f"models here: {', '.join(d.name for d in dirs) or 'none'}")
        dirs = [d for d in dirs if d.name in models]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = Path(backup) if backup else root.parent / f"{root.name}-configs-{stamp}"
    if target.exists() and any(target.iterdir()):
        raise ModelportError(f"{target}: backup folder exists and is not empty", hint="choose another --backup")
    result = CleanResult(target, [], dry_run=dry_run)
    for d in dirs:
        result.backed_up += _plan_model(d, root, result)
    if dry_run:
        return result
    # Back everything up before deleting anything: a failed copy leaves the repository untouched.
    for path in result.backed_up:
        (target / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path.parent.name / path.name)
    for path in result.removed:
        if path in dirs:
            path.rmdir()  # a model folder: empty by now, or something new appeared in it and it stays (error)
        elif path.is_dir():
            shutil.rmtree(path)  # a version folder of regular files modelport wrote
        else:
            path.unlink()
    return result


__all__ = ["CleanResult", "LeftAlone", "ModelStatus", "ValidationResult", "VersionStatus", "clean_repository",
           "model_status", "repository_status", "request_for", "validate_repository", "validate_version"]
