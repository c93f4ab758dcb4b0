"""`modelport export|bench MobileCLIP2-S2 [--weights FILE]`: both encoders, every format, with the CLIP checks."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelport.atomic import atomic_write_text
from modelport.bench_record import size_mb
from modelport.cli_table import Col, breakable, fitted_table, left, mb, notes, print_table
from modelport.clip.export import ClipExport, export_clip
from modelport.clip.model import IMAGE_MAX_BATCH, TEXT_MAX_BATCH
from modelport.errors import ExportError, ModelportError


def export_named(name: str, weights: Path | None, formats: str | None, *, out_dir: Path | None, opset: int,
                 allow_random: bool, device: str, verify: bool, as_json: bool, console: Console,
                 unsupported: dict[str, object] | None = None, wide: bool = False) -> bool:
    """Run the export and print it; True when every artifact was written and passed every check."""
    given = [flag for flag, value in (unsupported or {}).items() if value]
    if given:
        raise ExportError(f"{', '.join(given)} not supported for {name}: CLIP encoders are exported in fp32 "
                          f"with a dynamic batch (image up to {IMAGE_MAX_BATCH}, text up to {TEXT_MAX_BATCH})")
    report = export_clip(name, weights, formats, out=out_dir, opset=opset, allow_random=allow_random,
                         device=device, verify=verify)
    print_report(report, as_json, console, wide)
    return report.ok


def print_report(report: ClipExport, as_json: bool, console: Console, wide: bool = False) -> None:
    rows = []
    for which, results in report.results.items():
        for r in results:
            first = r.check.outputs[0] if r.check and r.check.outputs else None
            rows.append({"encoder": which, "format": r.format, "path": str(r.path) if r.path else None, "ok": r.ok,
                         "seconds": round(r.seconds, 2), "error": r.error,
                         "max_abs": first.max_abs if first else None,
                         "min_cosine": first.min_cosine if first else None})
    semantic = report.semantic
    if as_json:
        console.print_json(json.dumps({
            "model": report.model.name, "source": report.model.image_spec.source.kind, "exports": rows,
            "structure": [{"artifact": s.label, "convolutions": s.found, "expected": s.expected, "passed": s.passed}
                          for s in report.structure],
            "semantic": None if semantic is None else {
                "queries": list(semantic.queries), "images": semantic.images, "passed": semantic.passed,
                "results": [{"format": r.label, "identical": r.identical, "queries": r.queries,
                             "top1_agreement": r.top1_agreement} for r in semantic.results]},
            "ok": report.ok}))
        return
    title = (f"{report.model.name} exports (mean {report.model.norm.mean}, std {report.model.norm.std} folded into "
             "the image encoder)")
    print_table(console, export_table(rows, wide=wide, title=title), wide=wide)
    for line in notes((f"{row['encoder']} {row['format']}", row["error"] or "") for row in rows if not row["ok"]):
        console.print(line, markup=False, highlight=False)
    for check in report.structure:
        if not check.passed:
            console.print(f"[red]{check.summary()}[/]")
    if semantic is not None:
        colour = "green" if semantic.passed else "red"
        console.print(f"[{colour}]semantic check ({len(semantic.queries)} queries x {semantic.images} images, "
                      f"vs PyTorch): {semantic.summary()}[/]")


EXPORT_COLUMNS = (left("encoder", "wide"), left("format"), left("status"), Col("max abs"), Col("min cos", "wide"),
                  Col("MB", "wide"), Col("s", "wide"), left("file", "narrow"), left("path", "wide"))


def export_table(rows: list[dict], *, wide: bool = False, title: str | None = None) -> Table:
    """The exports (rows as in ``--json``): format, status, max abs diff and file name (``{stem}_image.onnx``: it
    names the encoder) fit 80 columns; ``wide`` adds the encoder, min cosine, size, seconds and the full path.
    Problems go under the table."""
    kept = [row["path"] if row["ok"] else None for row in rows]  # a failed artifact is not kept
    cells = [[row["encoder"], row["format"], "[green]ok[/]" if row["ok"] else "[red]failed[/]",
              f"{row['max_abs']:.2e}" if row["max_abs"] is not None else "-",
              f"{row['min_cosine']:.6f}" if row["min_cosine"] is not None else "-",
              mb(size_mb(Path(path))) if path else "-", f"{row['seconds']:.1f}", Path(path).name if path else "-",
              path or "-"] for row, path in zip(rows, kept)]
    return fitted_table(EXPORT_COLUMNS, cells, wide=wide, title=title)


def bench_command(source: str, *, weights: Path | None, arch: str | None, formats: str | None,
                  batches: list[int] | None, device: str, threads: int | None, seconds: float, export_here: bool,
                  json_path: Path, plot: Path | None, allow_random: bool, console: Console, status: Console,
                  unsupported: dict[str, object] | None = None, wide: bool = False) -> dict:
    """`modelport bench` for a MobileCLIP: run, write the JSON record (and plot), print the table."""
    from modelport.bench_record import check_record_target
    from modelport.clip.bench import DEFAULT_BATCHES, run_clip_benchmark

    given = [flag for flag, value in (unsupported or {}).items() if value]
    if given:
        raise ModelportError(f"{', '.join(given)} not supported for {source}: CLIP encoders are benchmarked in fp32",
                             hint="leave the option out")
    with status.status("benchmarking ...") as spinner:
        report = run_clip_benchmark(
            source, weights=weights, arch=arch, formats=formats.split(",") if formats else None,
            batches=batches or DEFAULT_BATCHES, device=device, threads=threads, seconds=seconds,
            export_here=export_here, allow_random=allow_random,
            progress=lambda msg: spinner.update(f"benchmarking: {msg}"))
    check_record_target(json_path, report["model"])  # another model's record is never replaced
    atomic_write_text(json_path, json.dumps(report, indent=1), force=True)
    print_bench(report, console, wide)
    console.print(f"record: {json_path}")
    if plot:
        from modelport.bench import write_plot

        # write_plot groups bars by runtime name: name them per encoder.
        named = {**report, "rows": [{**r, "runtime": f"{r['encoder']} {r['runtime']}"} for r in report["rows"]]}
        console.print(f"plot: {write_plot(named, plot)}")
    return report


BENCH_COLUMNS = (left("encoder"), left("runtime"), Col("batch"), left("status"), Col("p50 ms"),
                 Col("p90 ms", "wide"), Col("items/s"), Col("x pytorch"), Col("max abs", "wide"),
                 Col("min cos", "wide"), Col("MB", "wide"), Col("export s", "wide"), Col("load s", "wide"))


def bench_table(report: dict, *, wide: bool = False) -> Table:
    """Both encoders' rows: encoder, runtime, batch, status, p50, items/s and speed-up over PyTorch fit 80
    columns; ``wide`` adds p90, parity, size and export/load times."""
    m = report["machine"]
    title = (f"{report['model']['name']} encoders on {m['cpu']} ({m['physical_cores']} cores"
             f"{', ' + m['gpu'] if m['gpu'] else ''}), items/s = batch / mean latency")
    base = {(r["encoder"], r["batch"]): r["throughput"] for r in report["rows"] if r["runtime"] == "pytorch"}
    rows = []
    for r in report["rows"]:
        lat, par = r["latency_ms"] or {}, r["parity"] or {}
        ratio = r["throughput"] / base[r["encoder"], r["batch"]] if r["throughput"] and base.get(
            (r["encoder"], r["batch"])) else None
        status = "[green]ok[/]" if r["status"] == "ok" else f"[red]{r['status']}[/]"  # the reason: under the table
        num = [f"{v:.1f}" if v is not None else "-" for v in (lat.get("p50"), lat.get("p90"), r["throughput"])]
        rows.append([r["encoder"], breakable(r["runtime"]), str(r["batch"]), status, *num,
                     f"{ratio:.2f}x" if ratio else "-",
                     f"{par['max_abs_diff']:.1e}" if par else "-", f"{par['min_cosine']:.5f}" if par else "-",
                     mb(r["size_mb"]),
                     f"{r['export_s']:.1f}" if r["export_s"] is not None else "-",
                     f"{r['load_s']:.2f}" if r["load_s"] is not None else "-"])
    return fitted_table(BENCH_COLUMNS, rows, wide=wide, title=title)


def print_bench(report: dict, console: Console, wide: bool = False) -> None:
    print_table(console, bench_table(report, wide=wide), wide=wide)
    for line in notes((f"{r['encoder']} {r['runtime']} {r['status']}", r["reason"]) for r in report["rows"]
                      if r["status"] != "ok"):
        console.print(line, markup=False, highlight=False)
    semantic = report.get("semantic")
    if semantic:
        colour = "green" if semantic["passed"] else "red"
        shown = "; ".join(f"{r['runtime']} {r['identical']}/{r['queries']}" for r in semantic["results"])
        console.print(f"[{colour}]image rankings for {len(semantic['queries'])} fixed queries identical to "
                      f"PyTorch's: {shown}[/]")
