"""Recognise CLIP encoder artifacts and open them for `modelport verify` / `modelport bench`, with open_clip's
PyTorch model (from a checkpoint) as the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from modelport.errors import ModelportError, WeightsNotFoundError
from modelport.formats import Runner, format_of_path
from modelport.spec import ModelSpec, sha256_file

ENCODERS = ("image", "text")
OPEN_CLIP_SUFFIXES = (".safetensors", ".bin")  # open_clip's own checkpoint names; .pt/.pth as for PyTorch


def is_checkpoint(path: Path) -> bool:
    if path.name.lower().endswith(OPEN_CLIP_SUFFIXES):
        return True
    try:
        return format_of_path(path).is_weights  # x.torchscript.pt is TorchScript
    except ModelportError:
        return False


def encoder_spec(path: str | Path) -> ModelSpec | None:
    """The spec of a CLIP encoder artifact, or None for anything else (missing, a checkpoint, another model)."""
    path = Path(path)
    if not path.exists() or is_checkpoint(path):
        return None
    try:
        spec = format_of_path(path).read_spec(path)
    except ModelportError:
        return None
    return spec if spec.extra.get("encoder") in ENCODERS and spec.extra.get("clip_model") else None


def artifact_base(path: Path, which: str) -> str:
    """``x_image.onnx`` / ``x_image_openvino_model`` -> ``x``."""
    fmt = format_of_path(path)
    suffix = max((s for s in fmt.suffixes if path.name.lower().endswith(s)), key=len)
    stem = path.name[: -len(suffix)]
    return stem[: -len(which) - 1] if stem.endswith(f"_{which}") else stem


def recorded_weights(spec: ModelSpec) -> Path | None:
    """The checkpoint an artifact was exported from, when it is still where the spec says and unchanged."""
    file = spec.source.file
    if not file or not Path(file).is_file() or not spec.source.sha256:
        return None
    return Path(file) if spec.source.made_from(sha256_file(file)) else None


def verify_runners(paths: Sequence[Path], device: str = "cpu") -> tuple[Runner, list[Runner]] | None:
    """(reference, runners) when ``paths`` name CLIP encoder artifacts, else None (not a CLIP verification).

    The reference is open_clip's PyTorch encoder built from the checkpoint among ``paths``, else from the
    checkpoint the artifacts record (if it is still there, unchanged), else the first artifact.
    """
    from modelport.clip.model import build_clip
    from modelport.formats.pytorch import PyTorchRunner

    paths = [Path(p) for p in paths]
    specs = {p: encoder_spec(p) for p in paths}
    artifacts = [p for p in paths if specs[p] is not None]
    if not artifacts:
        return None
    kinds = {specs[p].extra["encoder"] for p in artifacts}
    names = {specs[p].extra["clip_model"] for p in artifacts}
    if len(kinds) > 1 or len(names) > 1:
        listing = ", ".join(f"{p} ({specs[p].extra['clip_model']} {specs[p].extra['encoder']})" for p in artifacts)
        raise ModelportError(f"cannot compare different encoders: {listing}",
                             hint="verify the *_image and the *_text artifacts separately")
    which, name = kinds.pop(), names.pop()
    rest = [p for p in paths if specs[p] is None]
    for p in rest:
        if not p.exists():
            raise WeightsNotFoundError(f"{p}: not found")
        if not is_checkpoint(p):
            raise ModelportError(f"{p}: not a {name} encoder artifact or an open_clip checkpoint",
                                 hint=f"compare {which}-encoder artifacts of {name}, optionally with its checkpoint")
    if len(rest) > 1:
        raise ModelportError(f"more than one checkpoint given: {', '.join(map(str, rest))}", hint="give one")
    weights = rest[0] if rest else recorded_weights(specs[artifacts[0]])
    if weights is None:
        if len(artifacts) < 2:
            raise ModelportError(f"{artifacts[0]}: nothing to compare it with (its spec records no checkpoint "
                                 "that is still there)",
                                 hint=f"give the open_clip checkpoint of {name}: "
                                      f"modelport verify CHECKPOINT {artifacts[0]}")
        reference = format_of_path(artifacts[0]).load(artifacts[0], device)
        return reference, [format_of_path(p).load(p, device) for p in artifacts[1:]]
    model = build_clip(name, weights)
    module, spec = (model.image, model.image_spec) if which == "image" else (model.text, model.text_spec)
    reference = PyTorchRunner(module, spec, weights, device)
    return reference, [format_of_path(p).load(p, device) for p in artifacts]
