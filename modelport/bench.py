"""Benchmark every runtime side by side on one machine: interleaved rounds, latency percentiles,
throughput, parity with PyTorch, size, export and load time -> a JSON record (schema: docs/benchmark-schema.md)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from modelport.bench_memory import MemoryPlan, activation_bytes, peak_resident_bytes, plan_memory
from modelport.bench_record import cache_root, fastest_row, header, machine_record, record_path, row, size_mb
from modelport.errors import ModelportError, WeightsNotFoundError
from modelport.formats import BY_ID, Runner, get_format
from modelport.formats.base import example_batch
from modelport.formats.pytorch import PyTorchRunner
from modelport.naming import weights_stem
from modelport.quantize import calibration_batch
from modelport.spec import sha256_file
from modelport.timing import interleave
from modelport.verify import TOLERANCES, compare_output
from modelport.zoo import BuiltModel, build

PARITY_ROWS = 16
Progress = Callable[[str], None]


@dataclass
class Candidate:
    """One runtime to measure: a format at a precision, with the artifact that holds it."""

    id: str
    format: str
    precision: str = "fp32"
    path: Path | None = None
    status: str = "ok"  # ok | parity-failed | export-failed | unavailable
    reason: str = ""
    export_s: float | None = None
    load_s: float | None = None
    size_mb: float | None = None
    parity: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    runner: Runner | None = None


def model_gflops(built: BuiltModel) -> float:
    """GFLOP per image (2 x multiply-adds), counted by PyTorch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from modelport.formats.feeds import feed_tensors

    feed = example_batch(built.spec.with_batch(None), count=1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        built.module(*feed_tensors(feed, built.spec))
    return counter.get_total_flops() / 1e9


def _artifact(built: BuiltModel, weights: Path, fmt_id: str, precision: str, out_dir: Path, device: str,
              calib: Path | None, say: Progress) -> Candidate:
    """A fresh, verified artifact for (format, precision): reused from next to the weights or the cache,
    else exported into ``out_dir``."""
    from modelport.discover import find_exports
    from modelport.export import export_all

    cand = Candidate(fmt_id if precision == "fp32" else f"{fmt_id}.{precision}", fmt_id, precision)
    fmt = get_format(fmt_id)
    reason = fmt.unavailable_reason(device)
    if reason:
        cand.status, cand.reason = "unavailable", reason
        return cand
    digest = built.spec.source.sha256
    tag = "" if precision == "fp32" else precision
    existing = [c.path for c in find_exports(weights, (fmt,))] if precision == "fp32" else []
    for path in [*existing, fmt.artifact_path(out_dir, weights_stem(weights), tag)]:
        try:
            spec = fmt.read_spec(path) if path.exists() else None
        except ModelportError:
            spec = None
        if spec is not None and spec.source.sha256 == digest and spec.precision == precision:
            cand.path = path
            return cand
    say(f"exporting {cand.id}")
    extra = {} if precision == "fp32" else {"precision": precision, "calib": calib}
    result = export_all(weights, [fmt_id], out=out_dir, built=built, device=device, **extra)[0]
    cand.export_s = round(result.seconds, 2)
    if not result.ok:
        cand.status = "parity-failed" if result.check is not None else "export-failed"
        cand.reason = result.error or ""
    cand.path = result.path
    return cand


def _baseline(built: BuiltModel, out_dir: Path) -> Candidate:
    """The way common ReID exporters do it: opset 12, dynamic batch, a default ONNX Runtime session."""
    from modelport.formats.onnx import write_onnx

    cand = Candidate("onnx-baseline(opset12,default-session)", "onnx")
    path = out_dir / f"{built.spec.name}.baseline-opset12.onnx"
    start = time.perf_counter()
    write_onnx(built.module, built.spec.with_batch(None), path, opset=12, dynamic=True)
    cand.export_s = round(time.perf_counter() - start, 2)
    cand.path = path
    return cand


class _DefaultSessionRunner(Runner):
    format_id = "onnx"

    def __init__(self, path: Path, spec) -> None:
        import onnxruntime as ort

        super().__init__(spec, path, "cpu")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.settings = {"session_options": "defaults"}
        self._input = self.session.get_inputs()[0].name

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {self.spec.outputs[0].name: self.session.run(None, {self._input: batch})[0]}


def open_candidate(cand: Candidate, make: Callable[[], Runner]) -> None:
    """Open ``cand``'s runner with ``make``, recording its cold-start time and settings, or why it cannot run."""
    start = time.perf_counter()
    try:
        cand.runner = make()
    except ModelportError as exc:
        cand.status, cand.reason = "unavailable", exc.message
        return
    cand.load_s = round(time.perf_counter() - start, 3)
    cand.settings = dict(cand.runner.settings)


def _open(cand: Candidate, built: BuiltModel, device: str, threads: int | None) -> None:
    def make() -> Runner:
        if cand.id.startswith("onnx-baseline"):
            return _DefaultSessionRunner(cand.path, built.spec.with_batch(None))
        if get_format(cand.format).is_weights:  # the weights themselves: the module built from them
            return PyTorchRunner(built.module, built.spec, cand.path, device)
        return get_format(cand.format).load(cand.path, device, threads=threads)

    open_candidate(cand, make)


def check_parity(cand: Candidate, reference: Runner, batch: np.ndarray, expected: dict | None = None) -> None:
    """Compare ``cand`` with ``reference`` on ``batch`` (``expected``: the reference's outputs, when known)."""
    expected = reference(batch) if expected is None else expected
    name = next(iter(expected))
    got = cand.runner(batch)[name]
    result = compare_output(name, expected[name], got, TOLERANCES[cand.precision])
    cand.parity = {"max_abs_diff": result.max_abs, "min_cosine": result.min_cosine,
                   "min_centered_cosine": result.min_centered_cosine, "nn_agreement": result.nn_agreement,
                   "passed": result.passed, "failures": list(result.failures)}
    if not result.passed and cand.status == "ok":
        cand.status, cand.reason = "parity-failed", "; ".join(result.failures)


def candidate_row(cand: Candidate, batch: int, latencies: list[float] | None, gflop: float | None,
                  **extra: object) -> dict:
    """``cand``'s row of the record at ``batch`` (docs/benchmark-schema.md)."""
    return row(cand.id, cand.format, batch, precision=cand.precision, status=cand.status, reason=cand.reason,
               path=cand.path, size_mb=cand.size_mb, export_s=cand.export_s, load_s=cand.load_s,
               parity=cand.parity, settings=cand.settings, latencies=latencies, gflop=gflop, **extra)


def time_interleaved(cands: list[Candidate], batch: np.ndarray, seconds: float, rounds: int,
                     release: bool = False) -> dict[str, list[float]]:
    """Seconds per call of each runtime on ``batch``, interleaved in rounds (``interleave``). With ``release``
    each runtime hands its memory back after its turn and warms up again, untimed, at the start of the next,
    so only one runtime's working set is resident at a time (``bench_memory.RELEASE_ABOVE``)."""
    cold: set[str] = set()

    def rest(c: Candidate) -> None:
        c.runner.release_memory()
        cold.add(c.id)

    for c in cands:  # warm-up: first calls allocate, JIT-compile and fill caches
        for _ in range(2):
            c.runner(batch)
        if release:
            rest(c)

    def measure(c: Candidate) -> float:
        if c.id in cold:  # its arena was handed back: the call that grows it again is not timed
            c.runner(batch)
            cold.discard(c.id)
        start = time.perf_counter()
        c.runner(batch)
        return time.perf_counter() - start

    return interleave(cands, measure, seconds, rounds, key=lambda c: c.id, after_turn=rest if release else None)


def run_benchmark(
    source: str | Path,
    *,
    formats: Sequence[str] | None = None,
    batches: Sequence[int] | None = None,
    default_batches: Sequence[int] = (1, 16, 64),
    device: str = "cpu",
    threads: int | None = None,
    seconds: float = 3.0,
    rounds: int = 5,
    half: bool = False,
    int8: bool = False,
    calib: Path | None = None,
    baseline: bool = False,
    export_dir: Path | None = None,
    allow_random: bool = False,
    arch: str | None = None,
    progress: Progress | None = None,
    built: BuiltModel | None = None,
    family: str = "reid",
    memory_budget: int | None = None,
) -> dict:
    """Measure every requested runtime on the same seeded inputs; returns the benchmark record.

    ``built``: a model already built from ``source`` (a factory model, say); its spec's example inputs are
    what is timed. ``family`` names the family in the record. ``batches`` (default ``default_batches``) are
    checked against the memory they need before anything runs (``bench_memory.plan_memory``, within
    ``memory_budget`` bytes, default what the machine has available): default batches that do not fit are
    dropped, chosen ones refused with a ConfigError."""
    import torch

    say = progress or (lambda _msg: None)
    if threads:
        torch.set_num_threads(threads)
    if built is None:
        weights = _resolve_source(source, allow_random, arch, say)
        built = build(weights, arch=arch)
    elif built.spec.source.sha256 is None:
        raise WeightsNotFoundError(f"{built.spec.name}: benchmarking needs the weights file the model was built from",
                                   hint="give the checkpoint (--weights)")
    else:
        weights = Path(source)
    out_dir = Path(export_dir) if export_dir else cache_root() / "exports" / built.spec.source.sha256[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    format_ids = list(formats) if formats else [f for f in BY_ID if f != "pytorch"]
    precisions = ["fp32"] + (["fp16"] if half else []) + (["int8"] if int8 else [])
    wanted = [(f, p) for f in format_ids for p in precisions if p == "fp32" or f in ("onnx", "openvino")]
    plan = _memory_plan(built, batches, default_batches, 1 + len(wanted) + baseline, memory_budget)
    batches = plan.batches
    cands = [Candidate("pytorch", "pytorch", path=weights, size_mb=size_mb(weights))]
    for fmt_id, precision in wanted:
        cands.append(_artifact(built, weights, fmt_id, precision, out_dir, device, calib, say))
    if baseline:
        cands.append(_baseline(built, out_dir))
    for cand in cands:
        if cand.status == "ok" or cand.status == "parity-failed" and cand.path is not None:
            say(f"loading {cand.id}")
            _open(cand, built, device, threads)
        cand.size_mb = cand.size_mb or size_mb(cand.path)
    live = [c for c in cands if c.runner is not None]
    try:
        # No more parity rows than the largest timed batch: the check must not need more memory than the timing.
        parity_rows = min(PARITY_ROWS, max(batches))
        check = example_batch(built.spec.with_batch(None), count=parity_rows, seed=4321)
        reference = next(c for c in live if get_format(c.format).is_weights).runner
        expected = reference(check)
        # INT8 is judged where its thresholds are defined: against fp32 on the held-out calibration rows, read
        # once for every INT8 runtime.
        held_out = calibration_batch(built.spec, calib).judged if any(c.precision == "int8" for c in live) else None
        for cand in live:
            int8_rows = cand.precision == "int8"
            check_parity(cand, reference, held_out if int8_rows else check, None if int8_rows else expected)
            if plan.release:
                cand.runner.release_memory()

        gflop = model_gflops(built)
        rows = []
        for b in batches:
            say(f"timing batch {b}")
            lat = time_interleaved(live, example_batch(built.spec.with_batch(None), count=b, seed=b), seconds, rounds,
                                   release=b in plan.release)
            rows += [candidate_row(cand, b, lat.get(cand.id), gflop) for cand in cands]
    finally:  # the runtimes' threads stop here, also on an error or Ctrl-C, not in the interpreter's teardown
        for cand in live:
            cand.runner.close()
            cand.runner = None
    say("measuring the machine's fp32 matrix-product peak")
    model = {"name": built.spec.name, "task": built.spec.task, "source": asdict(built.spec.source),
             "gflop_per_image": gflop, "untrained": built.spec.is_random,
             "inputs": {t.name: list(t.shape) for t in built.spec.inputs},
             "example_shapes": {k: v["shape"] for k, v in built.spec.extra.get("example", {}).items()}}
    settings = {"batches": list(batches), "device": device, "threads": threads or torch.get_num_threads(),
                "seconds_per_batch": seconds, "rounds": rounds, "parity_rows": parity_rows,
                "formats": format_ids, "half": half, "int8": int8, "calib": str(calib) if calib else None,
                "export_dir": str(out_dir)}
    report = header(family, model, settings)
    report["rows"] = rows
    report["memory"] = {**plan.record(), "peak_rss_mb": round(peak_resident_bytes() / (1 << 20))}
    save_record(report)
    return report


def _memory_plan(built: BuiltModel, batches: Sequence[int] | None, default_batches: Sequence[int], runtimes: int,
                 budget: int | None) -> MemoryPlan:
    """The batches that fit this machine's memory with ``runtimes`` runtimes open (``bench_memory``)."""
    feed = example_batch(built.spec.with_batch(None), count=1)
    shapes = {k: v.shape for k, v in feed.items()} if isinstance(feed, dict) else {"input": feed.shape}
    shape = ", ".join(f"{k} {'x'.join(map(str, s[1:]))}" for k, s in shapes.items())
    per_row = activation_bytes(built.module, feed, built.spec)
    return plan_memory(per_row, batches or default_batches, runtimes, explicit=batches is not None,
                       budget=budget, shape=shape)


def _resolve_source(source: str | Path, allow_random: bool, arch: str | None, say: Progress) -> Path:
    from modelport.zoo import list_models

    path = Path(source)
    if path.exists():
        return path
    name = str(source)
    if name in list_models():
        if not allow_random:
            raise WeightsNotFoundError(f"{name}: no weights file given",
                                       hint="pass a checkpoint, or --allow-random to benchmark an untrained model")
        from modelport.zoo.calibrate import make_untrained_checkpoint

        target = cache_root() / "untrained" / f"{name}_untrained.pt"
        if not target.exists():
            say(f"building an untrained {name} (BatchNorm calibrated on synthetic crops)")
            make_untrained_checkpoint(target.parent, name)
        return target
    raise WeightsNotFoundError(f"{path}: not found", hint="give a weights file or a zoo model name")


def save_record(report: dict) -> Path:
    """Keep the latest report per machine key for this weights file (what prefer='fastest' reads)."""
    from modelport.atomic import atomic_write_text

    path = record_path(report["model"]["source"]["sha256"])
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        records = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        records = {}  # a damaged cache entry is rebuilt, not fatal
    records = records if isinstance(records, dict) else {}
    records[report["machine_key"]] = report
    # The cache is modelport's own: replacing the record is the point; the rename keeps readers whole.
    return atomic_write_text(path, json.dumps(records, indent=1), force=True)


def fastest(weights: Path, batch: int | None = None) -> dict | None:
    """The row this machine measured fastest for ``weights`` among verified runtimes, or None."""
    return fastest_row(machine_record(sha256_file(weights)), batch)


def write_plot(report: dict, path: Path) -> Path:
    """Grouped bars: throughput of every runtime at every batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = report["settings"]["batches"]
    runtimes = list(dict.fromkeys(r["runtime"] for r in report["rows"] if r["throughput"]))
    width = 0.8 / max(1, len(runtimes))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(batches) * max(1, len(runtimes)) / 2), 4.5))
    for i, name in enumerate(runtimes):
        values = [next((r["throughput"] or 0 for r in report["rows"] if r["runtime"] == name and r["batch"] == b), 0)
                  for b in batches]
        ax.bar([x + i * width for x in range(len(batches))], values, width, label=name)
    ax.set_xticks([x + width * (len(runtimes) - 1) / 2 for x in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_ylabel("images / s")
    title = f"{report['model']['name']} on {report['machine']['cpu']} ({report['settings']['device']})"
    ax.set_title(title + (" — untrained weights" if report["model"]["untrained"] else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
