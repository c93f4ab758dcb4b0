"""ONNX export (torch.onnx, spec in metadata_props) and an ONNX Runtime runner."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, ExportError
from modelport.formats.base import ExportOptions, Runner
from modelport.formats.closing import close_at_exit
from modelport.formats.feeds import example_batch, feed_tensors
from modelport.spec import SPEC_KEY, ModelSpec


def export(module, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    write_onnx(module, spec, dest, opset=options.opset)
    return from_onnx(dest, spec, dest, options)


def from_onnx(onnx_path: Path, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    """``onnx_path`` as modelport's artifact at ``dest`` (may be the same file): simplified on request, made
    fp16/int8 for such a spec, the spec embedded, checked."""
    import onnx

    model = onnx.load(str(onnx_path))
    if options.simplify:
        import onnxslim

        model = onnxslim.slim(model)
    if spec.precision != "fp32":
        from modelport.quantize import onnx_variant

        model, spec = onnx_variant(model, spec, options)  # an int8 spec records its quantisation
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    add_ultralytics_metadata(model, spec)
    model.producer_name = "modelport"
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest


def add_ultralytics_metadata(model, spec: ModelSpec) -> None:
    """Ultralytics' keys beside the spec (``modelport.formats.ultralytics_meta``), when the spec has them.

    Ultralytics' ONNX loader takes a *named* batch dimension of the first output for its ``dynamic=True`` (any
    batch, height and width) and then letterboxes to the smallest rectangle, which a fixed-size input refuses.
    For a fixed height and width the outputs' batch dimension is therefore left unnamed: the batch stays dynamic
    (the input's ``batch``), and Ultralytics letterboxes to the full size its metadata states."""
    from modelport.formats import ultralytics_meta

    meta = ultralytics_meta.metadata(spec)
    if meta is None:
        return
    for key, value in ultralytics_meta.onnx_props(meta):
        if key != SPEC_KEY:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    if not ultralytics_meta.dynamic(meta):
        for output in model.graph.output:
            dims = output.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_param"):
                dims[0].Clear()


def write_onnx(module, spec: ModelSpec, dest: Path, *, opset: int, dynamic: bool | None = None) -> Path:
    """Plain torch.onnx export with the spec's tensor names; its named dimensions (a detector's height and
    width, say) stay dynamic, and so does the batch unless the spec fixes it (or ``dynamic`` says)."""
    import torch

    dynamic = spec.max_batch is None if dynamic is None else dynamic
    example = feed_tensors(example_batch(spec), spec)
    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    axes = {}
    for t in (*spec.inputs, *spec.outputs):
        dims = {i: d for i, d in enumerate(t.shape) if isinstance(d, str) and i > 0}
        if dynamic:
            dims[0] = "batch"
        if dims:
            axes[t.name] = dims
    with warnings.catch_warnings():
        # The TorchScript-based exporter is the one that honours opsets below 18 (deprecated upstream).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with torch.no_grad():
                torch.onnx.export(
                    module, example, str(dest), dynamo=False, opset_version=opset,
                    input_names=names_in, output_names=names_out, dynamic_axes=axes or None,
                    do_constant_folding=True,
                )
        except Exception as exc:  # torch raises many unrelated types here
            raise ExportError(f"{dest}: torch.onnx.export failed: {exc}") from exc
    return dest


def read_spec(path: Path) -> ModelSpec:
    import onnxruntime as ort

    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a loadable ONNX model ({exc})") from None
    return _spec_from_meta(meta.custom_metadata_map, path)


def _spec_from_meta(meta: dict[str, str], path: Path) -> ModelSpec:
    if SPEC_KEY not in meta:
        raise CorruptFileError(
            f"{path}: no modelport metadata in this ONNX file", hint="export it with `modelport export`"
        )
    return ModelSpec.from_json(meta[SPEC_KEY], origin=str(path))


def session_options(threads: int | None = None, spin: bool = True):
    """ONNX Runtime's performance-tuning advice: all graph optimisations, one intra-op thread per
    physical core (hyper-threads slow convolutions down), sequential execution for a CNN.

    ``spin=False`` stops idle worker threads from busy-waiting, which ORT advises when the CPU is shared:
    measured on the 2-core machine, spinning ORT threads slowed a PyTorch pipeline timed after them.
    """
    import onnxruntime as ort

    from modelport.machine import physical_cores

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    # The memory pattern (one block per input shape, planned on the second run) is allocated beside the arena
    # chunks of the first run, which the arena keeps: measured on a two-convolution model at 2x3x720x1280, 2.4 GB
    # resident with it and 1.0 GB without, at the same speed (0.19 s per run); OSNet x1_0 at batches 1-64 ran
    # as fast either way. Dynamic shapes get a new pattern per shape.
    opts.enable_mem_pattern = False
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


# Rows per stream below which one multi-threaded run is the faster choice for a ReID-sized input: at
# batch 2 OSNet x1_0 measured 58 img/s either way. A 640x640 detector gains from any split (yolo11n at batch 2:
# 13.9 img/s split vs 8.8 in one run), so detectors pass ``split_from=1``: split once every stream gets a row.
STREAM_MIN_ROWS = 2
# Input values one stream feeds ONNX Runtime per run: a stream works through its share of a large batch in
# runs this small (8 ReID crops of 3x256x128, one 3x640x640 image), so each run's activations stay near the
# cache. Two single-threaded streams, model only, against one run per stream (`benchmarks/onnx_streams.py
# EXPORT H W --runs N`, medians of 3 rounds): osnet_x0_25 at batch 256 411 vs 377 img/s, osnet_x1_0 at batch
# 128 49.5 vs 46.2, yolo11n at batch 64 14.9 vs 12.7.
STREAM_RUN_VALUES = 8 * 3 * 256 * 128


class OnnxRunner(Runner):
    """ONNX Runtime session; on the CPU, large batches of a dynamic-batch model run as parallel streams.

    Streams: one worker per physical core, each pulling runs of at most ``STREAM_RUN_VALUES`` input values
    off the batch and running them through a shared single-threaded session (ORT sessions may be run
    concurrently). Every operator then runs whole on one core, with no synchronisation between cores per
    operator, the way OpenVINO's THROUGHPUT hint uses streams; pulling keeps both cores busy when one is
    interrupted. Measured on the 2-core machine (benchmarks/RESULTS.md) this beat one two-threaded run of
    the same batch, most of all when another process shares the CPU. Small batches keep the
    multi-threaded session, which has the lower latency. ``split_from`` is the batch size from which the
    streams take over: by default ``streams * STREAM_MIN_ROWS``, and never below ``streams``.
    """

    format_id = "onnx"

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None, spin: bool = True,
                 streams: int | None = None, split_from: int | None = None) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = int(device.split(":")[1]) if ":" in device else 0
                providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
            else:
                warnings.warn(
                    f"{path}: onnxruntime has no CUDA provider here (install onnxruntime-gpu); running on the CPU",
                    RuntimeWarning,
                    stacklevel=3,
                )
                device = "cpu"
        try:
            opts = session_options(threads, spin)
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
            self._options, self._asked = opts, providers  # to reopen it (release_memory)
        except Exception as exc:
            raise CorruptFileError(f"{path}: ONNX Runtime cannot load it ({exc})") from None
        super().__init__(_spec_from_meta(self.session.get_modelmeta().custom_metadata_map, path), path, device)
        self.providers = self.session.get_providers()
        on_cpu = self.providers[0] == "CPUExecutionProvider"
        if streams is None:
            streams = opts.intra_op_num_threads if on_cpu and self.spec.max_batch is None else 1
        if streams > 1 and (not on_cpu or self.spec.max_batch is not None):
            raise ValueError(f"{path}: streams need a dynamic-batch model on the CPU")
        self.streams = max(1, int(streams))
        self.split_from = max(self.streams, split_from or self.streams * STREAM_MIN_ROWS)
        self._spin = spin
        self._stream_session = None
        self._pool = None
        self.settings = {"providers": self.providers, "graph_optimization_level": "ORT_ENABLE_ALL",
                         "intra_op_num_threads": opts.intra_op_num_threads, "execution_mode": "sequential",
                         "allow_spinning": spin, "streams": self.streams,
                         "streams_from_batch": self.split_from if self.streams > 1 else None}
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.streams > 1 and len(batch) >= self.split_from:
            return self._infer_streams(batch)
        values = self.session.run(self._outputs, {self._input: batch})
        return dict(zip(self._outputs, values))

    def _infer_many(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))

    def _streams(self):
        """The single-threaded session and the worker pool, made on first use: callers with small batches
        never pay for them."""
        from concurrent.futures import ThreadPoolExecutor

        import onnxruntime as ort

        if self._stream_session is None:
            self._stream_session = ort.InferenceSession(str(self.path), session_options(1, self._spin),
                                                        providers=["CPUExecutionProvider"])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="ort-stream")
            close_at_exit(self)
        return self._stream_session, self._pool

    def _infer_streams(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._finished(self._start(batch))

    @property
    def _overlaps(self) -> bool:
        # Batch after batch (``stream``): each batch's runs are queued to the stream workers as it arrives,
        # so while the caller handles a batch's outputs, and while one stream finishes its last run, the
        # workers are already on the next batches; no batch ends on a barrier.
        return self.streams > 1

    def _start(self, batch: np.ndarray):
        if len(batch) == 0:  # the plain call knows the output shapes of nothing
            return self(batch)
        session, pool = self._streams()
        rows = self.stream_rows(batch.shape)
        return [pool.submit(session.run, self._outputs, {self._input: batch[s:s + rows]})
                for s in range(0, len(batch), rows)]

    def _finished(self, started) -> dict[str, np.ndarray]:
        if isinstance(started, dict):
            return started
        results = [f.result() for f in started]
        return {name: np.concatenate([r[i] for r in results]) for i, name in enumerate(self._outputs)}

    def _abandon(self, started) -> None:
        for f in started if isinstance(started, list) else ():
            f.cancel()

    def stream_rows(self, shape: tuple[int, ...]) -> int:
        """Rows per stream run for a batch of this shape: ``STREAM_RUN_VALUES`` worth, at least one, and no more
        than an even share of the batch."""
        values = int(np.prod(shape[1:]))
        share = -(-shape[0] // self.streams)
        return max(1, min(share, STREAM_RUN_VALUES // max(1, values)))

    def release_streams(self) -> None:
        """Drop the stream session; the next large batch opens a fresh one. Measured at batch 32, ORT's arena
        shrinkage handed back only a fifth of what a single-threaded session kept, so reopening is the way
        to return a large batch's memory while idle."""
        self._stream_session = None

    def release_memory(self) -> None:
        """Drop the batch streams and reopen the session: the arena keeps what the largest run took, and arena
        shrinkage (``memory.enable_memory_arena_shrinkage``) handed none of it back (measured after a
        4x3x720x1280 run of a two-convolution model: 1.9 GB resident before and after a shrinking run, 0.1 GB
        after reopening, which took 0.2 s)."""
        import onnxruntime as ort

        self.release_streams()
        self.session = None  # the old session and its arena go before the new one is made
        self.session = ort.InferenceSession(str(self.path), self._options, providers=self._asked)

    def close(self) -> None:
        """Stop the stream workers (waiting out their runs) and drop the stream session; the next large batch
        opens them again."""
        pool, self._pool = self._pool, None
        if pool is not None:
            # A worker never joins itself: closed from one (its last reference dropped there), it only stops.
            pool.shutdown(wait=threading.current_thread() not in getattr(pool, "_threads", ()), cancel_futures=True)
        self._stream_session = None


def load(path: Path, device: str = "cpu", threads: int | None = None, spin: bool = True,
         streams: int | None = None, split_from: int | None = None) -> OnnxRunner:
    return OnnxRunner(path, device, threads=threads, spin=spin, streams=streams, split_from=split_from)
