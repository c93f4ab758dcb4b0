"""What a package is made of, from the artifact and its embedded spec alone: the artifact to ship (never the
PyTorch weights, which ``modelport verify PKG`` cannot open), the reference its golden outputs come from, and
the measurement its README shows when this machine has no benchmark of the weights."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modelport.errors import ExportError
from modelport.formats import EXPORTABLE, Runner, format_of_path, get_format
from modelport.formats.feeds import Feed, feed_rows, first_rows
from modelport.spec import ModelSpec, sha256_file

MEASURE_ROUNDS = 3


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def benchmark_record(spec: ModelSpec) -> dict | None:
    """This machine's latest ``modelport bench`` record of the weights ``spec`` was exported from, or None."""
    from modelport.bench_record import machine_record

    return machine_record(spec.source.sha256)  # None for a damaged cache entry too: measure the artifact instead


def _benchmarked_exports(weights: Path, record: dict | None) -> list[Any]:
    """Exported artifacts of ``weights`` that ``record`` timed and verified, fastest first (largest batch)."""
    from modelport.bench_record import verified_rows
    from modelport.discover import Candidate

    return [Candidate(get_format(r["format"]), Path(r["path"])) for r in verified_rows(record)
            if r.get("path") and not get_format(r["format"]).is_weights and Path(r["path"]).exists()]


def artifact_for_weights(weights: Path, device: str = "cpu") -> Runner:
    """The artifact to package for ``weights``: the fastest verified export this machine's benchmark measured,
    else the first usable export in priority order. Where PyTorch itself was measured fastest, its best export
    is shipped instead (a package must open without PyTorch); ExportError when there is none."""
    from modelport.discover import find_exports, first_usable, load

    runner = load(weights, prefer="fastest", device=device)  # reads (and refuses) a bad checkpoint first
    if not get_format(runner.format).is_weights:
        return runner
    runner.close()
    record = benchmark_record(runner.spec)
    candidates = _benchmarked_exports(weights, record) + find_exports(weights, EXPORTABLE)
    chosen, cand, _ = first_usable(weights, candidates, device, lambda c: c.format.load(c.path, device), _say)
    if chosen is None:
        raise ExportError(f"{weights}: no exported artifact to package (PyTorch weights cannot be re-verified "
                          "on the target without PyTorch)",
                          hint=f"run `modelport export {weights}` first, or package an artifact: "
                               "`modelport package MODEL.onnx --out PKG.tar.gz`")
    _say(f"→ Packaging {cand.path if cand else chosen.path} (PyTorch weights are never packaged)")
    return chosen


def pytorch_reference(spec: ModelSpec, device: str = "cpu") -> Runner | None:
    """The PyTorch model ``spec``'s artifact was exported from, when the weights format can rebuild it: the
    weights file the spec names is here, unchanged (same sha256), and the model zoo builds ``spec.name`` with
    the artifact's task and outputs. None otherwise; the golden outputs are then the artifact's own (a
    self-check). A factory's code is never imported on the word of a file's metadata."""
    from modelport.discover import open_artifact
    from modelport.zoo import get_entry, list_models, spec_for

    file, digest = spec.source.file, spec.source.sha256
    if not file or not digest or not Path(file).is_file() or spec.name not in list_models():
        return None
    entry = get_entry(spec.name)
    outputs = [t.name for t in spec_for(entry, spec.source).outputs]
    if entry.task != spec.task or outputs != [t.name for t in spec.outputs]:
        return None  # the zoo's model of that name is not what this artifact computes (a detector's raw head)
    if sha256_file(file) != digest:
        _say(f"  {file} changed since the export: its golden outputs are the artifact's own")
        return None
    return open_artifact(file, device, arch=spec.name)


def measure_artifact(runner: Runner, inputs: Feed, seconds: float, parity: dict[str, Any] | None = None) -> dict:
    """A benchmark record (docs/benchmark-schema.md) of ``runner`` alone on ``inputs`` (one row, and all of
    them), for a package made where its weights were never benchmarked; nothing is compared with PyTorch here
    (``parity``: what the golden check found). Not saved: ``modelport bench`` stays the one that compares."""
    from modelport.bench_record import header, row, size_mb
    from modelport.timing import interleave

    spec = runner.spec
    batches = sorted({1, feed_rows(inputs)})
    feeds = {b: first_rows(inputs, b) for b in batches}
    for b in batches:  # warm-up: first calls allocate and fill caches
        runner(feeds[b])

    def timed(b: int) -> float:
        start = time.perf_counter()
        runner(feeds[b])
        return time.perf_counter() - start

    latencies = interleave(batches, timed, seconds * len(batches), MEASURE_ROUNDS, key=str)
    runtime = runner.format if spec.precision == "fp32" else f"{runner.format}.{spec.precision}"
    path = runner.path
    rows = [row(runtime, runner.format, b, precision=spec.precision, path=path, size_mb=size_mb(path),
                parity=parity or {}, settings=dict(runner.settings), latencies=latencies[str(b)]) for b in batches]
    model = {"name": spec.name, "task": spec.task, "source": asdict(spec.source), "untrained": spec.is_random,
             "inputs": {t.name: list(t.shape) for t in spec.inputs}, "artifact": path.name if path else None}
    settings = {"batches": batches, "device": runner.device, "seconds_per_batch": seconds, "rounds": MEASURE_ROUNDS,
                "measured": "the packaged artifact alone (no `modelport bench` of its weights on this machine)"}
    record = header("package", model, settings, peak=False)
    record["rows"] = rows
    return record


def check_packable(runner: Runner) -> Path:
    """The artifact file of ``runner``; ExportError for PyTorch weights or a model with no file."""
    if runner.path is None:
        raise ExportError(f"{runner.describe()}: the model has no file to package (random weights?)",
                          hint="export it first (`modelport export`), then package the artifact")
    if format_of_path(runner.path).is_weights:
        raise ExportError(f"{runner.path}: PyTorch weights cannot be packaged (`modelport verify PKG` opens "
                          "exported artifacts only)",
                          hint=f"run `modelport export {runner.path}` and package the exported artifact")
    return runner.path


def golden_parity(result: Any) -> dict[str, Any]:
    """The benchmark-row ``parity`` fields of a golden check against PyTorch (a ``RunnerResult``)."""
    if not result.outputs:
        return {}
    first = result.outputs[0]
    return {"max_abs_diff": first.max_abs, "min_cosine": first.min_cosine,
            "min_centered_cosine": first.min_centered_cosine, "nn_agreement": first.nn_agreement,
            "passed": result.passed, "failures": [f for o in result.outputs for f in o.failures],
            "against": "pytorch (golden outputs)"}


__all__ = ["artifact_for_weights", "benchmark_record", "check_packable", "golden_parity", "measure_artifact",
           "pytorch_reference"]
