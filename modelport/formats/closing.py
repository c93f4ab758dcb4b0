"""Runners whose runtimes keep threads (ONNX Runtime streams, OpenVINO requests) are closed at interpreter exit,
on the main thread, before the interpreter tears itself down."""

from __future__ import annotations

import atexit
import threading
import warnings
import weakref
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...

    def describe(self) -> str: ...


# Open runners whose runtimes keep threads (ORT streams, OpenVINO requests): closed at exit on the main thread
# while the interpreter is whole, not by its teardown in whatever order and thread. Left to the teardown,
# OpenVINO requests still running at exit aborted the process ("FATAL: exception not rethrown"; issue 27 saw
# "terminate called ... Resource deadlock avoided" from bench).
_OPEN: "weakref.WeakSet[Closable]" = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def close_at_exit(runner: Closable) -> None:
    """Have ``runner`` closed at interpreter exit unless closed before."""
    with _OPEN_LOCK:
        atexit.unregister(_close_open)  # registered once, and last: it runs before the runtimes' own handlers
        atexit.register(_close_open)
        _OPEN.add(runner)


def _close_open() -> None:
    with _OPEN_LOCK:
        runners = list(_OPEN)
        _OPEN.clear()
    for runner in runners:
        try:
            runner.close()
        except Exception as exc:  # noqa: BLE001 - one failure must not leave the other runners open
            warnings.warn(f"{runner.describe()}: closing at exit failed: {exc}", RuntimeWarning, stacklevel=1)
