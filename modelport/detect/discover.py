"""Find a detector checkpoint's exports and open the best usable one as a DetectRunner."""

from __future__ import annotations

import sys
from pathlib import Path

from modelport.detect.export import TAGS, ULTRALYTICS_TAG
from modelport.detect.model import is_zoo_name, load_detector
from modelport.detect.nms import NmsSettings
from modelport.detect.runner import DetectRunner, load_runtime
from modelport.discover import find_exports, first_usable
from modelport.errors import ModelportError
from modelport.formats import Format, Runner, format_of_path, get_format

# End-to-end ONNX first (NMS inside, nothing left for Python), then raw tracks; TensorRT where it runs. The
# Ultralytics layout (--nms-layout ultralytics) is the same graph with one output: after the four-output file.
PRIORITY = (("tensorrt", "nms"), ("onnx", "nms"), ("onnx", ULTRALYTICS_TAG), ("onnx", ""), ("tensorrt", ""),
            ("openvino", "nms"), ("openvino", ULTRALYTICS_TAG), ("openvino", ""), ("torchscript", ""))


def order() -> list[tuple[Format, str]]:
    """PRIORITY as (format, variant tag) pairs for ``discover.find_exports``."""
    return [(get_format(fmt_id), TAGS["portable"] if tag == "nms" else tag) for fmt_id, tag in PRIORITY]


def candidates(pt_file: Path) -> list[Path]:
    """Every export of ``pt_file`` found by the one discovery (``discover.find_exports``), in PRIORITY order."""
    return [c.path for c in find_exports(pt_file, order=order())]


def task_of(path: Path) -> str | None:
    """The task an artifact's spec records, or None for anything modelport cannot read here."""
    try:
        return format_of_path(path).read_spec(path).task
    except Exception:  # not an artifact modelport can read (or its runtime is missing): not ours to judge
        return None


def as_detector(runner: Runner, device: str = "cpu", settings: NmsSettings | None = None) -> DetectRunner:
    """A DetectRunner around an opened detector artifact; ONNX is reopened with the detection tuning
    (``load_runtime``: no spinning workers, one stream per core for batches)."""
    if runner.format == "onnx" and runner.path is not None:
        runner.close()
        runner = load_runtime(get_format("onnx"), runner.path, device)
    return DetectRunner(runner, settings or NmsSettings())


def open_detector(path: str | Path, *, format: str | None = None, device: str = "cpu",
                  settings: NmsSettings | None = None, allow_random: bool = False,
                  verbose: bool = True) -> DetectRunner:
    """A DetectRunner for an artifact, or for a ``.pt``: its best fresh export (priority order, stale and
    unusable ones skipped), else Ultralytics' model in PyTorch, else (``allow_random``, zoo names only) the
    model built from Ultralytics' YAML with seeded random weights."""
    say = (lambda m: print(m, file=sys.stderr)) if verbose else (lambda m: None)
    path = Path(path)
    fmt = format_of_path(path)
    settings = settings or NmsSettings()
    if not fmt.is_weights:
        if not path.exists():
            raise ModelportError(f"{path}: artifact not found")
        return DetectRunner(load_runtime(fmt, path, device), settings)
    forced = [(fmt, tag) for fmt, tag in order() if fmt.id == format] if format else order()
    runner, cand, _ = first_usable(path, find_exports(path, order=forced), device,
                             lambda c: DetectRunner(load_runtime(c.format, c.path, device), settings), say)
    if isinstance(runner, DetectRunner) and cand is not None:
        say(f"→ Found exported {cand.format.name} model ({runner.track}): {cand.path}")
        return runner
    if format and format != "pytorch":
        raise ModelportError(f"no usable {format} export of {path}",
                             hint=f"create one with `modelport export {path} --format {format}`")
    from modelport.formats.pytorch import PyTorchRunner

    if not path.is_file() and allow_random and is_zoo_name(path):
        from modelport.detect.untrained import untrained_checkpoint

        with untrained_checkpoint(path) as random_pt:
            det = load_detector(random_pt)
        say(f"→ No weights or exports found for {path.name}; using RANDOM weights (allowed by allow_random)")
        return DetectRunner(PyTorchRunner(det.module, det.spec, None, device), settings)
    det = load_detector(path)  # names the missing file and where to put it
    say(f"→ No usable export found; using the PyTorch model: {path}")
    return DetectRunner(PyTorchRunner(det.module, det.spec, path, device), settings)
