"""The dashboard's pages and JSON API. Every job is one entry of ``modelport.ui.actions``; files are served
only from under the root."""

from __future__ import annotations

from pathlib import Path

from fastapi import Body, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from modelport.errors import ModelportError
from modelport.sqlstore import is_url
from modelport.ui import pages, render
from modelport.ui.actions import get_action
from modelport.ui.listing import Listing, scan
from modelport.ui.paths import BadPathError, OutsideRootError, confine, relative
from modelport.ui.static import CSS, JS
from modelport.ui.stores import read_store


def _formats() -> list[tuple[str, str, str | None]]:
    from modelport.formats import EXPORTABLE

    return [(f.id, f.name, f.unavailable_reason("cpu")) for f in EXPORTABLE]


def _listed(items, root: Path, path: str, what: str, hint: str):
    """``(item, relative path, listing)`` for ``path`` if the root's listing has it among ``items(listing)``."""
    rel = relative(root, confine(root, path))
    listing = scan(root)
    item = next((x for x in items(listing) if x.path == rel), None)
    if item is None:
        raise BadPathError(f"{rel}: not {what} under the root", hint=hint)
    return item, rel, listing


def add_routes(app: FastAPI) -> None:
    root: Path = app.state.root
    jobs = app.state.jobs
    stores = app.state.stores

    def listed() -> Listing:
        """The root's files, and the server stores the dashboard was started with."""
        listing = scan(root)
        listing.databases += stores.listing()
        return listing

    def page(title: str, body: str, jobs_target: str | None = "", status: int = 200) -> HTMLResponse:
        return HTMLResponse(pages.shell(title, body, token=app.state.token, root=root, jobs_target=jobs_target),
                            status_code=status)

    def error_page(exc: ModelportError) -> HTMLResponse:
        body = (f'<div class="error" role="alert"><b>{render.e(exc.message)}</b>'
                + (f"<br>hint: {render.e(exc.hint)}" if exc.hint else "")
                + '</div><p><a href="/">Back to the files</a></p>')
        return page("Error", body, None, 403 if isinstance(exc, OutsideRootError) else 400)

    @app.get("/static/app.css")
    def css() -> Response:
        return Response(CSS, media_type="text/css")

    @app.get("/static/app.js")
    def js() -> Response:
        return Response(JS, media_type="text/javascript")

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return page("Files", pages.home(listed()))

    @app.get("/model", response_class=HTMLResponse)
    def model(path: str) -> HTMLResponse:
        from modelport.triton.config import TRITON_FORMATS

        try:
            item, rel, listing = _listed(lambda x: x.weights, root, path, "a weights file",
                                         "pick one from the listing")
        except ModelportError as exc:
            return error_page(exc)
        tracks = None
        if item.detector:
            from modelport.ui.detect_actions import pipelines

            tracks = pipelines()
        body = pages.model(rel, listing, detector=item.detector, formats=_formats(),
                           triton_formats=list(TRITON_FORMATS), pipelines=tracks)
        return page(Path(rel).name, body, rel)

    @app.get("/db", response_class=HTMLResponse)
    def database(path: str) -> HTMLResponse:
        try:
            if is_url(path):  # a server store: only those the dashboard was given (resolve refuses others)
                name, url = stores.resolve(path)
                db, rel, listing = read_store(name, url), name, scan(root)
            else:
                db, rel, listing = _listed(lambda x: x.databases, root, path, "a ReID database",
                                           "a database is a SQLite file with an object_detections table")
        except ModelportError as exc:
            return error_page(exc)
        detectors = {w.path for w in listing.weights if w.detector}
        files = [w.path for w in listing.weights if not w.detector]
        files += [x.path for x in listing.exports if x.weights not in detectors and x.fresh != "unreadable"]
        return page(rel if is_url(rel) else Path(rel).name, pages.database(rel, db, files), rel)

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs_page() -> HTMLResponse:
        return page("Jobs", "<p>The jobs run on this root, newest first, kept across restarts of the dashboard. "
                            "Jobs run one at a time.</p>")

    @app.get("/api/listing")
    def listing_api() -> dict:
        from dataclasses import asdict

        return asdict(listed())

    def job_json(job) -> dict:
        return {**job.to_dict(), "html": render.job_panel(job, root)}

    @app.get("/api/jobs")
    def list_jobs(target: str | None = None) -> list[dict]:
        return [job_json(j) for j in jobs.list(target)]

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str) -> JSONResponse:
        job = jobs.get(job_id)
        if job is None:
            return JSONResponse({"error": f"no job {job_id!r}", "hint": "the dashboard keeps the last 200 jobs"}, 404)
        return JSONResponse(job_json(job))

    @app.post("/api/jobs")
    def submit(body: dict = Body(...)) -> JSONResponse:
        kind, params = body.get("kind"), body.get("params") or {}
        if not isinstance(kind, str) or not isinstance(params, dict):
            return JSONResponse({"error": "expected {\"kind\": ..., \"params\": {...}}", "hint": ""}, 400)
        action = get_action(kind)
        checked = action.check(root, params, stores)
        target = checked[action.target]
        target = target if is_url(target) else relative(root, Path(target))
        job = jobs.submit(kind, action.title, target, checked)
        return JSONResponse(job_json(job), status_code=202)

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> JSONResponse:
        job = jobs.cancel(job_id)
        if job is None:
            return JSONResponse({"error": f"no job {job_id!r}", "hint": ""}, 404)
        return JSONResponse(job_json(job))

    @app.get("/files/{rel:path}")
    def files(rel: str, request: Request, download: bool = False) -> Response:
        path = confine(root, rel)
        if not path.is_file():
            raise BadPathError(f"{rel}: not a file")
        return FileResponse(path, filename=path.name if download else None,
                            content_disposition_type="attachment" if download else "inline")
