"""Edge packages: one exported artifact, its benchmark, a sample input with its expected output, golden outputs
and the spec. Made from the artifact and its embedded spec alone, for every family (``package_source``)."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelport.atomic import atomic_file, refuse_existing
from modelport.errors import VerificationError
from modelport.formats import Runner, format_of_path
from modelport.formats.feeds import Feed, feed_rows
from modelport.spec import ModelSpec

if TYPE_CHECKING:
    from modelport.golden import Golden

HINT = "choose another --out or pass --force to replace it"
SECONDS = 2.0  # timed seconds per batch when the artifact is measured alone (no benchmark record here)
# Weights barely compress: level 9 spent 6.5 s on a 250 MB CLIP text encoder that level 1 writes in a fraction.
GZIP_LEVEL = 1

README = """# {name} — modelport edge package

- artifact: `{artifact}` ({format}, {precision}){untrained}
- input: {inputs}; {preprocessing}
- output: {outputs}
- source weights sha256: `{sha}`

`{sample}` is a test input; `{sample_output}` is what this artifact returned for it (prepared as the line
above says) on the packaging machine: compare your deployment's output with it.

`golden/` holds {golden_rows} seeded inputs and the {golden_ref} outputs for them. On the target machine,
`modelport verify {package}` re-runs the artifact with the runtime installed there (no PyTorch needed) and
says pass or fail.

## Measured on {cpu} ({cores} cores), modelport {version}{measured}
| runtime | batch | p50 ms | {unit} | min cosine vs PyTorch |
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
            cosine = r["parity"].get("min_cosine")
            lines.append(f"| {r['runtime']} | {r['batch']} | {r['latency_ms']['p50']:.2f} | {r['throughput']:.1f} | "
                         f"{'not compared' if cosine is None else f'{cosine:.6f}'} |")
    return "\n".join(lines) or "| (no measurements) | | | | |"


def _sample(spec: ModelSpec) -> tuple[str, bytes, Feed]:
    """A test input as a user gives it (an image, a caption, arrays by input name), its file name and bytes,
    and the model's input for it, prepared through the spec's task."""
    from modelport.tasks import get_task

    task = get_task(spec.task)
    data = io.BytesIO()
    if spec.task == "tensors":  # plain tensors in: one seeded row of each, by name
        feed = task.example(spec.with_batch(None), 1, seed=11)
        np.savez(data, **feed)
        return "sample_input.npz", data.getvalue(), task.prepare(spec, feed)
    if spec.inputs[0].dtype == "int64":  # token ids: the sample is text
        from modelport.tasks.embed_text import example_captions

        text = example_captions(1, seed=11)[0]
        return "sample.txt", f"{text}\n".encode(), task.prepare(spec, [text])
    from PIL import Image

    from modelport.samples import person_crops

    crop = person_crops(1, spec.preprocess.height, spec.preprocess.width, seed=11)[0]
    Image.fromarray(crop[..., ::-1].copy()).save(data, format="PNG")
    return "sample.png", data.getvalue(), task.prepare(spec, [crop])


def _preprocessing(spec: ModelSpec) -> str:
    pre = spec.preprocess
    if spec.task == "tensors":
        return "preprocessing: none (arrays by input name, as `sample_input.npz` holds them)"
    tokenizer = spec.extra.get("tokenizer")
    if spec.inputs[0].dtype == "int64" and tokenizer:
        return (f"preprocessing: text tokenised by {tokenizer.get('library')}'s {tokenizer.get('model')} tokenizer "
                f"({tokenizer.get('context_length')} tokens)")
    return (f"preprocessing: {pre.resize} to {pre.height}x{pre.width} {pre.channel_order}, x{pre.scale:.6g}, "
            f"mean {pre.mean}, std {pre.std}{' (inside the graph: give uint8 pixels)' if pre.in_graph else ''}")


def build_package(runner: Runner, report: dict, out: Path, *, force: bool = False,
                  reference: Runner | None = None, golden: "Golden | None" = None) -> Path:
    """Write ``out`` (.tar.gz) atomically; an existing file is only replaced with ``force``. Its golden outputs
    are ``golden``, else made from ``reference`` (the PyTorch model) when given, else from the artifact itself.
    The written package is verified as the target will verify it before it replaces anything: VerificationError
    when it fails (a package never holds what ``modelport verify PKG`` cannot open or pass)."""
    from modelport.golden import make_golden, verify_package
    from modelport.package_source import check_packable

    out = refuse_existing(out, force, HINT)  # before the work below
    artifact = check_packable(runner)
    spec = runner.spec
    sample_name, sample, feed = _sample(spec)
    expected = runner(feed)
    outputs = io.BytesIO()
    if len(expected) == 1:
        np.save(outputs, next(iter(expected.values())))
    else:
        np.savez(outputs, **expected)
    output_name = "sample_output.npy" if len(expected) == 1 else "sample_output.npz"
    golden = golden or make_golden(runner, reference)
    golden_rows = feed_rows(golden.inputs)
    runtime = runner.format if spec.precision == "fp32" else f"{runner.format}.{spec.precision}"
    measured = report.get("settings", {}).get("measured")
    readme = README.format(
        name=spec.name, artifact=artifact.name, format=runner.format, precision=spec.precision,
        untrained=" — **UNTRAINED (random weights)**" if spec.is_random else "",
        inputs=", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in spec.inputs),
        outputs=", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in spec.outputs),
        preprocessing=_preprocessing(spec), unit="img/s" if sample_name == "sample.png" else "items/s",
        sha=spec.source.sha256, cpu=report["machine"]["cpu"],
        cores=report["machine"]["physical_cores"], version=report["modelport"], rows=_bench_rows(report, runtime),
        measured=f"\n\n{measured[0].upper()}{measured[1:]}.\n" if measured else "", package=out.name,
        golden_rows=golden_rows, sample=sample_name, sample_output=output_name,
        golden_ref="PyTorch model's" if not golden.self_check else "artifact's own (no weights to compare with)",
    )
    with atomic_file(out, force=force, hint=HINT) as tmp:
        with tarfile.open(tmp, "w:gz", compresslevel=GZIP_LEVEL) as tar:
            tar.add(artifact, arcname=artifact.name)
            _add_bytes(tar, "model.json", spec.to_json().encode())
            _add_bytes(tar, "benchmark.json", json.dumps(report, indent=1).encode())
            _add_bytes(tar, sample_name, sample)
            _add_bytes(tar, output_name, outputs.getvalue())
            _add_bytes(tar, "README.md", readme.encode())
            for name, data in golden.files().items():
                _add_bytes(tar, name, data)
        result = verify_package(tmp, runner.device)
        if not result.passed:
            raise VerificationError(f"{artifact}: its package fails the check the target runs ({result.summary()}); "
                                    f"{out} was not written",
                                    hint="the artifact does not compute what its golden reference does: re-export it "
                                         "with `modelport export`, then package again")
    return out


def package(source: str | Path, out: str | Path, *, force: bool = False, seconds: float | None = None) -> Path:
    """Package ``source``: an exported artifact, or a weights file (its fastest verified export; never the
    weights themselves). Works from the artifact and its embedded spec alone, for every family: the golden
    outputs are the PyTorch model's where the weights format can rebuild it (``pytorch_reference``), else the
    artifact's own; the README shows this machine's benchmark of the weights, else ``seconds`` (default
    ``SECONDS``) per batch of timing the artifact alone."""
    from modelport.discover import open_artifact
    from modelport.golden import check_golden, make_golden
    from modelport.package_source import (
        artifact_for_weights,
        benchmark_record,
        golden_parity,
        measure_artifact,
        pytorch_reference,
    )

    source, out = Path(source), refuse_existing(Path(out), force, HINT)
    runner = artifact_for_weights(source) if format_of_path(source).is_weights else open_artifact(source)
    try:
        reference = pytorch_reference(runner.spec, runner.device)
        try:
            golden = make_golden(runner, reference)
        finally:
            if reference is not None:
                reference.close()
        report = benchmark_record(runner.spec)
        if report is None:
            parity = None if golden.self_check else golden_parity(check_golden(runner, golden))
            report = measure_artifact(runner, golden.inputs, SECONDS if seconds is None else seconds, parity)
        return build_package(runner, report, out, force=force, golden=golden)
    finally:
        runner.close()
