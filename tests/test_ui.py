"""`modelport ui`: path confinement, the token and Origin/Host checks, the job queue, and the whole flow in a
real headless Chromium (export -> verification -> bench plot -> Triton -> package download; ReID extract ->
cluster -> person selection, timeline and a two-model comparison)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import pytest
from conftest import calibrated_model, save_plain

from modelport.ui.paths import BadPathError, OutsideRootError, confine

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
HAS_CHROMIUM = CHROMIUM.exists() or shutil.which("chromium") is not None
SCREENSHOTS = os.environ.get("MODELPORT_UI_SCREENSHOTS")  # e.g. docs/img: the test also writes screenshots
DETECTOR_PX = 320


# ---- path confinement ----------------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path) -> Path:
    base = tmp_path / "root"
    (base / "models").mkdir(parents=True)
    (base / "models" / "a.onnx").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("outside")
    return base


def test_confine_accepts_paths_inside_the_root(root):
    assert confine(root, "models/a.onnx") == (root / "models" / "a.onnx").resolve()
    assert confine(root, "models/../models/a.onnx") == (root / "models" / "a.onnx").resolve()
    assert confine(root, str(root / "models" / "a.onnx")) == (root / "models" / "a.onnx").resolve()
    assert confine(root, "new/out.tar.gz", must_exist=False) == (root / "new" / "out.tar.gz").resolve()


@pytest.mark.parametrize("value", ["../secret.txt", "models/../../secret.txt", "/etc/passwd", "..", "/"])
def test_confine_refuses_parent_and_absolute_paths_outside(root, value):
    with pytest.raises(OutsideRootError):
        confine(root, value, must_exist=False)


def test_confine_refuses_symlinks_that_leave_the_root(root):
    (root / "escape").symlink_to(root.parent)
    (root / "secret_link.txt").symlink_to(root.parent / "secret.txt")
    for value in ("escape/secret.txt", "secret_link.txt", "escape"):
        with pytest.raises(OutsideRootError):
            confine(root, value)
    (root / "inside").symlink_to(root / "models")  # a link that stays inside is fine
    assert confine(root, "inside/a.onnx") == (root / "models" / "a.onnx").resolve()


def test_confine_refuses_empty_nul_and_missing_paths(root):
    for value in ("", "  ", "a\x00b"):
        with pytest.raises(BadPathError):
            confine(root, value)
    with pytest.raises(BadPathError, match="not found"):
        confine(root, "models/missing.onnx")


# ---- the app: token, Origin, Host, files ---------------------------------------------------------------

class _NoJobs:
    """A job queue that records submissions and runs nothing."""

    def __init__(self):
        self.submitted = []

    def submit(self, kind, title, target, params):
        from modelport.ui.jobs import Job

        job = Job(f"j{len(self.submitted)}", kind, title, target, params)
        self.submitted.append(job)
        return job

    def list(self, target=None):
        return self.submitted

    def get(self, job_id):
        return None

    def cancel(self, job_id):
        return None

    def close(self):
        pass


@pytest.fixture
def client(root):
    from fastapi.testclient import TestClient

    from modelport.ui.app import create_app

    (root / "m.pt").write_bytes(b"not really weights")
    jobs = _NoJobs()
    app = create_app(root, hosts={"testserver"}, jobs=jobs, token="secret-token")
    with TestClient(app) as c:
        c.jobs = jobs
        yield c


VERIFY = {"kind": "verify", "params": {"path": "packages/x.tar.gz"}}


def test_state_changing_requests_need_the_page_token(client, root):
    (root / "packages").mkdir()
    (root / "packages" / "x.tar.gz").write_bytes(b"x")
    assert 'content="secret-token"' in client.get("/").text  # the page carries it
    assert client.post("/api/jobs", json=VERIFY).status_code == 403
    assert client.post("/api/jobs", json=VERIFY, headers={"X-Modelport-Token": "wrong"}).status_code == 403
    assert client.post("/api/jobs/j0/cancel").status_code == 403
    assert not client.jobs.submitted
    ok = client.post("/api/jobs", json=VERIFY, headers={"X-Modelport-Token": "secret-token"})
    assert ok.status_code == 202 and ok.json()["target"] == "packages/x.tar.gz"


def test_cross_origin_and_foreign_host_requests_are_refused(client):
    token = {"X-Modelport-Token": "secret-token"}
    evil = client.post("/api/jobs", json=VERIFY, headers={**token, "Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-origin" in evil.json()["error"]
    site = client.post("/api/jobs", json=VERIFY, headers={**token, "Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    rebound = client.get("/", headers={"Host": "evil.example:8080"})  # DNS rebinding
    assert rebound.status_code == 400 and "Host" in rebound.json()["error"]
    assert not client.jobs.submitted


def test_jobs_on_paths_outside_the_root_are_refused_with_message_and_hint(client, root):
    token = {"X-Modelport-Token": "secret-token"}
    (root / "link.pt").symlink_to(root.parent / "secret.txt")
    for weights in ("../secret.txt", "/etc/passwd", "link.pt"):
        r = client.post("/api/jobs", json={"kind": "export", "params": {"weights": weights, "formats": ["onnx"]}},
                        headers=token)
        assert r.status_code == 403, weights
        assert "outside the dashboard's root" in r.json()["error"] and r.json()["hint"]
    bad = client.post("/api/jobs", json={"kind": "package", "params": {"weights": "m.pt", "out": "../x.tar.gz"}},
                      headers=token)
    assert bad.status_code == 403
    unknown = client.post("/api/jobs", json={"kind": "rm -rf", "params": {}}, headers=token)
    assert unknown.status_code == 400 and "unknown job kind" in unknown.json()["error"]
    assert not client.jobs.submitted


def test_files_are_served_only_from_under_the_root_and_sandboxed(client, root):
    (root / "page.html").write_text("<script>fetch('/')</script>")
    (root / "out").symlink_to(root.parent)
    ok = client.get("/files/page.html")
    assert ok.status_code == 200 and ok.headers["content-security-policy"].startswith("sandbox")
    assert client.get("/files/%2e%2e/secret.txt").status_code == 403
    assert client.get("/files/out/secret.txt").status_code == 403
    assert client.get("/files//etc/passwd").status_code == 403
    assert client.get("/files/models").status_code == 400  # a folder is not a file
    assert client.get("/model", params={"path": "../secret.txt"}).status_code == 403


# ---- the whole flow in Chromium ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(root: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    """``modelport ui --root root`` on a free loopback port, once it answers; its base URL."""
    import httpx

    port = _free_port()
    env = {**os.environ, "MODELPORT_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", "from modelport.cli import main; main()", "ui", "--root", str(root),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"modelport ui did not start: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.3)


def stop_ui(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``modelport ui`` over a root with a calibrated OSNet, a second one (for the comparison), a small
    synthetic ReID database and an untrained YOLO detector (BatchNorm calibrated, 320 px)."""
    from modelport.detect.untrained import save_untrained
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    root = tmp_path_factory.mktemp("ui-root")
    save_plain(calibrated_model("osnet_x0_25"), root / "osnet_x0_25_msmt17.pt", 512)
    save_plain(calibrated_model("osnet_x0_25", seed=1), root / "osnet_x0_25_market1501.pt", 512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = write_demo_data(root / "scene", people=3, frames=90, seed=2)
        save_untrained(root / "detector" / "yolo11n.pt", seed=0, imgsz=DETECTOR_PX)
    import_mot(root / "detections.db", scene.video, scene.detections, ground_truth=scene.ground_truth)
    proc, base = start_ui(root, tmp_path_factory.mktemp("cache"))
    yield base, root
    stop_ui(proc)


@pytest.fixture(scope="module")
def browser():
    if not HAS_CHROMIUM:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium"))
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(executable), args=ARGS)
        yield b
        b.close()


def _shot(page, name: str, focus=None) -> None:
    if SCREENSHOTS:
        if focus is not None:
            focus.evaluate("el => el.scrollIntoView({block: 'start'})")
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=False)


def _only(form, name: str, value: str) -> None:
    for box in form.locator(f'input[name="{name}"]').all():
        if box.is_enabled():
            box.set_checked(box.get_attribute("value") == value)


def _run(page, form, kind: str, timeout_s: float = 240):
    """Submit ``form`` and wait for its newest job panel to finish; fails with the panel's text otherwise."""
    from playwright.sync_api import expect

    panels = page.locator(f'#jobs section.job[data-kind="{kind}"]')
    before = panels.count()
    form.locator('button[type="submit"]').click()
    expect(panels).to_have_count(before + 1, timeout=20_000)
    panel = panels.first
    expect(panel).not_to_have_attribute("data-state", re.compile("queued|running"), timeout=timeout_s * 1000)
    assert panel.get_attribute("data-state") == "done", panel.inner_text()
    return panel


def _decoded(locator) -> bool:
    return locator.evaluate("img => img.complete && img.naturalWidth > 0")


def test_model_flow_export_verify_bench_triton_package(browser, server):
    from playwright.sync_api import expect

    base, root = server
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.goto(base + "/")
    expect(page.get_by_role("link", name="detections.db")).to_be_visible()
    page.get_by_role("link", name="osnet_x0_25_msmt17.pt").click()
    expect(page.get_by_role("heading", name="osnet_x0_25_msmt17.pt")).to_be_visible()

    export = page.locator('form[data-kind="export"]')
    _only(export, "formats", "onnx")
    panel = _run(page, export, "export")
    table = panel.locator("table")
    expect(table).to_contain_text("onnx")
    expect(table).to_contain_text("pass")
    expect(table).to_contain_text("min cosine")
    guide = panel.locator("ul.guide")
    expect(guide).to_contain_text("picks them up automatically")
    expect(guide).to_contain_text("The loader will take: onnx")
    expect(page.locator("#exports-live")).to_contain_text("fresh")  # the listing refreshed after the job
    expect(page.locator("#exports-live")).to_contain_text("passed")
    _shot(page, "ui-export", panel.locator("h3"))

    bench = page.locator('form[data-kind="bench"]')
    _only(bench, "formats", "onnx")
    bench.get_by_label("Batch sizes").fill("1")
    bench.get_by_label("Seconds per batch size").fill("0.1")
    panel = _run(page, bench, "bench")
    expect(panel.locator("table")).to_contain_text("onnx")
    plot = panel.locator("img.plot")
    expect(plot).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    expect(panel.locator(".fastest")).to_contain_text("Fastest verified runtime here")
    _shot(page, "ui-bench", panel.locator("table"))

    page.reload()  # jobs live in the server: they come back with their results
    expect(page.locator('#jobs section.job[data-kind="export"][data-state="done"]')).to_have_count(1)
    expect(page.locator('#jobs section.job[data-kind="bench"] img.plot')).to_have_count(1)

    triton = page.locator('form[data-kind="triton"]')
    panel = _run(page, triton, "triton")
    expect(panel).to_contain_text("config.pbtxt")
    assert (root / "model_repository" / "osnet_x0_25_msmt17" / "config.pbtxt").is_file()

    panel = _run(page, page.locator('form[data-kind="package"]'), "package")
    with page.expect_download() as info:
        panel.get_by_role("link", name=re.compile("download")).click()
    downloaded = Path(info.value.path())
    with tarfile.open(downloaded) as tar:
        names = tar.getnames()
    assert "model.json" in names and "osnet_x0_25_msmt17.onnx" in names

    page.goto(base + "/")  # the home listing names the repository and the package; verify the package here
    expect(page.locator("#listing")).to_contain_text("model_repository")
    page.locator('form[data-kind="verify"]', has=page.locator('input[value$=".tar.gz"]')).locator("button").click()
    panel = page.locator('#jobs section.job[data-kind="verify"]').first
    expect(panel).to_have_attribute("data-state", "done", timeout=120_000)
    expect(panel).to_contain_text("pass")
    package_row = page.locator("#listing tr", has=page.locator("td", has_text="osnet_x0_25_msmt17_edge.tar.gz"))
    expect(package_row).to_contain_text("passed")  # the listing refreshed with the package's verification
    _shot(page, "ui-files-after", page.locator("#listing"))
    context.close()


def test_reid_flow_extract_cluster_pages_and_comparison(browser, server):
    from playwright.sync_api import expect

    base, root = server
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(base + "/db?path=detections.db")
    extract = page.locator('form[data-kind="reid_extract"]')
    models = []
    for weights in ("osnet_x0_25_msmt17.pt", "osnet_x0_25_market1501.pt"):
        extract.locator('select[name="model"]').select_option(weights)
        extract.get_by_label("Batch").fill("32")
        panel = _run(page, extract, "reid_extract")
        models.append(re.search(r"Model (\S+)", panel.inner_text()).group(1))
    cluster = page.locator('form[data-kind="reid_cluster"]')
    expect(cluster.locator("select option")).to_have_count(2)  # the new models appeared without a reload
    for key in models:
        cluster.locator('select[name="model"]').select_option(key)
        panel = _run(page, cluster, "reid_cluster")
        expect(panel).to_contain_text("identities from")
    selection = panel.get_by_role("link", name="Open the person selection page").get_attribute("href")
    _shot(page, "ui-reid", panel.locator("h3"))

    report = page.locator('form[data-kind="reid_report"]')
    report.locator('select[name="model"]').select_option(models[0])
    timeline = _run(page, report, "reid_report").get_by_role("link", name="Open the timeline").get_attribute("href")
    compare = page.locator('form[data-kind="reid_compare"]')
    compare.locator('select[name="left"]').select_option(models[0])
    compare.locator('select[name="right"]').select_option(models[1])
    panel = _run(page, compare, "reid_compare")
    comparison = panel.get_by_role("link", name="Open the comparison").get_attribute("href")

    pages = context.new_page()
    pages.goto(base + selection)
    expect(pages.locator(".card").first).to_be_visible()
    assert _decoded(pages.locator(".card img").first)
    _shot(pages, "ui-person-selection")
    pages.goto(base + timeline)
    expect(pages.locator(".row").first).to_be_visible()
    assert pages.locator(".seg").count() >= 1
    pages.goto(base + comparison)
    expect(pages.locator("#left .row").first).to_be_visible()
    expect(pages.locator("#right .row").first).to_be_visible()
    context.close()


def test_detector_export_with_nms_then_benchmark_with_table_plot_and_a_pick_that_skips_mismatches(browser, server):
    import json

    from playwright.sync_api import expect

    base, root = server
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(base + "/")
    expect(page.locator("#listing")).to_contain_text("detector")
    page.get_by_role("link", name="detector/yolo11n.pt").click()

    export = page.locator('form[data-kind="export"]')
    _only(export, "formats", "onnx")
    export.get_by_label("NMS inside the graph").check()
    export.get_by_label("Image size").fill(str(DETECTOR_PX))
    panel = _run(page, export, "export")
    expect(panel.locator("table")).to_contain_text("onnx (e2e-portable)")
    expect(panel.locator("table")).to_contain_text("reference boxes")  # checked against Ultralytics' predict
    expect(panel.locator("table")).to_contain_text("pass")
    expect(page.locator("#exports-live")).to_contain_text("yolo11n.nms.onnx")  # listed with its weights
    export_row = page.locator("#exports-live tr", has=page.locator("td", has_text="detector/yolo11n.nms.onnx"))
    expect(export_row).to_contain_text("passed")

    bench = page.locator('form[data-kind="bench"]')
    _only(bench, "tracks", "onnx-e2e")
    bench.get_by_label("Batch sizes").fill("1")
    bench.get_by_label("Image size").fill(str(DETECTOR_PX))
    bench.get_by_label("Seconds per batch size").fill("0.2")
    panel = _run(page, bench, "bench")
    table = panel.locator("table")
    expect(table).to_contain_text("ultralytics-pytorch")
    expect(table).to_contain_text("onnx-e2e")
    expect(panel).to_contain_text("Untrained weights")
    plot = panel.locator("img.plot")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    _shot(page, "ui-detector-bench", panel.locator("h3"))

    record = json.loads((root / "detector" / "benchmarks" / "yolo11n.json").read_text())
    assert record["family"] == "yolo" and record["model"]["imgsz"] == DETECTOR_PX
    shown = [row.locator("td").first.inner_text() for row in table.locator("tbody tr").all()]
    assert shown == [r["runtime"] for r in record["rows"]]  # the page shows the library's record, row by row
    statuses = {r["runtime"]: r["status"] for r in record["rows"]}
    pick = panel.locator(".fastest").inner_text()
    picked = re.search(r"here: (\S+)", pick).group(1)
    assert statuses[picked] == "ok", pick  # never a pipeline whose boxes differ from Ultralytics'
    if statuses["onnx-e2e"] != "ok":
        expect(panel.locator(".warn").last).to_contain_text("onnx-e2e")
    assert (root / "detector" / "yolo11n.nms.onnx").is_file()  # the benchmark exports next to the weights

    page.reload()  # no refresh of the listing pending (it would replace the row and its message)
    expect(export_row).to_contain_text("fresh")  # the NMS variant is known as the detector's own export
    export_row.get_by_role("button", name="Verify").click()  # `modelport verify yolo11n.pt yolo11n.nms.onnx`
    expect(export_row.locator(".form-error")).to_have_text("")
    page.goto(base + "/jobs")  # the artifact's job is listed with every job (the model page lists the weights')
    panel = page.locator('#jobs section.job[data-kind="verify"]').first
    expect(panel).not_to_have_attribute("data-state", re.compile("queued|running"), timeout=240_000)
    assert panel.get_attribute("data-state") == "done", panel.inner_text()
    expect(panel.locator("table")).to_contain_text("min IoU")  # boxes against Ultralytics' predictions
    expect(panel).not_to_contain_text("FAIL")  # the verdict: boxes matched, and some were compared
    expect(panel.locator("table")).to_contain_text("pass")
    context.close()
