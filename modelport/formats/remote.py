"""A Runner for a model served over the KServe v2 protocol (Triton, ``modelport serve``), through the official
tritonclient: ``http://host:8000/osnet``, ``grpc://host:8001/osnet/versions/2``, or several endpoints
separated by commas, which are used together with requests kept in flight on each.

Inputs are prepared here (``embed``, ``detect``) from the spec the server holds: modelport's spec in the
model config's ``parameters`` (what ``modelport triton build`` writes), else a plain tensor spec from the
model metadata. Batches are split into requests of the server's ``max_batch_size``; each request goes to
the endpoint with the fewest in flight, and a failed one is retried once on another endpoint.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from modelport.errors import ModelportError
from modelport.formats.base import Runner
from modelport.spec import ModelSpec, Preprocess, Source, TensorSpec

log = logging.getLogger("modelport.remote")
SCHEMES = {"http": 8000, "https": 8000, "grpc": 8001}
PARAM_SPEC = "modelport_spec"  # the config parameter modelport.triton writes
IN_FLIGHT = 4  # requests kept in flight per endpoint
DEFAULT_CHUNK = 8  # rows per request when the server does not say its max_batch_size


class RemoteError(ModelportError, RuntimeError):
    """An endpoint is malformed, unreachable, serves a different model, or failed a request."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # http | https | grpc
    address: str  # host:port
    model: str
    version: str = ""

    @property
    def url(self) -> str:
        tail = f"/versions/{self.version}" if self.version else ""
        return f"{self.scheme}://{self.address}/{self.model}{tail}"


def is_endpoint(source: object) -> bool:
    """Whether ``source`` is a KServe endpoint URL (or a comma-separated list of them), not a file."""
    return isinstance(source, str) and any(
        part.strip().lower().startswith(f"{scheme}://") for part in source.split(",") for scheme in SCHEMES)


def parse_endpoints(text: str) -> list[Endpoint]:
    """``scheme://host:port/model[/versions/N]`` (``/v2/models/model`` also), comma-separated."""
    endpoints = []
    for part in (p.strip() for p in text.split(",")):
        url = urlsplit(part)
        scheme = url.scheme.lower()
        path = [p for p in url.path.split("/") if p]
        if path[:2] == ["v2", "models"]:
            path = path[2:]
        version = ""
        if len(path) == 3 and path[1] == "versions" and path[2].isdigit():
            path, version = path[:1], path[2]
        if scheme not in SCHEMES or not url.hostname or len(path) != 1 or url.query:
            raise RemoteError(f"{part!r} is not a model endpoint",
                              hint="use http://HOST:PORT/MODEL or grpc://HOST:PORT/MODEL[/versions/N], "
                                   "several separated by commas")
        address = f"{url.hostname}:{url.port or SCHEMES[scheme]}"
        endpoints.append(Endpoint(scheme, address, path[0], version))
    return endpoints


class _Client:
    """tritonclient for one endpoint: one gRPC client shared by all threads, one HTTP client per thread."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.grpc = endpoint.scheme == "grpc"
        self._local = threading.local()
        self._made: list[Any] = []
        self._lock = threading.Lock()
        if self.grpc:
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self.module = module

    def client(self):
        if self.grpc and self._made:
            return self._made[0]
        client = getattr(self._local, "client", None)
        if client is None:
            if self.grpc:
                client = self.module.InferenceServerClient(self.endpoint.address)
            else:
                client = self.module.InferenceServerClient(
                    self.endpoint.address, ssl=self.endpoint.scheme == "https", connection_timeout=self.timeout,
                    network_timeout=self.timeout)
            self._local.client = client
            with self._lock:
                self._made.append(client)
        return client

    def call(self, what: str, fn) -> Any:
        try:
            return fn(self.client())
        except Exception as exc:  # noqa: BLE001 - tritonclient, gevent and grpc raise many kinds
            message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
            raise RemoteError(f"{self.endpoint.url}: {what} failed: {message or type(exc).__name__}",
                              hint="is the server running and serving this model? (curl HOST:PORT/v2/health/ready)"
                              ) from None

    def config(self) -> dict:
        e = self.endpoint
        if self.grpc:
            return self.call("reading the model config",
                             lambda c: c.get_model_config(e.model, e.version, as_json=True, client_timeout=self.timeout)
                             ).get("config", {})
        return self.call("reading the model config", lambda c: c.get_model_config(e.model, e.version))

    def metadata(self) -> dict:
        e = self.endpoint
        if self.grpc:
            return self.call("reading the model metadata", lambda c: c.get_model_metadata(
                e.model, e.version, as_json=True, client_timeout=self.timeout))
        return self.call("reading the model metadata", lambda c: c.get_model_metadata(e.model, e.version))

    def infer(self, batch: np.ndarray, input_name: str, datatype: str, outputs: list[str]) -> dict[str, np.ndarray]:
        m = self.module

        def run(client):
            tensor = m.InferInput(input_name, list(batch.shape), datatype)
            if self.grpc:
                tensor.set_data_from_numpy(batch)
                wanted = [m.InferRequestedOutput(o) for o in outputs]
                result = client.infer(self.endpoint.model, [tensor], self.endpoint.version, outputs=wanted,
                                      client_timeout=self.timeout)
            else:
                tensor.set_data_from_numpy(batch, binary_data=True)
                wanted = [m.InferRequestedOutput(o, binary_data=True) for o in outputs]
                result = client.infer(self.endpoint.model, [tensor], self.endpoint.version, outputs=wanted)
            return {o: result.as_numpy(o) for o in outputs}

        return self.call(f"inference on {len(batch)} rows", run)

    def close(self) -> None:
        with self._lock:
            for client in self._made:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a dead connection is not an error
                    pass
            self._made.clear()


def _tensors(rows: list[dict], batched: bool) -> tuple[TensorSpec, ...]:
    def dims(shape: list[int]) -> tuple:
        return tuple("batch" if i == 0 and batched else (d if d >= 0 else f"d{i}") for i, d in enumerate(shape))

    from tritonclient.utils import triton_to_np_dtype

    return tuple(TensorSpec(r["name"], np.dtype(triton_to_np_dtype(r["datatype"])).name,
                            dims(list(map(int, r["shape"])))) for r in rows)


def spec_from_metadata(metadata: dict, batched: bool) -> ModelSpec:
    """A tensor-only spec for a model served without modelport's spec: no preprocessing is known."""
    inputs = _tensors(metadata["inputs"], batched)
    shape = inputs[0].shape
    image = len(shape) == 4 and all(isinstance(d, int) for d in shape[-2:])
    height, width = (shape[-2], shape[-1]) if image else (1, 1)
    return ModelSpec(name=metadata["name"], task="tensors", inputs=inputs,
                     outputs=_tensors(metadata["outputs"], batched),
                     preprocess=Preprocess(height, width, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), source=Source("remote"),
                     extra={"spec_from": "metadata"})


class RemoteRunner(Runner):
    """A model on one or more KServe v2 servers; batches are split into requests spread over them."""

    format_id = "remote"

    def __init__(self, endpoints: list[Endpoint], *, in_flight: int = IN_FLIGHT, timeout: float = 60.0) -> None:
        if not endpoints:
            raise RemoteError("no endpoints given")
        self.endpoints = endpoints
        self.clients = [_Client(e, timeout) for e in endpoints]
        found = [self._describe_model(c) for c in self.clients]
        spec, _, metadata = found[0]
        for (other, _, _), endpoint in zip(found[1:], endpoints[1:]):
            if other != spec:  # the same spec (weights' sha256 included), or the same bare signature
                raise RemoteError(f"{endpoint.url} serves a different model than {endpoints[0].url}",
                                  hint="give endpoints of one model, built from the same artifact")
        # Requests fit every server's max_batch_size.
        super().__init__(spec, None, "remote", chunk=min(b for _, b, _ in found) or DEFAULT_CHUNK)
        self.input_name = metadata["inputs"][0]["name"]
        self.input_datatype = metadata["inputs"][0]["datatype"]
        self.output_names = [o["name"] for o in metadata["outputs"]]  # the server's names, in the spec's order
        if len(metadata["inputs"]) != 1 or len(self.output_names) != len(spec.outputs):
            raise RemoteError(f"{endpoints[0].url}: modelport runs single-input models whose outputs match its spec")
        self.in_flight = max(1, int(in_flight))
        self.sent = [0] * len(endpoints)  # requests answered per endpoint
        self._busy = [0] * len(endpoints)
        self._turn = 0
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(len(endpoints) * self.in_flight, thread_name_prefix="kserve")
        self.settings = {"endpoints": [e.url for e in endpoints], "in_flight": self.in_flight, "chunk": self.chunk}

    @staticmethod
    def _describe_model(client: _Client) -> tuple[ModelSpec, int, dict]:
        """(spec, max_batch_size, metadata): the spec from the config's parameters, else from metadata."""
        metadata = client.metadata()
        try:
            config = client.config()
        except RemoteError as exc:  # a KServe server without Triton's config extension
            log.info("%s; using the model metadata", exc.message)
            config = {}
        max_batch = int(config.get("max_batch_size", 0) or 0)
        text = config.get("parameters", {}).get(PARAM_SPEC, {}).get("string_value")
        if text:
            return ModelSpec.from_json(text, origin=f"{client.endpoint.url} config"), max_batch, metadata
        batched = max_batch > 0 or (not config and metadata["inputs"][0]["shape"][:1] == [-1])
        log.warning("%s serves no modelport spec; inputs must be prepared by the caller", client.endpoint.url)
        return spec_from_metadata(metadata, batched), max_batch or (DEFAULT_CHUNK if batched else 0), metadata

    def describe(self) -> str:
        return f"remote {','.join(e.url for e in self.endpoints)}"

    def embed(self, items, *, prepared: bool = False) -> np.ndarray:
        if not prepared and self.spec.extra.get("spec_from") == "metadata":
            raise ModelportError(f"{self.describe()}: the server holds no modelport spec, so how to preprocess "
                                 "images is unknown", hint="serve a repository built by `modelport triton build`, "
                                                           "or pass prepared inputs with prepared=True")
        return super().embed(items, prepared=prepared)

    # Requests go out as soon as a batch arrives; ``stream`` keeps batches started ahead of the one returned.
    _overlaps = True

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = self._check(batch)
        if len(batch) == 0:
            return super().__call__(batch)  # the base probes with one row (through _infer) for the output shapes
        return self._finished(self._start(batch))

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._finished(self._start(batch))

    def _start(self, batch: np.ndarray) -> list[tuple[int, Future]]:
        size = self.max_batch or self.chunk
        started = []
        for begin in range(0, len(batch), size):
            part = batch[begin : begin + size]
            real = len(part)
            if self.max_batch is not None and real < size:  # a fixed-batch model takes exactly its batch
                part = np.concatenate([part, np.zeros((size - real, *part.shape[1:]), part.dtype)])
            started.append((real, self._pool.submit(self._send, np.ascontiguousarray(part))))
        return started

    def _finished(self, started: list[tuple[int, Future]]) -> dict[str, np.ndarray]:
        parts = [(real, future.result()) for real, future in started]
        return {spec.name: np.concatenate([out[name][:real] for real, out in parts])
                for spec, name in zip(self.spec.outputs, self.output_names)}

    def _abandon(self, started: list[tuple[int, Future]]) -> None:
        for _, future in started:
            future.cancel()

    def _acquire(self, avoid: int | None = None) -> int:
        """The endpoint with the fewest requests in flight (and a free slot), rotating among equals."""
        with self._cond:
            while True:
                n = len(self.endpoints)
                order = [(self._turn + k) % n for k in range(n)]
                free = [i for i in order if self._busy[i] < self.in_flight and (i != avoid or n == 1)]
                if free:
                    chosen = min(free, key=lambda i: self._busy[i])
                    self._busy[chosen] += 1
                    self._turn = (chosen + 1) % n
                    return chosen
                self._cond.wait()

    def _release(self, index: int) -> None:
        with self._cond:
            self._busy[index] -= 1
            self._cond.notify()

    def _send(self, part: np.ndarray) -> dict[str, np.ndarray]:
        index = self._acquire()
        try:
            out = self.clients[index].infer(part, self.input_name, self.input_datatype, self.output_names)
        except RemoteError as first:
            if len(self.endpoints) == 1:
                raise
            log.warning("%s; retrying on another endpoint", first.message)
            self._release(index)
            index = self._acquire(avoid=index)
            out = self.clients[index].infer(part, self.input_name, self.input_datatype, self.output_names)
        finally:
            self._release(index)
        with self._cond:
            self.sent[index] += 1
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for client in self.clients:
            client.close()


def load(source: str, device: str = "cpu", *, in_flight: int = IN_FLIGHT, timeout: float = 60.0) -> RemoteRunner:
    """A RemoteRunner for ``source`` (one URL or several, comma-separated). ``device`` is the server's
    business and is ignored here."""
    from modelport.formats import REMOTE

    REMOTE.require()
    return RemoteRunner(parse_endpoints(source), in_flight=in_flight, timeout=timeout)
