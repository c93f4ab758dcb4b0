"""Golden outputs that travel with an artifact: seeded inputs and the reference's outputs for them, so the
target machine can re-check the artifact with its own runtime, without PyTorch."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, WeightsNotFoundError
from modelport.formats.base import Runner
from modelport.formats.feeds import feed_rows, first_rows, row_range
from modelport.verify import TOLERANCES, RunnerResult, SeededInputs, compare_runner

GOLDEN_DIR = "golden"
GOLDEN_FILES = ("inputs.npy", "inputs.npz", "outputs.npz", "golden.json")  # under GOLDEN_DIR
GOLDEN_ROWS = 8
# Rows are dropped (down to GOLDEN_MIN_ROWS) while inputs and outputs exceed this: eight 640x640 detector rows
# with their raw outputs would be ~60 MB, more than the artifact they check.
GOLDEN_MAX_BYTES = 16 << 20
GOLDEN_MIN_ROWS = 2
# A package is the artifact plus a few small files; this bounds what extraction may write.
MAX_PACKAGE_BYTES = 16 << 30
MAX_PACKAGE_MEMBERS = 10_000
# Added to the label of a check against the artifact's own outputs, which cannot tell a wrong export.
SELF_CHECK = " (self-check)"


@dataclass(frozen=True)
class Golden:
    """Inputs prepared for the artifact, the reference's outputs on the same pixels, and what produced them."""

    inputs: np.ndarray | dict[str, np.ndarray]  # one array, or one per input name (multi-input models)
    outputs: dict[str, np.ndarray]
    reference: str  # "pytorch" (verified against the source model) or "artifact" (its own outputs here)
    precision: str

    @property
    def self_check(self) -> bool:
        """Whether the outputs are the artifact's own: a pass then says only that this runtime computes what the
        building one did, not that the artifact matches the model it was exported from."""
        return self.reference != "pytorch"

    def files(self) -> dict[str, bytes]:
        """``golden/`` members: inputs.npy, outputs.npz and golden.json."""
        inputs, outputs = io.BytesIO(), io.BytesIO()
        named = isinstance(self.inputs, dict)
        if named:  # a multi-input model: one array per input name
            np.savez_compressed(inputs, **self.inputs)
        else:
            np.save(inputs, self.inputs, allow_pickle=False)
        np.savez_compressed(outputs, **self.outputs)
        rows = len(next(iter(self.inputs.values()))) if named else len(self.inputs)
        meta = {"reference": self.reference, "precision": self.precision, "rows": int(rows),
                "outputs": sorted(self.outputs)}
        return {f"{GOLDEN_DIR}/inputs.{'npz' if named else 'npy'}": inputs.getvalue(),
                f"{GOLDEN_DIR}/outputs.npz": outputs.getvalue(),
                f"{GOLDEN_DIR}/golden.json": json.dumps(meta, indent=1).encode()}


def make_golden(runner: Runner, reference: Runner | None = None, *, count: int = GOLDEN_ROWS,
                seed: int = 7) -> Golden:
    """Seeded inputs for ``runner`` and ``reference``'s outputs on them (``runner``'s own without one); fewer
    than ``count`` rows (not under GOLDEN_MIN_ROWS) when the rows' inputs and outputs exceed GOLDEN_MAX_BYTES."""
    seeded = SeededInputs.of(runner.spec, count, seed)
    source = reference or runner
    feed, inputs = seeded.for_spec(source.spec), seeded.for_spec(runner.spec)
    # One row first: its size says how many rows are kept, and only those are run (at 720p the rows dropped
    # would otherwise cost ~0.5 GB each); then the rest in one call, as before.
    first = {k: np.asarray(v) for k, v in source(first_rows(feed, 1)).items()}
    arrays = list(inputs.values()) if isinstance(inputs, dict) else [inputs]
    rows = feed_rows(inputs)
    per_row = sum(a[:1].nbytes for a in arrays) + sum(v.nbytes for v in first.values())
    keep = max(min(GOLDEN_MIN_ROWS, rows), min(rows, int(GOLDEN_MAX_BYTES // max(per_row, 1))))
    expected = first
    if keep > 1:
        rest = source(row_range(feed, 1, keep))
        expected = {k: np.concatenate([v, np.asarray(rest[k])]) for k, v in first.items()}
    return Golden(first_rows(inputs, keep), expected, "pytorch" if reference is not None else "artifact",
                  runner.spec.precision)


def read_golden(folder: Path) -> Golden:
    """The golden set stored under ``folder/golden``; typed errors for a missing or malformed one."""
    base = folder / GOLDEN_DIR
    if not (base / "golden.json").is_file():
        raise CorruptFileError(f"{folder}: holds no golden outputs ({GOLDEN_DIR}/golden.json)",
                               hint="rebuild the package (or Triton repository) with this modelport version")
    try:
        meta = json.loads((base / "golden.json").read_text())
        if (base / "inputs.npz").is_file():  # a multi-input model: one array per input name
            with np.load(base / "inputs.npz", allow_pickle=False) as npz:
                inputs = {k: npz[k] for k in npz.files}
        else:
            inputs = np.load(base / "inputs.npy", allow_pickle=False)
        with np.load(base / "outputs.npz", allow_pickle=False) as npz:
            outputs = {k: npz[k] for k in npz.files}
        listed = sorted(meta["outputs"])
        golden = Golden(inputs, outputs, str(meta["reference"]), str(meta["precision"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{folder}: unreadable golden outputs ({type(exc).__name__}: {exc})") from None
    if listed != sorted(outputs):
        raise CorruptFileError(f"{base / 'outputs.npz'}: holds outputs {sorted(outputs)}, golden.json lists {listed}",
                               hint="the golden set was changed after it was written; rebuild it")
    return golden


def check_golden(runner: Runner, golden: Golden, label: str | None = None) -> RunnerResult:
    """Re-run the artifact on the golden inputs: the precision's tolerance against PyTorch's outputs, fp32's
    against the artifact's own (then only the runtime differs, and the label says "(self-check)")."""
    tolerance = TOLERANCES.get("fp32" if golden.self_check else golden.precision)
    label = f"{label or runner.describe()}{SELF_CHECK if golden.self_check else ''}"
    missing = sorted({t.name for t in runner.spec.outputs} - set(golden.outputs))
    problem = ("the golden set holds no inputs" if feed_rows(golden.inputs) == 0 else
               f"the golden set has no reference for outputs {missing}" if missing else
               f"unknown precision {golden.precision!r} in golden.json" if tolerance is None else None)
    if problem is not None:  # never pass by comparing nothing
        result = RunnerResult(label, runner.format, str(runner.path) if runner.path else None)
        result.error = f"{problem}; rebuild it with this modelport version"
        return result
    return compare_runner(golden.outputs, runner, golden.inputs, tolerance, label=label)


def extract_package(package: Path, into: Path) -> Path:
    """Extract a ``.tar.gz`` package safely (no links, nothing outside ``into``, bounded size and count)."""
    if not package.is_file():
        raise WeightsNotFoundError(f"{package}: package not found")
    try:
        with tarfile.open(package, "r:gz") as tar:
            members = tar.getmembers()
            if len(members) > MAX_PACKAGE_MEMBERS or sum(m.size for m in members) > MAX_PACKAGE_BYTES:
                raise CorruptFileError(f"{package}: more members or bytes than a modelport package holds")
            tar.extractall(into, members=members, filter="data")  # refuses links, absolute and ../ paths
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptFileError(f"{package}: not a readable package ({type(exc).__name__}: {exc})",
                               hint="copy the .tar.gz again") from None
    return into


def verify_package(package: str | Path, device: str = "cpu") -> RunnerResult:
    """Open a package's artifact with the runtime installed here and compare it with its golden outputs."""
    from modelport.formats import FORMATS, format_of_path

    package = Path(package)
    with tempfile.TemporaryDirectory(prefix="modelport-package-") as tmp:
        folder = extract_package(package, Path(tmp))
        golden = read_golden(folder)
        known = [p for p in folder.iterdir() if p.name != GOLDEN_DIR and any(f.matches(p) for f in FORMATS)]
        artifacts = [p for p in known if not format_of_path(p).is_weights]
        if len(artifacts) != 1:
            weights = sorted(p.name for p in known if format_of_path(p).is_weights)
            held = f"PyTorch weights {weights} and " if weights else ""
            raise CorruptFileError(f"{package}: holds {held}{len(artifacts)} exported artifacts "
                                   f"{[p.name for p in artifacts]}; a package holds exactly one",
                                   hint="rebuild it with this modelport: `modelport package ARTIFACT --out PKG` "
                                        "(weights are never packaged; export them first)")
        runner = format_of_path(artifacts[0]).load(artifacts[0], device)
        try:
            return check_golden(runner, golden, label=f"{package.name}:{artifacts[0].name}")
        finally:
            runner.close()
