"""`modelport export MobileCLIP2-S2 [--weights FILE]`: both encoders, every format, with the CLIP checks."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelport.clip.export import ClipExport, export_clip
from modelport.clip.model import IMAGE_MAX_BATCH, TEXT_MAX_BATCH
from modelport.errors import ExportError


def export_named(name: str, weights: Path | None, formats: str | None, *, out_dir: Path | None, opset: int,
                 allow_random: bool, device: str, verify: bool, as_json: bool, console: Console,
                 unsupported: dict[str, object] | None = None) -> bool:
    """Run the export and print it; True when every artifact was written and passed every check."""
    given = [flag for flag, value in (unsupported or {}).items() if value]
    if given:
        raise ExportError(f"{', '.join(given)} not supported for {name}: CLIP encoders are exported in fp32 "
                          f"with a dynamic batch (image up to {IMAGE_MAX_BATCH}, text up to {TEXT_MAX_BATCH})")
    report = export_clip(name, weights, formats, out=out_dir, opset=opset, allow_random=allow_random,
                         device=device, verify=verify)
    print_report(report, as_json, console)
    return report.ok


def print_report(report: ClipExport, as_json: bool, console: Console) -> None:
    rows = []
    for which, results in report.results.items():
        for r in results:
            first = r.check.outputs[0] if r.check and r.check.outputs else None
            rows.append({"encoder": which, "format": r.format, "path": str(r.path) if r.path else None, "ok": r.ok,
                         "seconds": round(r.seconds, 2), "error": r.error,
                         "max_abs": first.max_abs if first else None, "min_cosine": first.min_cosine if first else None})
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
    table = Table(title=f"{report.model.name} exports (mean {report.model.norm.mean}, std {report.model.norm.std} "
                        "folded into the image encoder)")
    for col in ("encoder", "format", "status", "max abs diff", "min cosine", "seconds", "path / problem"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["encoder"], row["format"], "[green]ok[/]" if row["ok"] else "[red]failed[/]",
                      f"{row['max_abs']:.2e}" if row["max_abs"] is not None else "-",
                      f"{row['min_cosine']:.6f}" if row["min_cosine"] is not None else "-",
                      f"{row['seconds']:.1f}", row["path"] if row["ok"] else (row["error"] or ""))
    console.print(table)
    for check in report.structure:
        if not check.passed:
            console.print(f"[red]{check.summary()}[/]")
    if semantic is not None:
        colour = "green" if semantic.passed else "red"
        console.print(f"[{colour}]semantic check ({len(semantic.queries)} queries x {semantic.images} images, "
                      f"vs PyTorch): {semantic.summary()}[/]")
