"""A self-contained HTML page of search results: embedded JPEG thumbnails with rank, score and path."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Sequence

from modelport.atomic import atomic_write_text, refuse_existing
from modelport.errors import CorruptFileError
from modelport.preprocess import open_image
from modelport.search.query import Hit

THUMB = 192

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax({thumb}px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; background: #fff; padding: .5rem; border-radius: 6px; box-shadow: 0 1px 3px #0002; }}
img {{ width: 100%; height: auto; display: block; }}
figcaption {{ font-size: .8rem; word-break: break-all; margin-top: .3rem; }}
.score {{ font-weight: 600; }}
</style></head><body>
<h1>{title}</h1>
<p>{count} results, exact cosine similarity{note}</p>
<div class="grid">
{figures}
</div></body></html>
"""


def _thumbnail(path: str) -> str:
    """A base64 JPEG data URI, or an empty string when the file is gone or unreadable."""
    try:
        img = open_image(path)
    except (CorruptFileError, OSError):
        return ""
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


HTML_HINT = "choose another --html, or pass --force to replace it"


def write_html(hits: Sequence[Hit], query: str, path: str | Path, note: str = "", *, force: bool = False) -> Path:
    """Write the results page atomically; an existing file is only replaced with ``force``."""
    path = refuse_existing(path, force, HTML_HINT)  # before the thumbnails are made
    figures = []
    for hit in hits:
        src = _thumbnail(hit.path)
        img = f'<img src="{src}" alt="{html.escape(Path(hit.path).name)}">' if src else "<p>(missing)</p>"
        figures.append(f'<figure data-rank="{hit.rank}">{img}<figcaption><span class="score">#{hit.rank} '
                       f'{hit.score:.4f}</span> {html.escape(hit.path)}</figcaption></figure>')
    page = _PAGE.format(title=html.escape(f"search: {query}"), thumb=THUMB, count=len(hits),
                        note=html.escape(note), figures="\n".join(figures))
    return atomic_write_text(path, page, force=force, hint=HTML_HINT)
