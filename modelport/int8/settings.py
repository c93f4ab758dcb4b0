"""What an INT8 export is asked for (calibration method, accuracy target) and the points a search measured."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from modelport.errors import CalibrationError, VerificationError

log = logging.getLogger("modelport.int8")

METHODS = ("minmax", "percentile", "entropy")  # how activation ranges are read from the calibration crops
DEFAULT_METHOD = "minmax"
DEFAULT_PERCENTILE = 99.999
# The search stops keeping nodes in fp32 beyond this share of the quantised ones: past it an "INT8" model is
# mostly float, slower than fp32 (every boundary costs a quantise/dequantise) and not what --int8 promises.
MAX_FP32_SHARE = 0.5
SPEED_BATCH = 16  # rows per call when a search point's speed is estimated against fp32
SPEED_ROUNDS = 3


class Comparison(Protocol):
    """What the injected judge returns for one output (``verify.OutputComparison`` is one)."""

    min_cosine: float
    min_centered_cosine: float
    nn_agreement: float
    failures: tuple[str, ...]
    median_cosine: float


# judge(output name, reference, got, tolerance) -> Comparison; export passes ``verify.compare_output`` so the
# search and the export's own verification apply the same definitions and thresholds.
Judge = Callable[[str, np.ndarray, np.ndarray, Any], Comparison]


@dataclass(frozen=True, slots=True)
class Int8Settings:
    """How to calibrate, and whether and how far to trade INT8 nodes for accuracy.

    ``judge`` and ``tolerance`` come from the caller (export gives ``verify.compare_output`` and
    ``verify.INT8``); without them the model is quantised once and left to the caller's verification.
    """

    method: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE
    accuracy_control: bool = True
    max_fp32_share: float = MAX_FP32_SHARE
    ranking_rows: int = 16  # validation rows each node's (group's) sensitivity is measured on
    # NNCF re-ranks every remaining quantiser group after each revert that made accuracy worse (minutes on
    # OSNet x1_0 with 2 cores), so its reverts are also capped by count.
    nncf_max_reverts: int = 10
    time_points: bool = True  # estimate each point's speed against fp32 (paired, batch SPEED_BATCH)
    speed_rounds: int = SPEED_ROUNDS
    # False keeps the best point when none meets the target (benchmarks measure it); export's verification
    # against PyTorch still fails such a model, so only an export without verification writes it.
    fail_closed: bool = True
    tolerance: Any = None
    judge: Judge | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"unknown INT8 calibration method {self.method!r}",
                                   hint=f"choose from: {', '.join(METHODS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise CalibrationError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.nncf_max_reverts < 1:
            raise CalibrationError(f"nncf_max_reverts must be at least 1, got {self.nncf_max_reverts}")
        if self.ranking_rows < 2:
            raise CalibrationError(f"ranking_rows must be at least 2, got {self.ranking_rows}")
        if not 0.0 <= self.max_fp32_share <= 1.0:
            raise CalibrationError(f"max_fp32_share must be in [0, 1], got {self.max_fp32_share}")

    @property
    def info(self) -> dict[str, object]:
        info: dict[str, object] = {"method": self.method, "accuracy_control": self.accuracy_control,
                                   "max_fp32_share": self.max_fp32_share, "fail_closed": self.fail_closed}
        if self.method == "percentile":
            info["percentile"] = self.percentile
        if self.tolerance is not None:
            info["target"] = describe_target(self.tolerance)
        return info


@dataclass(frozen=True, slots=True)
class Point:
    """One configuration a search measured against the fp32 model on the validation rows."""

    label: str
    fp32_nodes: tuple[str, ...]
    quantized_nodes: int  # nodes (ONNX) or operations (OpenVINO) that run in INT8
    min_cosine: float
    min_centered_cosine: float
    nn_agreement: float
    failures: tuple[str, ...]
    speed_vs_fp32: float | None = None  # paired quick estimate at batch SPEED_BATCH; benchmarks measure it properly
    median_cosine: float = 1.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def margin(self, tolerance: Any) -> float:
        """How far above (positive) or below the target's worst criterion this point is."""
        wanted = {"min_cosine": self.min_cosine, "min_median_cosine": self.median_cosine,
                  "min_centered_cosine": self.min_centered_cosine, "min_nn_agreement": self.nn_agreement}
        gaps = [got - getattr(tolerance, key) for key, got in wanted.items()
                if getattr(tolerance, key, None) is not None]
        return min(gaps, default=1.0)

    def describe(self) -> str:
        speed = f", {self.speed_vs_fp32:.2f}x fp32" if self.speed_vs_fp32 is not None else ""
        return (f"{self.label}: median cosine {self.median_cosine:.4f}, min {self.min_cosine:.4f}, centred "
                f"{self.min_centered_cosine:.4f}, NN agreement {self.nn_agreement:.3f}{speed}")

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["fp32_nodes"] = list(self.fp32_nodes)
        data["failures"] = list(self.failures)
        data["passed"] = self.passed
        return data


class Int8TargetError(VerificationError):
    """No INT8 configuration tried met the accuracy target; ``points`` holds every one measured."""

    def __init__(self, message: str, points: Sequence[Point], hint: str = "") -> None:
        super().__init__(message, hint)
        self.points = list(points)


def judge_point(settings: Int8Settings, label: str, fp32_nodes: Sequence[str], quantized: int,
                reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
                speed: float | None = None, quiet: bool = False) -> Point:
    """Score ``got`` against ``reference`` output by output with the settings' judge; the worst output counts."""
    if settings.judge is None:
        raise ValueError("judge_point needs Int8Settings.judge")
    checks = [settings.judge(name, ref, got[name], settings.tolerance) for name, ref in reference.items()]
    failures = tuple(f"{name}: {f}" for name, c in zip(reference, checks) for f in c.failures)
    point = Point(label, tuple(fp32_nodes), quantized, min(c.min_cosine for c in checks),
                  min(c.min_centered_cosine for c in checks), min(c.nn_agreement for c in checks), failures, speed,
                  min(c.median_cosine for c in checks))
    if not quiet:
        log.info("INT8 %s", point.describe())
    return point


def choose(points: Sequence[Point], settings: Int8Settings, what: str) -> Point:
    """The passing point with the fewest fp32 nodes (then the fastest), or Int8TargetError naming the best
    (with ``settings.fail_closed`` off: the best point, logged as missing the target)."""
    passing = [p for p in points if p.passed]
    if passing:
        return min(passing, key=lambda p: (len(p.fp32_nodes), -(p.speed_vs_fp32 or 0.0)))
    best = sorted(points, key=lambda p: p.margin(settings.tolerance), reverse=True)[:3]
    if not settings.fail_closed:
        log.warning("INT8 %s misses the target; keeping the best point, %s", what, best[0].describe())
        return best[0]
    raise Int8TargetError(
        f"{what}: no INT8 configuration met the target ({describe_target(settings.tolerance)}); "
        f"{len(points)} tried, best: "
        + "; ".join(p.describe() for p in best),
        points, hint="calibrate on crops like the deployment's (--calib DIR), try another calibration method, "
        "or keep fp32 / fp16 for this model",
    )


# --int8-target key -> (verify.Tolerance field, words)
TARGET_FIELDS = {"min_cosine": ("min_cosine", "min cosine"), "median_cosine": ("min_median_cosine", "median cosine"),
                 "centered_cosine": ("min_centered_cosine", "centred cosine"),
                 "nn_agreement": ("min_nn_agreement", "NN agreement")}


def describe_target(tolerance: Any) -> str:
    """The target's criteria in words: "min cosine >= 0.99, NN agreement >= 0.99"."""
    return ", ".join(f"{words} >= {getattr(tolerance, name):g}" for name, words in TARGET_FIELDS.values()
                     if getattr(tolerance, name, None) is not None)


def parse_target(text: str, base: Any) -> Any:
    """``base`` (a ``verify.Tolerance``) with the criteria of ``--int8-target`` laid over it:
    "median_cosine=0.99,min_cosine=0.97" (keys: min_cosine, median_cosine, centered_cosine, nn_agreement; a
    value of "none" drops that criterion)."""
    from dataclasses import replace as _replace

    fields = {key: name for key, (name, _) in TARGET_FIELDS.items()}
    changes: dict[str, float | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in fields:
            raise CalibrationError(f"--int8-target: {part!r} is not KEY=VALUE with a known key",
                                   hint=f"keys: {', '.join(fields)}; e.g. median_cosine=0.99,min_cosine=0.97")
        try:
            number = None if value.strip().lower() == "none" else float(value)
        except ValueError:
            raise CalibrationError(f"--int8-target: {key.strip()}={value!r} is not a number") from None
        if number is not None and not -1.0 <= number <= 1.0:
            raise CalibrationError(f"--int8-target: {key.strip()}={number:g} is outside [-1, 1]")
        changes[fields[key.strip()]] = number
    if not changes:
        raise CalibrationError("--int8-target is empty", hint="e.g. median_cosine=0.99,min_cosine=0.97")
    target = _replace(base, **changes)
    if all(getattr(target, name) is None for name in fields.values()):
        raise CalibrationError("--int8-target drops every criterion: INT8 would be judged by nothing",
                               hint="keep at least one, e.g. min_cosine=0.97")
    return target


def paired_speed(fp32: Callable[[np.ndarray], object], int8: Callable[[np.ndarray], object],
                 batch: np.ndarray, rounds: int = SPEED_ROUNDS) -> float:
    """fp32 seconds / int8 seconds per call on ``batch``, alternating the two (median of ``rounds`` pairs)."""
    fp32(batch)
    int8(batch)  # warm-up: first calls allocate
    ratios = []
    for _ in range(rounds):
        start = time.perf_counter()
        fp32(batch)
        middle = time.perf_counter()
        int8(batch)
        ratios.append((middle - start) / max(time.perf_counter() - middle, 1e-9))
    return float(np.median(ratios))


def speed_rows(batch: np.ndarray) -> np.ndarray:
    """``SPEED_BATCH`` rows of ``batch`` (repeated when it has fewer)."""
    return np.ascontiguousarray(batch[np.arange(SPEED_BATCH) % len(batch)])


def record(settings: Int8Settings, runtime: str, points: Sequence[Point], chosen: Point | None) -> dict[str, object]:
    """What the artifact's spec keeps under ``extra["int8"]``: settings, every point, and what stayed fp32."""
    data: dict[str, object] = {"runtime": runtime, **settings.info}
    if chosen is not None:
        data["target_met"] = chosen.passed
        data["fp32_nodes"] = list(chosen.fp32_nodes)
        data["quantized_nodes"] = chosen.quantized_nodes
        data["speed_vs_fp32"] = chosen.speed_vs_fp32
    data["points"] = [p.to_dict() for p in points]
    return data
