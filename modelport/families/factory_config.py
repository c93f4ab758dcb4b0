"""The export config of a user's own PyTorch model (``--factory mypkg.models:build --config export.yaml``).

The YAML names the factory and its arguments, the checkpoint, every input (name, shape, dtype, value range),
the outputs' names, dynamic axes, opset, formats, precision, output folder and TensorRT settings. Fields are
checked here, each error naming the file and field; nothing in the file is executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
DTYPES = ("float32", "float16", "int64", "int32", "uint8")
TRT_BUILDERS = ("python", "trtexec")
TASKS = ("tensors", "embed")  # plain tensors by input name, or an image in and an embedding out


@dataclass(frozen=True, slots=True)
class ImageDecl:
    """How an ``embed`` model's image input is made from RGB pixels: ``(pixel * scale - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"


@dataclass(frozen=True, slots=True)
class InputDecl:
    name: str
    shape: tuple[int, ...]  # concrete sizes: traced and verified with these
    dtype: str = "float32"
    low: float = 0.0  # seeded verification values are drawn from [low, high)
    high: float = 1.0


@dataclass(frozen=True, slots=True)
class TensorRTDecl:
    precision: str | None = None  # None: the config's precision
    workspace_gib: float = 4.0
    builder: str = "python"  # or trtexec (needs `trtexec` on PATH)


@dataclass(frozen=True, slots=True)
class FactoryConfig:
    factory: str  # module:function
    args: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None
    name: str | None = None
    inputs: tuple[InputDecl, ...] = ()
    outputs: tuple[str, ...] = ()
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    opset: int = 17
    formats: tuple[str, ...] | None = None
    precision: str = "fp32"
    output_dir: Path | None = None
    tensorrt: TensorRTDecl = field(default_factory=TensorRTDecl)
    origin: str = "<arguments>"
    task: str = "tensors"
    preprocess: ImageDecl | None = None  # an ``embed`` model's pixels -> input

    def precision_for(self, format_id: str) -> str:
        """The precision to write a format in: the ``tensorrt`` section's for engines, else the file's."""
        return self.tensorrt.precision or self.precision if format_id == "tensorrt" else self.precision

    def with_overrides(self, *, factory: str | None = None, weights: Path | None = None) -> "FactoryConfig":
        """The command line's --factory / --weights win over the file's."""
        from dataclasses import replace

        return replace(self, factory=factory or self.factory, weights=weights or self.weights)


def _fail(origin: str, field_name: str, problem: str, hint: str = "") -> ConfigError:
    return ConfigError(f"{origin}: {field_name}: {problem}", hint=hint or "see docs/factory.md for the fields")


def check_factory(spec: str, origin: str = "--factory") -> str:
    if not isinstance(spec, str) or not FACTORY_RE.match(spec):
        raise _fail(origin, "factory", f"{spec!r} is not module.path:function",
                    "write it as mypkg.models:build (a module importable from here and a function in it)")
    return spec


def _inputs(raw: Any, origin: str) -> tuple[InputDecl, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(origin, "inputs", "a non-empty list of {name, shape, dtype} is required")
    decls, seen = [], set()
    for i, item in enumerate(raw):
        where = f"inputs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise _fail(origin, where, "each input needs a name")
        name = item["name"]
        if name in seen:
            raise _fail(origin, where, f"duplicate input name {name!r}")
        seen.add(name)
        shape = item.get("shape")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and 0 < d <= 1 << 16 for d in shape):
            raise _fail(origin, f"{where}.shape", f"{shape!r} must list positive integer sizes",
                        "give the sizes to trace and verify with; mark dimensions dynamic under dynamic_axes")
        dtype = item.get("dtype", "float32")
        if dtype not in DTYPES:
            raise _fail(origin, f"{where}.dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
        low, high = item.get("range", [0.0, 1.0])
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
            raise _fail(origin, f"{where}.range", f"{item.get('range')!r} must be [low, high] with low < high")
        decls.append(InputDecl(name, tuple(shape), dtype, float(low), float(high)))
    values = sum(int(_prod(d.shape)) for d in decls)
    if values > 1 << 28:  # 1 GiB of float32 per example batch is far beyond any image model
        raise _fail(origin, "inputs", f"the inputs hold {values} values; refusing to allocate them")
    return tuple(decls)


def _prod(shape: tuple[int, ...]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def _axes(raw: Any, origin: str, names: set[str]) -> dict[str, dict[int, str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(origin, "dynamic_axes", "must map a tensor name to {axis: name}")
    axes: dict[str, dict[int, str]] = {}
    for tensor, dims in raw.items():
        if tensor not in names:
            raise _fail(origin, f"dynamic_axes.{tensor}", "names no input or output",
                        f"known: {', '.join(sorted(names))}")
        if isinstance(dims, list):
            dims = {int(d): ("batch" if int(d) == 0 else f"{tensor}_{d}") for d in dims}
        if not isinstance(dims, dict) or not all(isinstance(k, int) and k >= 0 and isinstance(v, str)
                                                 for k, v in dims.items()):
            raise _fail(origin, f"dynamic_axes.{tensor}", f"{dims!r} must map axis numbers to names")
        axes[tensor] = dict(dims)
    return axes


def parse_config(data: dict[str, Any], origin: str, base: Path | None = None) -> FactoryConfig:
    """A FactoryConfig from parsed YAML; relative paths are taken from ``base`` (the YAML's folder)."""
    if not isinstance(data, dict):
        raise _fail(origin, "(top level)", "expected a mapping of fields")
    known = {"factory", "args", "weights", "checkpoint", "name", "inputs", "outputs", "dynamic_axes", "opset",
             "formats", "precision", "output_dir", "tensorrt", "task", "preprocess"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(origin, unknown[0], "unknown field", f"known fields: {', '.join(sorted(known))}")
    factory = check_factory(data.get("factory", ""), origin) if "factory" in data else ""
    args = data.get("args") or {}
    if not isinstance(args, dict):
        raise _fail(origin, "args", "must be a mapping of keyword arguments for the factory")
    inputs = _inputs(data.get("inputs"), origin)
    outputs = data.get("outputs") or ["output"]
    if not isinstance(outputs, list) or not all(isinstance(o, str) and o for o in outputs):
        raise _fail(origin, "outputs", "must list the output names")
    opset = data.get("opset", 17)
    if not isinstance(opset, int) or not 7 <= opset <= 23:
        raise _fail(origin, "opset", f"{opset!r} is not an ONNX opset between 7 and 23")
    formats = data.get("formats")
    if formats is not None and (not isinstance(formats, list) or not all(isinstance(f, str) for f in formats)):
        raise _fail(origin, "formats", "must list format names (onnx, torchscript, openvino, tensorrt)")
    precision = data.get("precision", "fp32")
    if precision not in ("fp32", "fp16"):
        raise _fail(origin, "precision", f"{precision!r}: the YAML asks for fp32 or fp16",
                    "INT8 needs calibration data: ask for it on the command line (--int8 --calib DIR or FILE.npz)")
    trt = data.get("tensorrt") or {}
    if not isinstance(trt, dict):
        raise _fail(origin, "tensorrt", "must be a mapping (precision, workspace, builder)")
    builder = trt.get("builder", "python")
    if builder not in TRT_BUILDERS:
        raise _fail(origin, "tensorrt.builder", f"{builder!r} is not one of {', '.join(TRT_BUILDERS)}")
    workspace = trt.get("workspace", 4)
    if not isinstance(workspace, (int, float)) or not 0 < workspace <= 1024:
        raise _fail(origin, "tensorrt.workspace", f"{workspace!r} must be GiB between 0 and 1024")
    trt_precision = trt.get("precision")
    if trt_precision not in (None, "fp32", "fp16"):
        raise _fail(origin, "tensorrt.precision", f"{trt_precision!r} is not fp32 or fp16")

    def path(key: str) -> Path | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _fail(origin, key, f"{value!r} must be a path")
        p = Path(value).expanduser()
        return p if p.is_absolute() or base is None else base / p

    task, image = _task(data, inputs, outputs, origin)
    names = {d.name for d in inputs} | set(outputs)
    return FactoryConfig(
        factory=factory, args=dict(args), weights=path("weights") or path("checkpoint"), name=data.get("name"),
        inputs=inputs, outputs=tuple(outputs), dynamic_axes=_axes(data.get("dynamic_axes"), origin, names),
        opset=opset, formats=tuple(formats) if formats else None, precision=precision, output_dir=path("output_dir"),
        tensorrt=TensorRTDecl(trt_precision, float(workspace), builder), origin=origin, task=task,
        preprocess=image)


def _task(data: dict[str, Any], inputs: tuple[InputDecl, ...], outputs: list[str],
          origin: str) -> tuple[str, ImageDecl | None]:
    """The ``task`` field, and for ``embed`` its one RGB image input's ``preprocess`` (mean, std, scale)."""
    task = data.get("task", "tensors")
    if task not in TASKS:
        raise _fail(origin, "task", f"{task!r} is not one of {', '.join(TASKS)}")
    raw = data.get("preprocess")
    if task == "tensors":
        if raw is not None:
            raise _fail(origin, "preprocess", "applies to task: embed (an image in, an embedding out)")
        return task, None
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3 or inputs[0].dtype != "float32":
        raise _fail(origin, "inputs", "task: embed takes one float32 image input shaped [N, 3, H, W]")
    if len(outputs) != 1:
        raise _fail(origin, "outputs", "task: embed returns one embedding output")
    if not isinstance(raw, dict):
        raise _fail(origin, "preprocess", "task: embed needs {mean: [r, g, b], std: [r, g, b]} (and scale)",
                    "ImageNet-trained backbones: mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]")
    unknown = sorted(set(raw) - {"mean", "std", "scale", "channel_order"})
    if unknown:
        raise _fail(origin, f"preprocess.{unknown[0]}", "unknown field", "known: mean, std, scale, channel_order")

    def triple(key: str) -> tuple[float, float, float]:
        value = raw.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
            raise _fail(origin, f"preprocess.{key}", f"{value!r} must list 3 numbers (R, G, B)")
        if key == "std" and not all(v > 0 for v in value):
            raise _fail(origin, "preprocess.std", f"{value!r} must be positive")
        return (float(value[0]), float(value[1]), float(value[2]))

    scale = raw.get("scale", 1.0 / 255.0)
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise _fail(origin, "preprocess.scale", f"{scale!r} must be a positive number (1/255 for 0..1 pixels)")
    order = raw.get("channel_order", "RGB")
    if order not in ("RGB", "BGR"):
        raise _fail(origin, "preprocess.channel_order", f"{order!r} is not RGB or BGR")
    return task, ImageDecl(triple("mean"), triple("std"), float(scale), order)


def read_config(path: str | Path) -> FactoryConfig:
    """Parse an export YAML with yaml.safe_load (no tags, no code), size-limited."""
    from modelport.errors import WeightsNotFoundError
    from modelport.yaml_file import read_yaml

    path = Path(path)
    data = read_yaml(path, "config file", hint="give the export YAML with --config (not the weights)",
                     missing=WeightsNotFoundError, invalid=ConfigError, max_bytes=MAX_CONFIG_BYTES)
    return parse_config(data, str(path), path.parent)
