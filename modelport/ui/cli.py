"""``modelport ui``: start the dashboard on a local address."""

from __future__ import annotations

from pathlib import Path

import typer


def ui_cmd(root: Path = typer.Option(Path("."), "--root", help="Folder whose files the dashboard lists and writes."),
           host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep it local)."),
           port: int = typer.Option(8080, "--port", help="Port to listen on."),
           workers: int = typer.Option(1, "--workers", help="Jobs run at the same time (heavy: keep 1)."),
           db: list[str] = typer.Option([], "--db", help="A ReID store on a server (postgresql://user@host/dbname), "
                                        "listed beside the SQLite files under --root; repeatable.")) -> None:
    """A local web dashboard: export, verify, benchmark, Triton, packages and ReID, on files under --root."""
    import uvicorn
    from rich.console import Console

    from modelport.errors import WeightsNotFoundError
    from modelport.ui.app import LOOPBACK, create_app

    if not root.is_dir():
        raise WeightsNotFoundError(f"{root}: not a folder", hint="pass --root DIR")
    if workers < 1:
        raise typer.BadParameter("--workers must be at least 1")
    console = Console(stderr=True)
    if host not in LOOPBACK:
        console.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach it and load the page "
                      "can run jobs on files under the root", highlight=False)
    app = create_app(root, host=host, port=port, workers=workers, stores=db)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"modelport ui: http://{shown}:{port}/ (root {root.resolve()}); Ctrl+C stops it", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")
