"""KServe v2 inference requests and responses: JSON tensors and the binary tensor data extension.

A body is a JSON header optionally followed by raw tensor bytes; ``Inference-Header-Content-Length``
gives the header's length, and each binary tensor says its size in ``parameters.binary_data_size``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(Exception):
    """A request the server cannot accept; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def numpy_dtype(datatype: str) -> np.dtype:
    from tritonclient.utils import triton_to_np_dtype

    dtype = triton_to_np_dtype(datatype) if datatype != "BYTES" else None
    if dtype is None:
        raise ProtocolError(f"unsupported datatype {datatype!r}")
    return np.dtype(dtype)


def datatype_of(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    binary_outputs: dict[str, bool]  # requested outputs -> binary? (empty: all outputs)
    binary_default: bool
    parameters: dict = field(default_factory=dict)


def _decompress(body: bytes, encoding: str | None) -> bytes:
    import gzip
    import zlib

    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error) as exc:
        raise ProtocolError(f"body is not valid {encoding} data ({exc})") from None
    if encoding not in (None, "", "identity"):
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r}", status=415)
    return body


def parse_request(body: bytes, header_length: str | None, encoding: str | None = None) -> InferRequest:
    body = _decompress(body, encoding)
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < size <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {size} is outside the body's {len(body)} bytes")
    else:
        size = len(body)
    try:
        header = json.loads(body[:size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the inference header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise ProtocolError("the request needs a non-empty 'inputs' list")
    offset = size
    inputs: dict[str, np.ndarray] = {}
    for item in header["inputs"]:
        array, offset = _tensor(item, body, offset)
        inputs[item["name"]] = array
    if offset != len(body):
        raise ProtocolError(f"{len(body) - offset} bytes of binary data follow the inputs unclaimed")
    params = header.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False))
    outputs = {}
    for out in header.get("outputs") or []:
        if not isinstance(out, dict) or "name" not in out:
            raise ProtocolError("each requested output needs a 'name'")
        out_params = out.get("parameters") or {}
        if "classification" in out_params:
            raise ProtocolError(f"output {out['name']!r}: the classification extension is not supported; "
                                "request the raw output and take the top classes client-side")
        outputs[out["name"]] = bool(out_params.get("binary_data", binary_default))
    return InferRequest(header.get("id"), inputs, outputs, binary_default, params)


def _tensor(item: dict, body: bytes, offset: int) -> tuple[np.ndarray, int]:
    if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
        raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
    name, shape = item["name"], item["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    dtype = numpy_dtype(item["datatype"])
    count = int(np.prod(shape)) if shape else 1
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(body):
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} runs past the end of the body")
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: {size} bytes of binary data for shape {shape} "
                                f"{item['datatype']} (expected {count * dtype.itemsize})")
        # A copy: frombuffer views are read-only, and runtimes (torch) may want to own their input.
        return np.frombuffer(body, dtype, count, offset).reshape(shape).copy(), offset + size
    if "data" not in item:
        raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
    try:
        array = np.asarray(item["data"], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"input {name!r}: data is not {item['datatype']} ({exc})") from None
    if array.size != count:
        raise ProtocolError(f"input {name!r}: {array.size} values for shape {shape}")
    return array.reshape(shape), offset


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
