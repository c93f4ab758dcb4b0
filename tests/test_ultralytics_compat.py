"""modelport's detector exports in Ultralytics' own loader: ``YOLO(path).predict`` on them finds the boxes it finds
on Ultralytics' own export of the same format, on the photos the ultralytics wheel ships."""

from __future__ import annotations

import ast
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import untrained_yolo

pytest.importorskip("ultralytics")

from modelport.detect.export import export_detector  # noqa: E402
from modelport.detect.graph import NmsConfig  # noqa: E402
from modelport.detect.verify import iou_matrix  # noqa: E402

IMGSZ = 256  # the smallest size at which the seeded model still finds tens of boxes on both photos
NMS_CONF = 0.001  # end-to-end graphs, theirs and ours: below every per-image threshold chosen below
RAW = {"onnx": "yolo11n.onnx", "openvino": "yolo11n_openvino_model", "torchscript": "yolo11n.torchscript"}


def photos() -> list[Path]:
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    return [assets / "bus.jpg", assets / "zidane.jpg"]


def yolo(path: Path):
    from ultralytics import YOLO

    return YOLO(str(path), task="detect")


@pytest.fixture(scope="module")
def yolo_pt(tmp_path_factory) -> Path:
    return untrained_yolo(tmp_path_factory.mktemp("ultra") / "yolo11n.pt", IMGSZ)


@pytest.fixture(scope="module")
def ours(yolo_pt, tmp_path_factory) -> dict:
    """modelport's raw exports (their verification is other tests' work) and the ultralytics-layout end-to-end ONNX,
    verified as every export is."""
    out = tmp_path_factory.mktemp("ours")
    raw = export_detector(yolo_pt, ",".join(RAW), imgsz=IMGSZ, out=out, verify=False)
    e2e = export_detector(yolo_pt, "onnx", imgsz=IMGSZ, out=out, nms=NmsConfig(conf=NMS_CONF, layout="ultralytics"))
    return {r.format if r.track == "raw" else "nms": r for r in raw + e2e}


@pytest.fixture(scope="module")
def theirs(yolo_pt, tmp_path_factory) -> dict[str, Path]:
    """Ultralytics' own export of each format, once (the nms=True ONNX in its own folder: same file name)."""
    exported = {}
    for fmt, kwargs in (("onnx", {}), ("openvino", {}), ("torchscript", {}), ("nms", {"nms": True, "conf": NMS_CONF})):
        folder = tmp_path_factory.mktemp(f"theirs_{fmt}")
        pt = Path(shutil.copy(yolo_pt, folder / yolo_pt.name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported[fmt] = Path(yolo(pt).export(format="onnx" if fmt == "nms" else fmt, imgsz=IMGSZ, verbose=False,
                                                 **kwargs))
    return exported


@pytest.fixture(scope="module")
def thresholds(theirs) -> list[float]:
    """Per photo, a confidence threshold in the widest score gap among the 10th to 30th best boxes of Ultralytics'
    own fixed-size export (letterboxed to the full size, as every file here; the .pt letterboxes to rectangles):
    tens of boxes to compare, none of them within rounding of the threshold."""
    chosen = []
    model = yolo(theirs["onnx"])
    for photo in photos():
        (result,) = model.predict(str(photo), conf=0.0001, verbose=False)
        scores = np.sort(result.boxes.conf.numpy())[::-1]
        assert len(scores) > 30, f"{photo.name}: the seeded model found only {len(scores)} boxes"
        k = max(range(10, 30), key=lambda i: scores[i - 1] - scores[i])
        chosen.append(float(scores[k - 1] + scores[k]) / 2)
    return chosen


def predict(path: Path, thresholds: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(xyxy boxes, classes) per photo from ``YOLO(path).predict``, each at its own threshold."""
    model = yolo(path)
    found = []
    for photo, conf in zip(photos(), thresholds):
        (result,) = model.predict(str(photo), conf=conf, verbose=False)
        found.append((result.boxes.xyxy.numpy(), result.boxes.cls.numpy().astype(int)))
    return found


def matched_share(reference: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> float:
    """The share of ``reference``'s boxes that a box of the same class in ``got`` overlaps with IoU >= 0.9."""
    (ref_boxes, ref_cls), (boxes, cls) = reference, got
    if not len(ref_boxes):
        return 1.0 if not len(boxes) else 0.0
    if not len(boxes):
        return 0.0
    iou = iou_matrix(ref_boxes, boxes) * (ref_cls[:, None] == cls[None, :])
    return float((iou.max(1) >= 0.9).mean())


def assert_same_boxes(theirs: list, ours: list) -> None:
    for i, (ref, got) in enumerate(zip(theirs, ours)):
        assert len(ref[0]) >= 10, f"photo {i}: only {len(ref[0])} boxes to compare"
        assert matched_share(ref, got) >= 0.95, f"photo {i}: {matched_share(ref, got):.2f} of Ultralytics' boxes found"
        assert matched_share(got, ref) >= 0.95, f"photo {i}: {matched_share(got, ref):.2f} of ours are Ultralytics'"


@pytest.mark.parametrize("fmt", list(RAW))
def test_ultralytics_runs_the_raw_export_as_its_own(fmt, ours, theirs, thresholds):
    result = ours[fmt]
    assert result.ok and result.path is not None and result.path.name == RAW[fmt], result.error
    assert_same_boxes(predict(theirs[fmt], thresholds), predict(result.path, thresholds))


def test_ultralytics_layout_end_to_end_export_is_verified_and_runs_in_ultralytics(ours, theirs, thresholds):
    result = ours["nms"]
    assert result.ok and result.path.name == "yolo11n.ultranms.onnx", result.error
    assert result.check is not None and result.check.detections > 0  # verified against Ultralytics' predict
    assert_same_boxes(predict(theirs["nms"], thresholds), predict(result.path, thresholds))


def test_ultralytics_layout_is_one_output_with_ultralytics_nms_metadata(ours):
    import onnxruntime as ort

    session = ort.InferenceSession(str(ours["nms"].path), providers=["CPUExecutionProvider"])
    (output,) = session.get_outputs()
    assert output.name == "output0" and output.shape[1:] == [300, 6]
    meta = session.get_modelmeta().custom_metadata_map
    assert "modelport" in meta and "'nms': True" in meta["args"] and meta["imgsz"] == f"[{IMGSZ}, {IMGSZ}]"
    assert ast.literal_eval(meta["names"])[0] == "person"  # keyed by int, as Ultralytics writes it


def test_modelport_still_reads_its_spec_beside_ultralytics_metadata(ours):
    from modelport.formats import get_format

    for fmt in RAW:
        path = ours[fmt].path
        spec = get_format(fmt).read_spec(path)
        assert spec.task == "detect" and spec.extra["ultralytics"]["imgsz"] == [IMGSZ, IMGSZ]
    assert (ours["openvino"].path / "metadata.yaml").is_file() and (ours["openvino"].path / "metadata.json").is_file()


def test_tensorrt_header_is_read_by_both(yolo_pt, tmp_path):
    """The header ``build_engine`` writes for a detector: Ultralytics' reader finds its metadata and where the engine
    starts, modelport's its spec and the same engine bytes (no TensorRT needed: the header is plain bytes)."""
    from ultralytics.nn.backends.base import BaseBackend

    from modelport.detect.model import load_detector
    from modelport.formats import ultralytics_meta
    from modelport.formats.tensorrt import split_engine

    spec = load_detector(yolo_pt, IMGSZ).spec
    engine = b"\x00\x01not-json engine bytes"
    path = tmp_path / "yolo11n.engine"
    path.write_bytes(ultralytics_meta.engine_header(ultralytics_meta.metadata(spec), spec) + engine)
    offset, meta = BaseBackend.engine_header(path)
    assert path.read_bytes()[offset:] == engine and meta["imgsz"] == [IMGSZ, IMGSZ] and meta["task"] == "detect"
    read, rest = split_engine(path)
    assert read == spec and rest == engine


def test_ultralytics_metadata_is_left_out_where_its_loader_would_misread(yolo_pt):
    """The four-output end-to-end layout and pixels-in graphs carry no Ultralytics metadata."""
    from modelport.detect.model import e2e_spec, load_detector
    from modelport.detect.pixels import pixels_in

    det = load_detector(yolo_pt, IMGSZ)
    assert det.spec.extra["ultralytics"]["args"] == {"batch": 1, "dynamic": False, "nms": None}
    four = e2e_spec(det.spec, flavor="portable", topk=300, iou=0.7, conf=0.25, normalized=False)
    assert "ultralytics" not in four.extra
    assert "ultralytics" not in pixels_in(det).spec.extra


def test_discovery_of_the_checkpoint_finds_the_ultralytics_layout_after_the_four_output_one(yolo_pt, ours):
    """`modelport load/verify yolo11n.pt` consider the ultralytics-layout file too, in the ONNX end-to-end slot."""
    from modelport.detect.discover import candidates

    pt = Path(shutil.copy(yolo_pt, ours["nms"].path.parent / yolo_pt.name))
    try:
        found = [path.name for path in candidates(pt)]
    finally:
        pt.unlink()
    assert found == ["yolo11n.ultranms.onnx", "yolo11n.onnx", "yolo11n_openvino_model", "yolo11n.torchscript"]
