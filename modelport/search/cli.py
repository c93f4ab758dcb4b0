"""`modelport search index|query`: thin commands over modelport.search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

search_app = typer.Typer(help="Text-to-image and image-to-image search with CLIP encoders.")
out = Console()
err = Console(stderr=True)
DB_FORM = "a SQLite file, or a PostgreSQL database with pgvector: postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"


@search_app.command("index")
def index_cmd(
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    model: str = typer.Option(..., "--model", help="An exported *_image (or *_text) artifact, a served one's URL "
                              "(http://HOST:8000/NAME_image; its *_text partner on the same server), or a "
                              "MobileCLIP name."),
    db: str = typer.Option("index.db", "--db", help=f"The index to create or extend: {DB_FORM}."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint, when --model is a name."),
    allow_random: bool = typer.Option(False, "--allow-random", help="Allow an untrained model (with a name)."),
    batch: int = typer.Option(32, "--batch", help="Images per inference call."),
    device: str = typer.Option("cpu", "--device"),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
) -> None:
    """Embed every new or changed image under FOLDER into the index (resumable)."""
    from modelport.search import index_folder, open_encoders
    from modelport.search.index import IMAGE_SUFFIXES, list_images
    from modelport.sqlstore import describe

    if not list_images(folder):  # before the model: a wrong folder is the cheaper mistake to report
        from modelport.errors import WeightsNotFoundError

        raise WeightsNotFoundError(f"{folder}: no images in it", hint=f"give a folder holding images "
                                   f"({', '.join(IMAGE_SUFFIXES)}), searched recursively")
    encoders = open_encoders(model, weights=weights, allow_random=allow_random, device=device)
    columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("index", total=None)
        stats = index_folder(folder, encoders, db, batch=batch,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    where = describe(db)  # a URL without its password
    row = {"db": where, "found": stats.found, "skipped": stats.skipped, "added": stats.added,
           "failed": stats.failed, "seconds": round(stats.seconds, 2),
           "images_per_second": round(stats.images_per_second, 1)}
    if as_json:
        out.print_json(json.dumps(row))
    else:
        out.print(f"{where}: {stats.added} added, {stats.skipped} already indexed, {stats.failed} unreadable "
                  f"of {stats.found} images in {stats.seconds:.1f} s ({stats.images_per_second:.1f} img/s)")


@search_app.command("query")
def query_cmd(
    text: Optional[str] = typer.Argument(None, help="Text query, e.g. \"red car\"."),
    image: Optional[Path] = typer.Option(None, "--image", help="Find images similar to this one instead."),
    db: str = typer.Option("index.db", "--db", help=f"The index to search: {DB_FORM}."),
    top: int = typer.Option(10, "--top", help="How many results."),
    model: Optional[str] = typer.Option(None, "--model", help="Encoder to use (default: the index's own)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint, when --model is a name."),
    allow_random: bool = typer.Option(False, "--allow-random"),
    device: str = typer.Option("cpu", "--device"),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Also write a page of thumbnails."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --html file."),
) -> None:
    """Exact cosine search: the indexed images closest to a text or an image."""
    from modelport.atomic import refuse_existing
    from modelport.search import open_encoders, search
    from modelport.search.html import HTML_HINT, write_html
    from modelport.sqlstore import describe

    if html_path:
        refuse_existing(html_path, force, HTML_HINT)  # before the encoders load and the search runs
    encoders = open_encoders(model, weights=weights, allow_random=allow_random, device=device) if model else None
    hits = search(db, text=text, image=image, top=top, encoders=encoders)
    label = text if text is not None else f"image {image}"
    if html_path:
        write_html(hits, label, html_path, force=force)
    if as_json:
        out.print_json(json.dumps({"query": label, "db": describe(db),
                                   "results": [{"rank": h.rank, "path": h.path, "score": h.score} for h in hits]}))
        return
    table = Table(title=f"{label} ({describe(db)})")
    for col in ("rank", "score", "path"):
        table.add_column(col)
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.4f}", h.path)
    out.print(table)
    if html_path:
        out.print(f"html: {html_path}")
