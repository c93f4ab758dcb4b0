"""Find a weights file's exported siblings and load the best usable one, with a reported fallback chain."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import MissingRuntimeError, ModelportError, WeightsNotFoundError
from modelport.formats import EXPORTABLE, FORMATS, Format, Runner, format_of_path, get_format
from modelport.naming import weights_stem
from modelport.spec import ModelSpec, sha256_file

EXPORT_FOLDER = "exported_models"


class StaleExportWarning(UserWarning):
    """An export was made from different weights than the file it sits beside."""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True, slots=True)
class Candidate:
    format: Format
    path: Path


def search_dirs(weights: Path) -> list[Path]:
    """The weights' folder, the working directory, and an ``exported_models/`` folder in either."""
    dirs = [weights.parent, Path.cwd(), weights.parent / EXPORT_FOLDER, Path.cwd() / EXPORT_FOLDER]
    unique: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in unique and d.is_dir():
            unique.append(d)
    return unique


def find_exports(weights: str | Path, formats: tuple[Format, ...] = EXPORTABLE) -> list[Candidate]:
    """Every existing export of ``weights`` by name, in format-priority order, then search-folder order."""
    weights = Path(weights)
    stem = weights_stem(weights)
    found = []
    for fmt in formats:
        for folder in search_dirs(weights):
            for suffix in fmt.suffixes:
                path = folder / f"{stem}{suffix}"
                if path.exists() and path.is_dir() == fmt.is_dir:
                    found.append(Candidate(fmt, path))
    return found


def open_artifact(path: str | Path, device: str = "cpu", *, arch: str | None = None,
                  allow_random: bool = False) -> Runner:
    """Load an artifact (or a weights file) directly, by its suffix."""
    path = Path(path)
    fmt = format_of_path(path)
    if fmt.id == "pytorch":
        from modelport.formats.pytorch import load as load_pytorch

        fmt.require(device)
        return load_pytorch(path, device, arch=arch, allow_random=allow_random)
    if not path.exists():
        raise WeightsNotFoundError(f"{path}: artifact not found")
    return fmt.load(path, device)


def _is_stale(candidate: Candidate, digest: str | None) -> tuple[bool, ModelSpec | None]:
    spec = candidate.format.read_spec(candidate.path)
    if digest is None or spec.source.sha256 is None:
        return False, spec
    return spec.source.sha256 != digest, spec


def load(
    path: str | Path,
    format: str | None = None,
    device: str = "cpu",
    *,
    arch: str | None = None,
    allow_random: bool = False,
    prefer: str = "priority",
    batch: int | None = None,
    verbose: bool = True,
    trust_checkpoint: bool = False,
) -> Runner:
    """A Runner for ``path``.

    An export is loaded directly. A weights file is resolved to its best usable export (priority
    ONNX > TensorRT > OpenVINO > TorchScript), skipping stale or unusable ones, then falls back to
    PyTorch, and to random weights only when ``allow_random`` is set. ``format`` forces one format.
    ``prefer="fastest"`` takes the verified runtime that this machine's latest benchmark of these
    weights measured fastest (at ``batch``, default its largest batch), else the priority order.
    Detectors (Ultralytics ``.pt``, detector artifacts) get ``modelport.detect``'s DetectRunner, found in its
    own priority order (``prefer`` does not apply). ``trust_checkpoint`` unpickles a detector checkpoint in full
    (it can run code): only for files you made; otherwise only its allow-listed model classes are read.
    """
    from modelport.formats.remote import is_endpoint

    if is_endpoint(path):  # http://, grpc:// (comma-separated: several servers used together)
        from modelport.formats.remote import load as load_remote

        runner = load_remote(path, device)
        if runner.spec.task == "detect":
            from modelport.detect.discover import as_detector

            return as_detector(runner, device)
        return runner
    if trust_checkpoint:
        from modelport.trust import trusted_checkpoints

        with trusted_checkpoints():
            return load(path, format, device, arch=arch, allow_random=allow_random, prefer=prefer, batch=batch,
                        verbose=verbose)
    path = Path(path)
    say = _say if verbose else (lambda _msg: None)
    source_fmt = format_of_path(path)
    if source_fmt.id != "pytorch":
        if format and get_format(format).id != source_fmt.id:
            raise ModelportError(f"{path} is a {source_fmt.name} artifact, not {format}")
        runner = open_artifact(path, device)
        if runner.spec.task == "detect":  # detectors answer with boxes: modelport.detect's runner
            from modelport.detect.discover import as_detector

            return as_detector(runner, device)
        return runner
    if path.suffix == ".pt":
        from modelport.detect.discover import is_detector, open_detector

        if is_detector(path):  # its own export names (yolo11n.nms.onnx) and priority order
            return open_detector(path, format=format, device=device, allow_random=allow_random, verbose=verbose)

    if prefer not in ("priority", "fastest"):
        raise ModelportError(f"prefer must be 'priority' or 'fastest', not {prefer!r}")
    if prefer == "fastest" and not format and path.is_file():
        runner = _fastest(path, device, batch, say)
        if runner is not None:
            return runner
    forced = get_format(format) if format else None
    if forced and forced.id == "pytorch":
        return open_artifact(path, device, arch=arch, allow_random=allow_random)
    digest = sha256_file(path) if path.is_file() else None
    if digest is None:
        say(f"! weights file {path} not found; looking for exports of {path.name} without a freshness check")
    formats = (forced,) if forced else EXPORTABLE
    skipped: list[str] = []

    def skip(cand: Candidate, why: str) -> None:
        skipped.append(f"{cand.path}: {why}")
        say(f"  skipping {cand.path}: {why}")

    for cand in find_exports(path, formats):
        reason = cand.format.unavailable_reason(device)
        if reason:
            skip(cand, reason)
            continue
        try:
            stale, _ = _is_stale(cand, digest)
        except ModelportError as exc:
            skip(cand, exc.message)
            continue
        if stale:
            warnings.warn(f"{cand.path} was exported from different weights than {path}; skipping it "
                          f"(re-export with `modelport export {path}`)", StaleExportWarning, stacklevel=2)
            skipped.append(f"{cand.path}: stale")
            continue
        try:
            runner = cand.format.load(cand.path, device)
        except ModelportError as exc:
            skip(cand, f"could not load it: {exc.message}")
            continue
        say(f"→ Found exported {cand.format.name} model: {cand.path}")
        return runner
    if forced:
        raise MissingRuntimeError(
            f"no usable {forced.name} export of {path} on {device}" + (f" ({'; '.join(skipped)})" if skipped else ""),
            hint=f"create one with `modelport export {path} --format {forced.id}`",
        )
    return _fallback(path, device, arch=arch, allow_random=allow_random, say=say)


def _fastest(path: Path, device: str, batch: int | None, say) -> Runner | None:
    from modelport.bench import fastest

    row = fastest(path, batch)
    if row is None:
        say(f"→ No benchmark of {path.name} on this machine (run `modelport bench {path}`); using priority order")
        return None
    if row["format"] == "pytorch":
        say(f"→ Benchmark on this machine: PyTorch is fastest for {path.name}")
        return open_artifact(path, device)
    artifact = Path(row["path"])
    fmt = get_format(row["format"])
    try:
        stale, _ = _is_stale(Candidate(fmt, artifact), sha256_file(path)) if artifact.exists() else (True, None)
        if not stale and fmt.unavailable_reason(device) is None:
            runner = fmt.load(artifact, device)
            say(f"→ Fastest verified runtime on this machine: {row['runtime']} "
                f"({row['throughput']:.0f} img/s at batch {row['batch']}): {artifact}")
            return runner
    except ModelportError as exc:
        say(f"  benchmarked artifact {artifact} is unusable ({exc.message})")
    say(f"→ The benchmarked fastest artifact {artifact} is gone or stale; using priority order")
    return None


def _fallback(path: Path, device: str, *, arch: str | None, allow_random: bool, say) -> Runner:
    pytorch = get_format("pytorch")
    reason = pytorch.unavailable_reason(device)
    if reason:
        usable = [f.name for f in FORMATS if f.unavailable_reason(device) is None]
        raise MissingRuntimeError(
            f"no runtime can run {path} on {device}: {reason}",
            hint="install onnxruntime (pip install onnxruntime) or torch" if not usable else f"usable: {usable}",
        )
    if path.is_file():
        say(f"→ No usable export found; using PyTorch weights: {path}")
        return open_artifact(path, device, arch=arch)
    if allow_random:
        say(f"→ No weights or exports found for {path.name}; using RANDOM weights (allowed by allow_random)")
        return _random(path, device, arch)
    raise WeightsNotFoundError(
        f"{path}: weights file not found and no export of it was found in "
        + ", ".join(str(d) for d in search_dirs(path)),
        hint="put the weights file there (downloads are not possible here), or allow random weights",
    )


def _random(path: Path, device: str, arch: str | None) -> Runner:
    from modelport.formats.pytorch import PyTorchRunner
    from modelport.zoo import build, resolve_architecture

    entry = resolve_architecture(path, arch)
    built = build(None, arch=entry.name, allow_random=True)
    return PyTorchRunner(built.module, built.spec, None, device)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


