"""Edge packages: the chosen artifact, its benchmark, a sample input with its expected output, the spec."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np

from modelport.atomic import atomic_file, refuse_existing
from modelport.errors import ExportError
from modelport.formats import Runner, format_of_path

README = """# {name} — modelport edge package

- artifact: `{artifact}` ({format}, {precision}){untrained}
- input: {inputs}; preprocessing: resize to {h}x{w} {order}, x{scale:.6g}, mean {mean}, std {std}
- output: {outputs}
- source weights sha256: `{sha}`

`{sample}` is a test input; `sample_output.npy` is what this artifact returned for it (after the
preprocessing above, for images) on the packaging machine: compare your deployment's output with it.

`golden/` holds {golden_rows} seeded inputs and the {golden_ref} outputs for them. On the target machine,
`modelport verify {package}` re-runs the artifact with the runtime installed there (no PyTorch needed) and
says pass or fail.

## Measured on {cpu} ({cores} cores), modelport {version}
| runtime | batch | p50 ms | img/s | min cosine vs PyTorch |
| --- | --- | --- | --- | --- |
{rows}
"""


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _bench_rows(report: dict, runtime: str) -> str:
    lines = []
    for r in report["rows"]:
        if r["throughput"] and (r["runtime"] in (runtime, "pytorch")):
            lines.append(f"| {r['runtime']} | {r['batch']} | {r['latency_ms']['p50']:.2f} | {r['throughput']:.1f} | "
                         f"{r['parity'].get('min_cosine', float('nan')):.6f} |")
    return "\n".join(lines) or "| (no measurements) | | | | |"


def build_package(runner: Runner, report: dict, out: Path, *, force: bool = False,
                  reference: Runner | None = None) -> Path:
    """Write ``out`` (.tar.gz) atomically; an existing file is only replaced with ``force``. Its golden outputs
    come from ``reference`` (the PyTorch model) when given, else from the artifact itself."""
    from PIL import Image

    from modelport.golden import make_golden
    from modelport.preprocess import prepare
    from modelport.samples import person_crops

    hint = "choose another --out or pass --force to replace it"
    out = refuse_existing(out, force, hint)  # before the work below
    if runner.path is None:
        raise ExportError("the model has no file to package (random weights?)", hint="export it first")
    spec = runner.spec
    pre = spec.preprocess
    sample = io.BytesIO()
    if spec.task == "tensors":  # plain tensors in: the sample input is one seeded row of each, by name
        from modelport.formats.feeds import example_batch

        feed = example_batch(spec.with_batch(None), count=1, seed=11)
        np.savez(sample, **feed)
        sample_name, expected = "sample_input.npz", runner(feed)
    else:
        crop = person_crops(1, pre.height, pre.width, seed=11)[0]
        Image.fromarray(crop[..., ::-1].copy()).save(sample, format="PNG")
        sample_name, expected = "sample.png", runner(prepare([crop], pre))
    npy = io.BytesIO()
    np.save(npy, expected[spec.outputs[0].name])
    golden = make_golden(runner, reference)
    golden_rows = len(next(iter(golden.inputs.values()))) if isinstance(golden.inputs, dict) else len(golden.inputs)
    runtime = runner.format if spec.precision == "fp32" else f"{runner.format}.{spec.precision}"
    readme = README.format(
        name=spec.name, artifact=runner.path.name, format=runner.format, precision=spec.precision,
        untrained=" — **UNTRAINED (random weights)**" if spec.is_random else "",
        inputs=", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in spec.inputs),
        outputs=", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in spec.outputs),
        h=pre.height, w=pre.width, order=pre.channel_order, scale=pre.scale, mean=pre.mean, std=pre.std,
        sha=spec.source.sha256, cpu=report["machine"]["cpu"], cores=report["machine"]["physical_cores"],
        version=report["modelport"], rows=_bench_rows(report, runtime), package=out.name,
        golden_rows=golden_rows, sample=sample_name,
        golden_ref="PyTorch model's" if golden.reference == "pytorch"
                   else "artifact's own (no weights to compare with)",
    )
    with atomic_file(out, force=force, hint=hint) as tmp, tarfile.open(tmp, "w:gz") as tar:
        tar.add(runner.path, arcname=runner.path.name)
        _add_bytes(tar, "model.json", spec.to_json().encode())
        _add_bytes(tar, "benchmark.json", json.dumps(report, indent=1).encode())
        _add_bytes(tar, sample_name, sample.getvalue())
        _add_bytes(tar, "sample_output.npy", npy.getvalue())
        _add_bytes(tar, "README.md", readme.encode())
        for name, data in golden.files().items():
            _add_bytes(tar, name, data)
    return out


def package(source: Path, out: Path, *, force: bool = False, seconds: float = 2.0) -> Path:
    """Package the fastest verified artifact of ``source`` (weights) or ``source`` itself (an artifact).

    Uses this machine's latest benchmark of the weights; without one, measures the chosen artifact.
    """
    from modelport.bench import record_path, run_benchmark
    from modelport.discover import load, open_artifact
    from modelport.machine import machine_key

    source = Path(source)
    is_weights = format_of_path(source).is_weights
    runner = load(source, prefer="fastest") if is_weights else open_artifact(source)
    sha = runner.spec.source.sha256
    weights = Path(runner.spec.source.file) if runner.spec.source.file else None
    record = record_path(sha) if sha else None
    report = None
    if record is not None and record.exists():
        report = json.loads(record.read_text()).get(machine_key())
    if report is None:
        if weights is None or not weights.exists():
            raise ExportError(f"{source}: no benchmark on this machine and the weights "
                              f"({weights or 'unknown'}) are not here to measure against",
                              hint="run `modelport bench WEIGHTS` where the weights are")
        report = run_benchmark(weights, formats=[runner.format] if runner.format != "pytorch" else [],
                               batches=(1, 16), seconds=seconds)
    # A factory model's PyTorch reference would mean importing the code its metadata names: never from a file.
    own = weights is not None and weights.exists() and runner.spec.task != "tensors"
    reference = open_artifact(weights) if own else None
    return build_package(runner, report, out, force=force, reference=reference)
