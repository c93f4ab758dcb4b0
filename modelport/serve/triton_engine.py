"""``modelport serve REPO --engine triton``: the repository's models on a real Triton Inference Server.

The server is the ``tritonserver`` binary of the nvidia-pytriton wheel. Its Python backend runs each
version through modelport's runner (the ``model.py`` that ``triton build --backend python`` writes), so
Triton's own dynamic batcher, instance groups (one process each) and max batch size apply exactly as the
repository's config.pbtxt says, and the server listens for HTTP, gRPC and metrics only after every
instance has loaded and run a warm-up request. The repository itself is not changed: a mirror of it, with
Python-backend configs and links to the artifacts, is served from a temporary folder.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelport.errors import ModelportError, WeightsNotFoundError
from modelport.triton.config import (
    CONFIG_FILE,
    LABELS_FILE,
    PARAM_FORMAT,
    PARAM_THREADS,
    PYTHON_MODEL_FILE,
    config_text,
    format_of_config,
    read_config,
)
from modelport.triton.layout import model_dirs, versions
from modelport.triton.python_backend import model_py
from modelport.triton.server import TritonServer, start_tritonserver

log = logging.getLogger("modelport.serve")


def python_config(config, *, device: str = "cpu", threads: int | None = None):
    """The same model config served by modelport's Python model: batching, instances, versions, inputs and
    outputs unchanged; the artifact's format (and runtime threads) in its parameters."""
    fmt = format_of_config(config)
    converted = type(config)()
    converted.CopyFrom(config)
    converted.backend = "python"
    converted.ClearField("platform")
    converted.ClearField("default_model_filename")  # the Python backend's file is model.py
    converted.parameters[PARAM_FORMAT].string_value = fmt
    if threads:
        converted.parameters[PARAM_THREADS].string_value = str(int(threads))
    if device == "cpu":
        for group in converted.instance_group:
            group.kind = group.KIND_CPU
            group.ClearField("gpus")
    return converted


def mirror_repository(repo: str | Path, dest: str | Path, *, device: str = "cpu", threads: int | None = None,
                      keep_going: bool = False) -> list[str]:
    """Write ``dest`` as ``repo`` served through Triton's Python backend: each model's converted config,
    its labels, and version folders of links to the artifacts plus modelport's model.py. Returns the models
    written. A model whose config cannot be served stops it with the error, or with ``keep_going`` is
    logged and left out."""
    repo, dest = Path(repo).resolve(), Path(dest)
    written = []
    for model_dir in model_dirs(repo):
        try:
            config = python_config(read_config(model_dir / CONFIG_FILE), device=device, threads=threads)
            present = versions(model_dir)
            if not present:
                raise ModelportError(f"{model_dir}: no version folders")
        except ModelportError as exc:
            if not keep_going:
                raise
            log.warning("model %s is left out: %s", model_dir.name, exc.message)
            continue
        target = dest / model_dir.name
        target.mkdir(parents=True)
        (target / CONFIG_FILE).write_text(config_text(config))
        labels = {o.label_filename for o in config.output if o.label_filename} | {LABELS_FILE}
        for name in labels:
            if (model_dir / name).is_file():
                (target / name).symlink_to(model_dir / name)
        for v in present:
            vdir = target / str(v)
            vdir.mkdir()
            for item in (model_dir / str(v)).iterdir():
                if item.name != PYTHON_MODEL_FILE:
                    (vdir / item.name).symlink_to(item)
            (vdir / PYTHON_MODEL_FILE).write_text(model_py())
        written.append(model_dir.name)
    return written


def start_triton_engine(repo: str | Path, work: str | Path, *, host: str = "127.0.0.1", http_port: int = 8000,
                        grpc_port: int = 8001, metrics_port: int = 8002, device: str = "cpu",
                        threads: int | None = None, keep_going: bool = False, verbose: bool = False,
                        console: bool = False, timeout: float = 600.0) -> TritonServer:
    """Mirror ``repo`` into ``work`` and start Triton on it; returns once it listens (after warm-up).

    A model that cannot be served stops the server with the error (Triton's ``--exit-on-error``), or with
    ``keep_going`` is logged and reported not ready while the others serve, as the builtin engine does."""
    if not Path(repo).is_dir():
        raise WeightsNotFoundError(f"{repo}: model repository not found",
                                   hint="build one with `modelport triton build`")
    mirror = Path(work) / "models"
    names = mirror_repository(repo, mirror, device=device, threads=threads, keep_going=keep_going)
    if not names:
        raise ModelportError(f"{repo}: no model here can be served", hint="check it with `modelport triton status`")
    log.info("starting Triton on %s (models: %s)", repo, ", ".join(names))
    return start_tritonserver(mirror, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                              exit_on_error=not keep_going, log_verbose=1 if verbose else 0, console=console,
                              timeout=timeout)


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the block, once: the first starts the server's bounded
    stop, and later ones are ignored until it is done (SIGKILL still works: the server's guard stops it).

    SIGTERM is what systemd, Docker and Kubernetes send; by default it would end this process and skip the
    stop. SIGINT is handled even when it was inherited ignored, as a shell's ``cmd &`` starts a job: waiting
    on the server would otherwise never end. Outside the main thread signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)

    def interrupt(signum: int, frame: object) -> None:
        for sig in stops:
            signal.signal(sig, signal.SIG_IGN)
        log.info("%s: stopping Triton", signal.Signals(signum).name)
        raise KeyboardInterrupt

    before = {sig: signal.signal(sig, interrupt) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def serve_triton(repo: str | Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, *, device: str = "cpu", threads: int | None = None,
                 keep_going: bool = False, log_level: str = "info") -> None:
    """Serve ``repo`` with Triton until SIGINT (Ctrl-C) or SIGTERM, which stop the server and its model
    processes within a bounded time; so does this process's death (see ``TritonServer``)."""
    with stop_signals(), tempfile.TemporaryDirectory(prefix="modelport-serve-triton-") as work:
        server = None
        try:
            server = start_triton_engine(repo, work, host=host, http_port=http_port, grpc_port=grpc_port,
                                         metrics_port=metrics_port, device=device, threads=threads,
                                         keep_going=keep_going, verbose=log_level == "debug",
                                         console=log_level in ("info", "debug"))
            log.info("Triton serves %s: HTTP %s, gRPC %s, metrics http://%s:%d/metrics", repo, server.http_url,
                     server.grpc_url, host, server.metrics_port)
            server.process.wait()
        except KeyboardInterrupt:
            pass  # a stop signal: start_tritonserver stopped a server that was not ready yet, or finally does
        finally:
            if server is not None:
                server.stop()


__all__ = ["mirror_repository", "python_config", "serve_triton", "start_triton_engine", "stop_signals"]
