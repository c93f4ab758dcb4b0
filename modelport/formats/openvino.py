"""OpenVINO export (IR converted from ONNX, spec in metadata.json beside the xml; a detector's Ultralytics
metadata in metadata.yaml) and its runner."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, ExportError
from modelport.formats.base import ExportOptions, Runner
from modelport.formats.closing import close_at_exit
from modelport.spec import ModelSpec

METADATA = "metadata.json"
# Closed THROUGHPUT queues, with when they were closed, freed by a later close once RETIRE_SECONDS have passed.
# wait_all() returns when the last request's callback has run, not when OpenVINO's thread has finished returning
# from it: a queue dropped at once could lose its last reference on that thread, whose destructor then joined
# itself and aborted the process ("terminate called ... Resource deadlock avoided": 3 runs in 5 of an INT8
# export pinned to one core). Queues left at exit go with the interpreter's other objects.
_RETIRED: list[tuple[float, object]] = []
_RETIRED_LOCK = threading.Lock()
RETIRE_SECONDS = 1.0


def xml_in(directory: Path) -> Path:
    xmls = sorted(directory.glob("*.xml"))
    if len(xmls) != 1:
        raise CorruptFileError(f"{directory}: expected one OpenVINO .xml file, found {len(xmls)}")
    return xmls[0]


def triton_files(directory: Path, spec_file: str) -> dict[str, Path | bytes]:
    """Triton's OpenVINO backend reads ``model.xml`` and ``model.bin``; the spec is copied beside them."""
    xml = xml_in(directory)
    return {"model.xml": xml, "model.bin": xml.with_suffix(".bin"), spec_file: directory / METADATA}


def export(module, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    from modelport.formats.onnx import write_onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = write_onnx(module, spec, Path(tmp) / "model.onnx", opset=options.opset)
        return from_onnx(onnx_path, spec, dest, options)


def from_onnx(onnx_path: Path, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    """An IR converted from an ONNX graph (a plain export, or one with NMS inside), quantised for an int8 spec."""
    import openvino as ov

    dest.mkdir(parents=True, exist_ok=True)
    stem = dest.name.removesuffix("_openvino_model")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ExportError(f"{dest}: OpenVINO conversion failed: {exc}") from exc
    if spec.precision == "int8":
        from modelport.quantize import calibration_for, quantize_openvino_int8

        model, spec = quantize_openvino_int8(model, calibration_for(spec, options), spec)
    # fp32 artifacts keep fp32 weights; save_model would otherwise compress them to fp16.
    ov.save_model(model, str(dest / f"{stem}.xml"), compress_to_fp16=spec.precision == "fp16")
    (dest / METADATA).write_text(spec.to_json())
    from modelport.formats import ultralytics_meta

    if (meta := ultralytics_meta.metadata(spec)) is not None:  # what Ultralytics' OpenVINO loader reads
        (dest / ultralytics_meta.YAML_FILE).write_text(ultralytics_meta.yaml_text(meta))
    return dest


def read_spec(path: Path) -> ModelSpec:
    meta = Path(path) / METADATA
    if not meta.is_file():
        raise CorruptFileError(f"{path}: no {METADATA} in this OpenVINO model folder",
                               hint="export it with `modelport export`")
    return ModelSpec.from_json(meta.read_text(), origin=str(meta))


class OpenVinoRunner(Runner):
    """OpenVINO on the CPU, tuned as its documentation recommends: the LATENCY hint for single images,
    the THROUGHPUT hint with asynchronous infer requests (one per stream) for batches."""

    format_id = "openvino"

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import openvino as ov

        spec = read_spec(path)
        super().__init__(spec, path, "cpu")
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(xml_in(Path(path))))
        except CorruptFileError:
            raise
        except Exception as exc:
            raise CorruptFileError(f"{path}: OpenVINO cannot load it ({exc})") from None
        self._threads = threads
        self._compiled: dict[str, object] = {}
        self._queue = None
        self._request = self._compile("LATENCY").create_infer_request()
        # Names, by output index: a port would keep its compiled model alive after ``close``.
        self._outputs = [o.get_any_name() for o in self._compiled["LATENCY"].outputs]
        self.settings = {"performance_hint": {"batch 1": "LATENCY", "batch > 1": "THROUGHPUT + AsyncInferQueue"},
                         "inference_precision": self._config("LATENCY").get("INFERENCE_PRECISION_HINT", "default"),
                         "threads": threads or "default"}

    def close(self) -> None:
        """Wait for the THROUGHPUT queue's requests, then drop the requests and compiled models now, on this thread,
        rather than in the interpreter's teardown (the queue a little later: ``_RETIRED``); a later call compiles
        again."""
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.wait_all()  # no request may still be calling back into Python
        now = time.monotonic()
        with _RETIRED_LOCK:
            expired = [q for t, q in _RETIRED if now - t >= RETIRE_SECONDS]
            _RETIRED[:] = [(t, q) for t, q in _RETIRED if now - t < RETIRE_SECONDS]
            if queue is not None:
                _RETIRED.append((now, queue))
        del queue, expired  # the expired ones are freed here, on this thread
        self._request = None
        self._compiled.clear()

    def _latency_request(self):
        if self._request is None:
            self._request = self._compile("LATENCY").create_infer_request()
        return self._request

    def release_memory(self) -> None:
        """``CompiledModel.release_memory()`` on every compiled model (one per performance hint)."""
        for compiled in self._compiled.values():
            compiled.release_memory()

    def _config(self, hint: str) -> dict[str, str]:
        # Some CPUs default to bf16 inference; an artifact computes in the precision it was verified in:
        # fp16 runs in f16 where the CPU has it (f32 elsewhere), int8's float layers in f32.
        precision = "f16" if self.spec.precision == "fp16" else "f32"
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
        if self._threads:
            config["INFERENCE_NUM_THREADS"] = str(self._threads)
        return config

    def _compile(self, hint: str):
        if hint not in self._compiled:
            try:
                self._compiled[hint] = self._core.compile_model(self._model, "CPU", self._config(hint))
            except Exception as exc:
                raise CorruptFileError(f"{self.path}: OpenVINO cannot compile it ({exc})") from None
            close_at_exit(self)  # again after a close: a call reopened it
        return self._compiled[hint]

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if len(batch) == 1 or self.max_batch is not None:
            result = self._latency_request().infer({0: batch})
            return {name: np.array(result[i]) for i, name in enumerate(self._outputs)}
        return self._infer_async(batch)

    def _infer_many(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._latency_request().infer(feeds)
        return {name: np.array(result[i]) for i, name in enumerate(self._outputs)}

    def _async_queue(self):
        """The THROUGHPUT queue, made on first use; its callback files each part's outputs in its ``_Job``."""
        import openvino as ov

        if self._queue is None:
            compiled = self._compile("THROUGHPUT")
            self._queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            outputs = list(compiled.outputs)
            lock = threading.Lock()

            def done(request, tag: tuple[_Job, int]) -> None:
                job, index = tag
                out = {o.get_any_name(): request.get_tensor(o).data.copy() for o in outputs}
                with lock:  # callbacks of different requests may run at once
                    job.results[index] = out
                    job.left -= 1
                    if job.left == 0:
                        job.finished.set()

            self._queue.set_callback(done)
        return self._queue

    def _infer_async(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._finished(self._start(batch))

    # Batch after batch (``stream``): the next batches' requests start as the current one's finish, before
    # the current one is returned, so the queue never drains between batches.
    @property
    def _overlaps(self) -> bool:
        return self.max_batch is None

    def _start(self, batch: np.ndarray):
        if len(batch) < 2:  # nothing to spread over the requests
            return self(batch)
        queue = self._async_queue()
        parts = np.array_split(batch, min(len(queue), len(batch)))
        job = _Job([None] * len(parts), len(parts), threading.Event())
        for index, part in enumerate(parts):  # waits for an idle request
            queue.start_async({0: np.ascontiguousarray(part)}, (job, index))
        return job

    def _finished(self, started) -> dict[str, np.ndarray]:
        if isinstance(started, dict):
            return started
        started.finished.wait()
        return {name: np.concatenate([r[name] for r in started.results]) for name in self._outputs}

    def _abandon(self, started) -> None:
        if isinstance(started, _Job) and self._queue is not None:
            self._queue.wait_all()  # leave no request running on buffers the caller may reuse


@dataclass(slots=True)
class _Job:
    """One batch on the THROUGHPUT queue: its parts' outputs, how many still run, and when all are done."""

    results: list
    left: int
    finished: threading.Event


def load(path: Path, device: str = "cpu", threads: int | None = None) -> OpenVinoRunner:
    return OpenVinoRunner(path, device, threads=threads)
