"""The ``clip`` family: open_clip MobileCLIPs, two encoders per model, each verified numerically and the pair
by the image ranking of fixed text queries (``modelport.clip``)."""

from __future__ import annotations

from pathlib import Path

from modelport.families.base import BenchRequest, ExportRequest, ExportRow, rows_of

CLIP_PREFIX = "MobileCLIP"  # every open_clip MobileCLIP name starts so (MobileCLIP-S0, MobileCLIP2-S2 ...)


def claims(source: str | None, request: ExportRequest | BenchRequest) -> bool:
    """A MobileCLIP name to export; to benchmark, also an open_clip checkpoint or an encoder artifact."""
    if source is None:
        return False
    if isinstance(request, BenchRequest):
        return is_clip_source(source, request.arch)
    return source.startswith(CLIP_PREFIX) and not Path(source).exists()


def is_clip_source(source: str, arch: str | None = None) -> bool:
    """True when ``source`` means a MobileCLIP: a name, an open_clip checkpoint (``.safetensors``/``.bin``, or
    a weights file named after one, or any weights with ``arch`` a MobileCLIP name) or an encoder artifact."""
    from modelport.clip.verify import encoder_spec, is_checkpoint

    if arch and arch.startswith(CLIP_PREFIX):
        return True
    path = Path(source)
    if not path.exists():
        return source.startswith(CLIP_PREFIX)
    if is_checkpoint(path):
        return path.suffix.lower() in (".safetensors", ".bin") or CLIP_PREFIX.lower() in path.name.lower()
    return encoder_spec(path) is not None


def export(source: str | None, request: ExportRequest) -> list[ExportRow]:
    from modelport.clip.export import export_clip

    assert source is not None
    report = export_clip(source, request.weights, request.formats, out=request.out, opset=request.opset or 17,
                         allow_random=request.allow_random, device=request.device, verify=request.verify)
    rows = []
    for which, results in report.results.items():
        rows += rows_of(results, "clip", report.model.name, part=which)
    for row in rows:  # structure and ranking checks may have removed an artifact after its numeric check
        row.detail = report
    return rows


def benchmark(source: str | None, request: BenchRequest) -> dict:
    """Both encoders in every runtime (``modelport.clip.bench``)."""
    from modelport.clip.bench import DEFAULT_BATCHES, run_clip_benchmark

    assert source is not None
    return run_clip_benchmark(source, weights=request.weights, formats=request.formats,
                              batches=request.batches or DEFAULT_BATCHES, device=request.device,
                              threads=request.threads, seconds=request.seconds, rounds=request.rounds,
                              allow_random=request.allow_random)
