"""YOLO detectors with pixels in the graph (``--uint8-input``): letterboxed uint8 RGB in, the same boxes out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import untrained_yolo

pytest.importorskip("ultralytics")

import modelport  # noqa: E402
from modelport.detect import export as detect_export  # noqa: E402
from modelport.detect.export import export_detector  # noqa: E402
from modelport.detect.graph import NmsConfig  # noqa: E402
from modelport.detect.pixels import pixels_in  # noqa: E402
from modelport.detect.samples import street_scenes  # noqa: E402
from modelport.errors import ConfigError  # noqa: E402
from modelport.families import ExportRequest, get_family  # noqa: E402
from modelport.preprocess import prepare_letterboxed  # noqa: E402
from modelport.tasks.detect import letterbox_pixels  # noqa: E402

IMGSZ = 320  # as tests/test_yolo.py: a quarter of 640's pixels keeps the suite fast
CONF = 0.01  # seeded random weights score low; a low threshold gives them boxes to compare


@pytest.fixture(scope="module")
def yolo_pt(tmp_path_factory) -> Path:
    return untrained_yolo(tmp_path_factory.mktemp("yolo_uint8") / "yolo11n.pt", IMGSZ)


@pytest.fixture(scope="module")
def exports(yolo_pt) -> dict:
    float_raw = export_detector(yolo_pt, "onnx", imgsz=IMGSZ, verify_conf=CONF)
    pixels_raw = export_detector(yolo_pt, "onnx,openvino", imgsz=IMGSZ, verify_conf=CONF, uint8_input=True)
    pixels_e2e = export_detector(yolo_pt, "onnx", imgsz=IMGSZ, nms=NmsConfig(conf=CONF), uint8_input=True)
    results = float_raw + pixels_raw + pixels_e2e
    assert all(r.ok for r in results), [r.error for r in results]
    return {(r.format, r.track, "uint8in" in r.path.name): r.path for r in results}


def test_pixels_in_exports_are_tagged_and_their_spec_says_uint8_nhwc(exports):
    names = sorted(p.name for p in exports.values())
    assert names == ["yolo11n.nms.uint8in.onnx", "yolo11n.onnx", "yolo11n.uint8in.onnx",
                     "yolo11n_uint8in_openvino_model"]
    for key, path in exports.items():
        spec = modelport.load(path).spec
        pixels = key[2]
        assert spec.preprocess.in_graph is pixels
        assert spec.inputs[0].dtype == ("uint8" if pixels else "float32")
        assert spec.inputs[0].shape == (("batch", IMGSZ, IMGSZ, 3) if pixels else ("batch", 3, IMGSZ, IMGSZ))
    import onnxruntime as ort

    feed = ort.InferenceSession(str(exports["onnx", "raw", True]), providers=["CPUExecutionProvider"]).get_inputs()[0]
    assert feed.type == "tensor(uint8)" and feed.shape[1:] == [IMGSZ, IMGSZ, 3]


def test_boxes_equal_the_float_exports_on_synthetic_scenes(exports):
    scenes = street_scenes(4, seed=7)
    want = modelport.load(exports["onnx", "raw", False]).detect(scenes)
    assert sum(len(d) for d in want) > 0  # something to compare
    # Same runtime: the same numbers (the graph's cast and scale are the host's). OpenVINO against ONNX Runtime
    # differs as its float export would, by hundredths of a pixel in a 640-wide scene.
    for fmt, box_tol in (("onnx", 1e-3), ("openvino", 0.1)):
        got = modelport.load(exports[fmt, "raw", True]).detect(scenes)
        for g, w in zip(got, want, strict=True):
            assert len(g) == len(w), fmt
            assert_same_detections(g, w, box_tol, fmt)


def assert_same_detections(got, want, box_tol: float, label: str) -> None:
    """Every detection of ``want`` once in ``got``: same class, box within ``box_tol``, score within 1e-4. In any
    order: two boxes whose scores tie within rounding may come out of NMS either way round (seen under
    pytest-xdist, one thread per worker: classes 22 and 39 at positions 127 and 128 of 209 swapped)."""
    unused = set(range(len(got)))
    for i in range(len(want)):
        match = next((j for j in sorted(unused) if got.classes[j] == want.classes[i]
                      and np.abs(got.boxes[j] - want.boxes[i]).max() <= box_tol
                      and abs(float(got.scores[j]) - float(want.scores[i])) <= 1e-4), None)
        assert match is not None, (label, i, want.classes[i], want.boxes[i], want.scores[i])
        unused.remove(match)


def test_end_to_end_pixels_in_export_detects_from_images(exports):
    runner = modelport.load(exports["onnx", "e2e-portable", True])
    assert runner.end_to_end
    found = runner.detect(street_scenes(4, seed=7))
    assert len(found) == 4 and sum(len(d) for d in found) > 0  # boxes were checked against Ultralytics on export
    assert all((d.scores >= CONF).all() for d in found)


def test_host_pixels_are_the_float_batch_before_its_cast_and_scale(yolo_pt):
    from modelport.detect.model import load_detector

    spec = load_detector(yolo_pt, IMGSZ).spec
    scenes = street_scenes(3, seed=11)
    for pre in (spec.preprocess, replace(spec.preprocess, stride=32)):  # fixed and dynamic-shape letterboxing
        pixels, boxes = letterbox_pixels(scenes, pre)
        floats, float_boxes = prepare_letterboxed(scenes, pre)
        assert pixels.dtype == np.uint8 and pixels.shape[-1] == 3
        assert boxes == float_boxes
        scaled = pixels.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(pre.scale)
        np.testing.assert_array_equal(scaled, floats)


def test_float_input_to_a_pixels_in_export_is_a_clear_error(exports):
    runner = modelport.load(exports["onnx", "raw", True])
    floats = prepare_letterboxed(street_scenes(1), replace(runner.spec.preprocess, in_graph=False))[0]
    with pytest.raises(ValueError, match="uint8"):
        runner(floats)


def test_a_graph_that_scales_wrong_fails_verification_and_is_not_published(yolo_pt, tmp_path, monkeypatch):
    def wrong_scale(det):
        folded = pixels_in(det)
        folded.module.mul.mul_(2.0)  # /127.5 instead of /255: boxes move, so Ultralytics must disagree
        return folded

    monkeypatch.setattr(detect_export, "pixels_in", wrong_scale)
    (result,) = export_detector(yolo_pt, "onnx", out=tmp_path, imgsz=IMGSZ, verify_conf=CONF, uint8_input=True)
    assert not result.ok and "verification failed" in result.error
    assert not (tmp_path / "yolo11n.uint8in.onnx").exists()


def test_uint8_input_is_a_yolo_and_reid_option_refused_elsewhere():
    request = ExportRequest(uint8_input=True)
    get_family("yolo").refuse_foreign(request)
    get_family("reid").refuse_foreign(request)
    with pytest.raises(ConfigError, match="--uint8-input"):
        get_family("clip").refuse_foreign(request)


def test_export_command_writes_the_pixels_in_variant(yolo_pt, tmp_path):
    from typer.testing import CliRunner

    from modelport.cli import app

    args = ["export", str(yolo_pt), "--format", "onnx", "--uint8-input", "--imgsz", str(IMGSZ), "--conf", str(CONF),
            "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert modelport.load(tmp_path / "yolo11n.uint8in.onnx").spec.inputs[0].dtype == "uint8"
    assert not (tmp_path / "yolo11n.onnx").exists()


def test_the_builtin_server_serves_a_pixels_in_detector(exports, tmp_path):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from modelport.serve import create_app
    from modelport.triton import ModelEntry, build_repository

    path = exports["onnx", "raw", True]
    build_repository([ModelEntry(str(path), name="yolo_pixels")], tmp_path / "repo")
    scene = street_scenes(1, seed=1234)[0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(scene[..., ::-1])).save(buffer, "PNG")
    runner = modelport.load(path)
    runner.nms = replace(runner.nms, conf=0.25)
    (want,) = runner.detect([scene])
    with TestClient(create_app(tmp_path / "repo")) as http:
        response = http.post("/predict/yolo_pixels", files={"image": ("s.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    got = response.json()["detections"]
    assert len(got) == len(want)
    if got:
        np.testing.assert_allclose([d["box"] for d in got], want.boxes, atol=0.05)
