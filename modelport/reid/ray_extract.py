"""`reid extract --engine ray`: the same extraction as ``extract``, its decoding and inference run by Ray Data.

This process (the driver) claims detections from the store as an in-process worker does (``claims``: any
number of drivers and workers, on any machines, can share one store), hands each round of them to a Ray Data
pipeline - a CPU ``map_batches`` stage that decodes and preprocesses crops, then an actor pool whose actors
each hold one runner (a local export, or a Triton endpoint through the remote runner) - and writes what comes
back itself, with the store's idempotent insert (a detection's embedding of a model is its primary key). Ray
restarts an actor that dies and retries its batch; since nothing is written before a batch returns, a killed
worker loses nothing, and nothing is stored twice. Ray is imported here only, and only for this engine.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from modelport.errors import MissingRuntimeError, ModelportError
from modelport.reid import claims, store
from modelport.reid.extract import COMMIT_EVERY_S, ExtractResult, load_model, model_record, session

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'modelport[ray]'"
# Detections per Ray Data pipeline. Each round starts its actor pool afresh (a process per actor, the model
# loaded again), so a round is long: 8192 crops of osnet_x0_25 are about 13 s on two cores.
ROUND_ROWS = 8192
# Detections per decoding task. frames.VideoReader never seeks (a keyframe-approximate seek would pair boxes
# with the wrong pixels), so each task grabs its video from the start up to its first frame: segments are long.
SEGMENT_ROWS = 128


def require_ray() -> Any:
    """The ``ray`` module (with Ray Data), or a MissingRuntimeError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingRuntimeError("--engine ray needs Ray Data, which is not installed", hint=INSTALL_HINT) from None
    return ray


def extract_ray(db: str | Path, model: str | Path, *, address: str | None = None, batch: int = 16,
                class_name: str | None = "person", make_default: bool = False, device: str = "cpu",
                allow_random: bool = False, arch: str | None = None, actors: int | None = None,
                progress: Callable[[int, int], None] | None = None, claim_rows: int = claims.CLAIM_ROWS,
                round_rows: int = ROUND_ROWS, segment_rows: int = SEGMENT_ROWS,
                commit_every: float = COMMIT_EVERY_S) -> ExtractResult:
    """Store ``model``'s embeddings of every detection (of ``class_name``) lacking one, computed on Ray.

    Ray is started locally on this machine's CPUs, or joined at ``address`` (``ray://`` or a cluster's
    GCS address); one already initialised in this process is used as it is. Every node must reach the store,
    the videos (by the paths the store holds) and ``model`` (a path they share, or an ``http://`` endpoint).
    ``actors``: runners embedding at once (default: one per two CPUs, or one per GPU with a CUDA ``device``).
    Work moves in segments of ``segment_rows`` detections: one decoding task each, then one actor task each,
    and the driver stores each segment as it comes back (``progress(done, total)`` after every store).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    ray = require_ray()
    model = _shared_location(model)
    runner = load_model(model, allow_random=allow_random, device="cpu", arch=arch)
    try:
        record, preprocess = model_record(runner), runner.spec.preprocess
        # A float32 model input per crop (an upper bound for uint8-input exports; dims the spec leaves open: 1).
        crop_bytes = 4 * int(np.prod([d for d in runner.spec.inputs[0].shape[1:] if isinstance(d, int)]))
    finally:
        runner.close()
    with session(db, record, class_name=class_name, make_default=make_default, progress=progress) as run, \
            _cluster(ray, address):
        done = 0
        embedder = {"model": model, "device": device, "allow_random": allow_random, "arch": arch,
                    "key": record.key}
        pool = _pool_args(ray, device, actors)
        rows = run.claimed(claim_rows)
        try:
            while claimed := list(itertools.islice(rows, round_rows)):
                outputs = _pipeline(ray, claimed, (preprocess, crop_bytes), embedder, pool, batch, segment_rows)
                for written in _store(run.conn, record.key, claimed, outputs, run.is_default, commit_every):
                    done += written
                    if progress:
                        progress(done, run.total)
        except Exception as exc:
            if (typed := worker_error(exc)) is None:
                raise
            raise typed from None  # what the worker raised, with its hint, not Ray's wrapping of it
        finally:
            rows.close()
        return run.result(done)


def worker_error(exc: BaseException) -> ModelportError | None:
    """The ModelportError a Ray worker raised, found inside the ``RayTaskError`` Ray wraps it in (its ``cause``;
    ``_pipeline`` keeps Ray Data from wrapping it once more); None if there is none."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        # Ray's ``RayTaskError(ModelportError)`` is an instance of both: look past it to the worker's own.
        if isinstance(error, ModelportError) and not type(error).__module__.startswith("ray"):
            return error
        todo += [getattr(error, "cause", None), error.__cause__, error.__context__]
    return None


def _shared_location(model: str | Path) -> str | Path:
    """``model`` as the Ray workers must name it: an existing local file as an absolute path."""
    path = Path(model)
    return path.resolve() if "://" not in str(model) and path.exists() else model


@contextlib.contextmanager
def _cluster(ray: Any, address: str | None) -> Iterator[None]:
    """Ray for the run: joined at ``address``, or started on this machine; stopped after if started here."""
    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def _pool_args(ray: Any, device: str, actors: int | None) -> dict[str, Any]:
    """The embedding stage's compute strategy and per-actor resources."""
    resources = ray.cluster_resources()
    gpu = device.startswith("cuda")
    if actors is None:
        actors = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1)) // 2
    if gpu and not resources.get("GPU"):
        raise ModelportError(f"--device {device}: the Ray cluster has no GPU",
                             hint="use --device cpu, or join a cluster with GPU nodes (--address)")
    cpus = int(resources.get("CPU", 0))
    if not gpu and actors >= cpus:  # the pool would hold every CPU and no decoding task could ever start
        raise ModelportError(f"{actors} embedding actor(s) of one CPU each leave none of the Ray cluster's {cpus} "
                             "CPU(s) for decoding crops", hint=f"use at most {max(cpus - 1, 0)} actor(s), or a "
                             "larger cluster (--address)")
    need = {"num_gpus": 1} if gpu else {"num_cpus": 1}
    # No max_restarts / max_task_retries: Ray Data restarts a dead actor and retries its batch by default (2.60:
    # without limit), and passing Ray's remote arguments to map_batches is deprecated since 2.60.
    return {"compute": ray.data.ActorPoolStrategy(size=max(1, actors)), **need}


def _pipeline(ray: Any, claimed: list[tuple], inputs: tuple[Any, int], embedder: dict[str, Any],
              pool: dict[str, Any], batch: int, segment: int) -> Iterator[dict[str, np.ndarray]]:
    """Embeddings of the ``claimed`` rows as Ray Data computes them: batches of (id, embedding, sharpness).

    ``inputs``: the model's preprocessing and the bytes of one prepared crop."""
    preprocess, crop_bytes = inputs
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows its own
    # A worker's error travels as itself (with its hint), not as a UserCodeException that only quotes it in text
    # (an exception's __cause__ does not survive pickling): ``worker_error`` then finds it.
    context.raise_original_map_exception = True
    items = [{"id": r[0], "video": r[1], "frame": r[2], "x1": r[3], "y1": r[4], "x2": r[5], "y2": r[6]}
             for r in claimed]
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // segment)))
    # A decoding task holds its segment's inputs about twice (the batch, the block Ray Data copies it to) beside
    # the process itself: 167 MiB measured for 128 crops of 256x128 (48 MiB of inputs); Ray Data wants 25% over.
    # Asking for that memory also keeps Ray Data from fusing decoding into the actors (fusion needs equal remote
    # arguments): decoding runs in tasks beside inference, on any node's CPUs, not inside the actors.
    ds = ds.map_batches(decode_crops, fn_kwargs={"preprocess": preprocess}, batch_size=segment,
                        batch_format="numpy", num_cpus=1, memory=5 * segment * crop_bytes)
    ds = ds.map_batches(Embedder, fn_constructor_kwargs=embedder, batch_size=batch, batch_format="numpy", **pool)
    return ds.iter_batches(batch_size=None, batch_format="numpy")


def decode_crops(rows: dict[str, np.ndarray], preprocess: Any) -> dict[str, np.ndarray]:
    """The CPU stage: rows of detections (one or a few videos, in frame order) -> the model's inputs."""
    from modelport.reid.extract import _batches

    columns = [rows[k].tolist() for k in ("id", "video", "frame", "x1", "y1", "x2", "y2")]
    (crops,) = _batches(zip(*columns), preprocess, len(columns[0]), decode_threads=1)
    return {"id": np.asarray(crops.ids, np.int64), "inputs": crops.inputs,
            "sharpness": np.asarray(crops.sharpness, np.float64)}


class Embedder:
    """The actor stage: one runner, loaded once per actor, embedding batches of prepared inputs."""

    def __init__(self, model: str | Path, device: str, allow_random: bool, arch: str | None, key: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the driver has warned about random weights already
            self.runner = load_model(model, allow_random=allow_random, device=device, arch=arch)
        got = model_record(self.runner).key
        # Another file at that path on this node, or random weights drawn anew. Raised on the first batch, which
        # fails the run at once (Ray Data would replace an actor whose constructor raised, several times over).
        self.refusal = None if got == key else ModelportError(
            f"{model}: a Ray worker loaded model {got}, the driver {key}",
            hint="give every node the same model file (a shared path), or an http:// endpoint")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.refusal is not None:
            raise self.refusal
        return {"id": batch["id"], "embedding": self.runner.embed(batch["inputs"], prepared=True),
                "sharpness": batch["sharpness"]}


def _store(conn: Any, model_key: str, claimed: list[tuple], outputs: Iterator[dict[str, np.ndarray]],
           is_default: bool, commit_every: float) -> Iterator[int]:
    """Write ``outputs`` a transaction every ``commit_every`` seconds, yielding how many each wrote; fails
    unless every claimed detection came back exactly once (a retried batch delivered twice is kept once)."""
    wanted = {int(r[0]) for r in claimed}
    seen: set[int] = set()
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    written = time.perf_counter()

    def flush() -> int:
        if not pending:
            return 0
        ids, vectors, sharp = (np.concatenate(c) for c in zip(*pending))
        store.write_embeddings(conn, model_key, ids.tolist(), vectors, sharp.tolist(), is_default)
        pending.clear()
        return len(ids)

    for out in outputs:
        keep = np.array([int(i) in wanted and int(i) not in seen for i in out["id"]], bool)
        seen.update(int(i) for i in out["id"][keep])
        pending.append((out["id"][keep], out["embedding"][keep], out["sharpness"][keep]))
        if time.perf_counter() - written >= commit_every:
            yield flush()
            written = time.perf_counter()
    yield flush()
    if seen != wanted:
        raise ModelportError(f"Ray returned no embedding for {len(wanted - seen)} claimed detection(s)",
                             hint="run `modelport reid extract` again: it computes exactly the missing ones")
