"""The dashboard's job list: jobs live in the server process and run one at a time (by default), each in
its own worker process, so a page reload finds them and Cancel can always stop one."""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LOG_LINES = 400
TERMINATE_GRACE_S = 5.0
STATES = ("queued", "running", "done", "failed", "cancelled")


@dataclass
class Job:
    id: str
    kind: str
    title: str
    target: str  # the root-relative file whose page shows this job
    params: dict
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    result: dict | None = None
    error: dict | None = None  # {"message": ..., "hint": ...}
    cancel_requested: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def to_dict(self, log_lines: int = 60) -> dict:
        return {"id": self.id, "kind": self.kind, "title": self.title, "target": self.target, "state": self.state,
                "created": self.created, "elapsed": round(self.elapsed, 1), "log": list(self.log)[-log_lines:],
                "result": self.result, "error": self.error}


def worker_command(job_dir: Path) -> list[str]:
    """The worker process for a job: this Python, the worker module, the job's folder (no shell involved)."""
    return [sys.executable, "-m", "modelport.ui.worker", str(job_dir)]


class JobQueue:
    """FIFO jobs run by ``workers`` threads, each job in a subprocess started from ``command(job_dir)``."""

    def __init__(self, cwd: Path, *, workers: int = 1, command: Callable[[Path], list[str]] = worker_command,
                 keep: int = 200) -> None:
        self.cwd = Path(cwd)
        self.command = command
        self.keep = keep
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="modelport-ui-jobs-"))
        self._threads = [threading.Thread(target=self._loop, name=f"ui-jobs-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, kind: str, title: str, target: str, params: dict) -> Job:
        job = Job(uuid.uuid4().hex[:12], kind, title, target, params)
        with self._lock:
            self.jobs[job.id] = job
            self._forget_old()
        self._queue.put(job)
        return job

    def list(self, target: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self.jobs.values())
        return sorted((j for j in jobs if target is None or j.target == target), key=lambda j: j.created, reverse=True)

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Queued: never runs. Running: its process gets SIGTERM, then SIGKILL after a grace period."""
        job = self.jobs.get(job_id)
        if job is None or not job.active:
            return job
        job.cancel_requested = True
        with self._lock:
            if job.state == "queued":
                job.state, job.finished = "cancelled", time.time()
                return job
        proc = job.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            threading.Thread(target=self._kill_later, args=(proc,), daemon=True).start()
        return job

    def close(self) -> None:
        for job in self.list():
            self.cancel(job.id)
        for _ in self._threads:
            self._queue.put(None)
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- internals ------------------------------------------------------------------------------------

    def _forget_old(self) -> None:
        done = sorted((j for j in self.jobs.values() if not j.active), key=lambda j: j.created)
        for job in done[: max(0, len(self.jobs) - self.keep)]:
            del self.jobs[job.id]

    @staticmethod
    def _kill_later(proc: subprocess.Popen) -> None:
        try:
            proc.wait(TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != "queued":  # cancelled while waiting
                    continue
                job.state, job.started = "running", time.time()
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - the job fails, the queue keeps going
                job.state, job.error = "failed", {"message": f"could not run the job: {exc}", "hint": ""}
            finally:
                job.finished = job.finished or time.time()
                job.process = None

    def _run(self, job: Job) -> None:
        folder = self._dir / job.id
        folder.mkdir()
        (folder / "job.json").write_text(json.dumps({"kind": job.kind, "params": job.params}))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(self.command(folder), cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                                env=env)
        job.process = proc
        if job.cancel_requested:  # cancelled between the state change and the start
            proc.terminate()
        assert proc.stdout is not None
        for line in proc.stdout:
            job.log.append(line.rstrip("\n")[:500])
        code = proc.wait()
        outcome = _read_result(folder)
        shutil.rmtree(folder, ignore_errors=True)
        job.finished = time.time()
        if job.cancel_requested:
            job.state = "cancelled"
        elif outcome and outcome.get("ok"):
            job.state, job.result = "done", outcome.get("result")
        else:
            job.state = "failed"
            job.error = (outcome or {}).get("error") or {
                "message": f"the job's process exited with code {code}", "hint": "see the log"}


def _finite(value):
    """The result with NaN and infinities as None: what JSON (and the page) can carry."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _read_result(folder: Path) -> dict | None:
    try:
        return _finite(json.loads((folder / "result.json").read_text()))
    except (OSError, ValueError):
        return None
