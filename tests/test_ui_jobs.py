"""The dashboard's jobs: the queue (one at a time, logs, results, typed errors, cancel), the job history
that survives a restart (finished jobs keep their state, running ones come back interrupted), and Cancel
with the real worker in Chromium: the export stops, shows cancelled and leaves no partial file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from conftest import calibrated_model, save_plain
from test_ui import HAS_CHROMIUM, _shot, browser, start_ui, stop_ui  # noqa: F401 - browser is a fixture

from modelport.ui.history import JobHistory, history_path
from modelport.ui.jobs import JobQueue


def _script(code: str):
    """A job command running ``code`` with the job folder as sys.argv[1] (it may write result.json there)."""
    return lambda folder: [sys.executable, "-c", code, str(folder)]


def _wait(queue: JobQueue, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = queue.get(job_id)
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {queue.get(job_id).state}")


WRITES_RESULT = ("import json, sys, pathlib; print('step 1', flush=True); print('step 2', flush=True); "
                 "pathlib.Path(sys.argv[1], 'result.json').write_text(json.dumps({'ok': True, 'result': "
                 "{'answer': 42, 'nan': float('nan')}}))")


def test_job_queue_runs_a_job_captures_its_log_and_reads_its_result(tmp_path):
    queue = JobQueue(tmp_path, command=_script(WRITES_RESULT))
    try:
        job = _wait(queue, queue.submit("x", "X", "t", {}).id)
        assert job.state == "done" and job.result == {"answer": 42, "nan": None}
        assert list(job.log) == ["step 1", "step 2"] and job.elapsed > 0
    finally:
        queue.close()


def test_job_queue_reports_a_typed_error_and_a_crash(tmp_path):
    typed = ("import json, sys, pathlib; pathlib.Path(sys.argv[1], 'result.json').write_text(json.dumps("
             "{'ok': False, 'error': {'message': 'm.pt: bad', 'hint': 'do this'}})); sys.exit(2)")
    queue = JobQueue(tmp_path, command=_script(typed))
    try:
        job = _wait(queue, queue.submit("x", "X", "t", {}).id)
        assert job.state == "failed" and job.error == {"message": "m.pt: bad", "hint": "do this"}
        queue.command = _script("raise SystemExit(3)")
        job = _wait(queue, queue.submit("x", "X", "t", {}).id)
        assert job.state == "failed" and "code 3" in job.error["message"]
    finally:
        queue.close()


def test_job_queue_runs_one_job_at_a_time_and_cancels_running_and_queued_jobs(tmp_path):
    slow = "import time; print('started', flush=True); time.sleep(60)"
    queue = JobQueue(tmp_path, command=_script(slow))
    try:
        first, second, third = (queue.submit("x", "X", "t", {}) for _ in range(3))
        _wait(queue, first.id, states=("running",))
        end = time.monotonic() + 30
        while "started" not in first.log and time.monotonic() < end:
            time.sleep(0.05)
        assert second.state == "queued" and third.state == "queued"  # one heavy job at a time
        queue.cancel(second.id)
        assert second.state == "cancelled"
        start = time.monotonic()
        queue.cancel(first.id)
        assert _wait(queue, first.id).state == "cancelled" and time.monotonic() - start < 10
        _wait(queue, third.id, states=("running",))  # the cancelled queued job never ran
        assert second.started is None
        queue.cancel(third.id)
        assert _wait(queue, third.id).state == "cancelled"
        assert [j.id for j in queue.list()] == [third.id, second.id, first.id]
    finally:
        queue.close()


def test_a_worker_that_ignores_cancel_is_killed_after_the_grace_period_and_the_job_says_so(tmp_path):
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('started', flush=True); "
                "time.sleep(60)")
    queue = JobQueue(tmp_path, command=_script(stubborn), grace_s=0.5)
    try:
        job = queue.submit("x", "X", "t", {})
        end = time.monotonic() + 30
        while "started" not in job.log and time.monotonic() < end:
            time.sleep(0.05)
        queue.cancel(job.id)
        assert _wait(queue, job.id, timeout=10).state == "cancelled"
        assert "was killed" in job.log[-1] and ".modelport-staging-" in job.log[-1]
    finally:
        queue.close()


def test_job_folders_of_servers_that_are_gone_are_swept_and_live_ones_kept(tmp_path):
    from modelport.ui.jobs import sweep_job_dirs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead, alive = tmp_path / f"modelport-ui-jobs-{gone.pid}-x1", tmp_path / f"modelport-ui-jobs-{os.getpid()}-x2"
    odd = tmp_path / "modelport-ui-jobs-abc-x3"
    for folder in (dead, alive, odd):
        (folder / "job1").mkdir(parents=True)
    assert sweep_job_dirs(tmp_path) == [dead]
    assert not dead.exists() and alive.is_dir() and odd.is_dir()


# ---- the job history -----------------------------------------------------------------------------------

SLOW = "import time; print('started', flush=True); time.sleep(60)"


def _until_logged(job, line: str = "started", timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while line not in job.log:
        assert time.monotonic() < end, f"the job never logged {line!r}"
        time.sleep(0.05)


def test_history_brings_back_finished_jobs_and_marks_the_running_one_interrupted(tmp_path):
    history = JobHistory(history_path(tmp_path))
    first = JobQueue(tmp_path, command=_script(WRITES_RESULT), history=history)
    try:
        done = _wait(first, first.submit("export", "Export", "m.pt", {"weights": "m.pt"}).id)
        first.command = _script(SLOW)
        running = first.submit("bench", "Benchmark", "m.pt", {})
        queued = first.submit("bench", "Benchmark", "m.pt", {})
        _until_logged(running)
        first.history = None  # the server dies here: it writes nothing more
        second = JobQueue(tmp_path, command=_script(WRITES_RESULT), history=JobHistory(history_path(tmp_path)))
        try:
            back = {j.id: j for j in second.list()}
            assert [j.id for j in second.list()] == [queued.id, running.id, done.id]
            assert back[done.id].state == "done" and back[done.id].result == {"answer": 42, "nan": None}
            assert list(back[done.id].log) == ["step 1", "step 2"]
            assert back[running.id].state == "interrupted" and "was running" in back[running.id].error["message"]
            assert back[running.id].elapsed >= 0 and not back[running.id].active
            assert back[queued.id].state == "interrupted" and "before this job started" in back[queued.id].error[
                "message"]
            assert second.cancel(running.id).state == "interrupted"  # nothing to cancel any more
            new = _wait(second, second.submit("x", "X", "t", {}).id)
            assert new.state == "done"
            stored = [r["id"] for r in json.loads(history_path(tmp_path).read_text())["jobs"]]
            assert stored == [done.id, running.id, queued.id, new.id]  # the file holds the old and the new
        finally:
            second.close()
    finally:
        first.close()


def test_closing_the_queue_records_running_and_queued_jobs_as_interrupted_and_stops_them(tmp_path):
    queue = JobQueue(tmp_path, command=_script(SLOW), history=JobHistory(history_path(tmp_path)))
    running, queued = queue.submit("x", "X", "t", {}), queue.submit("x", "X", "t", {})
    _until_logged(running)
    proc = running.process
    queue.close()
    assert proc.wait(10) is not None  # the worker was told to stop
    stored = {r["id"]: r for r in json.loads(history_path(tmp_path).read_text())["jobs"]}
    assert stored[running.id]["state"] == stored[queued.id]["state"] == "interrupted"
    assert stored[running.id]["log"] == ["started"]
    time.sleep(0.5)  # the job's thread sees its process end: the record stays interrupted
    assert json.loads(history_path(tmp_path).read_text())["jobs"][0]["state"] == "interrupted"


def test_a_damaged_history_is_set_aside_and_an_unwritable_one_only_warns(tmp_path, caplog):
    path = history_path(tmp_path)
    path.parent.mkdir()
    record = {"id": "x", "kind": "k", "title": "t", "target": "m.pt", "params": {}, "state": "done", "created": 1.0,
              "started": 1.0, "finished": 2.0, "result": None, "error": None, "log": []}
    for damaged in ('{"schema": 1, "jobs": [{"id": "x"}]}', "{not json", json.dumps({"schema": 2, "jobs": []}),
                    json.dumps({"schema": 1, "jobs": [{**record, "created": "yesterday"}]})):
        path.write_text(damaged)
        queue = JobQueue(tmp_path, command=_script(WRITES_RESULT), history=JobHistory(path))
        try:
            assert queue.list() == [] and path.with_name(path.name + ".damaged").read_text() == damaged
        finally:
            queue.close()
    path.write_text(json.dumps({"schema": 1, "jobs": [record]}))  # and a good one is read
    queue = JobQueue(tmp_path, command=_script(WRITES_RESULT), history=JobHistory(path))
    try:
        assert [(j.id, j.state) for j in queue.list()] == [("x", "done")]
    finally:
        queue.close()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state folder should be")
    queue = JobQueue(tmp_path, command=_script(WRITES_RESULT), history=JobHistory(blocked / "ui-jobs.json"))
    try:
        assert _wait(queue, queue.submit("x", "X", "t", {}).id).state == "done"  # jobs still run
        assert "cannot be written" in caplog.text
    finally:
        queue.close()


def test_a_restored_job_whose_result_an_older_version_wrote_still_renders(tmp_path):
    from fastapi.testclient import TestClient

    from modelport.ui.app import create_app

    record = {"id": "old1", "kind": "bench", "title": "Benchmark", "target": "m.pt", "params": {}, "state": "done",
              "created": 1.0, "started": 1.0, "finished": 2.0, "result": {"rows": "not a list"}, "error": None,
              "log": ["measured"]}
    history_path(tmp_path).parent.mkdir()
    history_path(tmp_path).write_text(json.dumps({"schema": 1, "jobs": [record]}))
    with TestClient(create_app(tmp_path, hosts={"testserver"})) as client:
        jobs = client.get("/api/jobs").json()
    assert [(j["id"], j["state"]) for j in jobs] == [("old1", "done")]
    assert "not a list" in jobs[0]["html"] and "measured" in jobs[0]["html"]


# ---- Cancel and restart with the real worker -----------------------------------------------------------

def _files(root: Path) -> set[str]:
    """Every file and folder under ``root`` (hidden ones too), but the dashboard's own state folder."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.relative_to(root).parts[0] == ".modelport"}


def _worker_pids(job_id: str) -> list[int]:
    """Processes running the worker for ``job_id`` (its folder, named after the job, is in the command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"modelport.ui.worker" in cmd and any(part.endswith(job_id.encode()) for part in cmd):
            pids.append(int(proc.name))
    return pids


def _gone(job_id: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while _worker_pids(job_id):
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.skipif(not HAS_CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")
def test_cancel_stops_a_real_export_leaves_nothing_partial_and_history_survives_restarts(browser, tmp_path):  # noqa: F811
    import httpx
    from playwright.sync_api import expect

    from modelport.formats import EXPORTABLE

    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_plain(calibrated_model("osnet_x0_25"), root / "osnet_x0_25_msmt17.pt", 512)
    before = _files(root)
    usable = [f.id for f in EXPORTABLE if f.unavailable_reason("cpu") is None]
    proc, base = start_ui(root, cache)
    try:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(base + "/model?path=osnet_x0_25_msmt17.pt")
        page.locator('form[data-kind="export"] button[type="submit"]').click()  # every usable format
        panel = page.locator('#jobs section.job[data-kind="export"]').first
        expect(panel.locator(".progress")).to_contain_text("exporting", timeout=60_000)  # the library is at work
        job_id = panel.get_attribute("id").removeprefix("job-")
        assert _worker_pids(job_id)
        panel.get_by_role("button", name="Cancel").click()
        expect(panel).to_have_attribute("data-state", "cancelled", timeout=30_000)
        assert _gone(job_id, 5), "the worker still runs after its job shows cancelled"
        job = httpx.get(f"{base}/api/jobs/{job_id}").json()
        assert job["state"] == "cancelled" and job["result"] is None
        after = _files(root)
        written = after - before
        assert not [f for f in written if Path(f).name.startswith(".")], written  # no staging folder or temp file
        finished = [f for f in written if "/" not in f]
        assert len(finished) < len(usable), f"the export finished before Cancel reached it: {finished}"
        from modelport.formats import format_of_path

        for name in finished:  # a format finished before the Cancel is whole: it reads back
            format_of_path(root / name).read_spec(root / name)

        # A restart shows the cancelled job; a job running when the server is killed comes back interrupted.
        stop_ui(proc)
        proc, base = start_ui(root, cache)
        page.goto(base + "/jobs")
        old = page.locator(f"#job-{job_id}")
        expect(old).to_have_attribute("data-state", "cancelled", timeout=10_000)
        html = httpx.get(base + "/").text
        secret = html.split('name="modelport-token" content="')[1].split('"')[0]
        running = httpx.post(f"{base}/api/jobs", headers={"X-Modelport-Token": secret},
                             json={"kind": "bench", "params": {"weights": "osnet_x0_25_msmt17.pt",
                                                               "formats": ["onnx"], "batches": "1",
                                                               "seconds": "600"}}).json()
        end = time.monotonic() + 60
        while httpx.get(f"{base}/api/jobs/{running['id']}").json()["state"] != "running":
            assert time.monotonic() < end, "the benchmark never started"
            time.sleep(0.2)
        assert _worker_pids(running["id"])
        proc.send_signal(signal.SIGKILL)  # a crash: no shutdown, no SIGTERM to the worker
        proc.wait(10)
        assert _gone(running["id"], 30), "the worker outlived its server"
        killed = proc.pid
        assert list(Path(tempfile.gettempdir()).glob(f"modelport-ui-jobs-{killed}-*"))  # left by the crash
        proc, base = start_ui(root, cache)
        assert not list(Path(tempfile.gettempdir()).glob(f"modelport-ui-jobs-{killed}-*"))  # swept at the start
        page.goto(base + "/jobs")
        expect(page.locator(f"#job-{running['id']}")).to_have_attribute("data-state", "interrupted", timeout=10_000)
        expect(page.locator(f"#job-{running['id']}")).to_contain_text("stopped while this job was running")
        expect(page.locator(f"#job-{job_id}")).to_have_attribute("data-state", "cancelled")
        assert not page.locator(f"#job-{running['id']} button[data-cancel]").count()
        _shot(page, "ui-jobs-history")
    finally:
        if proc.poll() is None:
            stop_ui(proc)
