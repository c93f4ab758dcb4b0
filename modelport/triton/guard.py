"""Run a command that cannot outlive the process that started it; start_tritonserver runs tritonserver so.

    python -I guard.py PARENT_PID GRACE_S -- COMMAND...

The command runs in its own process group, which also holds what it starts (tritonserver's Python-backend
stubs). On SIGTERM or SIGINT, or once PARENT_PID has exited however it exited (SIGKILL included), the guard
sends the command SIGTERM and SIGKILLs its group if it still runs GRACE_S seconds later. Whenever the command
ends, the guard SIGKILLs what is left of its group and exits with the command's status (128 + N after signal
N). Should the guard itself be SIGKILLed, the kernel SIGKILLs the command (PR_SET_PDEATHSIG).

Standard library only, run by path with ``python -I``: it starts in milliseconds and imports nothing of
modelport, whose folders would otherwise shadow standard modules.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 0.25  # a grandparent's death sends no signal here, so the guard looks at getppid() this often


def die_with_parent(libc: ctypes.CDLL | None, parent: int) -> None:
    """A ``preexec_fn``: in the forked child, before exec, its own process group, no blocked signals, and a
    SIGKILL from the kernel when ``parent`` (the forking process) dies. Only async-signal-safe work: call it
    from a parent with one thread (the guard; a test fixture's subprocess start)."""
    os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)


def _exited(pid: int) -> bool:
    """Whether the child has exited, leaving it unreaped: a zombie leader keeps its group id from reuse, so
    the group can still be SIGKILLed without hitting an unrelated one."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def run(parent: int, grace: float, command: list[str]) -> int:
    """Run ``command`` under the guard; returns its exit status (128 + N when signal N ended it)."""
    # Signals are taken synchronously with sigtimedwait, so no handler can interrupt the bookkeeping below;
    # a blocked SIGCHLD is queued even though its default action is to be discarded.
    watched = {signal.SIGCHLD, *STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    guard = os.getpid()
    child = subprocess.Popen(command, preexec_fn=lambda: die_with_parent(libc, guard))
    kill_at: float | None = None  # set once the command was asked to stop
    while not _exited(child.pid):
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            os.killpg(child.pid, signal.SIGKILL)
            kill_at = float("inf")  # killed: only wait for it now
        wait = PARENT_POLL_S if kill_at is None else max(min(kill_at - now, PARENT_POLL_S), 0.0)
        info = signal.sigtimedwait(watched, wait)
        asked = info is not None and info.si_signo in STOP_SIGNALS
        if kill_at is None and (asked or os.getppid() != parent):
            os.kill(child.pid, signal.SIGTERM)  # not Popen.send_signal, whose poll() would reap it
            kill_at = time.monotonic() + grace
    try:
        os.killpg(child.pid, signal.SIGKILL)  # stubs that outlived the server
    except ProcessLookupError:
        pass
    code = child.wait()
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print(f"usage: {argv[0]} PARENT_PID GRACE_S -- COMMAND...", file=sys.stderr)
        return 2
    return run(int(argv[1]), float(argv[2]), argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
