"""Triton ``config.pbtxt`` from an artifact: the signature is read from the artifact itself and the config
is a ``ModelConfig`` message of Triton's own schema (``model_config_pb2`` shipped with tritonclient).

Written with protobuf's text format, so a config is valid by construction and parses back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.errors import ConfigError, CorruptFileError, ModelportError, UnsupportedFormatError
from modelport.formats import FORMATS
from modelport.spec import ModelSpec

CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
SPEC_FILE = "metadata.json"  # beside model.plan: Triton needs a bare engine, modelport needs the spec
PYTHON_MODEL_FILE = "model.py"  # the Python backend's entry point, beside the artifact it runs

# Config ``parameters`` modelport writes: its spec (compact JSON), the artifact's format (which a Python-backend
# config cannot otherwise say) and, optionally, runtime threads per instance for that Python model.
PARAM_SPEC = "modelport_spec"
PARAM_FORMAT = "modelport_format"
PARAM_THREADS = "modelport_threads"
# (platform, backend, model file) per format Triton serves natively: read from the Format (formats.FORMATS).
TRITON_FORMATS: dict[str, tuple[str, str, str]] = {f.id: f.triton for f in FORMATS if f.triton is not None}

# Triton backend -> the formats it loads, its own first. Triton's OpenVINO backend also reads ONNX (the model
# file is then named by default_model_filename, as in NVIDIA's OpenVINO quick-deploy tutorial).
_ALSO_LOADS = {"openvino": ("onnx",)}
BACKEND_FORMATS: dict[str, tuple[str, ...]] = {
    backend: (fmt, *_ALSO_LOADS.get(backend, ())) for fmt, (_, backend, _) in TRITON_FORMATS.items()}
# native: Triton's own backend for the format; python: modelport's model.py; or a Triton backend by name.
BACKENDS = ("native", "python", *BACKEND_FORMATS)


def _pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:  # the grpc extra ships the schema
        raise ModelportError(f"Triton's config schema is unavailable ({exc})",
                             hint="pip install 'modelport[serve]'") from None
    return model_config_pb2


@dataclass(frozen=True, slots=True)
class TensorSig:
    """One tensor as the artifact declares it; ``-1`` marks a dynamic dimension."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    max_batch: int | None = None  # upper bound the artifact itself imposes on a dynamic batch (TensorRT profile)

    @property
    def batch_dynamic(self) -> bool:
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


@dataclass(frozen=True, slots=True)
class ConfigOptions:
    """What the user chooses; everything else comes from the artifact."""

    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    dynamic_batching: bool = True
    instances: int = 1
    kind: str = "auto"  # cpu | gpu | auto (gpu for TensorRT, cpu otherwise)
    version_policy: str = "latest:1"  # latest:N | all | specific:1,2
    backend: str = "native"  # native (the format's own) | python (modelport's model.py) | a Triton backend's name

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ModelportError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if any(b < 1 for b in self.preferred_batch_sizes):
            raise ModelportError(f"preferred batch sizes must be positive, got {self.preferred_batch_sizes}")
        if self.max_queue_delay_us < 0:
            raise ModelportError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ModelportError(f"instances must be >= 1, got {self.instances}")
        if self.kind not in ("auto", "cpu", "gpu"):
            raise ModelportError(f"instance kind must be auto, cpu or gpu, not {self.kind!r}")
        parse_version_policy(self.version_policy)
        if self.backend not in BACKENDS:
            raise ModelportError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}",
                                 hint="native: Triton's backend for the format; python: modelport's runner in "
                                      "Triton's Python backend; or name one of Triton's backends")


def default_format(backend: str) -> str | None:
    """The format a weights file is exported to for ``backend`` (its own), or None where any format serves."""
    return BACKEND_FORMATS[backend][0] if backend in BACKEND_FORMATS else None


def triton_backend(backend: str, format_id: str) -> str:
    """The ``backend`` a config names for a ``format_id`` artifact; a named one that cannot load it says what to do."""
    if format_id not in TRITON_FORMATS:
        raise UnsupportedFormatError(f"Triton cannot serve the {format_id} format",
                                     hint=f"choose from: {', '.join(TRITON_FORMATS)}")
    if backend == "python":
        return "python"
    if backend == "native":
        return TRITON_FORMATS[format_id][1]
    if backend not in BACKEND_FORMATS:
        raise ModelportError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    loads = BACKEND_FORMATS[backend]
    if format_id not in loads:
        others = [b for b, formats in BACKEND_FORMATS.items() if format_id in formats]
        raise ConfigError(
            f"Triton's {backend} backend loads {' or '.join(loads)} models, not {format_id}",
            hint=f"give --format {' or --format '.join(loads)}, or serve the {format_id} artifact with --backend "
                 f"{' or --backend '.join([*others, 'python'])}")
    return backend


def _dims(shape) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _onnx_signature(path: Path) -> Signature:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a readable ONNX model ({exc})") from None
    weights = {i.name for i in graph.initializer}

    def sig(value) -> TensorSig:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSig(value.name, np.dtype(tensor_dtype_to_np_dtype(t.elem_type)).name, dims)

    return Signature(tuple(sig(v) for v in graph.input if v.name not in weights), tuple(map(sig, graph.output)))


def _openvino_signature(path: Path) -> Signature:
    import openvino as ov

    xml = path / "model.xml" if path.is_dir() else path
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        raise CorruptFileError(f"{xml}: OpenVINO cannot read it ({exc})") from None

    def sig(port) -> TensorSig:
        dims = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorSig(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, dims)

    return Signature(tuple(map(sig, model.inputs)), tuple(map(sig, model.outputs)))


def _spec_signature(spec: ModelSpec, suffix_names: bool = False) -> Signature:
    # libtorch models carry no tensor names; Triton's PyTorch backend binds them as <name>__<index>.
    def sig(tensors) -> tuple[TensorSig, ...]:
        return tuple(TensorSig(f"{t.name}__{i}" if suffix_names else t.name, t.dtype, _dims(t.shape))
                     for i, t in enumerate(tensors))

    return Signature(sig(spec.inputs), sig(spec.outputs))


def _tensorrt_signature(plan: Path, spec: ModelSpec) -> Signature:
    from modelport.formats.tensorrt import DEFAULT_MAX_BATCH

    max_batch = spec.max_batch or int(spec.extra.get("trt_max_batch", DEFAULT_MAX_BATCH))
    try:
        import tensorrt as trt
    except ImportError:
        # Without TensorRT the engine cannot be opened here; its header spec is what it was built from.
        base = _spec_signature(spec)
        return Signature(base.inputs, base.outputs, max_batch=max_batch)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise CorruptFileError(f"{plan}: TensorRT cannot deserialise this engine")
    ins, outs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        t = TensorSig(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name,
                      _dims(tuple(engine.get_tensor_shape(name))))
        (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(t)
    if ins and ins[0].shape[0] == -1:
        max_batch = int(engine.get_tensor_profile_shape(ins[0].name, 0)[2][0])
    return Signature(tuple(ins), tuple(outs), max_batch=max_batch)


def read_signature(format_id: str, path: Path, spec: ModelSpec | None = None) -> Signature:
    """Inputs and outputs as the artifact at ``path`` (a version folder's model file) declares them."""
    path = Path(path)
    if format_id == "onnx":
        return _onnx_signature(path)
    if format_id == "openvino":
        return _openvino_signature(path)
    if format_id == "torchscript":
        from modelport.formats.torchscript import read_spec

        return _spec_signature(spec or read_spec(path), suffix_names=True)
    if format_id == "tensorrt":
        return _tensorrt_signature(path, spec or read_plan_spec(path))
    raise UnsupportedFormatError(f"Triton cannot serve the {format_id} format",
                                 hint=f"choose from: {', '.join(TRITON_FORMATS)}")


def read_plan_spec(plan: Path) -> ModelSpec:
    meta = plan.parent / SPEC_FILE
    if not meta.is_file():
        raise CorruptFileError(f"{plan}: no {SPEC_FILE} beside this engine",
                               hint="rebuild the model with `modelport triton build`")
    return ModelSpec.from_json(meta.read_text(), origin=str(meta))


def parse_version_policy(text: str):
    """``latest:N`` | ``all`` | ``specific:1,2`` -> a ModelVersionPolicy message."""
    pb = _pb2()
    policy = pb.ModelVersionPolicy()
    kind, _, arg = text.partition(":")
    try:
        if kind == "latest":
            policy.latest.num_versions = int(arg or 1)
            if policy.latest.num_versions < 1:
                raise ValueError
        elif kind == "all" and not arg:
            policy.all.SetInParent()
        elif kind == "specific":
            versions = [int(v) for v in arg.split(",")]
            if not versions or min(versions) < 1:
                raise ValueError
            policy.specific.versions.extend(versions)
        else:
            raise ValueError
    except ValueError:
        raise ModelportError(f"bad version policy {text!r}",
                             hint="use latest:N (N >= 1), all, or specific:1,2") from None
    return policy


def triton_dtype(numpy_dtype: str) -> str:
    """``float32`` -> ``TYPE_FP32``, via tritonclient's own mapping."""
    from tritonclient.utils import np_to_triton_dtype

    name = np_to_triton_dtype(np.dtype(numpy_dtype))
    if name is None:
        raise UnsupportedFormatError(f"Triton has no data type for {numpy_dtype}")
    return f"TYPE_{'STRING' if name == 'BYTES' else name}"


def make_config(name: str, format_id: str, sig: Signature, spec: ModelSpec, options: ConfigOptions):
    """A ModelConfig for one model whose versions all have signature ``sig``."""
    pb = _pb2()
    platform, own, model_name = TRITON_FORMATS[format_id]
    backend = triton_backend(options.backend, format_id)
    config = pb.ModelConfig(name=name, backend=backend)
    if backend == own and platform:
        config.platform = platform
    elif backend not in (own, "python"):  # a backend reading another format's file (OpenVINO's reads model.onnx)
        config.default_model_filename = model_name
    # The spec travels with the model: Triton hands parameters to backends and returns them from /config.
    config.parameters[PARAM_SPEC].string_value = compact_spec(spec)
    config.parameters[PARAM_FORMAT].string_value = format_id
    batched = sig.batch_dynamic
    if batched:
        # An engine's profile, or the largest batch the exporter declared (detectors), caps the config.
        caps = [c for c in (sig.max_batch, spec.extra.get("max_batch")) if isinstance(c, int) and c > 0]
        config.max_batch_size = min([options.max_batch_size, *caps])
    for tensors, add in ((sig.inputs, config.input.add), (sig.outputs, config.output.add)):
        for t in tensors:
            entry = add(name=t.name, data_type=getattr(pb, triton_dtype(t.dtype)))
            entry.dims.extend(t.shape[1:] if batched else t.shape)
    if spec.labels and config.output:
        config.output[0].label_filename = LABELS_FILE
    if batched and options.dynamic_batching:
        preferred = sorted({b for b in options.preferred_batch_sizes if b <= config.max_batch_size})
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind = options.kind if options.kind != "auto" else ("gpu" if format_id == "tensorrt" else "cpu")
    config.instance_group.add(count=options.instances,
                              kind=pb.ModelInstanceGroup.KIND_GPU if kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU)
    config.version_policy.CopyFrom(parse_version_policy(options.version_policy))
    return config


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def read_config(path: Path):
    """Parse a config.pbtxt with Triton's schema; a CorruptFileError names the file and the problem."""
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: no {CONFIG_FILE}", hint="build it with `modelport triton build`")
    try:
        return text_format.Parse(path.read_text(), _pb2().ModelConfig())
    except text_format.ParseError as exc:
        raise CorruptFileError(f"{path}: not a valid Triton model config ({exc})") from None


def compact_spec(spec: ModelSpec) -> str:
    """The spec as one line of JSON, for a config parameter."""
    return json.dumps(json.loads(spec.to_json()), separators=(",", ":"), sort_keys=True)


def config_spec(config) -> ModelSpec | None:
    """The modelport spec a config carries in its parameters, or None for a config modelport did not write."""
    text = config.parameters[PARAM_SPEC].string_value if PARAM_SPEC in config.parameters else ""
    return ModelSpec.from_json(text, origin=f"model {config.name!r} config parameter {PARAM_SPEC}") if text else None


def format_of_config(config) -> str:
    """The modelport format id a config's platform/backend stands for (a Python-backend config names it in
    its ``modelport_format`` parameter)."""
    if config.backend == "python":
        fmt = config.parameters[PARAM_FORMAT].string_value if PARAM_FORMAT in config.parameters else ""
        if fmt not in TRITON_FORMATS:
            raise UnsupportedFormatError(
                f"model {config.name!r}: a Python-backend model without a modelport format "
                f"(parameter {PARAM_FORMAT} is {fmt!r})",
                hint=f"build it with `modelport triton build --backend python`; formats: {', '.join(TRITON_FORMATS)}")
        return fmt
    if not config.platform and config.backend in BACKEND_FORMATS and config.default_model_filename:
        for fmt in BACKEND_FORMATS[config.backend]:  # the file it names says which of its formats it reads
            if TRITON_FORMATS[fmt][2] == config.default_model_filename:
                return fmt
    for fmt, (platform, backend, _) in TRITON_FORMATS.items():
        if (config.platform and config.platform == platform) or (not config.platform and config.backend == backend):
            return fmt
    raise UnsupportedFormatError(
        f"model {config.name!r}: platform {config.platform!r} / backend {config.backend!r} is not one modelport runs",
        hint=f"modelport serves: {', '.join(p or b for p, b, _ in TRITON_FORMATS.values())}")


def model_file(config) -> str:
    """The artifact's file in a version folder (for a Python-backend model, the one its model.py runs)."""
    if config.backend == "python":  # there default_model_filename names model.py itself
        return TRITON_FORMATS[format_of_config(config)][2]
    return config.default_model_filename or TRITON_FORMATS[format_of_config(config)][2]


def config_dtype(config_type: int) -> np.dtype:
    """A config's TYPE_FP32 enum value -> numpy dtype."""
    from tritonclient.utils import triton_to_np_dtype

    name = _pb2().DataType.Name(config_type).removeprefix("TYPE_")
    dtype = triton_to_np_dtype("BYTES" if name == "STRING" else name)
    if dtype is None:
        raise UnsupportedFormatError(f"unsupported Triton data type {name}")
    return np.dtype(dtype)


def config_problems(config, sig: Signature, where: str = "") -> list[str]:
    """Ways ``config`` disagrees with the artifact's signature (empty when they agree)."""
    problems: list[str] = []
    prefix = f"{where}: " if where else ""
    batched = config.max_batch_size > 0
    if batched and not sig.batch_dynamic:
        problems.append(f"{prefix}max_batch_size {config.max_batch_size} but the artifact's batch dimension is "
                        "fixed (it must be 0)")
    if sig.max_batch and config.max_batch_size > sig.max_batch:
        problems.append(f"{prefix}max_batch_size {config.max_batch_size} exceeds the engine's {sig.max_batch}")
    if config.HasField("dynamic_batching") and not batched:
        problems.append(f"{prefix}dynamic_batching needs max_batch_size > 0")
    for b in config.dynamic_batching.preferred_batch_size:
        if batched and b > config.max_batch_size:
            problems.append(f"{prefix}preferred batch size {b} exceeds max_batch_size {config.max_batch_size}")
    for kind, declared, actual in (("input", config.input, sig.inputs), ("output", config.output, sig.outputs)):
        if len(declared) != len(actual):
            problems.append(f"{prefix}config has {len(declared)} {kind}s, the artifact {len(actual)}")
            continue
        for d, a in zip(declared, actual):
            want = a.shape[1:] if batched else a.shape
            if d.name != a.name:
                problems.append(f"{prefix}{kind} {d.name!r} is named {a.name!r} in the artifact")
            if config_dtype(d.data_type) != np.dtype(a.dtype):
                problems.append(f"{prefix}{kind} {d.name!r} is {config_dtype(d.data_type)} in the config, "
                                f"{a.dtype} in the artifact")
            if len(d.dims) != len(want) or any(x != y and -1 not in (x, y) for x, y in zip(d.dims, want)):
                problems.append(f"{prefix}{kind} {d.name!r} dims {list(d.dims)} do not match the artifact's "
                                f"{list(want)}")
    return problems


def config_dict(config) -> dict:
    """The config as Triton's HTTP API returns it (field names as in the .proto)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(config, preserving_proto_field_name=True)
