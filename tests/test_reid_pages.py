"""The HTML pages in a real headless Chromium: rendered, images decoded, selection export works."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import calibrated_model, save_plain

from modelport.reid.extract import extract, load_model
from modelport.reid.identify import run_cluster
from modelport.reid.importer import import_mot
from modelport.reid.report import compare_reports, write_report
from modelport.reid.synth import write_demo_data

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                                reason="Chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """Person selection, two timelines (tracks; identities) and their comparison for a short scene."""
    root = tmp_path_factory.mktemp("pages")
    scene = write_demo_data(root / "scene", people=4, frames=160, seed=2)
    db = root / "detections.db"
    import_mot(db, scene.video, scene.detections, ground_truth=scene.ground_truth)
    weights = save_plain(calibrated_model("osnet_x0_25"), root / "osnet_x0_25_msmt17.pt", 512)
    from modelport.export import export

    export(weights, "onnx", verify=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extract(db, load_model(weights), batch=32)
    clustered = run_cluster(db, root / "ids", threshold="auto", standardize=True)
    return {"selection": clustered.out / "person_selection.html", "identities": clustered.out / "identities.json",
            "tracks": write_report(db, root / "report" / "tracks.html").path,
            "reid": write_report(db, root / "report" / "reid.html", use_reid=True).path,
            "compare": compare_reports(root / "report" / "tracks.html", root / "report" / "reid.html",
                                       root / "report" / "compare.html")}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium"))
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(executable), args=ARGS)
        yield b
        b.close()


def _open(browser, path: Path):
    context = browser.new_context(accept_downloads=True)
    # Self-contained: any request other than the file itself would be a missing inline resource.
    requests: list[str] = []
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return context, page, requests


def _images_decoded(page) -> tuple[int, int]:
    return page.evaluate("""() => { const imgs = Array.from(document.images);
        return [imgs.length, imgs.filter(i => i.complete && i.naturalWidth > 0).length]; }""")


def test_person_selection_renders_cards_with_animated_webps_and_exports_a_selection(browser, pages):
    identities = json.loads(pages["identities"].read_text())["identities"]
    context, page, requests = _open(browser, pages["selection"])
    try:
        cards = page.locator(".card")
        assert cards.count() == len(identities) >= 2
        total, decoded = _images_decoded(page)
        assert total == len(identities) and decoded == total
        assert page.evaluate("document.images[0].src.startsWith('data:image/webp;base64,')")
        assert cards.first.bounding_box()["height"] > 100  # laid out, not collapsed
        assert "detections in" in cards.first.inner_text()
        cards.nth(0).click()
        cards.nth(1).locator("input").check()
        assert page.locator("#count").inner_text() == "2 selected"
        with page.expect_download() as info:
            page.click("#export")
        exported = json.loads(Path(info.value.path()).read_text())
        assert info.value.suggested_filename == "selection.json"
        assert [p["person"] for p in exported["selected"]] == [identities[0]["person"], identities[1]["person"]]
        assert exported["selected"][0]["tracks"] == identities[0]["tracks"]
        assert json.loads(page.locator("#selection-json").inner_text()) == exported
        assert all(u.startswith(("file:", "data:", "blob:")) for u in requests)
    finally:
        context.close()


@pytest.mark.parametrize("which", ["tracks", "reid"])
def test_timeline_renders_rows_with_thumbnails_and_segments(browser, pages, which):
    context, page, requests = _open(browser, pages[which])
    try:
        rows = page.locator(".row")
        assert rows.count() >= 2
        total, decoded = _images_decoded(page)
        assert total == rows.count() and decoded == total
        assert page.locator(".seg").count() >= rows.count()
        width = page.locator(".seg").first.bounding_box()["width"]
        assert width > 0
        label = rows.first.get_attribute("data-label")
        assert label.startswith("person " if which == "reid" else "track ")
        if which == "reid":  # identities count from 0, as identities.json and person_0.webp do
            labels = [rows.nth(i).get_attribute("data-label") for i in range(rows.count())]
            assert "person 0" in labels and "unassigned" not in labels
        assert all(u.startswith(("file:", "data:")) for u in requests)
    finally:
        context.close()


def test_comparison_shows_both_reports_side_by_side(browser, pages):
    context, page, _ = _open(browser, pages["compare"])
    try:
        left, right = page.locator("#left"), page.locator("#right")
        lb, rb = left.bounding_box(), right.bounding_box()
        assert rb["x"] > lb["x"] + lb["width"] / 2  # next to each other, not stacked
        assert left.locator(".row").count() > right.locator(".row").count() >= 1  # tracks vs identities
        total, decoded = _images_decoded(page)
        assert decoded == total > 0
        assert "adjusted Rand index" in page.inner_text("body")
    finally:
        context.close()
