"""The ``reid`` family: torchreid-zoo embedders from a weights file or a zoo name; it claims whatever the more
specific families leave, so an unreadable file gets the zoo's own error message."""

from __future__ import annotations

from pathlib import Path

from modelport.families.base import BenchRequest, ExportRequest, ExportRow, rows_of


def claims(source: str | None, request: ExportRequest | BenchRequest) -> bool:
    return source is not None


def export(source: str | None, request: ExportRequest) -> list[ExportRow]:
    from modelport.export import export_all
    from modelport.zoo import list_models

    path: str | None = source
    arch = request.arch
    if source is not None and not Path(source).exists() and source in list_models():
        path, arch = None, arch or source  # a zoo name stands for an untrained model (--allow-random)
    results = export_all(path, request.formats, arch=arch, out=request.out, batch=request.batch,
                         opset=request.opset or 17, simplify=request.simplify, allow_random=request.allow_random,
                         device=request.device, verify=request.verify, precision=request.precision,
                         calib=request.calib, int8=request.int8, uint8_input=request.uint8_input,
                         force=request.force)
    rows = rows_of(results, "reid", Path(source).name if source else "model")
    if request.precision == "int8":
        for row in rows:
            row.note = _int8_note(row)
    return rows


def _int8_note(row: ExportRow) -> str:
    """What an INT8 artifact kept in fp32 (its spec records the search), for the exports table."""
    from modelport.formats import get_format

    if not row.ok or row.path is None:
        return ""
    record = get_format(row.format).read_spec(row.path).extra.get("int8", {})
    nodes = record.get("fp32_nodes") or []
    return f"{len(nodes)} node(s) kept in fp32: {', '.join(nodes[:6])}{' ...' if len(nodes) > 6 else ''}" \
        if nodes else "fully INT8"


def benchmark(source: str | None, request: BenchRequest) -> dict:
    from modelport.bench import run_benchmark

    assert source is not None
    return run_benchmark(source, formats=request.formats, batches=request.batches or (1, 16, 64),
                         device=request.device, threads=request.threads, seconds=request.seconds,
                         rounds=request.rounds, half=request.precision == "fp16", int8=request.precision == "int8",
                         calib=request.calib, allow_random=request.allow_random, arch=request.arch)
