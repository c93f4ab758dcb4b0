"""KServe v2 inference requests and responses: JSON tensors and the binary tensor data extension.

A body is a JSON header optionally followed by raw tensor bytes; ``Inference-Header-Content-Length``
gives the header's length, and each binary tensor says its size in ``parameters.binary_data_size``.
Every declared name, datatype and shape is checked against the data and the model before a tensor is
allocated. Bodies arrive here inflated (see ``limits``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_DIMS = 32  # numpy's own limit before 2.0; no vision model comes near it
# Commas a JSON header may hold beside tensor values (shapes, parameters, requested outputs).
JSON_SLACK = 4096


class ProtocolError(Exception):
    """A request the server cannot accept; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def numpy_dtype(datatype: str) -> np.dtype:
    from tritonclient.utils import triton_to_np_dtype

    dtype = triton_to_np_dtype(datatype) if isinstance(datatype, str) and datatype != "BYTES" else None
    if dtype is None:
        raise ProtocolError(f"unsupported datatype {str(datatype)[:40]!r}")
    return np.dtype(dtype)


def datatype_of(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One model input as a request must declare it."""

    name: str
    datatype: str  # KServe name: FP32, UINT8, ...
    dims: tuple[int, ...]  # without the batch dimension; -1: any size
    max_batch: int = 0  # 0: no batch dimension; else a leading batch dimension of 1..max_batch

    @property
    def max_values(self) -> int | None:
        """The most values one request may hold for this input (None when a dimension is variable)."""
        return None if -1 in self.dims else max(self.max_batch, 1) * math.prod(self.dims)

    def expected(self) -> str:
        batch = [f"batch (1..{self.max_batch})"] if self.max_batch > 0 else []
        return f"[{', '.join([*batch, *map(str, self.dims)])}]"

    def accepts(self, shape: Sequence[int]) -> bool:
        if self.max_batch > 0:
            if len(shape) != len(self.dims) + 1 or not 1 <= shape[0] <= self.max_batch:
                return False
            shape = shape[1:]
        elif len(shape) != len(self.dims):
            return False
        # a variable dimension still needs a size: an empty image is no input
        return all(s == d if d != -1 else s >= 1 for d, s in zip(self.dims, shape))


def check_inputs(model: str, specs: Mapping[str, InputSpec], declared: Mapping[str, tuple[str, Sequence[int]]]
                 ) -> None:
    """Raise ``ProtocolError`` unless ``declared`` (name -> datatype, shape) is what the model takes."""
    unknown = sorted(set(declared) - set(specs))
    missing = sorted(set(specs) - set(declared))
    if unknown or missing:
        raise ProtocolError(f"model {model!r} takes inputs {sorted(specs)}; got unknown {unknown}, missing {missing}")
    for name, (datatype, shape) in declared.items():
        spec = specs[name]
        if datatype != spec.datatype:
            raise ProtocolError(f"model {model!r} input {name!r} is {spec.datatype}, got {datatype}")
        if not spec.accepts(shape):
            raise ProtocolError(f"model {model!r} input {name!r} has shape {list(shape)}; expected {spec.expected()}")


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    binary_outputs: dict[str, bool]  # requested outputs -> binary? (empty: all outputs)
    binary_default: bool
    parameters: dict = field(default_factory=dict)


@dataclass(slots=True)
class _Declared:
    """An input as its header entry declares it, checked but not yet allocated."""

    name: str
    datatype: str
    dtype: np.dtype
    shape: list[int]
    count: int  # values, exact (a Python int cannot overflow)
    binary_size: int | None  # bytes after the header; None: the values are in ``data``
    data: list | None = None
    offset: int = 0


def parse_request(body: bytes, header_length: str | None, specs: Mapping[str, InputSpec] | None = None,
                  model: str = "") -> InferRequest:
    """A request checked throughout (and against ``specs``, the model's inputs, when given) before any
    tensor is allocated; ``ProtocolError`` (400, or 413 for a header too big for the model) otherwise."""
    size = _header_size(body, header_length)
    if specs:
        _check_json_size(body, size, specs, model)
    header = _json(body, size)
    declared = [_declare(item) for item in header["inputs"]]
    names = [d.name for d in declared]
    if len(set(names)) != len(names):
        raise ProtocolError(f"each input may appear once; got {sorted({n for n in names if names.count(n) > 1})} "
                            "more than once")
    if specs is not None:
        check_inputs(model, specs, {d.name: (d.datatype, d.shape) for d in declared})
    params = _dict(header, "parameters", "the request")
    binary_default = bool(params.get("binary_data_output", False))
    outputs = _outputs(header, binary_default)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"'id' must be a string, got {type(request_id).__name__}")
    offset = size
    for d in declared:
        if d.binary_size is not None:
            if offset + d.binary_size > len(body):
                raise ProtocolError(f"input {d.name!r}: binary_data_size {d.binary_size} runs past the end of the body")
            d.offset, offset = offset, offset + d.binary_size
    if offset != len(body):
        raise ProtocolError(f"{len(body) - offset} bytes of binary data follow the inputs unclaimed")
    inputs = {d.name: _allocate(d, body) for d in declared}
    return InferRequest(request_id, inputs, outputs, binary_default, params)


def _outputs(header: dict, binary_default: bool) -> dict[str, bool]:
    """Requested output -> binary?"""
    requested = header.get("outputs") or []
    if not isinstance(requested, list):
        raise ProtocolError(f"'outputs' must be a list, got {type(requested).__name__}")
    outputs = {}
    for out in requested:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ProtocolError("each requested output needs a 'name' string")
        out_params = _dict(out, "parameters", f"output {out['name']!r}")
        if "classification" in out_params:
            raise ProtocolError(f"output {out['name']!r}: the classification extension is not supported; "
                                "request the raw output and take the top classes client-side")
        outputs[out["name"]] = bool(out_params.get("binary_data", binary_default))
    return outputs


def _header_size(body: bytes, header_length: str | None) -> int:
    if header_length is None:
        return len(body)
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # int() refuses 4300+ digits
        raise ProtocolError(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length[:40]!r}")
    size = int(text)
    if not 0 < size <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {size} is outside the body's {len(body)} bytes")
    return size


def _check_json_size(body: bytes, size: int, specs: Mapping[str, InputSpec], model: str) -> None:
    """Refuse a header with more values than the model could take, before parsing it: parsed JSON
    costs 8-60 bytes of Python objects per value, so a body within the byte limit could still take
    gigabytes. Every value after a container's first needs a comma; counting them is cheap."""
    limits = [s.max_values for s in specs.values()]
    if None in limits:
        return
    most = sum(limits)
    commas = body.count(b",", 0, size)
    if commas > most + JSON_SLACK:
        raise ProtocolError(f"the JSON header holds about {commas} values; model {model!r} takes at most {most} "
                            "per request", 413)


def _json(body: bytes, size: int) -> dict:
    try:
        header = json.loads(body[:size])
    except (ValueError, RecursionError) as exc:  # ValueError covers bad JSON, bad UTF-8 and 4300+ digit ints
        raise ProtocolError(f"the inference header is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})"
                            ) from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise ProtocolError("the request needs a non-empty 'inputs' list")
    return header


def _dict(entry: dict, key: str, owner: str) -> dict:
    value = entry.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{owner}: '{key}' must be an object, got {type(value).__name__}")
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _declare(item) -> _Declared:
    if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
        raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str):
        raise ProtocolError(f"an input's 'name' must be a string, got {type(name).__name__}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape must be a list of at most {MAX_DIMS} non-negative integers, "
                            f"got {str(shape)[:200]}")
    dtype = numpy_dtype(datatype)
    count = math.prod(shape)
    params = _dict(item, "parameters", f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        if not _is_int(size) or size < 0:
            raise ProtocolError(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: {size} bytes of binary data for shape {shape} {datatype} "
                                f"(expected {count * dtype.itemsize})")
        return _Declared(name, datatype, dtype, shape, count, size)
    data = item.get("data")
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r} needs 'data' (a JSON array) or parameters.binary_data_size")
    if not any(isinstance(v, list) for v in data[:1]) and len(data) != count:  # flat: compare before numpy
        raise ProtocolError(f"input {name!r}: {len(data)} values for shape {shape}")
    return _Declared(name, datatype, dtype, shape, count, None, data)


def _allocate(d: _Declared, body: bytes) -> np.ndarray:
    if d.binary_size is not None:
        # A copy: frombuffer views are read-only, and runtimes (torch) may want to own their input.
        return np.frombuffer(body, d.dtype, d.count, d.offset).reshape(d.shape).copy()
    try:
        array = np.asarray(d.data, dtype=d.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"input {d.name!r}: data is not {d.datatype} ({str(exc)[:200]})") from None
    if array.size != d.count:
        raise ProtocolError(f"input {d.name!r}: {array.size} values for shape {d.shape}")
    return array.reshape(d.shape)


def encode_response(model: str, version: str, request: InferRequest, outputs: dict[str, np.ndarray]
                    ) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (the header length when binary tensors follow)."""
    wanted = request.binary_outputs or {name: request.binary_default for name in outputs}
    unknown = sorted(set(wanted) - set(outputs))
    if unknown:
        raise ProtocolError(f"model {model!r} has no outputs {unknown}; it has {sorted(outputs)}")
    entries, blobs = [], []
    for name, binary in wanted.items():
        array = np.ascontiguousarray(outputs[name])
        entry: dict = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    response: dict = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return b"".join([header, *blobs]), {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
