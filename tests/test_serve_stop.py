"""`modelport serve` stops cleanly however it is stopped: SIGINT, SIGTERM (what systemd, Docker and Kubernetes
send) or its own death by SIGKILL leave no tritonserver, no Python-backend stub and no port behind, within a
bound, while another process keeps a core busy (where the README's suite hung).

The server is started as a script's ``cmd &`` starts a job, with SIGINT inherited ignored: so ran the suite
whose ``modelport serve --engine triton`` waited forever on its child after SIGINT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.triton import ConfigOptions, ModelEntry, build_repository
from modelport.triton.server import GUARD, free_port, have_tritonserver

STOP_BOUND_S = 60.0  # the guard SIGKILLs Triton 15 s after asking; the rest is slack for a loaded machine
NO_TRITON = have_tritonserver()
# exec's the command with SIGINT ignored, as a POSIX shell starts a background job without job control
AS_BACKGROUND_JOB = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                     "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported_dir) -> Path:
    """The smallest repository: one ONNX OSNet x0.25, one instance, so one Python-backend stub."""
    root = tmp_path_factory.mktemp("serve-stop") / "repo"
    build_repository([ModelEntry(str(exported_dir / "osnet_x0_25_msmt17.onnx"), name="osnet",
                                 options=ConfigOptions(dynamic_batching=False))], root)
    return root


@pytest.fixture(scope="module", autouse=True)
def busy_core() -> Iterator[None]:
    """Another process spinning on a core throughout."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    burner.kill()
    burner.wait()


def start_time(pid: int) -> str | None:
    """The process's start time (``/proc/PID/stat`` field 22), or None once it is gone or a zombie (which
    holds no memory or port): with the pid, it names one process even if the pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


def descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every live process under ``root``: pid -> (name, start time)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        started = start_time(pid)
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if started is not None:
            found[pid] = (name, started)
            todo.extend(children.get(pid, []))
    return found


def alive(tree: dict[int, tuple[str, str]]) -> dict[int, str]:
    return {pid: name for pid, (name, started) in tree.items() if start_time(pid) == started}


def port_free(port: int) -> bool:
    """A new server could listen on ``port`` (TIME_WAIT connections do not count, as for any server)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # Triton listens only once every instance warmed up
        assert time.monotonic() < deadline, f"not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.25)


def stop_and_check(proc: subprocess.Popen, how: str, ports: list[int], log: Path) -> dict[int, str]:
    """Stop the ready server ``how``; assert it and every process it started are gone and its ports free
    within STOP_BOUND_S. Returns the process tree it had (for the caller's assertions)."""
    tree = descendants(proc.pid)
    started = time.monotonic()
    try:
        if how == "parent killed":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT if how == "SIGINT" else signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still runs {STOP_BOUND_S:.0f} s after {how}; its processes: {alive(tree)}\n"
                        f"{log.read_text()[-2000:]}")
        while alive(tree) and time.monotonic() - started < STOP_BOUND_S:
            time.sleep(0.2)
        assert not alive(tree), f"left running {STOP_BOUND_S:.0f} s after {how}: {alive(tree)}"
        busy = [p for p in ports if not port_free(p)]
        assert not busy, f"ports still held after {how}: {busy}"
    finally:  # never leave a server behind, even when the assertions above failed
        for pid in alive(tree):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {pid: name for pid, (name, _) in tree.items()}


@pytest.mark.skipif(NO_TRITON is not None, reason=f"no tritonserver: {NO_TRITON}")
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "parent killed"])
def test_serve_engine_triton_leaves_no_process_or_port_however_it_is_stopped(repo, tmp_path, how):
    ports = [free_port(), free_port(), free_port()]
    log = tmp_path / "serve.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen([*AS_BACKGROUND_JOB, "-m", "modelport.cli", "serve", str(repo), "--engine", "triton",
                                 "--port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port",
                                 str(ports[2]), "--device", "cpu", "--log-level", "warning"],
                                stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, ports[0], log)
    except BaseException:
        stop_and_check(proc, "parent killed", ports, log)
        raise
    tree = stop_and_check(proc, how, ports, log)
    assert {"tritonserver", "triton_python_b"} <= set(tree.values()), tree  # the stub's name, cut to 15 bytes
    if how != "parent killed":
        assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_builtin_engine_stops_and_frees_its_port(repo, tmp_path, how):
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen([*AS_BACKGROUND_JOB, "-m", "modelport.cli", "serve", str(repo), "--port", str(port),
                                 "--device", "cpu", "--log-level", "warning"], stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, port, log)
    except BaseException:
        stop_and_check(proc, "parent killed", [port], log)
        raise
    stop_and_check(proc, how, [port], log)
    # uvicorn stops gracefully, then re-raises the SIGTERM it caught (the conventional exit status for it)
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]


def test_guard_kills_a_command_that_ignores_sigterm_and_its_children_when_the_parent_dies(tmp_path):
    """Without Triton: a command that ignores SIGTERM, and a child of it, die with the guard's parent."""
    stubborn = ("import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "subprocess.Popen(['sleep', '600']); time.sleep(600)")
    parent = (f"import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-I', {str(GUARD)!r}, "
              f"str(os.getpid()), '1', '--', sys.executable, '-c', {stubborn!r}]); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 30
    while "sleep" not in {name for name, _ in descendants(proc.pid).values()}:
        assert proc.poll() is None and time.monotonic() < deadline, descendants(proc.pid)
        time.sleep(0.1)
    tree = descendants(proc.pid)
    started = time.monotonic()
    stop_and_check(proc, "parent killed", [], tmp_path / "no.log")
    assert len(tree) == 3 and time.monotonic() - started >= 1.0  # guard, command, sleep; killed after the grace
