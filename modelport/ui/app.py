"""The dashboard app: confinement to --root, a per-server token for every state-changing request (with the
Origin and Host checked), typed errors as JSON with their hint, and security headers on every response."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware

from modelport import __version__
from modelport.errors import ModelportError
from modelport.ui.history import JobHistory, history_path
from modelport.ui.jobs import JobQueue
from modelport.ui.paths import OutsideRootError
from modelport.ui.stores import ServerStores

TOKEN_HEADER = "X-Modelport-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
APP_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
           "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# Files under the root are served in a sandbox: an HTML file there runs in an opaque origin, so it can neither
# read the dashboard's pages (and its token) nor send a request the dashboard accepts.
FILE_CSP = "sandbox allow-scripts allow-downloads allow-popups"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def allowed_hosts(host: str, port: int) -> set[str]:
    """Host header values the server answers (against DNS rebinding): the address it listens on, and the
    loopback names when it listens on loopback."""
    names = {host} | (set(LOOPBACK) if host in LOOPBACK else set())
    bracketed = {f"[{host}]:{port}"} if ":" in host and not host.startswith("[") else set()  # IPv6
    return {f"{n}:{port}" for n in names} | bracketed


def _deny(status: int, message: str, hint: str = "") -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


class Guard(BaseHTTPMiddleware):
    """Host check on every request; token and Origin check on every state-changing one."""

    def __init__(self, app, *, token: str, hosts: set[str]) -> None:
        super().__init__(app)
        self.token, self.hosts = token, hosts
        self.origins = {f"http://{h}" for h in hosts}

    async def dispatch(self, request: Request, call_next):
        host = request.headers.get("host", "")
        if host not in self.hosts:
            return _deny(400, f"unexpected Host header {host!r}", "open the address modelport ui printed")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("origin")
            if origin is not None and origin not in self.origins:
                return _deny(403, f"cross-origin request from {origin!r} refused")
            if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
                return _deny(403, "cross-site request refused")
            given = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return _deny(403, "missing or wrong dashboard token", "reload the page")
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Content-Security-Policy",
                                    FILE_CSP if request.url.path.startswith("/files/") else APP_CSP)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def create_app(root: str | Path, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
               token: str | None = None, hosts: set[str] | None = None, jobs: JobQueue | None = None,
               stores: Sequence[str] = ()) -> FastAPI:
    """The dashboard for files under ``root`` and the ReID stores at the ``stores`` URLs (postgresql://).
    ``hosts``: accepted Host headers (default: from host and port). The job list is kept in
    ``root/.modelport/ui-jobs.json`` unless ``jobs`` is given."""
    from contextlib import asynccontextmanager

    from modelport.ui.routes import add_routes

    root = Path(root).resolve(strict=True)
    if not root.is_dir():
        raise ModelportError(f"{root}: not a folder", hint="pass --root DIR")
    servers = ServerStores.of(stores)
    queue = jobs or JobQueue(root, workers=workers, history=JobHistory(history_path(root)), env=servers.env())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close()

    app = FastAPI(title="modelport ui", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.root = root
    app.state.token = token or secrets.token_urlsafe(32)
    app.state.jobs = queue
    app.state.stores = servers
    app.add_middleware(Guard, token=app.state.token, hosts=hosts or allowed_hosts(host, port))

    @app.exception_handler(ModelportError)
    async def typed_error(request: Request, exc: ModelportError):
        return _deny(403 if isinstance(exc, OutsideRootError) else 400, exc.message, exc.hint)

    add_routes(app)
    return app
