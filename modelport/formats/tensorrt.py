"""TensorRT engines built from the ONNX export; the spec is a length-prefixed JSON header before the engine
(a detector's: Ultralytics' header, its metadata with the spec inside, so that ``YOLO(x.engine)`` reads it too).

Needs the ``tensorrt`` package and a CUDA device; elsewhere the format reports itself unavailable.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, ExportError
from modelport.formats.base import ExportOptions, Runner
from modelport.spec import ModelSpec

MAGIC = b"MPTRT1"
DEFAULT_MAX_BATCH = 32


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def export(module, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    from modelport.formats.onnx import write_onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = write_onnx(module, spec, Path(tmp) / "model.onnx", opset=options.opset)
        return build_engine(onnx_path, spec, dest, options)


def from_onnx(onnx_path: Path, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    """An engine built from an ONNX graph (a plain export, or one with TensorRT's NMS plugin inside)."""
    return build_engine(onnx_path, spec, dest, options)


def profile_shapes(spec: ModelSpec, name: str, rest: tuple[int, ...], max_batch: int) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes of one input; ``rest`` is its shape after the batch, -1 where dynamic.

    A declared example size (``spec.extra["example"]``, factory models) fills a dynamic dimension; otherwise a
    detector's dynamic height/width (``preprocess.stride``) spans one stride to the full size."""
    low = max_batch if spec.max_batch else 1
    example = spec.extra.get("example", {}).get(name)
    if example:
        full = tuple(d if d >= 0 else int(example["shape"][j + 1]) for j, d in enumerate(rest))
        least = full
    else:
        pre = spec.preprocess
        full = tuple(d if d >= 0 else (pre.height if j == len(rest) - 2 else pre.width) for j, d in enumerate(rest))
        least = tuple(d if d >= 0 else max(pre.stride, 1) for d in rest)
    return (low, *least), (max(low, max_batch // 2), *full), (max_batch, *full)


def build_engine(onnx_path: Path, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    """Build an engine from an ONNX file (plugin nodes such as EfficientNMS_TRT included) and write it, with
    TensorRT's Python API or, with ``options.trt_builder == "trtexec"``, the ``trtexec`` command."""
    max_batch = spec.max_batch or int(spec.extra.get("trt_max_batch", DEFAULT_MAX_BATCH))
    if options.trt_builder == "trtexec":
        engine = _trtexec(onnx_path, spec, dest, options, max_batch)
    else:
        engine = _python_api(onnx_path, spec, dest, options, max_batch)
    from modelport.formats import ultralytics_meta

    meta = ultralytics_meta.metadata(spec)
    if meta is not None:  # Ultralytics' header (its metadata, the spec inside), which its loader skips
        header = ultralytics_meta.engine_header(meta, spec)
    else:
        body = spec.to_json().encode()
        header = MAGIC + struct.pack("<I", len(body)) + body
    with open(dest, "wb") as handle:
        handle.write(header)
        handle.write(engine)
    return dest


def _python_api(onnx_path: Path, spec: ModelSpec, dest: Path, options: ExportOptions, max_batch: int) -> bytes:
    import tensorrt as trt

    trt.init_libnvinfer_plugins(_logger(), "")  # registers EfficientNMS_TRT and the other shipped plugins
    builder = trt.Builder(_logger())
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, _logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{dest}: TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    if spec.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, *profile_shapes(spec, tensor.name, tuple(tensor.shape)[1:], max_batch))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"{dest}: TensorRT failed to build an engine (see the TensorRT log above)")
    return bytes(engine)


def trtexec_command(exe: str, onnx_path: Path, engine: Path, spec: ModelSpec, options: ExportOptions,
                    inputs: dict[str, tuple[int, ...]], max_batch: int) -> list[str]:
    """The ``trtexec`` command line for this build: workspace, precision and one shape profile per input."""
    shapes = {name: profile_shapes(spec, name, rest, max_batch) for name, rest in inputs.items()}

    def flag(which: int) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, s[which]))}" for n, s in shapes.items())

    cmd = [exe, f"--onnx={onnx_path}", f"--saveEngine={engine}",
           f"--memPoolSize=workspace:{int(options.workspace_gib * 1024)}"]  # MiB
    if spec.precision == "fp16":
        cmd.append("--fp16")
    if any(-1 in rest for rest in inputs.values()) or spec.max_batch is None:
        cmd += [f"--minShapes={flag(0)}", f"--optShapes={flag(1)}", f"--maxShapes={flag(2)}"]
    return cmd


def _trtexec(onnx_path: Path, spec: ModelSpec, dest: Path, options: ExportOptions, max_batch: int) -> bytes:
    import shutil
    import subprocess

    import onnx

    from modelport.errors import MissingRuntimeError

    exe = shutil.which("trtexec")
    if exe is None:
        raise MissingRuntimeError(f"{dest}: trtexec is not on PATH", hint="install TensorRT's trtexec, or build "
                                  "with the Python API (--trt-builder python)")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = {i.name: tuple(d.dim_value if d.dim_value > 0 else -1 for d in i.type.tensor_type.shape.dim)[1:]
              for i in graph.input if i.name not in initializers}
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / "model.engine"
        cmd = trtexec_command(exe, onnx_path, engine, spec, options, inputs, max_batch)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not engine.is_file():
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise ExportError(f"{dest}: trtexec failed (exit {done.returncode}): {tail}")
        return engine.read_bytes()


def split_engine(path: Path) -> tuple[ModelSpec, bytes]:
    """The spec and the engine bytes: modelport's own header, or Ultralytics' (a detector's) with the spec inside."""
    from modelport.formats.ultralytics_meta import read_engine_header

    data = Path(path).read_bytes()
    if not data.startswith(MAGIC) and (found := read_engine_header(data)) is not None:
        text, offset = found
        return ModelSpec.from_json(text, origin=str(path)), data[offset:]
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise CorruptFileError(f"{path}: no modelport header; not an engine written by modelport",
                               hint="export it with `modelport export --format tensorrt`")
    (length,) = struct.unpack("<I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    spec = ModelSpec.from_json(data[start : start + length].decode(), origin=str(path))
    return spec, data[start + length :]


def triton_files(path: Path, spec_file: str) -> dict[str, Path | bytes]:
    """Triton loads a bare engine (``model.plan``): the header's spec goes beside it."""
    spec, plan = split_engine(path)
    return {"model.plan": plan, spec_file: spec.to_json().encode()}


def read_spec(path: Path) -> ModelSpec:
    return split_engine(path)[0]


class TensorRTRunner(Runner):
    format_id = "tensorrt"

    def __init__(self, path: Path, device: str = "cuda") -> None:
        import tensorrt as trt

        spec, blob = split_engine(path)
        super().__init__(spec, path, device if device.startswith("cuda") else "cuda")
        self.engine = trt.Runtime(_logger()).deserialize_cuda_engine(blob)
        if self.engine is None:
            raise CorruptFileError(f"{path}: TensorRT cannot deserialise this engine (other TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        if spec.max_batch is None:
            self.chunk = int(spec.extra.get("trt_max_batch", DEFAULT_MAX_BATCH))

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._infer_many({self._inputs[0]: batch})

    def _infer_many(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorrt as trt
        import torch

        held = []  # the device copies must outlive the execution
        for name in self._inputs:
            x = torch.from_numpy(feeds[name]).to(self.device)
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
            held.append(x)
        outs = {}
        for name in self._outputs:
            # Detector engines with NMS return int32 counts and classes beside float boxes and scores.
            dtype = torch.int32 if self.engine.get_tensor_dtype(name) == trt.int32 else torch.float32
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outs[name] = out
        stream = torch.cuda.current_stream(torch.device(self.device))
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outs.items()}


def load(path: Path, device: str = "cuda", threads: int | None = None) -> TensorRTRunner:
    return TensorRTRunner(path, device)
