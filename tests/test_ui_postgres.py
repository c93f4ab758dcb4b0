"""`modelport ui --db postgresql://...`: a server store is listed and worked on like a SQLite file under the root
(extract, cluster, timeline as real worker processes on the embedded PostgreSQL), and its password never
reaches a page, a job, the job history or an error."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import calibrated_model, save_plain

from modelport.ui.stores import ServerStores

PASSWORD = "s3cret-pw"  # the embedded server trusts local users: the password is sent and ignored
TOKEN = {"X-Modelport-Token": "secret-token"}


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


@pytest.fixture
def dashboard(tmp_path, pg_url, monkeypatch):
    """A dashboard (real job queue: each job a worker process) over a root holding one OSNet, with one server
    store given by a URL with a password, holding the detections of a small demo scene."""
    from fastapi.testclient import TestClient

    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data
    from modelport.ui.app import create_app

    monkeypatch.setenv("MODELPORT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "root"
    root.mkdir()
    save_plain(calibrated_model("osnet_x0_25"), root / "osnet_x0_25_msmt17.pt", 512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = write_demo_data(tmp_path / "scene", people=3, frames=60, seed=2)
    url = with_password(pg_url)
    import_mot(url, scene.video, scene.detections, ground_truth=scene.ground_truth)
    app = create_app(root, hosts={"testserver"}, token="secret-token", stores=[url])
    with TestClient(app) as client:
        client.root, client.name = root, ServerStores.of([url]).resolve(url)[0]
        yield client


def _finished(client, job: dict, timeout_s: float = 120) -> dict:
    end = time.monotonic() + timeout_s
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < end, job
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "done", (job["error"], job["log"][-20:])
    return job


def _submit(client, kind: str, **params) -> dict:
    r = client.post("/api/jobs", json={"kind": kind, "params": params}, headers=TOKEN)
    assert r.status_code == 202, r.json()
    return _finished(client, r.json())


def test_a_server_store_is_listed_extracted_clustered_and_reported_without_its_password(dashboard):
    name, root = dashboard.name, dashboard.root
    assert PASSWORD not in name and ":***@" in name
    home = dashboard.get("/").text
    assert name.replace("&", "&amp;") in home and PASSWORD not in home
    [listed] = [d for d in dashboard.get("/api/listing").json()["databases"] if d["path"] == name]
    assert listed["detections"] > 0 and listed["models"] == [] and not listed["problem"]
    page = dashboard.get("/db", params={"path": name})
    assert page.status_code == 200 and 'form class="job-form card" data-kind="reid_cluster"' in page.text
    assert PASSWORD not in page.text

    extracted = _submit(dashboard, "reid_extract", db=name, model="osnet_x0_25_msmt17.pt", batch="32")
    key = extracted["result"]["model"]
    assert extracted["target"] == name and extracted["result"]["computed"] == listed["detections"]
    clustered = _submit(dashboard, "reid_cluster", db=name, model=key)
    assert clustered["result"]["identities"] >= 1 and clustered["result"]["scores"]["people"] == 3
    out = Path(clustered["result"]["out"])
    assert out.is_relative_to(root.resolve()) and (out / "person_selection.html").is_file()
    timeline = _submit(dashboard, "reid_report", db=name, model=key)
    assert Path(timeline["result"]["page"]).is_file() and timeline["result"]["rows"] >= 1

    [listed] = [d for d in dashboard.get("/api/listing").json()["databases"] if d["path"] == name]
    assert [m["key"] for m in listed["models"]] == [key] and listed["models"][0]["identities"] >= 1
    jobs = dashboard.get("/api/jobs", params={"target": name}).json()
    assert len(jobs) == 3 and all(j["state"] == "done" for j in jobs)
    history = (root / ".modelport" / "ui-jobs.json").read_text()
    assert name in history.replace("\\u0026", "&") and PASSWORD not in history
    assert PASSWORD not in dashboard.get("/db", params={"path": name}).text


def test_a_url_the_dashboard_was_not_given_is_refused_naming_it_without_its_password(dashboard):
    other = "postgresql://someone:hunter2@db.example/reid"
    r = dashboard.post("/api/jobs", json={"kind": "reid_cluster", "params": {"db": other, "model": "x"}},
                       headers=TOKEN)
    body = r.json()
    assert r.status_code == 400 and "postgresql://someone:***@db.example/reid" in body["error"]
    assert "hunter2" not in str(body) and "--db" in body["hint"]
    page = dashboard.get("/db", params={"path": other})
    assert page.status_code == 400 and "hunter2" not in page.text and "someone:***@" in page.text
    unknown = dashboard.post("/api/jobs", json={"kind": "reid_cluster", "params": {"db": dashboard.name,
                                                                                  "model": "nope"}}, headers=TOKEN)
    assert unknown.status_code == 400 and "has no embeddings in" in unknown.json()["error"]
    assert PASSWORD not in str(unknown.json())


def test_an_unreachable_store_is_listed_with_the_reason_and_no_password(tmp_path):
    from fastapi.testclient import TestClient

    from modelport.ui.app import create_app

    url = f"postgresql://u:hunter2@/nodb?host={tmp_path / 'no-server'}"
    with TestClient(create_app(tmp_path, hosts={"testserver"}, stores=[url])) as client:
        [listed] = client.get("/api/listing").json()["databases"]
    assert listed["path"].startswith("postgresql://u:***@/nodb") and "cannot connect" in listed["problem"]
    assert "hunter2" not in str(listed)


def test_db_takes_only_postgresql_urls_each_with_one_password():
    from modelport.errors import ModelportError

    with pytest.raises(ModelportError, match="not a postgresql:// URL"):
        ServerStores.of(["detections.db"])
    with pytest.raises(ModelportError, match=r"u:\*\*\*@h/d: given twice") as caught:
        ServerStores.of(["postgresql://u:a1@h/d", "postgresql://u:b2@h/d"])
    assert "a1" not in str(caught.value) and "b2" not in str(caught.value)
    stores = ServerStores.of(["postgresql://u:a1@h/d"])
    assert ServerStores.from_env(stores.env()).urls == stores.urls


def test_modelport_ui_db_serves_the_store_and_refuses_a_file_path(tmp_path, pg_url):
    import httpx
    from test_ui import _free_port, stop_ui

    from modelport.reid import store

    store.connect(with_password(pg_url), create=True).close()
    command = [sys.executable, "-c", "from modelport.cli import main; main()", "ui", "--root", str(tmp_path)]
    bad = subprocess.run([*command, "--db", "detections.db"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--db detections.db: not a postgresql:// URL" in bad.stderr
    port = _free_port()
    proc = subprocess.Popen([*command, "--db", with_password(pg_url), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                home = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < end, proc.stdout.read().decode()[-2000:]
                time.sleep(0.2)
        assert "postgres:***@" in home.text and PASSWORD not in home.text
    finally:
        stop_ui(proc)
    assert PASSWORD not in proc.stdout.read().decode()
