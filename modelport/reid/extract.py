"""`reid extract`: embeddings for every detection that lacks one for a model, batched and resumable.

A reader thread claims detections a batch at a time (``claims``: several workers can share one database),
decodes frames, crops and preprocesses while the model runs batch after batch through ``Runner.embed_stream``
(ONNX Runtime and OpenVINO keep the next two batches started while the main thread stores the last), so the
runtime rarely waits for pixels or for the database. Finished batches are kept and written in one short
transaction every half second, so a killed run loses at most that much work, the database's write lock is
never held while waiting, and a rerun picks up exactly the detections still missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from modelport.formats import Runner
from modelport.preprocess import CropBatch
from modelport.reid import claims, store
from modelport.reid.frames import VideoReader, crop, sharpness
from modelport.spec import sha256_file

# Each commit costs fsyncs (~30 ms measured here with a rollback journal), as much as a whole batch of a
# small model; grouping batches keeps that under a few percent, and a kill still loses only unwritten work.
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


def _batches(rows: Iterable[tuple], pre, batch: int, decode_threads: int | None = None,
             spare: deque | None = None) -> Iterator[Batch]:
    """Crops of ``rows`` (sorted by video and frame, consumed lazily: claims happen as they are read) in
    preprocessed batches of ``batch``; float inputs are written into arrays taken from ``spare`` while it has
    any."""
    ids: list[int] = []
    pixels = CropBatch(batch, pre)
    sharp: list[float] = []
    reader: VideoReader | None = None
    try:
        for det_id, video, index, x1, y1, x2, y2 in rows:
            if reader is None or str(reader.path) != video:
                if reader is not None:
                    reader.close()
                reader = VideoReader(video, decode_threads)
            frame = reader.frame(index)
            h, w = frame.shape[:2]
            # Clamp into the frame and keep at least 2x2 pixels: every detection gets an embedding.
            x1, x2 = min(max(x1, 0), w - 2), min(max(x2, x1 + 2), w)
            y1, y2 = min(max(y1, 0), h - 2), min(max(y2, y1 + 2), h)
            piece = crop(frame, (x1, y1, x2, y2))
            assert piece is not None  # clamped to at least 2x2 pixels inside the frame
            ids.append(det_id)
            pixels.add(piece)
            sharp.append(sharpness(piece))
            if len(ids) == batch:
                yield Batch(ids, pixels.finish(spare.pop() if spare else None), sharp)
                ids, pixels, sharp = [], pixels.empty(), []
    finally:
        if reader is not None:
            reader.close()
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
        finally:
            close = getattr(source, "close", None)
            if close:  # here, in its own thread: the source may hold a database connection made here
                close()

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
            make_default: bool = False, progress: Callable[[int, int], None] | None = None,
            claim_rows: int = claims.CLAIM_ROWS, commit_every: float = COMMIT_EVERY_S) -> ExtractResult:
    """Compute and store ``runner``'s embeddings for every detection (of ``class_name``) lacking one.

    Other workers may run on the same database at the same time: detections are claimed ``claim_rows`` at a
    time, so each is computed once. ``progress(done, total)`` is called after every batch (``total``: what was
    missing at the start, other workers' share included).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    record = model_record(runner)
    with session(db, record, class_name=class_name, make_default=make_default, progress=progress) as run:
        done = 0
        # Inference on the CPU already keeps every core busy: the decoder's extra threads would only add
        # their synchronisation (0.61 vs 0.43 ms of CPU per 640x360 frame measured here).
        decode_threads = 1 if runner.device == "cpu" else None
        # Float inputs the runner is done with go back to the reader, which refills them: fresh 6 MB
        # batches cost page faults on the cores the model needs (extract 0.853 vs 0.847 of model-only).
        spare: deque = deque(maxlen=8)
        reader = _prefetch(_batches(run.claimed(claim_rows), runner.spec.preprocess, batch, decode_threads, spare))
        batches = ((item, item.inputs) for item in reader)
        finished: list[tuple[Batch, np.ndarray]] = []
        written = time.perf_counter()
        for item, vectors in runner.embed_stream(batches):
            finished.append((item, vectors))
            if item.inputs.dtype == np.float32 and len(item.inputs) == batch:  # stream returns it when done
                spare.append(item.inputs)
            done += len(item.ids)
            if time.perf_counter() - written >= commit_every:
                _write(run.conn, record.key, finished, run.is_default)
                written = time.perf_counter()
            if progress:
                progress(done, run.total)
        _write(run.conn, record.key, finished, run.is_default)
        return run.result(done)


@dataclass(frozen=True, slots=True)
class Session:
    """One extraction's hold on the store: its connection, and what it found there when it started."""

    db: str | Path
    conn: store.Database
    record: store.ModelRecord
    class_name: str | None
    worker: str  # claims.worker_id() of this process
    is_default: bool
    total: int  # detections missing an embedding at the start (other workers' share included)
    already: int  # embeddings of the model stored before
    start: float  # time.perf_counter() at the start

    def claimed(self, size: int = claims.CLAIM_ROWS) -> Iterator[claims.ROW]:
        """Detections for this run to embed, claimed ``size`` at a time (on a connection of their own)."""
        return claims.claimed_rows(self.db, self.record.key, self.class_name, self.worker, size)

    def result(self, computed: int) -> ExtractResult:
        return ExtractResult(self.record, computed, self.already, time.perf_counter() - self.start, self.is_default)


@contextlib.contextmanager
def session(db: str | Path, record: store.ModelRecord, *, class_name: str | None, make_default: bool,
            progress: Callable[[int, int], None] | None = None) -> Iterator[Session]:
    """Connect to ``db``, register ``record`` and count what is missing (``progress(0, total)``); on leaving,
    release this process's claims (what it finished has its embeddings) and close the connection."""
    worker = claims.worker_id()
    conn = store.connect(db)
    try:
        is_default = store.register_model(conn, record, make_default)
        total = store.pending_count(conn, record.key, class_name)
        already = store.embedding_count(conn, record.key)
        run = Session(db, conn, record, class_name, worker, is_default, total, already, time.perf_counter())
        if progress:
            progress(0, total)
        yield run
    finally:
        try:
            claims.release(conn, record.key, worker)
        finally:
            conn.close()


def _write(conn, model_key: str, finished: list, is_default: bool) -> None:
    """Store the finished batches in one transaction and forget them."""
    if not finished:
        return
    ids = [i for item, _ in finished for i in item.ids]
    sharp = [v for item, _ in finished for v in item.sharpness]
    store.write_embeddings(conn, model_key, ids, np.concatenate([v for _, v in finished]), sharp, is_default)
    finished.clear()
