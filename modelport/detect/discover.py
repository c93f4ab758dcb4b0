"""Find a detector checkpoint's exports and open the best usable one as a DetectRunner."""

from __future__ import annotations

import sys
from pathlib import Path

from modelport.detect.export import TAGS
from modelport.detect.model import load_detector
from modelport.detect.nms import NmsSettings
from modelport.detect.runner import DetectRunner, load_runtime
from modelport.errors import ModelportError
from modelport.formats import format_of_path, get_format
from modelport.spec import sha256_file

# End-to-end ONNX first (NMS inside, nothing left for Python), then raw tracks; TensorRT where it runs.
PRIORITY = (("tensorrt", "nms"), ("onnx", "nms"), ("onnx", ""), ("tensorrt", ""), ("openvino", "nms"),
            ("openvino", ""), ("torchscript", ""))


def search_dirs(pt_file: Path, name: str) -> list[Path]:
    dirs = [pt_file.parent, pt_file.parent / name, Path.cwd(), Path.cwd() / "exported_models",
            Path.cwd() / "exported_models" / name]
    seen: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d.is_dir() and d not in seen:
            seen.append(d)
    return seen


def candidates(pt_file: Path, name: str | None = None) -> list[Path]:
    name = name or pt_file.name.removesuffix(".pt")
    found = []
    for fmt_id, tag in PRIORITY:
        fmt = get_format(fmt_id)
        for folder in search_dirs(pt_file, name):
            path = fmt.artifact_path(folder, name, TAGS["portable"] if tag == "nms" else "")
            if path.exists():
                found.append(path)
    return found


def open_detector(path: str | Path, *, format: str | None = None, device: str = "cpu",
                  settings: NmsSettings | None = None, verbose: bool = True) -> DetectRunner:
    """A DetectRunner for an artifact, or for a ``.pt``: its best fresh export, else Ultralytics' model in PyTorch."""
    say = (lambda m: print(m, file=sys.stderr)) if verbose else (lambda m: None)
    path = Path(path)
    fmt = format_of_path(path)
    settings = settings or NmsSettings()
    if fmt.id != "pytorch":
        if not path.exists():
            raise ModelportError(f"{path}: artifact not found")
        return DetectRunner(load_runtime(fmt, path, device), settings)
    digest = sha256_file(path) if path.is_file() else None
    for cand in candidates(path):
        cfmt = format_of_path(cand)
        if format and cfmt.id != format:
            continue
        reason = cfmt.unavailable_reason(device)
        if reason:
            say(f"  skipping {cand}: {reason}")
            continue
        try:
            spec = cfmt.read_spec(cand)
            if digest and spec.source.sha256 and spec.source.sha256 != digest:
                say(f"  skipping {cand}: exported from other weights than {path}")
                continue
            runner = DetectRunner(load_runtime(cfmt, cand, device), settings)
        except ModelportError as exc:
            say(f"  skipping {cand}: {exc.message}")
            continue
        say(f"→ Found exported {cfmt.name} model ({runner.track}): {cand}")
        return runner
    if format and format != "pytorch":
        raise ModelportError(f"no usable {format} export of {path}",
                             hint=f"create one with `modelport export {path} --format {format}`")
    from modelport.formats.pytorch import PyTorchRunner

    det = load_detector(path)  # names the missing file and where to put it
    say(f"→ No usable export found; using the PyTorch model: {path}")
    return DetectRunner(PyTorchRunner(det.module, det.spec, path, device), settings)
