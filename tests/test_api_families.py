"""The public Python API for each family: ``modelport.export``, ``load``, ``verify`` and ``benchmark`` take any
family's source (MobileCLIP's and the factory's round trips are in test_clip.py and test_factory.py, beside
their fixtures)."""

from __future__ import annotations

import pytest
from conftest import calibrated_model, save_plain, untrained_yolo

import modelport
from modelport.verify import VerifyReport

YOLO_PX = 320
YOLO_CONF = 0.01  # random-weight detectors score low: a low threshold gives them boxes to compare


def _bench_rows(report: dict, family: str) -> list[dict]:
    assert report["schema"] == 2 and report["family"] == family and report["machine_key"]
    rows = [r for r in report["rows"] if r["format"] != "pytorch" and r["format"] != "ultralytics"]
    assert rows and all(r["status"] == "ok" and r["throughput"] > 0 and r["latency_ms"]["n"] >= 1 for r in rows)
    return rows


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_CACHE", str(tmp_path / "cache"))  # benchmark records go to the cache


def test_reid_through_the_python_api(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    (onnx,) = modelport.export(weights, "onnx")
    assert modelport.load(weights).path == onnx
    report = modelport.verify([onnx, weights])  # the weights file is the reference wherever it is listed
    assert isinstance(report, VerifyReport) and report.passed and report.reference.startswith("pytorch")
    (tmp_path / "other").mkdir()
    other = save_plain(calibrated_model("osnet_x0_25", seed=1), tmp_path / "other" / "osnet_x0_25_msmt17.pt", 512)
    assert not modelport.verify([onnx], other).passed  # another model's weights: the check does compare
    rows = _bench_rows(modelport.benchmark(weights, formats="onnx", batches=[2], seconds=0.2, rounds=1), "reid")
    assert [r["runtime"] for r in rows] == ["onnx"]


@pytest.fixture(scope="module")
def yolo_pt(tmp_path_factory):
    pytest.importorskip("ultralytics")
    return untrained_yolo(tmp_path_factory.mktemp("api_yolo") / "yolo11n.pt", YOLO_PX)


def test_yolo_through_the_python_api(yolo_pt):
    (onnx,) = modelport.export(yolo_pt, "onnx", imgsz=YOLO_PX, conf=YOLO_CONF)
    runner = modelport.load(yolo_pt, verbose=False)
    assert runner.path == onnx and runner.detect  # a Runner that also answers with boxes
    report = modelport.verify([onnx], yolo_pt, conf=YOLO_CONF, count=4)  # box by box against Ultralytics
    assert report.passed and [c.label for c in report.results] == [str(onnx)]
    assert report.results[0].detections > 0  # boxes were compared, not an empty match
    report = modelport.benchmark(yolo_pt, formats="onnx", imgsz=YOLO_PX, conf=YOLO_CONF, batches=[1], seconds=0.5,
                                 rounds=1)
    rows = _bench_rows(report, "yolo")
    assert {r["format"] for r in rows} == {"onnx"} and all(r["split_ms"] for r in rows)  # onnx tracks only
