"""The HTTP server: KServe v2 inference protocol (as Triton speaks it over HTTP) plus ``/predict/{model}``.

Every error is JSON ``{"error": message}`` with a 4xx status, which is what tritonclient reads; one bad
request never stops the server. Limits: ``max_body`` bytes per body (after inflating gzip/deflate, 413),
``max_queue`` waiting requests per model version (429), ``timeout_s`` per inference request (504).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from modelport.errors import CorruptFileError
from modelport.preprocess import open_image
from modelport.serve.limits import DEFAULT_MAX_BODY, DEFAULT_TIMEOUT_S, BodyLimit, deadline
from modelport.serve.models import ModelRepository, ServedModel
from modelport.serve.protocol import HEADER_LENGTH, ProtocolError, encode_response, parse_request
from modelport.serve.tasks import image_task
from modelport.version import __version__

log = logging.getLogger("modelport.serve")
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]
MAX_IMAGE_PIXELS = 40_000_000  # an 8K frame is 33 MP; 40 MP decode to 120 MB as RGB


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(repo: str | Path, *, device: str = "cpu", max_body: int = DEFAULT_MAX_BODY,
               threads: int | None = None, max_queue: int | None = None,
               timeout_s: float | None = DEFAULT_TIMEOUT_S, models: ModelRepository | None = None) -> FastAPI:
    """The server app; ``max_queue`` None leaves each model's queue bound to its config's queue policy or
    a few full batches, ``timeout_s`` None lets requests wait forever. ``models``: a repository already
    opened (``serve`` opens it first, so a model that cannot load stops the server before it listens)."""
    models = models or ModelRepository(repo, device, threads, max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await models.load()
        yield
        await models.close()

    app = FastAPI(title="modelport serve", version=__version__, lifespan=lifespan)
    app.state.models = models
    app.add_middleware(BodyLimit, limit=max_body)

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, exc: ProtocolError):
        return _error(exc.status, exc.message)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # nobody reads this answer; without it every dropped upload would log a traceback
        return _error(400, "the client disconnected before sending the whole body")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # A failure inside a runtime fails this request only; the error says what broke.
        log.exception("request to %s failed", request.url.path)
        return _error(500, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        ok = models.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata():
        return {"name": "modelport", "version": __version__, "extensions": EXTENSIONS}

    @app.post("/v2/repository/index")
    async def repository_index():
        rows = []
        for name, model in sorted(models.models.items()):
            if model.ready:
                rows += [{"name": name, "version": str(v), "state": "READY"} for v in sorted(model.versions)]
            else:
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": model.error or ""})
        return rows

    def model_ready(name: str, version: str | None = None):
        model = models.get(name)
        try:
            model.version(version)
        except ProtocolError as exc:
            return _error(exc.status if exc.status == 404 else 400, exc.message)
        return Response(status_code=200)

    app.get("/v2/models/{name}/ready")(model_ready)
    app.get("/v2/models/{name}/versions/{version}/ready")(model_ready)

    def model_stats(name: str | None = None, version: str | None = None):
        chosen = [models.get(name)] if name else list(models.models.values())
        rows = []
        for model in chosen:
            for v, served in sorted(model.versions.items()):
                if version and str(v) != version:
                    continue
                s = served.batcher.stats
                rows.append({"name": model.name, "version": str(v), "inference_count": s.rows,
                             "execution_count": s.executions, "request_count": s.requests,
                             "batch_stats": [{"batch_size": b, "compute_infer": {"count": c, "ns": s.batch_ns[b]}}
                                             for b, c in sorted(s.batch_sizes.items())]})
        return {"model_stats": rows}

    app.get("/v2/models/stats")(model_stats)
    app.get("/v2/models/{name}/stats")(model_stats)
    app.get("/v2/models/{name}/versions/{version}/stats")(model_stats)

    def model_metadata(name: str, version: str | None = None):
        model = _configured(models.get(name))
        if version is not None:
            model.version(version)
        return {"name": name, "versions": [str(v) for v in sorted(model.versions)], "platform": model.platform,
                "inputs": model.tensor_metadata(model.config.input),
                "outputs": model.tensor_metadata(model.config.output)}

    app.get("/v2/models/{name}")(model_metadata)
    app.get("/v2/models/{name}/versions/{version}")(model_metadata)

    def model_config(name: str, version: str | None = None):
        from modelport.triton.config import config_dict

        return config_dict(_configured(models.get(name)).config)

    app.get("/v2/models/{name}/config")(model_config)
    app.get("/v2/models/{name}/versions/{version}/config")(model_config)

    async def infer(name: str, request: Request, version: str | None = None):
        model = _configured(models.get(name))
        model.version(version)  # unknown / unready versions fail before the body is read
        async with deadline(timeout_s):
            body = await _body(request)
            req = parse_request(body, request.headers.get(HEADER_LENGTH), model.input_specs, name)
            del body  # the tensors are copies; the body need not wait in the queue with them
            array = model.check_input(req.inputs)
            served, outputs = await model.infer(array, version)
        payload, headers = encode_response(name, str(served), req, outputs)
        return Response(payload, headers=headers)

    app.post("/v2/models/{name}/infer")(infer)
    app.post("/v2/models/{name}/versions/{version}/infer")(infer)

    @app.post("/predict/{name}")
    async def predict(name: str, request: Request):
        """An uploaded image (multipart field ``image`` or ``file``, or the raw body) -> task JSON."""
        model = _configured(models.get(name))
        served = model.version(None)
        task = image_task(served.spec, name)
        async with deadline(timeout_s):
            data = await _image_bytes(request)
            image = _decode(data)
            batch, context = task.prepare(served.spec, image)
            array = model.check_input({model.config.input[0].name: batch})
            version, outputs = await model.infer(array)
        by_spec = {s.name: outputs[c.name] for s, c in zip(served.spec.outputs, model.config.output)}
        result = task.finish(served.spec, by_spec, context)
        return {"model_name": name, "model_version": str(version), "task": served.spec.task, **result}

    return app


def _configured(model: ServedModel) -> ServedModel:
    if model.config is None:
        raise ProtocolError(f"model {model.name!r} is not ready: {model.error}", 503)
    return model


async def _body(request: Request) -> bytes:
    """The body, without the copy ``request.body()`` keeps for the request's lifetime."""
    return b"".join([chunk async for chunk in request.stream()])


async def _image_bytes(request: Request) -> bytes:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("image") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise ProtocolError("upload the image as a multipart file field named 'image' (or 'file')")
        return await upload.read()
    data = await _body(request)
    if not data:
        raise ProtocolError("no image: send it as multipart field 'image' or as the raw request body")
    return data


def _decode(data: bytes) -> Image.Image:
    _check_pixels(data)
    try:
        return open_image(data, f"the uploaded image ({len(data)} bytes)")
    except CorruptFileError as exc:
        raise ProtocolError(f"could not decode {exc}; send JPEG, PNG, WebP, BMP or another format Pillow "
                            "reads") from None


def _check_pixels(data: bytes) -> None:
    """Refuse an image too big to decode before decoding it: a few kilobytes of PNG can declare a
    gigapixel canvas, and Pillow's own guard only stops at 179 MP (0.5 GB as RGB)."""
    import io

    from modelport.preprocess import _pil_open  # Pillow's Image.open even where Ultralytics wrapped it

    try:
        with _pil_open()(io.BytesIO(data)) as probe:  # reads the header only
            width, height = probe.size
    except Image.DecompressionBombError as exc:
        raise ProtocolError(f"the uploaded image is too big to decode ({exc})", 413) from None
    except Exception:  # noqa: BLE001 - not an image Pillow knows; open_image says so below
        return
    if width * height > MAX_IMAGE_PIXELS:
        raise ProtocolError(f"the uploaded image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels",
                            413)


def serve(repo: str | Path, host: str = "127.0.0.1", port: int = 8000, *, device: str = "cpu",
          max_body: int = DEFAULT_MAX_BODY, threads: int | None = None, log_level: str = "info",
          max_queue: int | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S,
          keep_going: bool = False) -> None:
    """Run the server until interrupted. Like Triton (``--exit-on-error``), a model that cannot be served stops
    it with a typed error before it listens; ``keep_going`` serves the others and marks that one not ready."""
    import uvicorn

    models = ModelRepository(repo, device, threads, max_queue)
    models.open(strict=not keep_going)
    app = create_app(repo, device=device, max_body=max_body, threads=threads, max_queue=max_queue,
                     timeout_s=timeout_s, models=models)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["create_app", "serve"]
