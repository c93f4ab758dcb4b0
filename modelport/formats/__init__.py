"""FORMATS: the one list of artifact formats, in loader priority order."""

from __future__ import annotations

from pathlib import Path

from modelport.errors import UnsupportedFormatError
from modelport.formats.base import ExportOptions, Format, Runner

FORMATS: tuple[Format, ...] = (
    Format("onnx", "ONNX", ".onnx", "modelport.formats.onnx", ("onnxruntime",), "onnxruntime onnx",
           precisions=("fp32", "fp16", "int8"), triton=("onnxruntime_onnx", "onnxruntime", "model.onnx")),
    Format("tensorrt", "TensorRT", ".engine", "modelport.formats.tensorrt", ("tensorrt",), "'modelport[tensorrt]'",
           alt_suffixes=(".plan", ".trt"), devices=("cuda",), needs_cuda=True, precisions=("fp32", "fp16"),
           triton=("tensorrt_plan", "tensorrt", "model.plan")),
    Format("openvino", "OpenVINO", "_openvino_model", "modelport.formats.openvino", ("openvino",), "openvino",
           is_dir=True, devices=("cpu",), precisions=("fp32", "fp16", "int8"), triton=("", "openvino", "model.xml")),
    Format("torchscript", "TorchScript", ".torchscript", "modelport.formats.torchscript", ("torch",), "torch",
           alt_suffixes=(".torchscript.pt",), triton=("pytorch_libtorch", "pytorch", "model.pt"), dynamic_hw=False),
    Format("pytorch", "PyTorch", ".pt", "modelport.formats.pytorch", ("torch",), "torch",
           alt_suffixes=(".pth", ".pth.tar", ".tar"), is_weights=True),
)
BY_ID = {f.id: f for f in FORMATS}
EXPORTABLE = tuple(f for f in FORMATS if not f.is_weights)
REMOTE = Format("remote", "KServe v2 endpoint", "://", "modelport.formats.remote", ("tritonclient",),
                "'modelport[serve]'")

__all__ = ["BY_ID", "EXPORTABLE", "FORMATS", "ExportOptions", "Format", "Runner", "get_format", "format_of_path"]


def get_format(format_id: str) -> Format:
    try:
        return BY_ID[format_id.lower()]
    except KeyError:
        raise UnsupportedFormatError(
            f"unknown format {format_id!r}", hint=f"choose from: {', '.join(BY_ID)}"
        ) from None


def format_of_path(path: str | Path) -> Format:
    """The format an artifact path belongs to, judged by its suffix; exactly one must match."""
    path = Path(path)
    name = path.name.lower()
    # Longest suffix wins so that ``x.torchscript.pt`` is TorchScript, not a PyTorch checkpoint.
    hits = sorted(
        ((s, f) for f in FORMATS for s in f.suffixes if name.endswith(s)), key=lambda hit: len(hit[0]), reverse=True
    )
    if not hits and path.is_dir():
        raise UnsupportedFormatError(f"{path}: a directory, not an exported model", hint="give a file (.pt, .onnx, "
                                     ".torchscript, ...) or an OpenVINO folder named *_openvino_model")
    if not hits:
        accepted = ", ".join(s for f in FORMATS for s in f.suffixes)
        raise UnsupportedFormatError(f"{path}: unrecognised artifact type", hint=f"accepted suffixes: {accepted}")
    return hits[0][1]
