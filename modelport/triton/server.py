"""Run the Triton Inference Server binary that the ``nvidia-pytriton`` wheel ships (``tritonserver`` with its
Python backend) on a model repository: free ports, the environment its Python backend needs, readiness."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from modelport.errors import MissingRuntimeError, ModelportError

log = logging.getLogger("modelport.triton")
GUARD = Path(__file__).with_name("guard.py")  # runs tritonserver so that it cannot outlive this process
STOP_GRACE_S = 10.0  # beyond Triton's exit timeout, before the server's process group is SIGKILLed
INSTALL = "pip install nvidia-pytriton (or modelport[serve]); Linux x86-64/aarch64, glibc 2.35+"


class TritonServerError(ModelportError, RuntimeError):
    """tritonserver exited or did not become ready; the message carries the end of its log."""


@dataclass(frozen=True, slots=True)
class TritonDist:
    """Where the wheel's server lives: the binary, the Python backend, and the libraries both link."""

    binary: Path
    python_backend: Path  # folder with libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub built for this interpreter's Python version
    libs: Path  # the wheel's bundled shared libraries


def find_tritonserver() -> TritonDist:
    """The bundled tritonserver, or MissingRuntimeError saying what to install."""
    import importlib.util

    found = importlib.util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        raise MissingRuntimeError("Triton Inference Server is not installed here (no nvidia-pytriton)", hint=INSTALL)
    root = Path(list(found.submodule_search_locations)[0]) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dist = TritonDist(root / "bin" / "tritonserver", root / "backends" / "python",
                      root / "python_backend_stubs" / version / "triton_python_backend_stub",
                      root.parent.parent / "nvidia_pytriton.libs")
    for path in (dist.binary, dist.python_backend / "libtriton_python.so", dist.stub):
        if not path.exists():
            raise MissingRuntimeError(f"{path}: missing from the nvidia-pytriton install (Python {version})",
                                      hint=INSTALL)
    return dist


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_env(dist: TritonDist) -> dict[str, str]:
    """The environment tritonserver and its Python backend stubs need.

    The stub links ``libpython3.X.so``: this interpreter's own library folder goes first on the library path,
    or the system's libpython loads and fails on a standard-library mismatch. The stub takes its Python
    environment (site-packages: modelport, numpy, the runtimes) from the first Python on ``PATH``, so this
    interpreter's folder goes first there.
    """
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(dist.libs), env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _backend_dir(dist: TritonDist, where: Path) -> Path:
    """A backends folder whose Python backend has the stub for this interpreter (the wheel ships one per
    Python version beside it; Triton looks for ``triton_python_backend_stub`` next to the backend)."""
    python = where / "backends" / "python"
    python.mkdir(parents=True)
    for item in dist.python_backend.iterdir():
        if item.name != "__pycache__":
            (python / item.name).symlink_to(item)
    (python / "triton_python_backend_stub").symlink_to(dist.stub)
    return where / "backends"


@dataclass
class TritonServer:
    """A running tritonserver; stop it with ``stop()`` or use it as a context manager.

    ``process`` is its guard (``guard.py``): tritonserver and its Python-backend stubs stop with it, and with
    this process however it ends, so a server is never left holding its ports and memory."""

    process: subprocess.Popen
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    workdir: Path
    stop_grace: float = 15.0
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def log_tail(self, lines: int = 12) -> str:
        """Triton's error lines (``E...``) and model load failures, then the last ``lines`` lines of its log."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in text if line[:1] == "E" and line[1:5].isdigit() or "UNAVAILABLE" in line]
        return "\n".join([*errors[-20:], "...", *text[-lines:]])

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def ready(self) -> bool:
        return self._get("/v2/health/ready") == 200

    def unready_models(self) -> list[str]:
        """Models the server holds that are not ready, with Triton's reason."""
        import json

        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            rows = json.loads(reply.read())
        return [f"{r.get('name')}: {r.get('reason') or r.get('state')}" for r in rows if r.get("state") != "READY"]

    def wait_ready(self, timeout: float = 180.0, *, all_models: bool = True) -> None:
        """Wait until the server answers (it starts listening only after loading, so after every model's
        warm-up) and, with ``all_models``, until it is ready; else a TritonServerError with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonServerError(f"tritonserver exited with code {self.process.returncode} before it was "
                                        f"ready; its log ends:\n{self.log_tail()}")
            if self.ready():
                return
            if not all_models and self._get("/v2/health/live") == 200:
                for problem in self.unready_models():
                    log.warning("model not ready: %s", problem)
                return
            time.sleep(0.25)
        raise TritonServerError(f"tritonserver was not ready after {timeout:.0f} s; its log ends:\n{self.log_tail()}")

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop tritonserver and its stubs within a bounded time; returns the exit code.

        SIGTERM goes to its guard, which starts Triton's graceful shutdown and SIGKILLs the server's process
        group if it still runs ``stop_grace`` seconds later; a guard still running ``timeout`` seconds later
        (default: the grace and 5 s) is SIGKILLed, and the kernel SIGKILLs the server with it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_grace + 5 if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.process.returncode

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_tritonserver(repo: str | Path, *, host: str = "127.0.0.1", http_port: int = 0, grpc_port: int = 0,
                       metrics_port: int = 0, wait: bool = True, timeout: float = 180.0, exit_on_error: bool = True,
                       log_verbose: int = 0, log_file: Path | None = None, console: bool = False,
                       exit_timeout: int = 5, extra_args: tuple[str, ...] = ()) -> TritonServer:
    """Start the bundled tritonserver on ``repo`` (ports 0: free ones) and, with ``wait``, return once it is
    ready: every model loaded, so every Python model instance opened and warmed up.

    ``exit_on_error`` False keeps the server up when a model fails to load (it is logged, and the server
    reports itself not ready while it serves the others). Triton's log goes to ``log_file`` (default: a file
    in its work folder, see ``log_tail``), or with ``console`` to this process's stdout. On ``stop`` it waits
    up to ``exit_timeout`` seconds for in-flight requests and open client connections, and is SIGKILLed if it
    has not exited ``STOP_GRACE_S`` seconds after that; it stops the same way when this process exits,
    however it exits.
    """
    dist = find_tritonserver()
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise ModelportError(f"{repo}: model repository not found", hint="build one with `modelport triton build`")
    tmp = tempfile.TemporaryDirectory(prefix="modelport-tritonserver-")
    workdir = Path(tmp.name)
    ports = [p or free_port(host) for p in (http_port, grpc_port, metrics_port)]
    log_path = Path(log_file) if log_file else workdir / "tritonserver.log"
    args = [str(dist.binary), f"--model-repository={repo}", f"--backend-directory={_backend_dir(dist, workdir)}",
            f"--http-address={host}", f"--grpc-address={host}", f"--metrics-address={host}",
            f"--http-port={ports[0]}", f"--grpc-port={ports[1]}", f"--metrics-port={ports[2]}",
            f"--exit-on-error={'true' if exit_on_error else 'false'}", "--disable-auto-complete-config",
            f"--exit-timeout-secs={int(exit_timeout)}", f"--log-verbose={log_verbose}", *extra_args]
    log.info("starting %s", " ".join(args))
    # Triton waits exit_timeout for requests, then unloads every model: the grace covers both
    grace = exit_timeout + STOP_GRACE_S
    guard = [sys.executable, "-I", str(GUARD), str(os.getpid()), str(grace), "--"]
    with open(log_path, "ab") as handle:
        # its own session: a terminal's Ctrl-C reaches this process, which stops the server (see stop)
        process = subprocess.Popen([*guard, *args], stdin=subprocess.DEVNULL, stdout=None if console else handle,
                                   stderr=None if console else subprocess.STDOUT, env=server_env(dist),
                                   cwd=workdir, start_new_session=True)
    server = TritonServer(process, host, ports[0], ports[1], ports[2], log_path, workdir, stop_grace=grace, _tmp=tmp)
    if wait:
        try:
            server.wait_ready(timeout, all_models=exit_on_error)
        except BaseException:
            server.stop()
            raise
    return server


def have_tritonserver() -> str | None:
    """None when the bundled tritonserver can run here, else why not (for skips and messages)."""
    try:
        dist = find_tritonserver()
    except MissingRuntimeError as exc:
        return exc.message
    if shutil.which(str(dist.binary)) is None:
        return f"{dist.binary} is not executable"
    return None
