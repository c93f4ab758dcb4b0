"""ONNX Runtime INT8: static QDQ quantisation and a layer-sensitivity search that keeps nodes in fp32.

The model is quantised once (``quantize_static``). Keeping a node in fp32 is then an edit of that QDQ
graph: the node reads the float tensors its DequantizeLinear inputs stood for (the activation before its
QuantizeLinear, the fp32 weight and bias), so each candidate costs one session and one evaluation, and
every other node keeps exactly the same quantisation. Sensitivity is measured, not guessed: each
quantised node is kept in fp32 on its own and ranked by how much that lowers the mean cosine distance
to the fp32 model on a few rows. The most sensitive nodes are kept in fp32 first, 1, 2, 4, ... of them,
then the smallest passing count is found by bisection.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from modelport.errors import ExportError
from modelport.int8.settings import Int8Settings, Point, choose, judge_point, log, paired_speed, record, speed_rows

EVAL_CHUNK = 32  # rows per evaluation call
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")  # what the sensitivity search counts and may keep in fp32
ENTROPY_BINS = 512
FOLDED_ACTIVATIONS = ("Relu", "Clip")  # removed by QDQ quantisation (its QuantizeLinear clips instead)


@dataclass(frozen=True, slots=True)
class OnnxInt8:
    """The quantised model's path, the record for the spec, and the point it was chosen at."""

    path: Path
    record: dict[str, object]
    chosen: Point | None


def _reader(name: str, batch: np.ndarray, size: int):
    """A calibration reader over ``batch`` in chunks of ``size`` rows, with the ``__len__`` / ``set_range``
    that ONNX Runtime's strided calibration needs (ranges are merged stride by stride, so histogram methods
    hold one chunk's intermediate tensors at a time instead of every chunk's)."""
    from onnxruntime.quantization import CalibrationDataReader

    def chunks(rows: np.ndarray) -> Iterator[np.ndarray]:
        # Chunks of exactly ``size`` rows; the last wraps around to real rows (padding would skew the ranges).
        for start in range(0, len(rows), size):
            yield rows[np.arange(start, start + size) % len(rows)]

    items = list(chunks(batch))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter = iter(items)

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._iter, None)
            return None if chunk is None else {name: chunk}

        def __len__(self) -> int:
            return len(items)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._iter = iter(items[start_index:end_index])

    return Reader()


class _Quantizer:
    """quantize_static on the pre-processed model, and ``keep_fp32`` to write candidates from its result."""

    def __init__(self, src: Path, work: Path, batch: np.ndarray, input_name: str, chunk: int,
                 settings: Int8Settings) -> None:
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.work, self.settings = work, settings
        self.prepared = work / "prepared.onnx"
        quant_pre_process(str(src), str(self.prepared))  # shape inference + graph clean-up, as ORT advises
        self.float_model = onnx.load(str(self.prepared))
        nodes = self.float_model.graph.node
        self.quantizable = [n.name for n in nodes if n.op_type in QUANTIZED_OPS]
        convs = [n for n in nodes if n.op_type == "Conv"]
        # 7-bit weights for the first convolution: its input is the whole image range, and on x86 CPUs without
        # VNNI the u8 x s8 pair sums saturate int16 there (OSNet x0_25: min cosine 0.957 against 0.9995 for the
        # same ranges simulated in float); NNCF's overflow fix does the same for OpenVINO.
        self.overrides = {convs[0].input[1]: [{"axis": 0, "reduce_range": True}]} if convs else {}
        # A BatchNormalization left unfused (after a Gemm) has rank-1 weights that ORT cannot quantize per
        # channel (it warns and falls back); as a per-feature affine it costs nothing in float.
        self.always_float = [n.name for n in nodes if n.op_type == "BatchNormalization"]
        self.reader = _reader(input_name, batch, chunk)

    def ranges(self, method) -> Path:
        """Activation ranges measured with ONNX Runtime's calibrator one chunk at a time (histograms merge, so
        memory holds one chunk's tensors), saved as the calibration cache ``quantize_static`` reads.

        ``quantize_static`` cannot set the histogram sizes, and its Entropy default (128 bins into 128
        quantised bins) leaves nothing to clip: it returned exactly the min-max ranges. Here Percentile uses
        2048 bins and Entropy 512 into 128 (ONNX Runtime's KL search is a Python loop over candidate
        thresholds per tensor: with 2048 bins it ran over 15 minutes on OSNet x1_0 on 2 shared cores), and
        ranges are asymmetric (post-ReLU activations would otherwise waste half the uint8 range)."""
        from onnxruntime.quantization import CalibrationMethod, create_calibrator, save_tensors_data

        options: dict[str, object] = {}
        if method == CalibrationMethod.Percentile:
            options = {"num_bins": 2048, "percentile": self.settings.percentile, "symmetric": False}
        elif method == CalibrationMethod.Entropy:
            options = {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128, "symmetric": False}
        calibrator = create_calibrator(self.prepared, None, augmented_model_path=str(self.work / "augmented.onnx"),
                                       calibrate_method=method, extra_options=options)
        for index in range(len(self.reader)):
            self.reader.set_range(index, index + 1)
            calibrator.collect_data(self.reader)
        cache = self.work / f"ranges_{self.settings.method}.json"
        save_tensors_data(calibrator.compute_data(), cache)
        return cache

    def quantize(self, name: str) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[self.settings.method]
        dst = self.work / name
        try:
            quantize_static(
                str(self.prepared), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                nodes_to_exclude=self.always_float, extra_options={"TensorQuantOverrides": self.overrides},
                calibration_cache_path=str(self.ranges(method)),
            )
        except Exception as exc:  # the quantisation tools raise many unrelated types
            raise ExportError(f"{dst}: ONNX Runtime INT8 quantisation failed: {exc}") from exc
        self.qdq = dst
        return dst

    def keep_fp32(self, names: Sequence[str], dst: Path) -> Path:
        """The quantised model with the nodes ``names`` computing in fp32 on float inputs."""
        import onnx

        model = onnx.load(str(self.qdq))
        graph = model.graph
        float_nodes = {n.name: n for n in self.float_model.graph.node}
        float_producer = {o: n for n in self.float_model.graph.node for o in n.output}
        float_inits = {i.name: i for i in self.float_model.graph.initializer}
        producer = {o: n for n in graph.node for o in n.output}
        values = set(producer) | {i.name for i in graph.input}
        have = {i.name for i in graph.initializer}

        def initializer(name: str) -> str:
            fresh = f"{name}_fp32"  # the original name may now be a DequantizeLinear's output
            if fresh not in have:
                copy = onnx.TensorProto()
                copy.CopyFrom(float_inits[name])
                copy.name = fresh
                graph.initializer.append(copy)
                have.add(fresh)
            return fresh

        def activation(name: str) -> str | None:
            """The float tensor ``name`` in the quantised graph. Where quantisation folded a Relu/Clip into the
            QuantizeLinear after it, ``name`` now comes straight from the node before (renamed); the fp32 node
            gets the Relu/Clip back, so it sees what the float model computes."""
            source, current = float_producer.get(name), producer.get(name)
            if source is None or current is None or current.op_type == source.op_type:
                return name if name in values else None
            if source.op_type not in FOLDED_ACTIVATIONS:
                return None
            out = f"{name}_fp32"
            if out not in values:
                copy = onnx.NodeProto()
                copy.CopyFrom(source)
                copy.name = f"{source.name}_fp32"
                copy.input[0], copy.output[0] = name, out
                for index in range(1, len(copy.input)):  # Clip's bounds
                    if copy.input[index] and copy.input[index] not in values | have:
                        copy.input[index] = initializer(copy.input[index])
                graph.node.append(copy)
                values.add(out)
            return out

        wanted = set(names)
        for node in list(graph.node):
            if node.name not in wanted:
                continue
            for index, name in enumerate(node.input):
                dq = producer.get(name)
                if dq is None or dq.op_type != "DequantizeLinear":
                    continue
                original = float_nodes[node.name].input[index]
                if original in float_inits:  # a weight or bias: its fp32 initializer
                    node.input[index] = initializer(original)
                else:
                    node.input[index] = activation(original) or producer[dq.input[0]].input[0]
        _drop_unused(model)
        _sort(model)
        onnx.save(model, str(dst))
        return dst


def _sort(model) -> None:
    """Topological order (nodes put back are appended at the end)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        left = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise ExportError(f"cannot order the INT8 graph: {', '.join(n.name for n in left[:5])} never ready")
        pending = left
    del graph.node[:]
    graph.node.extend(ordered)


def _drop_unused(model) -> None:
    """Remove nodes whose outputs nothing reads (the DequantizeLinear pairs no node uses any more)."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


class _Evaluator:
    """The fp32 model's outputs on the validation rows, and a point for any candidate model."""

    def __init__(self, src: Path, batch: np.ndarray, settings: Int8Settings) -> None:
        self.batch, self.settings = batch, settings
        self.fp32 = _session(src)
        self.reference = _run(self.fp32, batch)

    def __call__(self, path: Path, label: str, fp32_nodes: Sequence[str], quantized: int) -> Point:
        session = _session(path)
        speed = None
        if self.settings.time_points:
            rows = speed_rows(self.batch)
            name = self.fp32.get_inputs()[0].name
            speed = paired_speed(lambda b: self.fp32.run(None, {name: b}), lambda b: session.run(None, {name: b}),
                                 rows, self.settings.speed_rounds)
        return judge_point(self.settings, label, fp32_nodes, quantized, self.reference, _run(session, self.batch),
                           speed)

    def distance(self, path: Path, rows: int) -> float:
        """Mean cosine distance to the fp32 outputs over the first ``rows`` rows (worst output)."""
        got = _run(_session(path), self.batch[:rows])
        worst = 0.0
        for name, ref in self.reference.items():
            a, b = ref[:rows].reshape(rows, -1), got[name].reshape(rows, -1)
            cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
            worst = max(worst, float(np.mean(1.0 - cos)))
        return worst


def _session(path: Path):
    import onnxruntime as ort

    from modelport.formats.onnx import session_options

    return ort.InferenceSession(str(path), session_options(spin=False), providers=["CPUExecutionProvider"])


def _run(session, batch: np.ndarray) -> dict[str, np.ndarray]:
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    parts = [session.run(outputs, {name: batch[s:s + EVAL_CHUNK]}) for s in range(0, len(batch), EVAL_CHUNK)]
    return {o: np.concatenate([p[i] for p in parts]) for i, o in enumerate(outputs)}


def rank_nodes(quantizer: _Quantizer, evaluate: "_Evaluator", rows: int) -> list[str]:
    """Quantised nodes, most sensitive first: the mean cosine distance to the fp32 model on the first ``rows``
    validation rows when the node alone computes in fp32 (lower means the node costs more accuracy)."""
    distance: dict[str, float] = {}
    for name in quantizer.quantizable:
        path = quantizer.keep_fp32([name], quantizer.work / "rank.onnx")
        distance[name] = evaluate.distance(path, rows)
    return sorted(quantizer.quantizable, key=lambda n: distance[n])


def _counts(limit: int) -> list[int]:
    """1, 2, 4, ... below ``limit``, then ``limit``."""
    counts, k = [], 1
    while k < limit:
        counts.append(k)
        k *= 2
    return [*counts, limit] if limit > 0 else []


def quantize_onnx(src: Path, dst: Path, batch: np.ndarray, input_name: str, chunk: int,
                  settings: Int8Settings) -> OnnxInt8:
    """Quantise ``src`` into ``dst`` (calibrated and, with a judge, validated on ``batch``).

    Without a judge, or when full INT8 meets the target, that is the result. Otherwise, with
    ``settings.accuracy_control``, the noisiest nodes stay fp32 until the target holds, up to
    ``settings.max_fp32_share`` of them; Int8TargetError names the best points when nothing passes.
    """
    with tempfile.TemporaryDirectory(prefix="modelport-int8-") as tmp:
        work = Path(tmp)
        quantizer = _Quantizer(src, work, batch, input_name, chunk, settings)
        total = len(quantizer.quantizable)
        full = quantizer.quantize("full.onnx")
        if settings.judge is None:
            shutil.copyfile(full, dst)
            return OnnxInt8(dst, record(settings, "onnxruntime", [], None), None)
        evaluate = _Evaluator(src, batch, settings)
        points = [evaluate(full, "full INT8", (), total)]
        paths = {(): full}
        if not points[0].passed and settings.accuracy_control and total:
            log.info("INT8 full model misses the target; ranking %d nodes by sensitivity", total)
            ranked = rank_nodes(quantizer, evaluate, min(settings.ranking_rows, len(batch)))
            limit = int(settings.max_fp32_share * total)

            def attempt(k: int) -> Point:
                kept = tuple(ranked[:k])
                paths[kept] = quantizer.keep_fp32(kept, work / f"fp32_{k}.onnx")
                point = evaluate(paths[kept], f"{k} of {total} nodes fp32", kept, total - k)
                points.append(point)
                return point

            low = 0
            for k in _counts(limit):
                if attempt(k).passed:
                    high = k
                    while high - low > 1:  # smallest passing count, assuming more fp32 nodes never hurt
                        middle = (low + high) // 2
                        low, high = (low, middle) if attempt(middle).passed else (middle, high)
                    break
                low = k
        chosen = choose(points, settings, str(dst))
        shutil.copyfile(paths[chosen.fp32_nodes], dst)
        if chosen.fp32_nodes:
            log.info("INT8 %s keeps %d nodes in fp32: %s", dst.name, len(chosen.fp32_nodes),
                     ", ".join(chosen.fp32_nodes))
        return OnnxInt8(dst, record(settings, "onnxruntime", points, chosen), chosen)
