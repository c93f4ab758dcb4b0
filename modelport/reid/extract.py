"""`reid extract`: embeddings for every detection that lacks one for a model, batched and resumable.

A reader thread decodes frames, crops and preprocesses while the model runs batch after batch through
``Runner.embed_stream`` (ONNX Runtime and OpenVINO keep the next two batches started while the main thread
stores the last), so the runtime rarely waits for pixels or for the database. Batches are stored in
transactions committed every half second, so a killed run loses at most that much work and a rerun picks
up exactly the detections still missing.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from modelport.formats import Runner
from modelport.preprocess import CropBatch
from modelport.reid import store
from modelport.reid.frames import crop, read_frames, sharpness
from modelport.spec import sha256_file

# Each commit costs several fsyncs (~30 ms measured here), as much as a whole batch of a small model;
# grouping batches keeps that under a few percent, and a kill still loses only uncommitted work.
COMMIT_EVERY_S = 0.5


@dataclass(frozen=True, slots=True)
class ExtractResult:
    model: store.ModelRecord
    computed: int  # embeddings written by this run
    already: int  # detections that had one before
    seconds: float
    is_default: bool

    @property
    def crops_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Batch:
    ids: list[int]
    inputs: np.ndarray  # the model's input (preprocess.prepare): float32 NCHW, or uint8 NHWC pixels
    sharpness: list[float]


def model_record(runner: Runner) -> store.ModelRecord:
    """Who made an embedding: the model name plus the sha256 of its source weights.

    Exports carry their weights' sha256 in the spec, so the ONNX export and the .pt it came from share a
    key (their embeddings agree to verification tolerance). Random weights without a file are hashed
    from their tensors, so two differently seeded random models never mix.
    """
    spec = runner.spec
    digest = spec.source.sha256
    if digest is None and runner.path is not None and Path(runner.path).is_file():
        digest = sha256_file(runner.path)
    if digest is None and hasattr(runner, "module"):
        h = hashlib.sha256()
        for tensor in runner.module.state_dict().values():
            h.update(tensor.detach().cpu().numpy().tobytes())
        digest = h.hexdigest()
    if digest is None:
        raise store.DatabaseError(f"{runner.describe()}: cannot tell which weights this model holds")
    dim = int(np.prod([d for d in spec.outputs[0].shape[1:] if isinstance(d, int)]))
    # An export of untrained weights runs in its own runtime but is still random: say so everywhere.
    model_type = "random" if spec.is_random else runner.model_type
    return store.ModelRecord(f"{spec.name}@{digest[:12]}", spec.name, digest, model_type,
                             str(runner.path) if runner.path else None, dim)


def load_model(model: str | Path, *, allow_random: bool = False, device: str = "cpu",
               arch: str | None = None) -> Runner:
    """The core loader's fallback chain (exports -> PyTorch -> random only when allowed), warning on random."""
    from modelport import load

    runner = load(model, device=device, arch=arch, allow_random=allow_random)
    if runner.model_type == "random" or runner.spec.is_random:
        warnings.warn(f"{model}: ReID embeddings come from RANDOM, UNTRAINED weights (model_type: random); "
                      "identities found with them are not meaningful", UserWarning, stacklevel=2)
    return runner


def _batches(rows: list[tuple], pre, batch: int, decode_threads: int | None = None,
             spare: deque | None = None) -> Iterator[Batch]:
    """Crops of ``rows`` (sorted by video and frame) in preprocessed batches of ``batch``; float inputs are
    written into arrays taken from ``spare`` while it has any."""
    ids: list[int] = []
    pixels = CropBatch(batch, pre)
    sharp: list[float] = []
    for video, group in groupby(rows, key=lambda r: r[1]):
        group = list(group)
        by_frame: dict[int, list[tuple]] = {}
        for r in group:
            by_frame.setdefault(r[2], []).append(r)
        for index, frame in read_frames(video, by_frame, decode_threads):
            h, w = frame.shape[:2]
            for det_id, _, _, x1, y1, x2, y2 in by_frame[index]:
                # Clamp into the frame and keep at least 2x2 pixels: every detection gets an embedding.
                x1, x2 = min(max(x1, 0), w - 2), min(max(x2, x1 + 2), w)
                y1, y2 = min(max(y1, 0), h - 2), min(max(y2, y1 + 2), h)
                piece = crop(frame, (x1, y1, x2, y2))
                ids.append(det_id)
                pixels.add(piece)
                sharp.append(sharpness(piece))
                if len(ids) == batch:
                    yield Batch(ids, pixels.finish(spare.pop() if spare else None), sharp)
                    ids, pixels, sharp = [], pixels.empty(), []
    if ids:
        yield Batch(ids, pixels.finish(), sharp)


def _prefetch(source: Iterator[Batch], depth: int = 4) -> Iterator[Batch]:
    """Run ``source`` in a thread, ``depth`` batches ahead; its errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    thread = threading.Thread(target=work, name="reid-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def extract(db: str | Path, runner: Runner, *, batch: int = 16, class_name: str | None = "person",
            make_default: bool = False, progress: Callable[[int, int], None] | None = None) -> ExtractResult:
    """Compute and store ``runner``'s embeddings for every detection (of ``class_name``) lacking one.

    ``progress(done, total)`` is called after every stored batch.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    record = model_record(runner)
    conn = store.connect(db)
    try:
        is_default = store.register_model(conn, record, make_default)
        todo = store.pending(conn, record.key, class_name)
        already = store.embedding_count(conn, record.key)
        start, done = time.perf_counter(), 0
        if progress:
            progress(0, len(todo))
        committed = time.perf_counter()
        # Inference on the CPU already keeps every core busy: the decoder's extra threads would only add
        # their synchronisation (0.61 vs 0.43 ms of CPU per 640x360 frame measured here).
        decode_threads = 1 if runner.device == "cpu" else None
        # Float inputs the runner is done with go back to the reader, which refills them: fresh 6 MB
        # batches cost page faults on the cores the model needs (extract 0.853 vs 0.847 of model-only).
        spare: deque = deque(maxlen=8)
        reader = _prefetch(_batches(todo, runner.spec.preprocess, batch, decode_threads, spare))
        batches = ((item, item.inputs) for item in reader)
        for item, vectors in runner.embed_stream(batches):
            store.write_embeddings(conn, record.key, item.ids, vectors, item.sharpness, is_default, commit=False)
            if item.inputs.dtype == np.float32 and len(item.inputs) == batch:  # stream returns it when done
                spare.append(item.inputs)
            done += len(item.ids)
            if time.perf_counter() - committed >= COMMIT_EVERY_S:
                conn.commit()
                committed = time.perf_counter()
            if progress:
                progress(done, len(todo))
        conn.commit()
        return ExtractResult(record, done, already, time.perf_counter() - start, is_default)
    finally:
        conn.close()
