"""Find a weights file's exported siblings and load the best usable one, with a reported fallback chain."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from modelport.errors import MissingRuntimeError, ModelportError, WeightsNotFoundError
from modelport.formats import EXPORTABLE, FORMATS, Format, Runner, format_of_path, get_format
from modelport.naming import weights_stem
from modelport.spec import sha256_file

EXPORT_FOLDER = "exported_models"


class StaleExportWarning(UserWarning):
    """An export was made from different weights than the file it sits beside."""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True, slots=True)
class Candidate:
    format: Format
    path: Path
    tag: str = ""  # a variant's name part: "nms" in yolo11n.nms.onnx


def search_dirs(weights: Path) -> list[Path]:
    """Where exports of ``weights`` are looked for, in order: the weights' folder, the working directory and
    an ``exported_models/`` folder in either, each also with a sub-folder named after the weights' stem."""
    stem = weights_stem(weights)
    bases = [weights.parent, Path.cwd(), weights.parent / EXPORT_FOLDER, Path.cwd() / EXPORT_FOLDER]
    unique: list[Path] = []
    for d in (d for base in bases for d in (base, base / stem)):
        d = d.resolve()
        if d not in unique and d.is_dir():
            unique.append(d)
    return unique


def find_exports(weights: str | Path, formats: Sequence[Format] = EXPORTABLE, *,
                 order: Sequence[tuple[Format, str]] | None = None) -> list[Candidate]:
    """Every existing export of ``weights`` by name: in ``order`` ((format, variant tag) pairs; default each
    of ``formats`` untagged), then search-folder order."""
    weights = Path(weights)
    stem = weights_stem(weights)
    found = []
    for fmt, tag in order if order is not None else [(f, "") for f in formats]:
        for folder in search_dirs(weights):
            paths = [fmt.artifact_path(folder, stem, tag)] if tag else [folder / f"{stem}{s}" for s in fmt.suffixes]
            found += [Candidate(fmt, p, tag) for p in paths if p.exists() and p.is_dir() == fmt.is_dir]
    return found


def first_usable(weights: Path, candidates: Sequence[Candidate], device: str, open_one: Callable[[Candidate], Runner],
                 say: Callable[[str], None]) -> tuple[Runner | None, Candidate | None, list[str]]:
    """The first candidate that runs here and was made from ``weights`` (``Source.made_from``), opened with
    ``open_one``, and that candidate; else None, None. Also what was skipped and why (stale ones warn with
    StaleExportWarning)."""
    digest = sha256_file(weights) if weights.is_file() else None
    skipped: list[str] = []

    def skip(cand: Candidate, why: str) -> None:
        skipped.append(f"{cand.path}: {why}")
        say(f"  skipping {cand.path}: {why}")

    for cand in candidates:
        reason = cand.format.unavailable_reason(device)
        if reason:
            skip(cand, reason)
            continue
        try:
            fresh = cand.format.read_spec(cand.path).source.made_from(digest)
        except ModelportError as exc:
            skip(cand, exc.message)
            continue
        if fresh is False:
            warnings.warn(f"{cand.path} was exported from different weights than {weights}; skipping it "
                          f"(re-export with `modelport export {weights}`)", StaleExportWarning, stacklevel=3)
            skipped.append(f"{cand.path}: stale")
            continue
        try:
            runner = open_one(cand)
        except ModelportError as exc:
            skip(cand, f"could not load it: {exc.message}")
            continue
        return runner, cand, skipped
    return None, None, skipped


def open_artifact(path: str | Path, device: str = "cpu", *, arch: str | None = None,
                  allow_random: bool = False) -> Runner:
    """Load an artifact (or a weights file) directly, by its suffix."""
    path = Path(path)
    fmt = format_of_path(path)
    if fmt.is_weights:
        from modelport.formats.pytorch import load as load_pytorch

        fmt.require(device)
        return load_pytorch(path, device, arch=arch, allow_random=allow_random)
    if not path.exists():
        raise WeightsNotFoundError(f"{path}: artifact not found")
    return fmt.load(path, device)


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
) -> Runner:
    """A Runner for an artifact, or for a weights file: its best usable export.

    A weights file is resolved to its best usable export (priority ONNX > TensorRT > OpenVINO >
    TorchScript), skipping stale or unusable ones, then falls back to PyTorch, and to random weights only
    when ``allow_random`` is set. ``format`` forces one format. ``prefer="fastest"`` takes the verified
    runtime that this machine's latest benchmark of these weights measured fastest (at ``batch``, default
    its largest batch), else the priority order. ``modelport.load`` (``api.load``) adds remote endpoints and
    detectors on top of this.
    """
    path = Path(path)
    say = _say if verbose else (lambda _msg: None)
    source_fmt = format_of_path(path)
    if not source_fmt.is_weights:
        if format and get_format(format).id != source_fmt.id:
            raise ModelportError(f"{path} is a {source_fmt.name} artifact, not {format}")
        return open_artifact(path, device)
    if prefer not in ("priority", "fastest"):
        raise ModelportError(f"prefer must be 'priority' or 'fastest', not {prefer!r}")
    if prefer == "fastest" and not format and path.is_file():
        fastest = _fastest(path, device, batch, say)
        if fastest is not None:
            return fastest
    forced = get_format(format) if format else None
    if forced and forced.is_weights:
        return open_artifact(path, device, arch=arch, allow_random=allow_random)
    if not path.is_file():
        say(f"! weights file {path} not found; looking for exports of {path.name} without a freshness check")
    runner, cand, skipped = first_usable(path, find_exports(path, (forced,) if forced else EXPORTABLE), device,
                                   lambda cand: cand.format.load(cand.path, device), say)
    if runner is not None and cand is not None:
        say(f"→ Found exported {cand.format.name} model: {cand.path}")
        return runner
    if forced:
        raise MissingRuntimeError(
            f"no usable {forced.name} export of {path} on {device}" + (f" ({'; '.join(skipped)})" if skipped else ""),
            hint=f"create one with `modelport export {path} --format {forced.id}`",
        )
    return _fallback(path, device, arch=arch, allow_random=allow_random, say=say)


def _fastest(path: Path, device: str, batch: int | None, say) -> Runner | None:
    from modelport.bench_record import fastest_row, machine_record

    row = fastest_row(machine_record(sha256_file(path)), batch)
    if row is None:
        say(f"→ No benchmark of {path.name} on this machine (run `modelport bench {path}`); using priority order")
        return None
    if row["format"] == "pytorch":
        say(f"→ Benchmark on this machine: PyTorch is fastest for {path.name}")
        return open_artifact(path, device)
    artifact = Path(row["path"])
    fmt = get_format(row["format"])
    try:
        stale = not artifact.exists() or fmt.read_spec(artifact).source.made_from(sha256_file(path)) is False
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


