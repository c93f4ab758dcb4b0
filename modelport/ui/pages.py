"""The dashboard's pages: home (what is under the root), a model, a ReID database, the job list."""

from __future__ import annotations

from pathlib import Path

from modelport.ui.listing import Listing, exports_of
from modelport.ui.render import e, exports_table, home_tables, options, page_link, table

NO_JOBS = '<p class="empty">No jobs yet.</p>'


def shell(title: str, body: str, *, token: str, root: Path, jobs_target: str | None = "") -> str:
    """``jobs_target``: None for no job list, "" for every job, a path for that file's jobs."""
    jobs = ""
    if jobs_target is not None:
        jobs = (f'<section aria-labelledby="jobs-h"><h2 id="jobs-h">Jobs</h2><div id="jobs" '
                f'data-target="{e(jobs_target)}">{NO_JOBS}</div></section>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="modelport-token" content="{e(token)}">
<title>{e(title)} — modelport</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body><a class="skip" href="#main">Skip to content</a>
<header><a href="/"><b>modelport</b></a><nav aria-label="main"><a href="/">Files</a> · <a href="/jobs">Jobs</a></nav>
<span class="root">root: {e(str(root))}</span></header>
<main id="main"><h1>{e(title)}</h1>{body}{jobs}</main>
<script src="/static/app.js"></script></body></html>"""


def _error_box() -> str:
    return '<p class="form-error" role="alert"></p>'


def _checks(name: str, values: list[tuple[str, str, bool]]) -> str:
    return "".join(f'<label class="check"><input type="checkbox" name="{e(name)}" data-multi value="{e(v)}"'
                   f'{" checked" if on else ""}> {e(label)}</label>' for v, label, on in values)


def _format_checks(formats: list[tuple[str, str, str | None]], name: str = "formats") -> str:
    """(id, name, why unavailable) per format; usable ones checked, unusable ones disabled."""
    out = []
    for fid, label, reason in formats:
        attrs = " checked" if reason is None else f' disabled title="{e(reason)}"'
        note = f" <small>({e(reason)})</small>" if reason else ""
        out.append(f'<label class="check"><input type="checkbox" name="{name}" data-multi value="{e(fid)}"{attrs}> '
                   f"{e(label)}{note}</label>")
    return "".join(out)


def home(listing: Listing) -> str:
    return f'<div id="listing" data-live>{home_tables(listing)}</div>'


def model(rel: str, listing: Listing, *, detector: bool, formats: list[tuple[str, str, str | None]],
          triton_formats: list[str], pipelines: list[tuple[str, str, str | None]] | None = None) -> str:
    """``pipelines``: a detector's benchmark tracks (id, label, why unavailable), as ``formats``."""
    stem = Path(rel).name.split(".")[0]
    hidden = f'<input type="hidden" name="weights" value="{e(rel)}">'
    package_out = str(Path(rel).parent / "packages" / f"{stem}_edge.tar.gz")
    if detector:
        variant = """<fieldset><legend>Detector</legend>
<label class="check"><input type="checkbox" name="nms"> NMS inside the graph</label>
<label>Confidence threshold <input type="number" name="conf" value="0.25" min="0" max="1" step="0.01"></label>
<label>NMS IoU threshold <input type="number" name="iou" value="0.7" min="0" max="1" step="0.01"></label>
<label>Image size <input type="number" name="imgsz" value="640" min="32" step="32"></label>
<label>Detections kept per image <input type="number" name="topk" value="300" min="1"></label></fieldset>"""
    else:
        variant = """<label>Precision <select name="precision"><option value="fp32" selected>fp32</option>
<option value="fp16">fp16 (ONNX, OpenVINO)</option><option value="int8">int8 (ONNX, OpenVINO)</option></select></label>
<label>Fixed batch <input type="number" name="batch" min="1" placeholder="dynamic"></label>
<label class="check"><input type="checkbox" name="uint8_input"> uint8 input (preprocessing in the graph)</label>"""
    export = f"""<form class="job-form card" data-kind="export" aria-labelledby="export-h">
<h2 id="export-h">Export</h2>{hidden}<fieldset><legend>Formats</legend>{_format_checks(formats)}</fieldset>
{variant}<label class="check"><input type="checkbox" name="force"> replace files that are not modelport exports</label>
<p><button type="submit">Export and verify</button></p>{_error_box()}</form>"""
    bench = f"""<form class="job-form card" data-kind="bench" aria-labelledby="bench-h">
<h2 id="bench-h">Benchmark</h2>{hidden}
<fieldset><legend>Runtimes</legend>{_format_checks(formats, "formats")}</fieldset>
<label>Batch sizes <input type="text" name="batches" value="1,16" inputmode="numeric"></label>
<label>Seconds per batch size <input type="number" name="seconds" value="3" min="0.05" step="0.05"></label>
<p><button type="submit">Run benchmark</button></p>{_error_box()}</form>"""
    triton = f"""<form class="job-form card" data-kind="triton" aria-labelledby="triton-h">
<h2 id="triton-h">Triton repository</h2>{hidden}
<label>Repository folder <input type="text" name="repo" value="model_repository"></label>
<label>Model name <input type="text" name="name" placeholder="{e(stem)}"></label>
<label>Format <select name="format">{options([(f, f) for f in triton_formats], "onnx")}</select></label>
<label>Fixed batch <input type="number" name="batch" min="1" placeholder="dynamic"></label>
<label class="check"><input type="checkbox" name="force"> replace an existing version</label>
<p><button type="submit">Build repository</button></p>{_error_box()}</form>"""
    package = f"""<form class="job-form card" data-kind="package" aria-labelledby="package-h">
<h2 id="package-h">Edge package</h2>{hidden}
<label>Package file <input type="text" name="out" value="{e(package_out)}"></label>
<label>Seconds to measure (when no benchmark)
<input type="number" name="seconds" value="2" min="0.05" step="0.05"></label>
<label class="check"><input type="checkbox" name="force"> replace an existing package</label>
<p><button type="submit">Build package</button></p>{_error_box()}</form>"""
    if detector:
        bench = _detector_bench(hidden, pipelines or [])
    kind = "detector (Ultralytics)" if detector else "embedding model"
    exports = exports_table(exports_of(listing, rel), "Its exports")
    return (f"<p>{e(rel)} — {e(kind)}</p><section id='exports-live' data-live>{exports}</section>"
            f'<div class="grid">{export}{bench}{triton}{package}</div>')


def _detector_bench(hidden: str, pipelines: list[tuple[str, str, str | None]]) -> str:
    return f"""<form class="job-form card" data-kind="bench" aria-labelledby="bench-h">
<h2 id="bench-h">Benchmark</h2>{hidden}<p><small>Ultralytics' own predict against each exported pipeline, on the
same synthetic street scenes; each pipeline's boxes are checked against Ultralytics' first.</small></p>
<fieldset><legend>Pipelines</legend>{_format_checks(pipelines, "tracks")}</fieldset>
<label>Batch sizes <input type="text" name="batches" value="1" placeholder="1 and the model's maximum batch"
inputmode="numeric"></label><p><small>Empty: 1 and the model's maximum batch, as the CLI does (from 128 for yolo11n
to 8 for yolo11x: several GB of memory at 640 px).</small></p>
<label>Image size <input type="number" name="imgsz" value="640" min="32" step="32"></label>
<label>Confidence threshold <input type="number" name="conf" value="0.25" min="0" max="1" step="0.01"></label>
<label>Seconds per batch size <input type="number" name="seconds" value="20" min="0.05" step="0.05"></label>
<p><button type="submit">Run benchmark</button></p>{_error_box()}</form>"""


def database(rel: str, db, model_files: list[str]) -> str:
    hidden = f'<input type="hidden" name="db" value="{e(rel)}">'
    keys = [(m["key"], f'{m["key"]} ({m["model_type"]}, {m["embeddings"]} embeddings)') for m in db.models]
    last = keys[-1][0] if keys else None
    models = table(["model", "type", "dim", "embeddings", "identities"],
                   [[e(m["key"]), e(m["model_type"]), str(m["dim"]), str(m["embeddings"]), str(m["identities"])]
                    for m in db.models], "Models in this database", "no embeddings yet: extract first")
    extract = f"""<form class="job-form card" data-kind="reid_extract" aria-labelledby="extract-h">
<h2 id="extract-h">Extract embeddings</h2>{hidden}
<label>Model <select name="model" id="extract-model" data-live>{options([(m, m) for m in model_files])}</select></label>
<label>Batch <input type="number" name="batch" value="16" min="1"></label>
<label class="check"><input type="checkbox" name="allow_random"> allow random weights</label>
<label class="check"><input type="checkbox" name="set_default"> make it the default model</label>
<p><button type="submit">Extract</button></p>{_error_box()}</form>"""
    cluster = f"""<form class="job-form card" data-kind="reid_cluster" aria-labelledby="cluster-h">
<h2 id="cluster-h">Cluster identities</h2>{hidden}
<label>Model <select name="model" id="cluster-model" data-live>{options(keys)}</select></label>
<label>Threshold (cosine, or auto) <input type="text" name="threshold" value="auto"></label>
<label class="check"><input type="checkbox" name="standardize" checked> standardise features</label>
<label>Output folder <input type="text" name="out" placeholder="next to the database"></label>
<label class="check"><input type="checkbox" name="force"> replace an earlier clustering</label>
<p><button type="submit">Cluster</button></p>{_error_box()}</form>"""
    report = f"""<form class="job-form card" data-kind="reid_report" aria-labelledby="report-h">
<h2 id="report-h">Timeline</h2>{hidden}
<label class="check"><input type="checkbox" name="use_reid" checked> identities by ReID (else tracks)</label>
<label>Model <select name="model" id="report-model" data-live>{options(keys)}</select></label>
<label>Page <input type="text" name="output" placeholder="report/ next to the database"></label>
<label class="check"><input type="checkbox" name="force"> replace an existing page</label>
<p><button type="submit">Write timeline</button></p>{_error_box()}</form>"""
    compare = f"""<form class="job-form card" data-kind="reid_compare" aria-labelledby="compare-h">
<h2 id="compare-h">Compare two models</h2>{hidden}
<label>Left <select name="left" id="compare-left" data-live>{options(keys)}</select></label>
<label>Right <select name="right" id="compare-right" data-live>{options(keys, last)}</select></label>
<label>Page <input type="text" name="output" placeholder="report/ next to the database"></label>
<label class="check"><input type="checkbox" name="force"> replace an existing page</label>
<p><button type="submit">Compare side by side</button></p>{_error_box()}</form>"""
    return (f"<p>{e(rel)}: {db.detections} detections in {db.videos} video(s)</p>"
            f"<section id='models-live' data-live>{models}</section>"
            f'<div class="grid">{extract}{cluster}{report}{compare}</div>')


def not_found(what: str) -> str:
    return f'<p class="error" role="alert">{e(what)}</p><p>{page_link("", "", "Back to the files")}</p>'
