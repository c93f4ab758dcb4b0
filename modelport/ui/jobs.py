"""The dashboard's job list: jobs run one at a time (by default), each in its own worker process, so Cancel
can always stop one. The list lives in the server and, with a history file, survives a restart: a job that
was queued or running when the server stopped comes back as ``interrupted``."""

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
from typing import Callable, Mapping

from modelport.ui.history import JobHistory, job_record
from modelport.ui.worker import SERVER_PID

LOG_LINES = 400
# SIGTERM unwinds the worker's finally blocks (staging folders go) once the running C++ call returns; a
# worker still alive after this long (a TensorRT build) is killed, and its job says what may be left.
TERMINATE_GRACE_S = 30.0
JOB_DIR_PREFIX = "modelport-ui-jobs-"
SAVE_EVERY_S = 5.0  # while a job logs, the history is rewritten at most this often
STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")


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
                "result": self.result, "error": self.error, "cancel_requested": self.cancel_requested}

    @classmethod
    def from_record(cls, record: dict, stopped_at: float) -> "Job":
        """A job from the history; one that was queued or running when its server stopped is ``interrupted``."""
        job = cls(record["id"], record["kind"], record["title"], record["target"], record["params"],
                  record["state"], record["created"], record["started"], record["finished"],
                  deque(record.get("log") or [], maxlen=LOG_LINES), record["result"], record["error"])
        if job.state not in STATES:
            job.state = "interrupted"
        if job.active:
            ran = job.state == "running"
            job.state = "interrupted"
            job.finished = max(stopped_at, job.started or job.created) if ran else None
            job.error = {"message": "the dashboard stopped while this job was running: its result, if any, was "
                                    "not recorded" if ran else "the dashboard stopped before this job started",
                         "hint": "run it again"}
        return job


def sweep_job_dirs(base: Path) -> list[Path]:
    """Remove the job folders (``modelport-ui-jobs-<server pid>-*`` under ``base``) of servers that are gone:
    a killed server never removes its own. Folders of live servers, and names without a pid, are kept."""
    removed = []
    for folder in base.glob(f"{JOB_DIR_PREFIX}*-*"):
        pid = folder.name[len(JOB_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not folder.is_dir() or folder.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except (PermissionError, OverflowError):  # alive under another user; not a pid
            continue
    return removed


def worker_command(job_dir: Path) -> list[str]:
    """The worker process for a job: this Python, the worker module, the job's folder (no shell involved)."""
    return [sys.executable, "-m", "modelport.ui.worker", str(job_dir)]


class JobQueue:
    """FIFO jobs run by ``workers`` threads, each job in a subprocess started from ``command(job_dir)``."""

    def __init__(self, cwd: Path, *, workers: int = 1, command: Callable[[Path], list[str]] = worker_command,
                 keep: int = 200, history: JobHistory | None = None, grace_s: float = TERMINATE_GRACE_S,
                 env: Mapping[str, str] | None = None) -> None:
        self.cwd = Path(cwd)
        self.env = dict(env or {})  # added to each worker's environment (the server stores' URLs)
        self.grace_s = grace_s
        self.command = command
        self.keep = keep
        self.history = history
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._closed = False
        if history is not None:
            self._restore(history)
        sweep_job_dirs(Path(tempfile.gettempdir()))
        self._dir = Path(tempfile.mkdtemp(prefix=f"{JOB_DIR_PREFIX}{os.getpid()}-"))
        self._threads = [threading.Thread(target=self._loop, name=f"ui-jobs-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, kind: str, title: str, target: str, params: dict) -> Job:
        job = Job(uuid.uuid4().hex[:12], kind, title, target, params)
        with self._lock:
            self.jobs[job.id] = job
            self._forget_old()
        self._save()
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
            queued = job.state == "queued"
            if queued:
                job.state, job.finished = "cancelled", time.time()
        if queued:
            self._save()
            return job
        proc = job.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            threading.Thread(target=self._kill_later, args=(job, proc), daemon=True).start()
        return job

    def close(self) -> None:
        """Stop: every queued or running job is recorded as interrupted, then running ones are terminated."""
        stopped = time.time()
        with self._lock:
            active = [j for j in self.jobs.values() if j.active]
            for job in active:
                job.state = "interrupted"
                job.finished = stopped if job.started is not None else None
                job.error = {"message": "the dashboard stopped while this job was "
                             + ("running" if job.started is not None else "queued"), "hint": "run it again"}
        self._save()
        self._closed = True
        for job in active:
            job.cancel_requested = True
            proc = job.process
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for _ in self._threads:
            self._queue.put(None)
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- internals ------------------------------------------------------------------------------------

    def _restore(self, history: JobHistory) -> None:
        records = history.read()
        try:
            stopped = history.path.stat().st_mtime
        except OSError:
            stopped = time.time()
        for record in records[-self.keep:]:
            job = Job.from_record(record, stopped)
            self.jobs[job.id] = job
        if records:
            self._save()  # the interrupted ones, as such

    def _save(self) -> None:
        if self.history is None or self._closed:
            return
        with self._save_lock:
            with self._lock:
                records = [job_record(j) for j in sorted(self.jobs.values(), key=lambda j: j.created)]
            self.history.write(records)

    def _forget_old(self) -> None:
        done = sorted((j for j in self.jobs.values() if not j.active), key=lambda j: j.created)
        for job in done[: max(0, len(self.jobs) - self.keep)]:
            del self.jobs[job.id]

    def _kill_later(self, job: Job, proc: subprocess.Popen) -> None:
        try:
            proc.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            job.log.append(f"modelport ui: the worker did not stop within {self.grace_s:g} s of Cancel and was "
                           "killed; a hidden .modelport-staging-* folder or .*.tmp file may be left beside its "
                           "outputs")
            proc.kill()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != "queued" or self._closed:  # cancelled while waiting, or the server stops
                    continue
                job.state, job.started = "running", time.time()
            self._save()
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - the job fails, the queue keeps going
                if job.state == "running":
                    job.state, job.error = "failed", {"message": f"could not run the job: {exc}", "hint": ""}
            finally:
                job.finished = job.finished or time.time()
                job.process = None
                self._save()

    def _run(self, job: Job) -> None:
        if job.state != "running":  # the server stopped meanwhile
            return
        folder = self._dir / job.id
        folder.mkdir()
        (folder / "job.json").write_text(json.dumps({"kind": job.kind, "params": job.params}))
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", SERVER_PID: str(os.getpid())}
        proc = subprocess.Popen(self.command(folder), cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                                env=env)
        job.process = proc
        if job.cancel_requested:  # cancelled between the state change and the start
            proc.terminate()
        assert proc.stdout is not None
        saved = time.monotonic()
        for line in proc.stdout:
            job.log.append(line.rstrip("\n")[:500])
            if time.monotonic() - saved > SAVE_EVERY_S:
                self._save()
                saved = time.monotonic()
        code = proc.wait()
        outcome = _read_result(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if job.state != "running":  # interrupted: the server is stopping
            return
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
