"""`modelport demo`: an untrained OSNet taken through export, verification and loading in one go, then the ReID
application on a synthetic scene, and fine-tuning on a second (synthetic, foggy) camera's own tracks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from modelport.zoo.calibrate import make_untrained_checkpoint

if TYPE_CHECKING:
    from modelport.reid.tuning import Retrieval


def run_demo(workdir: Path, arch: str, out: Console, err: Console) -> bool:
    from modelport.api import load
    from modelport.export import available_formats, export_all
    from modelport.formats import EXPORTABLE
    from modelport.samples import person_crops
    from modelport.verify import verify

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out.rule(f"modelport demo: {arch}")
    out.print("[bold yellow]This model is UNTRAINED (random weights, BatchNorm calibrated on synthetic crops).[/] "
              "It shows the export and loading machinery; its embeddings would not identify real people.")
    weights = make_untrained_checkpoint(workdir, arch)
    out.print(f"weights: {weights}")
    usable = {f.id for f in available_formats()}
    for fmt in EXPORTABLE:
        if fmt.id not in usable:
            out.print(f"[dim]skipping {fmt.name}: {fmt.unavailable_reason('cpu')}[/]")
    with out.status("exporting and verifying ..."):
        results = export_all(weights)
    from modelport.cli_export import print_export_results

    print_export_results(results)
    written = [r.path for r in results if r.ok]

    with out.status("cross-checking every artifact against PyTorch ..."):
        report = verify(written, reference=weights, count=8)
    table = Table(title="side-by-side check (8 seeded crops)")
    for col in ("artifact", "max abs diff", "min cosine", "centred cosine", "NN agreement", "result"):
        table.add_column(col)
    for res in report.results:
        o = res.outputs[0] if res.outputs else None
        table.add_row(res.label, f"{o.max_abs:.2e}" if o else "-", f"{o.min_cosine:.6f}" if o else "-",
                      f"{o.min_centered_cosine:.6f}" if o else "-", f"{o.nn_agreement:.2f}" if o else "-",
                      "[green]pass[/]" if res.passed else f"[red]{res.summary()}[/]")
    out.print(table)

    runner = load(weights)
    emb = runner.embed(person_crops(5, seed=7))
    out.print(f"loader picked: [bold]{runner.model_type}[/] {runner.path} -> embeddings {emb.shape}")
    reid_ok = run_reid_demo(workdir / "reid", weights, out)
    tuned_ok = run_finetune_demo(workdir / f"camera_{TUNE_CAMERA}", weights, out)
    out.print(f"everything is in {workdir.resolve()}")
    ok = all(r.ok for r in results) and report.passed and reid_ok and tuned_ok
    if not ok:
        err.print("[red]some exports failed; see the tables above[/]")
    return ok


def _export_table(results: list) -> Table:
    table = Table(title="exports (each verified against PyTorch before it is kept)")
    for col in ("format", "result", "seconds", "path / problem"):
        table.add_column(col)
    for r in results:
        table.add_row(r.format, "[green]ok[/]" if r.ok else "[red]failed[/]", f"{r.seconds:.1f}",
                      str(r.path) if r.ok else (r.error or ""))
    return table


def run_reid_demo(folder: Path, weights: Path, out: Console) -> bool:
    """The ReID application on a synthetic scene: detections -> embeddings -> identities -> HTML pages."""
    import warnings

    from modelport.reid.cli import print_cluster
    from modelport.reid.extract import extract, load_model
    from modelport.reid.identify import run_cluster
    from modelport.reid.importer import import_mot
    from modelport.reid.report import write_report
    from modelport.reid.synth import write_demo_data

    out.rule("ReID pipeline on a synthetic street scene")
    db = folder / "detections.db"
    with out.status("rendering the scene (8 people walking, occluding, leaving and coming back) ..."):
        data = write_demo_data(folder / "scene", force=True)
        imported = import_mot(db, data.video, data.detections, ground_truth=data.ground_truth, replace=True)
    out.print(f"scene: {data.video} ({data.frames} frames); {imported.detections} detections in "
              f"{imported.tracks} tracks imported into {db}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the model was announced as untrained above
        runner = load_model(weights)
        with out.status("embedding every detection ..."):
            extracted = extract(db, runner, batch=16)
        out.print(f"embeddings: {extracted.computed} new with {extracted.model.key} "
                  f"({extracted.model.model_type}) at {extracted.crops_per_s:.0f} crops/s")
        with out.status("clustering tracks into identities ..."):
            # Untrained features need standardising and a threshold chosen from the data (docs/testing.md).
            clustered = run_cluster(db, folder / "identities", threshold="auto", standardize=True, force=True)
    print_cluster(clustered, out)
    if clustered.scores:
        out.print("[yellow]Why an untrained model scores this high:[/] the synthetic people differ by far-apart "
                  "clothing colours, which even random filters separate once the features are standardised. "
                  "Real people differ far more subtly: on real footage these weights identify no one.")
    tracks_page = write_report(db, folder / "report" / "timeline_tracks.html", force=True)
    reid_page = write_report(db, folder / "report" / "timeline_reid.html", use_reid=True, force=True)
    out.print(f"pages: {clustered.out / 'person_selection.html'}\n       {tracks_page.path}\n       {reid_page.path}")
    return clustered.identities > 0


# The scene of the benchmark (benchmarks/REID_FINETUNE.md) and finetune's defaults (5 epochs, normalisation layers).
TUNE_CAMERA = "C"
TUNE_SCENE = {"people": 10, "frames": 300, "seed": 0}
TUNE_EPOCHS, TUNE_HOLDOUT = 5, 0.5  # held out by people
WHY_FOG = ("[yellow]What fog does and what fine-tuning learns:[/] on this synthetic scene people differ mainly by "
           "clothing colour, which even random filters separate (hence the model's high scores on camera A). Fog "
           "pulls every colour towards grey, so features made for daylight barely tell them apart. Fine-tuning "
           "the normalisation layers' scale and shift on the camera's own tracks (a track is one person; two "
           "tracks in one frame are two people) re-weights what the network already computes, and the people "
           "it never saw are found better. A camera whose light changes across the frame and over time (camera B) "
           "is not recovered this way on this scene (benchmarks/REID_FINETUNE.md).")


def run_finetune_demo(folder: Path, weights: Path, out: Console) -> bool:
    """The same untrained model on camera C (dense fog): fine-tuned on that camera's own tracks without ground
    truth, exported, verified and re-clustered, with scores on people held out of training before and after."""
    import warnings

    from modelport.reid.cli_tuning import SCORE_MEANING, held_out_title, tuning_table
    from modelport.reid.extract import extract, load_model
    from modelport.reid.finetune import finetune
    from modelport.reid.identify import run_cluster
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data
    from modelport.reid.tuning import export_checkpoint

    cam = TUNE_CAMERA
    out.rule("Fine-tuning for another camera (synthetic)")
    db, db_a = folder / "detections.db", folder / "detections_A.db"
    with out.status(f"rendering the scene through cameras {cam} and A ..."):
        data = write_demo_data(folder / "scene", camera=cam, force=True, **TUNE_SCENE)
        import_mot(db, data.video, data.detections, ground_truth=data.ground_truth, replace=True)
        seen_by_a = write_demo_data(folder / "scene_A", camera="A", force=True, **TUNE_SCENE)  # same walks
        import_mot(db_a, seen_by_a.video, seen_by_a.detections, ground_truth=seen_by_a.ground_truth, replace=True)
    out.print(f"[bold yellow]A synthetic scene[/] ({data.people} people, {data.frames} frames) seen by camera {cam}: "
              f"{data.camera.description}. The model was prepared on clean, camera-A-like crops.")
    tuned = folder / f"{weights.stem}_finetuned_{cam}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the model was announced as untrained above
        with out.status(f"fine-tuning on camera {cam}'s own tracks (no ground truth) ...") as status:
            result = finetune(db, weights, out=tuned, force=True, epochs=TUNE_EPOCHS, holdout=TUNE_HOLDOUT,
                              holdout_by="people",
                              progress=lambda e, s, n, loss: status.update(
                                  f"fine-tuning on camera {cam}'s own tracks (no ground truth): epoch {e + 1}/"
                                  f"{TUNE_EPOCHS}, step {s}/{n}, loss {loss:.3f}"))
        out.print(f"fine-tuned the normalisation layers for {result.epochs} epochs ({result.steps} steps, "
                  f"{result.seconds:.0f} s) on {result.crops} crops of {result.tracks} tracks; {result.pairs} pairs "
                  f"of tracks seen together were the negatives -> {result.path}")
        if result.before and result.after:
            on_a = held_out_on(db_a, weights, result)
            out.print(tuning_table(f"{held_out_title(result)}", result.before, result.after,
                                   (f"untrained, camera {cam}", f"fine-tuned on camera {cam}, camera {cam}"),
                                   reference=("untrained, camera A (same tracks)", on_a)))
            out.print(f"[dim]{SCORE_MEANING}[/]")
            out.print(WHY_FOG)
        with out.status("exporting and verifying the fine-tuned checkpoint ..."):
            exported = export_checkpoint(tuned, "onnx", result.arch)
        out.print(_export_table(exported))
        scores = {}
        for label, model in (("untrained", weights), ("fine-tuned", tuned)):
            with out.status(f"embedding and clustering camera {cam} with the {label} model ..."):
                extract(db, load_model(model), batch=16)
                scores[label] = run_cluster(db, folder / f"identities_{label}", model=str(model), threshold="auto",
                                            standardize=True, webp=False, force=True).scores
    if scores["untrained"] and scores["fine-tuned"]:
        table = Table(title=f"camera {cam} re-clustered, every track (the fine-tuning saw every track but the held-out "
                            "people's, never their identities)")
        for col in ("model", "ARI", "track ARI", "cross-track rank-1", "identities / people"):
            table.add_column(col, justify="right")
        for label, s in scores.items():
            table.add_row(label, f"{s.ari:.3f}", f"{s.track_ari:.3f}", f"{s.rank1:.3f}", f"{s.identities} / {s.people}")
        out.print(table)
    out.print("[yellow]These scores come from a synthetic scene[/] whose people differ by clothing colour; they "
              "show what fine-tuning on a camera's own tracks can recover, not how a model does on real footage.")
    return all(r.ok for r in exported)


def held_out_on(db: Path, weights: Path, result) -> Retrieval:
    """``weights``' scores on the held-out tracks of ``result``'s split, as another camera's database sees them
    (the same scene through camera A: same detections, so the same tracks are held out)."""
    from modelport.reid.tuning import eval_crops, held_out_scores, load_split
    from modelport.zoo import build

    split = load_split(db, class_name="person", camera=None, holdout=TUNE_HOLDOUT, seed=0,
                       by=result.held_out_by)
    built = build(weights)
    return held_out_scores(built.module, split, eval_crops(split, built.spec.preprocess, 32))
