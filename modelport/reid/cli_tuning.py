"""`modelport reid adapt` and `reid finetune`: write a new checkpoint from the database's own crops, export and
verify it, and show the held-out scores before and after."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from modelport.reid.cli import CONFIG, out, reid_app
from modelport.reid.config import load_config, setting
from modelport.reid.tuning import Retrieval

EXPORT_HELP = "Formats to export and verify the new checkpoint in (comma-separated; 'none' skips)."
HOLDOUT_BY_HELP = ("'people' (default: all their tracks) or 'tracks' (some tracks; the rest may be learnt from, "
                   "unlabelled, which can flatter the scores).")
TRAIN_HELP = ("'norm' (default: only the normalisation layers' scale and shift, robust on a few tracks) or 'all' "
              "(every weight; for many tracks).")
SCORES = {"cross-track rank-1": "rank1", "mAP": "mAP", "ARI": "ari"}


def tuning_table(title: str, before: Retrieval, after: Retrieval, labels: tuple[str, str] = ("before", "after"),
                 reference: tuple[str, Retrieval] | None = None) -> Table:
    """Before/after held-out scores, one row each, after an optional ``reference`` row (label, scores)."""
    table = Table(title=title)
    table.add_column("")
    for col in SCORES:
        table.add_column(col, justify="right")
    rows = [reference] if reference else []
    for label, scores in [*rows, *zip(labels, (before, after))]:
        table.add_row(label, *(f"{getattr(scores, f):.3f}" if getattr(scores, f) is not None else "-"
                               for f in SCORES.values()))
    return table


SCORE_MEANING = ("Held-out tracks are never trained or adapted on (the title says whose they are); only the "
                 "scoring knows their identities. Cross-track rank-1: share of their crops whose most similar crop "
                 "of another track is the same person; mAP: how high that person's crops in other tracks rank, on "
                 "average; ARI: agreement of the tracks clustered (threshold auto) with the true people (1 = "
                 "identical, 0 = chance).")


def held_out_title(result) -> str:
    what = ("tracks never trained on (their people's other tracks were, unlabelled)" if result.held_out_by == "tracks"
            else "people never trained on")
    return (f"held-out {what}: {result.held_out_tracks} tracks of {result.held_out_people} people, "
            f"{result.after.queries} query crops")


def export_results(path: Path, formats: str | None, arch: str | None = None) -> list[dict[str, Any]]:
    """Export and verify ``path`` in ``formats`` ('none' or empty: nothing); one summary row per format."""
    from modelport.reid.tuning import export_checkpoint

    if not formats or formats == "none":
        return []
    rows = []
    for r in export_checkpoint(path, formats, arch):
        rows.append({"format": r.format, "ok": r.ok, "path": str(r.path) if r.path else None,
                     "verified": r.check.passed if r.check is not None else None,
                     "detail": r.error or (r.check.summary() if r.check is not None else "")})
    return rows


def print_exports(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="the new checkpoint, exported and verified against PyTorch")
    for col in ("format", "result", "path / problem"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["format"], "[green]verified[/]" if row["ok"] else "[red]failed[/]",
                      row["path"] if row["ok"] else row["detail"])
    console.print(table)


def _finish(summary: dict[str, Any], result, exports: str | None, as_json: bool, headline: str) -> None:
    summary["exports"] = export_results(result.path, exports, result.arch)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(headline)
        if result.before and result.after:
            out.print(tuning_table(held_out_title(result), result.before, result.after))
            out.print(f"[dim]{SCORE_MEANING}[/]")
        else:
            out.print("no ground truth in the database: before/after not measured")
        if summary["exports"]:
            print_exports(summary["exports"], out)
    if not all(row["ok"] for row in summary["exports"]):
        raise typer.Exit(1)


def _scores(result) -> dict[str, Any]:
    return {"before": asdict(result.before) if result.before else None,
            "after": asdict(result.after) if result.after else None}


@reid_app.command("adapt")
def adapt_cmd(db: Optional[str] = typer.Option(None, "--db"),
              model: Optional[str] = typer.Option(None, "--model", help="Weights file (a zoo checkpoint) to adapt."),
              camera: Optional[str] = typer.Option(None, "--camera", help="Adapt to this camera's detections only."),
              out_path: Optional[Path] = typer.Option(None, "--out", help="Checkpoint to write."),
              crops: Optional[int] = typer.Option(None, "--crops", help="At most this many crops."),
              holdout: Optional[float] = typer.Option(None, "--holdout", help="Share of people held out to measure."),
              holdout_by: Optional[str] = typer.Option(None, "--holdout-by", help=HOLDOUT_BY_HELP),
              exports: Optional[str] = typer.Option(None, "--export", help=EXPORT_HELP),
              class_name: Optional[str] = typer.Option(None, "--class"),
              force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
              as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
              config: Optional[Path] = CONFIG) -> None:
    """AdaBN: re-estimate BatchNorm statistics on the database's own crops (no labels); write a new checkpoint."""
    from modelport.reid.adapt import adapt

    cfg = load_config(config)
    weights = setting(cfg, "", "model", model)
    if not weights:
        raise typer.BadParameter("--model is required (or `model:` in the config)")
    result = adapt(setting(cfg, "", "db", db), weights, out=setting(cfg, "adapt", "out", out_path),
                   camera=setting(cfg, "adapt", "camera", camera), crops=setting(cfg, "adapt", "crops", crops),
                   holdout=setting(cfg, "adapt", "holdout", holdout),
                   holdout_by=setting(cfg, "adapt", "holdout_by", holdout_by),
                   class_name=setting(cfg, "", "class_name", class_name), force=force)
    summary = {"out": str(result.path), "arch": result.arch, "source": str(result.source),
               "source_sha256": result.source_sha256,
               "crops": result.crops, "tracks": result.tracks, "camera": result.camera,
               "held_out_people": result.held_out_people, "held_out_by": result.held_out_by,
               "held_out_tracks": result.held_out_tracks, "seconds": round(result.seconds, 2), **_scores(result)}
    _finish(summary, result, setting(cfg, "adapt", "export", exports), as_json,
            f"adapted {result.source} on {result.crops} crops from {result.tracks} tracks"
            f"{f' of camera {result.camera}' if result.camera else ''} -> {result.path}")


@reid_app.command("finetune")
def finetune_cmd(db: Optional[str] = typer.Option(None, "--db"),
                 model: Optional[str] = typer.Option(None, "--model", help="Weights file (a zoo checkpoint) to train."),
                 epochs: Optional[int] = typer.Option(None, "--epochs"),
                 camera: Optional[str] = typer.Option(None, "--camera", help="Train on this camera's tracks only."),
                 out_path: Optional[Path] = typer.Option(None, "--out", help="Checkpoint to write."),
                 crops: Optional[int] = typer.Option(None, "--crops", help="At most this many crops."),
                 tracks_per_batch: Optional[int] = typer.Option(None, "--tracks-per-batch"),
                 crops_per_track: Optional[int] = typer.Option(None, "--crops-per-track"),
                 lr: Optional[float] = typer.Option(None, "--lr"),
                 train: Optional[str] = typer.Option(None, "--train", help=TRAIN_HELP),
                 holdout: Optional[float] = typer.Option(None, "--holdout", help="Share held out to measure."),
                 holdout_by: Optional[str] = typer.Option(None, "--holdout-by", help=HOLDOUT_BY_HELP),
                 seed: Optional[int] = typer.Option(None, "--seed"),
                 device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
                 exports: Optional[str] = typer.Option(None, "--export", help=EXPORT_HELP),
                 class_name: Optional[str] = typer.Option(None, "--class"),
                 force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
                 as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
                 config: Optional[Path] = CONFIG) -> None:
    """Train on the database's tracks as pseudo-identities (co-occurring tracks as negatives; no ground truth
    used); resumes an interrupted run; writes a new checkpoint."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from modelport.reid.cli import err
    from modelport.reid.finetune import finetune

    cfg = load_config(config)
    weights = setting(cfg, "", "model", model)
    if not weights:
        raise typer.BadParameter("--model is required (or `model:` in the config)")
    total_epochs = setting(cfg, "finetune", "epochs", epochs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=as_json) as bar:
        task = bar.add_task("fine-tuning", total=None)

        def progress(epoch: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, completed=epoch * steps + step, total=total_epochs * steps,
                       description=f"fine-tuning: epoch {epoch + 1}/{total_epochs}, loss {loss:.4f}")

        result = finetune(setting(cfg, "", "db", db), weights, out=setting(cfg, "finetune", "out", out_path),
                          epochs=total_epochs, camera=setting(cfg, "finetune", "camera", camera),
                          class_name=setting(cfg, "", "class_name", class_name),
                          tracks_per_batch=setting(cfg, "finetune", "tracks_per_batch", tracks_per_batch),
                          crops_per_track=setting(cfg, "finetune", "crops_per_track", crops_per_track),
                          crops=setting(cfg, "finetune", "crops", crops), lr=setting(cfg, "finetune", "lr", lr),
                          margin=setting(cfg, "finetune", "margin"),
                          holdout=setting(cfg, "finetune", "holdout", holdout),
                          holdout_by=setting(cfg, "finetune", "holdout_by", holdout_by),
                          train=setting(cfg, "finetune", "train", train),
                          device=setting(cfg, "", "device", device), seed=setting(cfg, "finetune", "seed", seed),
                          force=force, progress=progress)
    summary = {"out": str(result.path), "arch": result.arch, "source": str(result.source),
               "source_sha256": result.source_sha256,
               "epochs": result.epochs, "steps": result.steps, "resumed_from": result.resumed_from,
               "crops": result.crops, "tracks": result.tracks, "co_occurring_pairs": result.pairs,
               "camera": result.camera, "device": result.device, "held_out_people": result.held_out_people,
               "held_out_by": result.held_out_by, "held_out_tracks": result.held_out_tracks,
               "train": result.train, "lr": result.lr, "losses": [round(v, 5) for v in result.losses],
               "seconds": round(result.seconds, 2), **_scores(result)}
    resumed = f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""
    _finish(summary, result, setting(cfg, "finetune", "export", exports), as_json,
            f"fine-tuned {result.source} ({result.train}, lr {result.lr:g}) for {result.epochs} epochs "
            f"({result.steps} steps{resumed}) on "
            f"{result.crops} crops of {result.tracks} tracks ({result.pairs} co-occurring pairs as negatives)"
            f"{f' of camera {result.camera}' if result.camera else ''} on {result.device} -> {result.path}")
