"""The one benchmark record every family writes (docs/benchmark-schema.md): one header and one row layout, so
reid, detector, CLIP, factory and remote records are read by the same code; a family adds its own row fields
beside the common ones, never instead of them."""

from __future__ import annotations

import time
from typing import Any, Sequence

from modelport.machine import machine_info, machine_key, peak_gflops
from modelport.timing import percentiles
from modelport.version import __version__

# 2: every family writes this one layout (in 1, detector records had their own: ``kind``, ``fps``, a source string).
SCHEMA = 2
STATUSES = ("ok", "parity-failed", "export-failed", "unavailable")


def header(family: str, model: dict[str, Any], settings: dict[str, Any], *, gpu: bool = True,
           peak: bool = True) -> dict[str, Any]:
    """The record's common fields. ``gpu=False``/``peak=False`` where this machine's GPU and matrix-product
    peak play no part (a served model timed from a client), which also keeps torch out of the client."""
    info = machine_info(gpu=gpu)
    return {"schema": SCHEMA, "family": family, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "modelport": __version__, "machine": info, "machine_key": machine_key(info),
            "peak_gflops": peak_gflops() if peak else None, "model": model, "settings": settings}


def row(runtime: str, fmt: str, batch: int, *, precision: str = "fp32", status: str = "ok", reason: str = "",
        path: object = None, size_mb: float | None = None, export_s: float | None = None,
        load_s: float | None = None, parity: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
        latencies: Sequence[float] | None = None, gflop: float | None = None, **extra: Any) -> dict[str, Any]:
    """One runtime at one batch size. ``latencies``: seconds per call (None or empty: not timed);
    throughput is ``batch`` over the mean latency, in items (images, captions) per second."""
    if status not in STATUSES:
        raise ValueError(f"row status {status!r}: expected one of {', '.join(STATUSES)}")
    out: dict[str, Any] = {"runtime": runtime, "format": fmt, "precision": precision, "batch": batch,
                           "status": status, "reason": reason, "path": None if path is None else str(path),
                           "size_mb": size_mb, "export_s": export_s, "load_s": load_s, "parity": parity or {},
                           "settings": settings or {}, "latency_ms": None, "throughput": None,
                           "gflops_achieved": None}
    if latencies:
        stats = percentiles(latencies)
        out["latency_ms"] = stats
        out["throughput"] = batch / (stats["mean"] / 1000.0)
        out["gflops_achieved"] = out["throughput"] * gflop if gflop else None
    out.update(extra)
    return out
