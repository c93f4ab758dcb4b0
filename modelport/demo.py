"""`modelport demo`: an untrained OSNet taken through export, verification and loading in one go."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelport.zoo.calibrate import make_untrained_checkpoint


def run_demo(workdir: Path, arch: str, out: Console, err: Console) -> bool:
    from modelport.discover import load
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
    from modelport.cli import _print_exports

    _print_exports(results, as_json=False)
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
    out.print(f"everything is in {workdir.resolve()}")
    ok = all(r.ok for r in results) and report.passed and reid_ok
    if not ok:
        err.print("[red]some exports failed; see the tables above[/]")
    return ok


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
