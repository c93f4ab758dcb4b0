"""`modelport reid ...`: thin commands over the ReID modules; every option can come from --config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.reid.config import load_config, setting

reid_app = typer.Typer(no_args_is_help=True, help="ReID application: detections DB, embeddings, identities, reports.")
out = Console()
err = Console(stderr=True)
CONFIG = typer.Option(None, "--config", help="YAML config (see `modelport reid config-keys`); flags override it.")
MODEL_HELP = ("the weights file or export given to extract (matched by sha256), or a model key or name "
              "(default: the database's default model).")


@reid_app.command("config-keys")
def config_keys_cmd() -> None:
    """Print every configuration key with its default and meaning."""
    from modelport.reid.config import describe

    out.print(describe(), highlight=False, markup=False, soft_wrap=True)


@reid_app.command("demo-data")
def demo_data_cmd(out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for video.mp4, det.txt, gt.txt."),
                  db: Optional[str] = typer.Option(None, "--db", help="Also import into this database."),
                  people: Optional[int] = typer.Option(None, "--people"),
                  frames: Optional[int] = typer.Option(None, "--frames"),
                  seed: Optional[int] = typer.Option(None, "--seed"),
                  camera: Optional[str] = typer.Option(None, "--camera",
                                                       help="Synthetic camera: A (clean daylight), B (dusk: "
                                                            "uneven, flickering, drifting light; noisy, blocky) or "
                                                            "C (dense fog: a fifth of the contrast)."),
                  force: bool = typer.Option(False, "--force", help="Replace existing demo files."),
                  config: Optional[Path] = CONFIG) -> None:
    """Write a synthetic street scene with MOT detections and ground-truth identities."""
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    cfg = load_config(config)
    folder = Path(setting(cfg, "demo_data", "out", out_dir))
    data = write_demo_data(folder, people=setting(cfg, "demo_data", "people", people),
                           frames=setting(cfg, "demo_data", "frames", frames),
                           seed=setting(cfg, "demo_data", "seed", seed),
                           camera=setting(cfg, "demo_data", "camera", camera), force=force)
    out.print(f"[bold yellow]synthetic scene[/] seen by camera {data.camera.name}: {data.camera.description}")
    out.print(f"video: {data.video} ({data.frames} frames, {data.people} people)\n"
              f"detections: {data.detections} ({data.detection_count} in {data.track_count} tracks)\n"
              f"ground truth: {data.ground_truth}")
    target = db or (Path(cfg["db"]) if "db" in cfg else None)
    if target:
        result = import_mot(target, data.video, data.detections, ground_truth=data.ground_truth, replace=force)
        out.print(f"imported into {target}: {result.detections} detections, {result.ground_truth} with identities")


@reid_app.command("import")
def import_cmd(video: Optional[Path] = typer.Option(None, "--video", help="Video file or image folder."),
               detections: Optional[Path] = typer.Option(None, "--detections", help="MOTChallenge det.txt."),
               gt: Optional[Path] = typer.Option(None, "--gt", help="MOTChallenge gt.txt (optional)."),
               db: Optional[str] = typer.Option(None, "--db"),
               class_name: Optional[str] = typer.Option(None, "--class", help="Class name to store."),
               fps: Optional[float] = typer.Option(None, "--fps"),
               min_conf: Optional[float] = typer.Option(None, "--min-conf"),
               replace: bool = typer.Option(False, "--replace", help="Re-import a video already in the database."),
               config: Optional[Path] = CONFIG) -> None:
    """Fill the detections database from a video (or image folder) and MOT detections."""
    from modelport.reid.importer import import_mot

    cfg = load_config(config)
    video, detections = setting(cfg, "import", "video", video), setting(cfg, "import", "detections", detections)
    if not video or not detections:
        raise typer.BadParameter("--video and --detections are required (or import.video / import.detections)")
    result = import_mot(setting(cfg, "", "db", db), video, detections, ground_truth=setting(cfg, "import", "gt", gt),
                        class_name=setting(cfg, "", "class_name", class_name), fps=setting(cfg, "import", "fps", fps),
                        min_conf=setting(cfg, "import", "min_conf", min_conf), replace=replace)
    out.print(f"imported {result.detections} detections ({result.tracks} tracks, {result.ground_truth} with "
              f"ground truth) of {result.video} ({result.frames} frames at {result.fps:g} fps)")


@reid_app.command("extract")
def extract_cmd(db: Optional[str] = typer.Option(None, "--db"),
                model: Optional[str] = typer.Option(None, "--model", help="Weights file or exported artifact."),
                batch: Optional[int] = typer.Option(None, "--batch"),
                class_name: Optional[str] = typer.Option(None, "--class"),
                device: Optional[str] = typer.Option(None, "--device"),
                allow_random: Optional[bool] = typer.Option(None, "--allow-random/--no-allow-random"),
                set_default: Optional[bool] = typer.Option(None, "--set-default/--keep-default",
                                                           help="Fill reid_embedding with this model's vectors."),
                engine: str = typer.Option("local", "--engine",
                                           help="local: in this process; ray: decode and embed on Ray Data."),
                address: Optional[str] = typer.Option(None, "--address",
                                                      help="Ray cluster to join (--engine ray; default: start "
                                                           "Ray on this machine)."),
                config: Optional[Path] = CONFIG) -> None:
    """Compute embeddings for every detection lacking one for this model (resumable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from modelport.reid.extract import extract, load_model

    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be local or ray, not {engine!r}")
    if address and engine != "ray":
        raise typer.BadParameter("--address joins a Ray cluster: give it with --engine ray")
    if engine == "ray":
        from modelport.reid.ray_extract import extract_ray, require_ray

        require_ray()  # a missing extra fails before anything is loaded
    cfg = load_config(config)
    model = setting(cfg, "", "model", model)
    if not model:
        raise typer.BadParameter("--model is required (or `model:` in the config)")
    from modelport.reid.store import connect

    db = setting(cfg, "", "db", db)
    connect(db).close()  # a wrong database path fails before the model is loaded
    common = {"batch": setting(cfg, "extract", "batch", batch),
              "class_name": setting(cfg, "", "class_name", class_name),
              "make_default": setting(cfg, "extract", "set_default", set_default)}
    allow_random, device = setting(cfg, "", "allow_random", allow_random), setting(cfg, "", "device", device)
    if engine == "local":
        runner = load_model(model, allow_random=allow_random, device=device)
    with Progress(TextColumn("embedding crops"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as bar:
        task = bar.add_task("extract", total=None)
        shown = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        if engine == "ray":
            result = extract_ray(db, model, address=address, allow_random=allow_random, device=device,
                                 progress=shown, **common)
        else:
            result = extract(db, runner, progress=shown, **common)
    m = result.model
    out.print(f"model {m.key} ({m.model_type}, {m.dim}-d){' (default model)' if result.is_default else ''}: "
              f"{result.computed} new embeddings, {result.already} already there, "
              f"{result.crops_per_s:.0f} crops/s")


@reid_app.command("cluster")
def cluster_cmd(db: Optional[str] = typer.Option(None, "--db"),
                out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder."),
                model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP),
                threshold: Optional[str] = typer.Option(None, "--threshold", help="Cosine similarity or 'auto'."),
                max_persons: Optional[int] = typer.Option(None, "--max-persons"),
                standardize: Optional[bool] = typer.Option(None, "--standardize/--no-standardize"),
                per_track: Optional[int] = typer.Option(None, "--per-track", help="Best crops averaged per track."),
                cooccurrence: Optional[bool] = typer.Option(None, "--cooccurrence/--no-cooccurrence"),
                class_name: Optional[str] = typer.Option(None, "--class"),
                force: bool = typer.Option(False, "--force", help="Replace an existing clustering in --out."),
                as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
                config: Optional[Path] = CONFIG) -> None:
    """Group detections into identities and write identities.json, matrices, WebPs and person_selection.html."""
    from modelport.reid.identify import run_cluster

    cfg = load_config(config)
    thr = setting(cfg, "cluster", "threshold", threshold)
    thr = thr if str(thr) == "auto" else _number(thr)
    report = run_cluster(
        setting(cfg, "", "db", db), setting(cfg, "cluster", "out", out_dir),
        model=setting(cfg, "cluster", "model", model), threshold=thr,
        max_persons=setting(cfg, "cluster", "max_persons", max_persons),
        standardize=setting(cfg, "cluster", "standardize", standardize),
        class_name=setting(cfg, "", "class_name", class_name),
        per_track=setting(cfg, "cluster", "per_track", per_track),
        cooccurrence=setting(cfg, "cluster", "cooccurrence", cooccurrence), force=force)
    summary = cluster_summary(report)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        print_cluster(report)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"--threshold must be a number or 'auto', got {value!r}") from None


def cluster_summary(report) -> dict:
    return {"out": str(report.out), "model": report.model.key, "model_type": report.model.model_type,
            "threshold": round(report.threshold, 4), "threshold_mode": report.threshold_mode,
            "standardized": report.standardized, "detections": report.detections, "tracks": report.tracks,
            "identities": report.identities, "silhouette": report.silhouette,
            "scores": report.scores.to_dict() if report.scores else None, "seconds": round(report.seconds, 2)}


def print_cluster(report, console: Console | None = None) -> None:
    console = console or out
    console.print(f"{report.identities} identities from {report.tracks} tracks ({report.detections} detections); "
                  f"model {report.model.key} ({report.model.model_type}); threshold {report.threshold:.3f} "
                  f"({report.threshold_mode}{', standardised' if report.standardized else ''}) -> {report.out}")
    if report.scores:
        s = report.scores
        table = Table(title="clustering vs ground truth")
        for col in ("ARI", "pairwise precision", "pairwise recall", "track ARI", "cross-track rank-1", "people",
                    "identities"):
            table.add_column(col, justify="right")
        table.add_row(f"{s.ari:.3f}", f"{s.pairwise_precision:.3f}", f"{s.pairwise_recall:.3f}", f"{s.track_ari:.3f}",
                      f"{s.rank1:.3f} ({s.rank1_queries} tracks)", str(s.people), str(s.identities))
        console.print(table)


@reid_app.command("report")
def report_cmd(db: Optional[str] = typer.Option(None, "--db"),
               output: Optional[Path] = typer.Option(None, "--output"),
               use_reid: Optional[bool] = typer.Option(None, "--use-reid/--no-reid"),
               model: Optional[str] = typer.Option(None, "--model",
                                                   help="Whose identities (with --use-reid): " + MODEL_HELP),
               class_name: Optional[str] = typer.Option(None, "--class"),
               title: Optional[str] = typer.Option(None, "--title"),
               force: bool = typer.Option(False, "--force", help="Replace an existing file."),
               config: Optional[Path] = CONFIG) -> None:
    """Write a timeline of who appears when (tracks, or identities with --use-reid)."""
    from modelport.reid.report import write_report

    cfg = load_config(config)
    result = write_report(setting(cfg, "", "db", db), setting(cfg, "report", "output", output),
                          use_reid=setting(cfg, "report", "use_reid", use_reid),
                          model=setting(cfg, "report", "model", model),
                          class_name=setting(cfg, "", "class_name", class_name), title=title, force=force)
    out.print(f"report: {result.path} ({result.rows} rows in {result.videos} video(s))")


@reid_app.command("compare")
def compare_cmd(left: str = typer.Argument(..., help="A report page, or with --db a model (as for --model)."),
                right: str = typer.Argument(..., help="Another report page, or with --db another model."),
                db: Optional[str] = typer.Option(None, "--db", help="Compare two models' identities in this DB."),
                output: Path = typer.Option(Path("report/compare.html"), "--output"),
                class_name: Optional[str] = typer.Option(None, "--class"),
                force: bool = typer.Option(False, "--force"),
                config: Optional[Path] = CONFIG) -> None:
    """Put two reports (e.g. made with two models) side by side; with --db, two models' identities."""
    from modelport.reid.report import compare_reports

    cfg = load_config(config)
    path = compare_reports(left, right, output, force=force, db=db,
                           class_name=setting(cfg, "", "class_name", class_name))
    out.print(f"comparison: {path}")


db_app = typer.Typer(no_args_is_help=True, help="The store itself: copy it between SQLite and PostgreSQL.")
reid_app.add_typer(db_app, name="db")


@db_app.command("copy")
def db_copy_cmd(source: str = typer.Argument(..., help="SQLite file or postgresql:// URL to copy from."),
                destination: str = typer.Argument(..., help="SQLite file (created) or postgresql:// URL "
                                                            "(an existing, empty database)."),
                force: bool = typer.Option(False, "--force", help="Replace the rows a non-empty destination holds."),
                batch: int = typer.Option(2000, "--batch", min=1, help="Rows read and written at a time."),
                skip_table: Optional[List[str]] = typer.Option(None, "--skip-table",
                                                               help="A table of another tool in SOURCE to leave "
                                                                    "out (repeatable); without it such a table "
                                                                    "stops the copy.")) -> None:
    """Copy every table of a store to another database (either engine) in one transaction, verified by
    per-table row counts and checksums."""
    from modelport.reid.db.copy import copy_store

    report = copy_store(source, destination, force=force, batch=batch, skip_tables=skip_table or ())
    table = Table(title="copied and verified", title_justify="left")
    for col, justify in (("table", "left"), ("rows", "right"), ("checksum (both)", "left")):
        table.add_column(col, justify=justify)
    for t in report.tables:
        table.add_row(t.table, str(t.source_rows), t.source_checksum)
    out.print(table, width=80)
    for added in report.added_columns:
        out.print(f"added column {added} to the destination", highlight=False)
    for skipped in report.skipped_tables:
        out.print(f"not copied: table {skipped} (--skip-table)", highlight=False)
    if report.replaced_rows:
        out.print(f"replaced {report.replaced_rows} rows the destination held (--force)", highlight=False)
    rate = report.rows / report.seconds if report.seconds else 0.0
    out.print(f"{report.rows} rows from {report.source} to {report.destination} in {report.seconds:.1f} s "
              f"({rate:.0f} rows/s)", highlight=False, markup=False, soft_wrap=True)


from modelport.reid import cli_tuning  # noqa: E402,F401  (registers `reid adapt` and `reid finetune`)
