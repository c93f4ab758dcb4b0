"""Compare runners on identical inputs: max/relative abs diff, cosine, centred cosine, neighbour agreement."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from modelport.formats.base import Runner
from modelport.formats.feeds import Feed, example_batch
from modelport.preprocess import finish, resize_all
from modelport.samples import person_crops
from modelport.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Pass criteria; None disables a check. Defaults are the fp32 thresholds.

    ``max_abs`` bounds the largest absolute difference for outputs of unit scale and scales with the
    reference when its largest magnitude exceeds 1 (bound = max_abs * max(1, max|ref|)): fp32 kernels
    that sum in another order differ by ~1e-5 of the output's scale, so a fixed 1e-4 fails honest
    exports of un-normalised 512-d features whose values reach 10 or more.
    """

    max_abs: float | None = 1e-4
    min_cosine: float | None = 0.9999
    min_nn_agreement: float | None = None
    # Raw cosine of ReLU features is inflated by the mean they all share; the centred cosine judges what
    # tells rows apart, which is what quantisation noise erodes first (docs/testing.md).
    min_centered_cosine: float | None = None
    # The typical row, beside the worst: a quantised embedder can keep its worst row and still drift everywhere.
    min_median_cosine: float | None = None


FP32 = Tolerance()
# Variants are judged on what a ReID deployment needs: direction of the embedding and who is whose
# nearest neighbour; element-wise bounds would only restate the precision.
FP16 = Tolerance(max_abs=None, min_cosine=0.999)
INT8 = Tolerance(max_abs=None, min_cosine=0.99, min_centered_cosine=0.98, min_nn_agreement=0.99)
TOLERANCES = {"fp32": FP32, "fp16": FP16, "int8": INT8}


@dataclass(frozen=True, slots=True)
class OutputComparison:
    output: str
    max_abs: float
    mean_abs: float
    rel_max: float  # max abs diff relative to the reference's largest magnitude
    min_cosine: float
    min_centered_cosine: float  # cosine after removing the reference batch mean (see docs/testing.md)
    nn_agreement: float  # share of rows whose nearest other row is the same under both (or a tie: NN_TIE)
    failures: tuple[str, ...]
    p50_abs: float = 0.0  # quantiles of the absolute difference: one bad value vs a general drift
    p99_abs: float = 0.0
    median_cosine: float = 1.0  # set by compare_output; -1 where the shapes differ

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class RunnerResult:
    label: str
    format: str
    path: str | None
    outputs: list[OutputComparison] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)

    def summary(self) -> str:
        if self.error:
            return self.error
        bad = [f"{o.output}: {', '.join(o.failures)}" for o in self.outputs if o.failures]
        return "; ".join(bad) if bad else "ok"


@dataclass(slots=True)
class VerifyReport:
    reference: str
    batch: int
    seed: int
    tolerance: Tolerance | Mapping[str, Tolerance]
    results: list[RunnerResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, result in zip(data["results"], self.results):
            row["passed"] = result.passed
        data["passed"] = self.passed
        return data


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    return np.where(both_zero, 1.0, cos)


# Two neighbours of a row whose cosine similarities (under the reference) differ by less than this are a tie:
# either is a right answer, so a runtime that picks the other one does not disagree. Without it, crops of one
# scene (near-equal neighbours everywhere) failed INT8 exports whose min cosine was 0.9998.
NN_TIE = 0.02


def _similarities(x: np.ndarray) -> np.ndarray:
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim


def nn_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Share of rows whose nearest other row under ``got`` is the reference's nearest, or ties with it there
    (within ``NN_TIE`` of the reference's best similarity)."""
    sim_ref = _similarities(ref)
    picked = _similarities(got).argmax(1)
    rows = np.arange(len(ref))
    return float((sim_ref[rows, picked] >= sim_ref.max(1) - NN_TIE).mean())


def compare_output(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance = FP32) -> OutputComparison:
    """Compare one output tensor; the failure list names each threshold that was missed."""
    if ref.shape != got.shape:
        return OutputComparison(name, np.inf, np.inf, np.inf, -1.0, -1.0, 0.0,
                                (f"shape {got.shape} != reference {ref.shape}",), np.inf, np.inf, -1.0)
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = got.reshape(len(got), -1).astype(np.float64)
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    mean = a.mean(0, keepdims=True)
    rows = _rowwise_cosine(a, b)
    cos = float(rows.min()) if len(a) else 1.0
    median = float(np.median(rows)) if len(a) else 1.0
    ccos = float(_rowwise_cosine(a - mean, b - mean).min()) if len(a) > 1 else cos
    nn = nn_agreement(a, b) if len(a) > 2 else 1.0
    failures = []
    if not np.isfinite(b).all():
        failures.append("non-finite values")
    bound = tol.max_abs * max(1.0, scale) if tol.max_abs is not None else None
    if bound is not None and not max_abs <= bound:
        failures.append(f"max abs diff {max_abs:.3g} > {bound:.3g} ({tol.max_abs:g} x output scale {scale:.3g})")
    if tol.min_cosine is not None and not cos >= tol.min_cosine:
        failures.append(f"min cosine {cos:.6f} < {tol.min_cosine:g}")
    if tol.min_median_cosine is not None and not median >= tol.min_median_cosine:
        failures.append(f"median cosine {median:.6f} < {tol.min_median_cosine:g}")
    if tol.min_centered_cosine is not None and not ccos >= tol.min_centered_cosine:
        failures.append(f"min centred cosine {ccos:.6f} < {tol.min_centered_cosine:g}")
    if tol.min_nn_agreement is not None and not nn >= tol.min_nn_agreement:
        failures.append(f"nearest-neighbour agreement {nn:.3f} < {tol.min_nn_agreement:g}")
    mean_abs = float(diff.mean()) if diff.size else 0.0
    p50, p99 = (float(q) for q in np.quantile(diff, (0.5, 0.99))) if diff.size else (0.0, 0.0)
    return OutputComparison(name, max_abs, mean_abs, max_abs / scale if scale else max_abs, cos, ccos, nn,
                            tuple(failures), p50, p99, median)


def compare_runner(reference: dict[str, np.ndarray], runner: Runner, batch: np.ndarray,
                   tol: Tolerance | Mapping[str, Tolerance] = FP32, label: str | None = None) -> RunnerResult:
    """Compare every output of ``runner`` on ``batch`` with ``reference``; ``tol`` may be one Tolerance or one
    per output name (outputs it does not name get FP32)."""
    result = RunnerResult(label or runner.describe(), runner.format, str(runner.path) if runner.path else None)
    try:
        got = runner(batch)
    except Exception as exc:  # a runtime failure is a verification failure, reported not raised
        result.error = f"inference failed: {type(exc).__name__}: {exc}"
        return result
    for name, ref in reference.items():
        if name not in got:
            result.error = f"output {name!r} missing (has {', '.join(got)})"
            return result
        one = tol.get(name, FP32) if isinstance(tol, Mapping) else tol
        result.outputs.append(compare_output(name, ref, got[name], one))
    return result


def verify(
    runners: Sequence[Runner | str | Path],
    reference: Runner | str | Path | None = None,
    *,
    batch: np.ndarray | None = None,
    count: int = 8,
    seed: int = 0,
    tolerance: Tolerance | Mapping[str, Tolerance] = FP32,
) -> VerifyReport:
    """Run every runner on one seeded batch and compare each with ``reference`` (default: the first).

    Paths are opened with the loader; a fixed-batch runner is padded/chunked by its base class, so
    runners with different batch constraints are compared on exactly the same rows.
    """
    from modelport.discover import open_artifact

    opened = [r if isinstance(r, Runner) else open_artifact(r) for r in runners]
    ref = reference if isinstance(reference, Runner) or reference is None else open_artifact(reference)
    if ref is None:
        ref, opened = opened[0], opened[1:]
    inputs = SeededInputs.of(ref.spec, count, seed) if batch is None else SeededInputs(None, batch)
    expected = ref(inputs.for_spec(ref.spec))
    results = [compare_runner(expected, r, inputs.for_spec(r.spec), tolerance) for r in opened]
    return VerifyReport(ref.describe(), len(inputs.batch), seed, tolerance, results)


@dataclass(frozen=True)
class SeededInputs:
    """Seeded verification inputs: person crops as resized pixels (each runner gets them prepared its own way,
    so a uint8-input export is compared with a float-input reference on identical pixels), or, for models
    that take token ids, an example batch."""

    pixels: np.ndarray | None
    batch: Feed

    @classmethod
    def of(cls, spec: ModelSpec, count: int = 8, seed: int = 0) -> "SeededInputs":
        if spec.inputs[0].dtype == "int64" or spec.task == "tensors":  # token ids, or a model's plain tensors
            return cls(None, example_batch(spec.with_batch(None), count=count, seed=seed))
        pre = spec.preprocess
        pixels = resize_all(person_crops(count, pre.height, pre.width, seed=seed), pre)
        return cls(pixels, finish(pixels, pre))

    def for_spec(self, spec: ModelSpec) -> Feed:
        return self.batch if self.pixels is None else finish(self.pixels, spec.preprocess)
