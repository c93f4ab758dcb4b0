"""Self-contained HTML pages (images inline as data URIs): identity selection, timelines, comparison."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from string import Template

from modelport.errors import CorruptFileError

TEMPLATES = Path(__file__).with_name("templates")
RANDOM_WARNING = ('<div class="warn"><b>model_type: random</b> — these embeddings come from an UNTRAINED '
                  'model; the identities below show the pipeline, not who is who.</div>')
DATA_RE = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def _json_for_script(data: object) -> str:
    # "</" inside a script element would end it early.
    return json.dumps(data).replace("</", "<\\/")


def _colour(i: int) -> str:
    return f"hsl({(i * 137) % 360}, 65%, 48%)"


def person_selection(identities: list[dict], images: dict[int, str], *, model: str, model_type: str,
                     summary: str) -> str:
    """One card per identity (animated WebP, appearances, time span); selections export as JSON."""
    cards = []
    for index, ident in enumerate(identities):
        person = ident["person"]
        cards.append(
            f'<div class="card" data-index="{index}" data-person="{person}">'
            f'<img alt="person {person}" src="{images[person]}">'
            f'<div class="meta"><input type="checkbox"> <b>person {person}</b><br>'
            f'{ident["detections"]} detections in {len(ident["tracks"])} track(s)<br>'
            f'{ident["first_seen"]:.1f}s – {ident["last_seen"]:.1f}s</div></div>')
    return _template("person_selection.html").substitute(
        title=html.escape(model), summary=html.escape(summary),
        warning=RANDOM_WARNING if model_type == "random" else "", cards="\n".join(cards),
        data=_json_for_script({"model": model, "model_type": model_type, "identities": identities}))


def timeline_body(data: dict) -> str:
    """The timeline of one report (without page chrome), so that comparisons can reuse it."""
    parts = [f'<p>{html.escape(data["summary"])}</p>']
    if data.get("model_type") == "random":
        parts.append(RANDOM_WARNING)
    for video in data["videos"]:
        span = max(video["duration"], 1e-6)
        parts.append(f'<div class="video"><h2>{html.escape(Path(video["video"]).name)}</h2>')
        for i, row in enumerate(video["rows"]):
            segs = "".join(
                f'<div class="seg" title="{a:.1f}s – {b:.1f}s" style="left:{100 * a / span:.3f}%;'
                f'width:{max(100 * (b - a) / span, 0.4):.3f}%;background:{_colour(i)}"></div>'
                for a, b in row["segments"])
            parts.append(f'<div class="row" data-label="{html.escape(row["label"])}"><img alt="" src="{row["thumb"]}">'
                         f'<span class="label">{html.escape(row["label"])}<br>{row["count"]} det.</span>'
                         f'<div class="bar">{segs}</div></div>')
        parts.append(f'<div class="axis"><span>0 s</span><span>{span / 2:.1f} s</span>'
                     f'<span>{span:.1f} s</span></div></div>')
    return "\n".join(parts)


def timeline(data: dict) -> str:
    body = timeline_body(data) + f'\n<script type="application/json" id="report-data">{_json_for_script(data)}</script>'
    return _template("timeline.html").substitute(title=html.escape(data["title"]), body=body)


def read_report(path: str | Path) -> dict:
    """The data a timeline page embeds, to compare it with another."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: report not found")
    match = DATA_RE.search(path.read_text(errors="replace"))
    if not match:
        raise CorruptFileError(f"{path}: not a `modelport reid report` page (no embedded report data)")
    return json.loads(match.group(1).replace("<\\/", "</"))


def comparison(left: dict, right: dict, agreement: float | None) -> str:
    """Two reports side by side with a summary of each."""
    def row(d: dict) -> str:
        rows = sum(len(v["rows"]) for v in d["videos"])
        return (f'<tr><td>{html.escape(d["title"])}</td><td>{html.escape(d.get("model") or "-")}</td>'
                f'<td>{html.escape(d.get("model_type") or "-")}</td><td>{rows}</td></tr>')

    agree = (f"<p>Agreement of the two identity assignments on shared detections (adjusted Rand index): "
             f"<b>{agreement:.3f}</b></p>" if agreement is not None else "")
    body = (f'<table class="summary"><tr><th>report</th><th>model</th><th>model_type</th><th>rows</th></tr>'
            f'{row(left)}{row(right)}</table>{agree}<div class="columns">'
            f'<div class="side" id="left"><h2>{html.escape(left["title"])}</h2>{timeline_body(left)}</div>'
            f'<div class="side" id="right"><h2>{html.escape(right["title"])}</h2>{timeline_body(right)}</div></div>')
    return _template("timeline.html").substitute(title="Comparison", body=body)
