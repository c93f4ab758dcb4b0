"""HTML fragments, escaped here in Python: the listing's tables, the forms' choices and each job's panel."""

from __future__ import annotations

import html
import time
from pathlib import Path
from urllib.parse import quote

from modelport.ui.jobs import Job

e = html.escape


def file_url(root: Path, path: str | Path, download: bool = False, stamp: float | None = None) -> str | None:
    """``/files/<root-relative path>`` for a path under the root, else None."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None
    query = "?download=1" if download else (f"?t={int(stamp)}" if stamp else "")
    return f"/files/{quote(rel)}{query}"


def link(root: Path, path: str | Path, label: str | None = None, **kw) -> str:
    url = file_url(root, path, **kw)
    text = e(label or str(path))
    return f'<a href="{e(url)}">{text}</a>' if url else text


def page_link(kind: str, rel: str, label: str | None = None) -> str:
    return f'<a href="/{kind}?path={quote(rel)}">{e(label or rel)}</a>'


def badge(text: str, kind: str) -> str:
    return f'<span class="badge {e(kind)}">{e(text)}</span>'


def table(headers: list[str], rows: list[list[str]], caption: str = "", empty: str = "nothing found") -> str:
    """``rows`` hold cells that are already HTML (escape text before passing it)."""
    if not rows:
        return f'<p class="empty">{e(caption + ": " if caption else "")}{e(empty)}</p>'
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def verify_button(rel: str, label: str) -> str:
    return (f'<form class="job-form inline" data-kind="verify" aria-label="verify {e(label)}">'
            f'<input type="hidden" name="path" value="{e(rel)}">'
            f'<button type="submit">Verify</button><span class="form-error" role="alert"></span></form>')


FRESH = {"fresh": "ok", "stale": "bad", "unknown": "muted", "unreadable": "bad"}
VERIFIED = {"passed": "ok", "failed": "bad", "not checked": "muted"}


def exports_table(exports, caption: str = "Exports") -> str:
    rows = [[e(x.path), e(x.format_name), e(x.precision), e(x.model),
             badge(x.fresh, FRESH.get(x.fresh, "muted")) + (f' <small>{e(x.problem)}</small>' if x.problem else ""),
             badge(x.verified, VERIFIED.get(x.verified, "muted")),
             page_link("model", x.weights) if x.weights else "—", verify_button(x.path, x.path) if x.weights else ""]
            for x in exports]
    return table(["artifact", "format", "precision", "model", "freshness", "verification", "weights", ""], rows,
                 caption)


def home_tables(listing) -> str:
    counts = {}
    for x in listing.exports:
        counts[x.weights] = counts.get(x.weights, 0) + 1
    weights = table(["weights", "kind", "size MB", "exports"],
                    [[page_link("model", w.path), "detector" if w.detector else "embedding", f"{w.size_mb:.2f}",
                      str(counts.get(w.path, 0))] for w in listing.weights], "Weights")
    repos = table(["repository", "models"], [[e(r.path), e(", ".join(r.models))] for r in listing.repositories],
                  "Triton repositories")
    packages = table(["package", "size MB", "verification", ""],
                     [[f'<a href="/files/{quote(p.path)}?download=1">{e(p.path)}</a>', f"{p.size_mb:.2f}",
                       badge(p.verified, VERIFIED.get(p.verified, "muted")), verify_button(p.path, p.path)]
                      for p in listing.packages], "Edge packages")
    dbs = table(["database", "detections", "videos", "models"],
                [[page_link("db", d.path), str(d.detections), str(d.videos),
                  e(", ".join(m["key"] for m in d.models) or d.problem or "none yet")] for d in listing.databases],
                "ReID databases")
    more = '<p class="warn">The root holds more files than are listed.</p>' if listing.truncated else ""
    return more + "".join(f"<section>{s}</section>" for s in
                          (weights, exports_table(listing.exports), repos, packages, dbs))


def options(values: list[tuple[str, str]], selected: str | None = None) -> str:
    return "".join(f'<option value="{e(v)}"{" selected" if v == selected else ""}>{e(label)}</option>'
                   for v, label in values)


# ---- job panels --------------------------------------------------------------------------------------

STATE_BADGE = {"queued": "muted", "running": "run", "done": "ok", "failed": "bad", "cancelled": "muted",
               "interrupted": "bad"}


def job_panel(job: Job, root: Path) -> str:
    head = (f'<h3>{e(job.title)} <small>{e(job.target)}</small> {badge(job.state, STATE_BADGE[job.state])} '
            f'<span class="elapsed">{"ran at least " if job.state == "interrupted" else ""}{job.elapsed:.0f} s</span> '
            f'<small>submitted {when(job.created)}</small></h3>')
    last = next((line for line in reversed(job.log) if line.strip()), "")
    parts = [head]
    if job.active and job.cancel_requested:
        parts.append('<p class="progress" aria-live="polite">cancelling: waiting for the worker to stop ...</p>')
    elif job.active:
        parts.append(f'<p class="progress" aria-live="polite">{e(last or "waiting for the worker ...")}</p>'
                     f'<button type="button" data-cancel="{e(job.id)}">Cancel</button>')
    if job.error:
        parts.append(f'<div class="error" role="alert"><b>{e(job.error.get("message", ""))}</b>'
                     + (f'<br>hint: {e(job.error["hint"])}' if job.error.get("hint") else "") + "</div>")
    if job.result is not None:
        try:
            parts.append(RESULTS.get(job.kind, _generic)(job.result, root, job))
        except (KeyError, TypeError, ValueError, AttributeError):  # a result kept by an older version
            parts.append(_generic(job.result, root, job))
    if job.log:
        parts.append(f'<details{" open" if job.state == "failed" else ""}><summary>log ({len(job.log)} lines)'
                     f'</summary><pre class="log">{e(chr(10).join(list(job.log)[-60:]))}</pre></details>')
    return "".join(parts)


def _generic(result: dict, root: Path, job: Job) -> str:
    return f"<pre>{e(str(result))}</pre>"


def _export(result: dict, root: Path, job: Job) -> str:
    rows = [[e(r["format"]), badge("pass", "ok") if r["ok"] else badge("FAIL", "bad"), e(r["check"] or ""),
             f'{r["seconds"]:.1f}', link(root, r["path"]) if r["ok"] and r["path"] else e(r["error"] or "")]
            for r in result["rows"]]
    guide = "".join(f"<li>{e(line)}</li>" for line in result["guide"])
    return (table(["format", "result", "verification", "seconds", "path / problem"], rows, "Verification")
            + f'<h4>Guide</h4><ul class="guide">{guide}</ul>')


def _fmt(value, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def _bench(result: dict, root: Path, job: Job) -> str:
    if result.get("kind") == "detect":
        return _detect_bench(result, root, job)
    rows = [[e(r["runtime"]), str(r["batch"]), badge(r["status"], "ok" if r["status"] == "ok" else "bad")
             + (f' <small>{e(r["reason"][:80])}</small>' if r["reason"] else ""), _fmt(r["p50_ms"], ".2f"),
             _fmt(r["throughput"]), _fmt(r["min_cosine"], ".6f")] for r in result["rows"]]
    best = result["fastest"]
    pick = (f'<p class="fastest">Fastest verified runtime here: <b>{e(best["runtime"])}</b> at batch {best["batch"]}, '
            f'{best["throughput"]:.0f} img/s ({e(best["path"] or "")}); <code>load(..., prefer="fastest")</code> '
            "will take it.</p>" if best else "<p>No verified runtime was measured.</p>")
    plot = file_url(root, result["plot"], stamp=job.finished)
    img = f'<img class="plot" src="{e(plot)}" alt="throughput of every runtime at every batch size">' if plot else ""
    return (table(["runtime", "batch", "status", "p50 ms", "img/s", "min cosine"], rows, "Benchmark")
            + pick + img + f'<p>Record: {link(root, result["record"])}</p>')


def _status(r: dict) -> str:
    return badge(r["status"], "ok" if r["status"] == "ok" else "bad") + (
        f' <small>{e(r["reason"][:120])}</small>' if r["reason"] else "")


def _detect_bench(result: dict, root: Path, job: Job) -> str:
    rows = [[e(r["runtime"]), e(r["track"]), str(r["batch"]), _status(r), _fmt(r["preprocess_ms"]),
             _fmt(r["inference_ms"]), "in graph" if r["track"].startswith("e2e") else _fmt(r["nms_ms"]),
             _fmt(r["p50_ms"]), _fmt(r["fps"]), _fmt(r["x_ultralytics"], ".2f"),
             "reference" if r["track"] == "ultralytics" else _fmt(r["min_iou"], ".3f")] for r in result["rows"]]
    best = result["fastest"]
    if best is None:
        pick = "<p class=\"fastest\">No pipeline was measured whose boxes matched Ultralytics'.</p>"
    else:
        where = f' ({link(root, best["path"])})' if best["export"] and best["path"] else ""
        speed = f', {best["x_ultralytics"]:.2f}x the faster Ultralytics run' if best["x_ultralytics"] else ""
        pick = (f'<p class="fastest">Fastest pipeline whose boxes matched Ultralytics\' here: <b>{e(best["runtime"])}'
                f'</b>{where} at batch {best["batch"]}, {best["fps"]:.1f} img/s{e(speed)}. '
                + ("Open it with <code>modelport.load(path)</code>; given only the weights, the detector loader "
                   "takes exports in its own order (end-to-end ONNX first)." if best["export"] else
                   "No export beat Ultralytics' own pipeline.") + "</p>")
        if best["parity_failed"]:
            pick += (f'<p class="warn">Boxes did not match Ultralytics\' for {e(", ".join(best["parity_failed"]))}: '
                     "those are left out of the pick (see the status column).</p>")
    untrained = '<p class="warn">Untrained weights: the boxes mean nothing.</p>' if result["untrained"] else ""
    plot = file_url(root, result["plot"], stamp=job.finished)
    img = f'<img class="plot" src="{e(plot)}" alt="images per second of every pipeline at every batch size">' \
        if plot else ""
    return (table(["pipeline", "track", "batch", "status", "pre ms", "infer ms", "NMS ms", "p50 ms", "img/s",
                   "x Ultralytics", "min IoU"], rows, f"Detector benchmark at {result['imgsz']} px")
            + untrained + pick + img + f'<p>Record: {link(root, result["record"])}</p>')


def _triton(result: dict, root: Path, job: Job) -> str:
    rows = [[e(m["name"]), str(m["version"]), e(m["format"]), link(root, m["config"])] for m in result["models"]]
    configs = "".join(f'<details><summary>{e(m["name"])}/config.pbtxt</summary><pre>{e(m["config_text"])}</pre>'
                      "</details>" for m in result["models"])
    return (table(["model", "version", "format", "config"], rows, f"Triton repository {result['repo']}") + configs
            + f"<p>Serve it: <code>modelport serve {e(result['repo'])}</code></p>")


def _package(result: dict, root: Path, job: Job) -> str:
    return (f'<p class="download">Package ({result["size_mb"]:.1f} MB): '
            f'{link(root, result["package"], Path(result["package"]).name + " — download", download=True)}</p>'
            f"<p>On the target: <code>modelport verify {e(Path(result['package']).name)}</code></p>")


def _verify(result: dict, root: Path, job: Job) -> str:
    rows = [[e(o["output"]), _fmt(o["max_abs"], ".2e"), _fmt(o["min_cosine"], ".6f"), _fmt(o["nn_agreement"], ".2f"),
             badge("pass", "ok") if o["passed"] else badge("; ".join(o["failures"]), "bad")] for o in result["outputs"]]
    verdict = badge("pass", "ok") if result["passed"] else badge("FAIL", "bad")
    head = f"<p>{e(result['label'])}: {verdict} {e(result['summary'])}</p>"
    if "boxes" in result:  # a detector: its boxes against Ultralytics' predictions
        return head + table(["reference boxes", "NMS ties", "min IoU", "max score diff", "result"],
                            [[str(result["boxes"]), str(result["ties"]), _fmt(result["min_iou"], ".4f"),
                              _fmt(result["max_score_diff"], ".1e"), verdict]], "Detections vs Ultralytics predict")
    return head + table(["output", "max abs", "min cosine", "NN agreement", "result"], rows, "Verification")


def _extract(result: dict, root: Path, job: Job) -> str:
    return (f"<p>Model <b>{e(result['model'])}</b> ({e(result['model_type'])}, {result['dim']}-d"
            f"{', default model' if result['default'] else ''}): {result['computed']} new embeddings, "
            f"{result['already']} already there, {result['crops_per_s']:.0f} crops/s.</p>")


def _cluster(result: dict, root: Path, job: Job) -> str:
    scores = result["scores"]
    table_html = table(list(scores), [[_fmt(v, ".3f") if isinstance(v, float) else e(str(v))
                                       for v in scores.values()]], "Against ground truth") if scores else ""
    return (f"<p>{result['identities']} identities from {result['tracks']} tracks ({result['detections']} "
            f"detections); model {e(result['model'])} ({e(result['model_type'])}); threshold "
            f"{result['threshold']:.3f} ({e(result['threshold_mode'])}).</p>" + table_html
            + f'<p>{link(root, result["selection"], "Open the person selection page")} · '
            f'{link(root, Path(result["out"]) / "identities.json", "identities.json")}</p>')


def _page(result: dict, root: Path, job: Job) -> str:
    label = "Open the comparison" if job.kind == "reid_compare" else "Open the timeline"
    extra = f" ({result['rows']} rows)" if "rows" in result else ""
    return f'<p>{link(root, result["page"], label)}{e(extra)}</p>'


RESULTS = {"export": _export, "bench": _bench, "triton": _triton, "package": _package, "verify": _verify,
           "reid_extract": _extract, "reid_cluster": _cluster, "reid_report": _page, "reid_compare": _page}


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
