"""YOLO detectors: letterbox, NMS, exports of both tracks verified against Ultralytics' own predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import untrained_yolo

pytest.importorskip("ultralytics")

from modelport.detect.discover import open_detector  # noqa: E402
from modelport.detect.export import export_detector, export_models  # noqa: E402
from modelport.detect.graph import NmsConfig  # noqa: E402
from modelport.detect.model import DetectorSource, load_detector, parse_model_arg, read_model_list  # noqa: E402
from modelport.detect.nms import NmsSettings, nms_raw  # noqa: E402
from modelport.detect.runner import Detections, DetectRunner, UltralyticsReference, load_runtime  # noqa: E402
from modelport.detect.samples import street_scenes  # noqa: E402
from modelport.detect.untrained import save_untrained  # noqa: E402
from modelport.detect.verify import compare_detections  # noqa: E402
from modelport.errors import CorruptFileError, ExportError, WeightsNotFoundError  # noqa: E402
from modelport.formats import Runner, get_format  # noqa: E402
from modelport.preprocess import letterbox, prepare_letterboxed, scale_boxes  # noqa: E402

IMGSZ = 320  # nothing below depends on 640; a quarter of the pixels keeps the suite fast
CONF = 0.01  # random-weight models score low: a low threshold gives them boxes to compare


@pytest.fixture(scope="module")
def yolo_pt(tmp_path_factory) -> Path:
    return untrained_yolo(tmp_path_factory.mktemp("yolo") / "yolo11n.pt", IMGSZ)


@pytest.fixture(scope="module")
def exports(yolo_pt) -> dict:
    raw = export_detector(yolo_pt, "onnx,openvino,torchscript", imgsz=IMGSZ, verify_conf=CONF)
    e2e = export_detector(yolo_pt, "onnx,openvino", imgsz=IMGSZ, nms=NmsConfig(conf=CONF))
    return {(r.format, r.track): r for r in raw + e2e}


# --- preprocessing --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(480, 640), (721, 1283), (640, 333), (320, 320)])
def test_letterbox_and_box_scaling_match_ultralytics(shape):
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ops

    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours, info = letterbox(img, IMGSZ, IMGSZ)
    np.testing.assert_array_equal(ours, LetterBox((IMGSZ, IMGSZ), auto=False)(image=img))
    rect, rect_info = letterbox(img, IMGSZ, IMGSZ, stride=32)  # dynamic-shape models: the smallest rectangle
    np.testing.assert_array_equal(rect, LetterBox((IMGSZ, IMGSZ), auto=True, stride=32)(image=img))
    assert rect.shape[0] % 32 == 0 and rect.shape[1] % 32 == 0 and rect_info.resized == info.resized
    boxes = np.array([[10.3, 20.7, 200.2, 300.9], [0, 0, IMGSZ, IMGSZ]], np.float32)
    expected = ops.scale_boxes((IMGSZ, IMGSZ), torch.from_numpy(boxes.copy()), shape).numpy()
    np.testing.assert_allclose(scale_boxes(boxes, info), expected, atol=1e-3)
    normalized = scale_boxes(boxes / IMGSZ, info, normalized=True, input_size=(IMGSZ, IMGSZ))
    np.testing.assert_allclose(normalized, expected, atol=1e-3)


def test_letterboxed_batch_is_rgb_scaled_to_unit_range():
    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 0] = 255  # pure blue in BGR
    spec = load_spec_preprocess()
    batch, infos = prepare_letterboxed([img], spec)
    assert batch.shape == (1, 3, IMGSZ, IMGSZ) and batch.dtype == np.float32
    centre = batch[0, :, IMGSZ // 2, IMGSZ // 2]
    np.testing.assert_allclose(centre, [0.0, 0.0, 1.0])  # RGB order: blue is the last channel
    np.testing.assert_allclose(batch[0, :, 0, 0], [114 / 255] * 3, atol=1e-6)  # grey padding
    assert infos[0].top == 80 and infos[0].left == 0


def load_spec_preprocess():
    from modelport.spec import Preprocess

    return Preprocess(height=IMGSZ, width=IMGSZ, mean=(0.0,) * 3, std=(1.0,) * 3, resize="letterbox")


# --- NMS ----------------------------------------------------------------------------------------------------

def _raw_with_overlaps(seed: int = 0, anchors: int = 600, nc: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 300, (anchors, 2))
    centres[1::2] = centres[::2] + rng.normal(0, 3, centres[::2].shape)  # pairs of heavily overlapping boxes
    sizes = rng.uniform(5, 60, (anchors, 2))
    scores = rng.uniform(0, 1, (anchors, nc)) ** 4
    return np.concatenate([centres, sizes, scores], 1).T[None].astype(np.float32)


@pytest.mark.parametrize("conf,iou,topk", [(0.25, 0.7, 300), (0.05, 0.45, 20)])
def test_cpu_nms_matches_ultralytics_nms(conf, iou, topk):
    from ultralytics.utils.nms import non_max_suppression

    raw = np.concatenate([_raw_with_overlaps(0), _raw_with_overlaps(1)])
    ours = nms_raw(raw, NmsSettings(conf, iou, topk))
    theirs = non_max_suppression(torch.from_numpy(raw), conf, iou, max_det=topk)
    for b, ref in enumerate(theirs):
        n = int(ours["num_dets"][b, 0])
        assert n == len(ref) > 0
        np.testing.assert_allclose(ours["det_boxes"][b, :n], ref[:, :4].numpy(), atol=1e-4)
        np.testing.assert_allclose(ours["det_scores"][b, :n], ref[:, 4].numpy(), atol=1e-6)
        np.testing.assert_array_equal(ours["det_classes"][b, :n], ref[:, 5].numpy().astype(int))
        assert not ours["det_scores"][b, n:].any()  # padding stays zero


def test_nms_is_class_aware_and_keeps_each_boxs_best_class():
    boxes = np.array([[100, 100, 50, 50], [101, 100, 50, 50], [102, 101, 50, 50]], np.float32)
    scores = np.array([[0.9, 0.1], [0.8, 0.05], [0.3, 0.7]], np.float32)  # box 1 overlaps box 0, same class
    raw = np.concatenate([boxes, scores], 1).T[None]
    out = nms_raw(raw, NmsSettings(conf=0.25, iou=0.7, topk=10))
    assert out["num_dets"][0, 0] == 2
    assert out["det_classes"][0, :2].tolist() == [0, 1]
    np.testing.assert_allclose(out["det_scores"][0, :2], [0.9, 0.7])


def _nms_graph(channels: int, anchors: int, config: NmsConfig):
    """An ONNX Runtime session of add_nms on a graph whose raw head output is its input."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from modelport.detect.graph import add_nms

    graph = helper.make_graph([helper.make_node("Identity", ["raw"], ["output0"])], "nms",
                              [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", channels, anchors])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                                             ["batch", channels, anchors])])
    model = add_nms(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), config, "output0",
                    channels, anchors, (640, 640))
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_in_graph_nms_is_class_aware_like_the_cpu_nms():
    boxes = np.array([[100, 100, 50, 50], [101, 100, 50, 50], [102, 101, 50, 50], [400, 300, 80, 60]], np.float32)
    scores = np.array([[0.9, 0.1], [0.8, 0.05], [0.3, 0.7], [0.2, 0.6]], np.float32)
    raw = np.concatenate([boxes, scores], 1).T[None].repeat(2, axis=0)  # two images, same content
    settings = NmsSettings(conf=0.25, iou=0.7, topk=3)
    want = nms_raw(raw, settings)
    session = _nms_graph(6, 4, NmsConfig(conf=0.25, iou=0.7, topk=3))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"raw": raw})))
    assert got["num_dets"].tolist() == [[3], [3]]  # box 1 suppressed by box 0; box 2 overlaps box 0, other class
    for key in ("num_dets", "det_classes"):
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_allclose(got["det_scores"], want["det_scores"], atol=1e-6)
    np.testing.assert_allclose(got["det_boxes"], want["det_boxes"], atol=1e-4)


def test_last_axis_dfl_gives_ultralytics_dfl_values():
    from ultralytics.nn.modules.block import DFL

    from modelport.detect.model import LastAxisDFL

    theirs = DFL(16).eval()
    x = torch.randn(2, 64, 525, generator=torch.Generator().manual_seed(0)) * 4
    with torch.no_grad():
        torch.testing.assert_close(LastAxisDFL(theirs.conv.weight)(x), theirs(x), atol=1e-5, rtol=1e-5)


# --- models -------------------------------------------------------------------------------------------------

def test_missing_weights_name_the_file_and_where_to_put_it(tmp_path):
    missing = tmp_path / "weights" / "yolo11s.pt"
    with pytest.raises(WeightsNotFoundError) as info:
        load_detector(missing)
    assert str(missing) in info.value.message and "put the Ultralytics checkpoint at" in info.value.hint


def test_a_file_that_is_not_an_ultralytics_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "yolo11n.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CorruptFileError, match="yolo11n.pt"):
        load_detector(path)


def test_default_max_batch_per_size_and_custom_overrides(tmp_path):
    assert [DetectorSource.of(tmp_path / f"yolo11{s}.pt").max_batch for s in "nsmlx"] == [128, 64, 32, 16, 8]
    src = parse_model_arg(f"{tmp_path}/best.pt:plates:24")
    assert (src.name, src.max_batch, src.pt_file.name) == ("plates", 24, "best.pt")
    assert parse_model_arg("yolo11m.pt").max_batch == 32
    with pytest.raises(Exception, match="not an integer"):
        parse_model_arg("best.pt:x:many")


def test_class_names_come_from_the_model(yolo_pt):
    det = load_detector(yolo_pt, imgsz=IMGSZ)
    assert det.labels[:3] == ("person", "bicycle", "car") and len(det.labels) == 80
    assert det.spec.outputs[0].shape == ("batch", 84, 2100)  # 4 + 80 classes, (40² + 20² + 10²) anchors
    assert det.spec.extra["max_batch"] == 128 and det.spec.source.kind == "random"
    assert det.spec.preprocess.resize == "letterbox"


# --- exports vs Ultralytics --------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [("onnx", "raw"), ("openvino", "raw"), ("torchscript", "raw"),
                                 ("onnx", "e2e-portable"), ("openvino", "e2e-portable")])
def test_every_track_matches_ultralytics_predict(exports, key):
    result = exports[key]
    assert result.ok, result.error
    check = result.check
    assert check.detections >= 20, "the random model must produce boxes for the comparison to mean something"
    assert check.min_iou >= 0.99 and check.max_score_diff <= 1e-3
    assert (result.path.parent / "labels.txt").read_text().splitlines()[0] == "person" or \
        (result.path / "labels.txt").is_file()


def test_dynamic_shape_exports_run_ultralytics_rectangles_and_match_its_predict(yolo_pt, tmp_path):
    from modelport.preprocess import prepare_letterboxed

    raw = export_detector(yolo_pt, "onnx", imgsz=IMGSZ, verify_conf=CONF, dynamic_hw=True, out=tmp_path / "raw")
    e2e = export_detector(yolo_pt, "onnx,openvino", imgsz=IMGSZ, dynamic_hw=True, out=tmp_path / "e2e",
                          nms=NmsConfig(conf=CONF, normalize=True))
    for result in raw + e2e:  # verified batched (mixed sizes: full square) and image by image (rectangles)
        assert result.ok, result.error
        assert result.check.detections >= 40 and result.check.min_iou >= 0.99
    runner = DetectRunner(load_runtime(get_format("onnx"), e2e[0].path))
    assert runner.spec.inputs[0].shape == ("batch", 3, "height", "width") and runner.spec.preprocess.stride == 32
    frame = street_scenes(1)[0]  # 480x640 -> 240x320 inside 320x320 -> padded to 256x320
    batch, _ = prepare_letterboxed([frame], runner.spec.preprocess)
    assert batch.shape == (1, 3, 256, 320)
    assert prepare_letterboxed([frame, frame[:300]], runner.spec.preprocess)[0].shape == (2, 3, IMGSZ, IMGSZ)
    tiny = runner.infer(np.zeros((1, 3, 32, 64), np.float32))  # 3 anchors: still topk rows, none real
    assert tiny["det_boxes"].shape == (1, 300, 4) and tiny["num_dets"][0, 0] <= 3
    want = runner.detect([frame])
    runner.release_memory()  # its one-image shrink run must pick a size the model takes
    again = runner.detect([frame])
    assert len(again[0]) == len(want[0]) > 0 and np.allclose(again[0].boxes, want[0].boxes)
    with pytest.raises(ExportError, match="TorchScript"):
        export_detector(yolo_pt, "torchscript", imgsz=IMGSZ, dynamic_hw=True, out=tmp_path / "ts")
    from modelport.triton.build import ModelEntry, build_model
    from modelport.triton.repo import validate_repository

    built = build_model(ModelEntry(str(e2e[0].path), name="det"), tmp_path / "repo")
    assert "dims: -1" in built.config.read_text()  # Triton takes any height and width
    [checked] = validate_repository(tmp_path / "repo")  # its request must be a size the graph takes
    assert checked.ok, checked


def test_end_to_end_outputs_are_padded_fixed_size_tensors(exports):
    runner = DetectRunner(get_format("onnx").load(exports[("onnx", "e2e-portable")].path))
    batch, _ = prepare_letterboxed(street_scenes(3, seed=5), runner.spec.preprocess)
    out = runner.runner(batch)
    assert out["num_dets"].shape == (3, 1) and out["num_dets"].dtype == np.int32
    assert out["det_boxes"].shape == (3, 300, 4) and out["det_scores"].shape == (3, 300)
    assert out["det_classes"].dtype == np.int32
    # Dynamic batch: each image gives the same result alone as in the batch.
    single = runner.runner(batch[1:2])
    np.testing.assert_array_equal(single["num_dets"][0], out["num_dets"][1])
    np.testing.assert_allclose(single["det_boxes"][0], out["det_boxes"][1], atol=1e-3)
    # The throughput configuration (one single-threaded session per core) gives the same rows.
    tuned = load_runtime(get_format("onnx"), runner.path)
    streams = tuned(batch)
    assert tuned._stream_session is not None or tuned.streams == 1  # one core: nothing to split over
    np.testing.assert_array_equal(streams["num_dets"], out["num_dets"])
    np.testing.assert_allclose(streams["det_boxes"], out["det_boxes"], atol=1e-3)


def test_topk_thresholds_and_normalized_boxes_are_configurable(yolo_pt, exports, tmp_path):
    config = NmsConfig(topk=5, iou=0.5, conf=0.001, normalize=True)
    (result,) = export_detector(yolo_pt, "onnx", nms=config, imgsz=IMGSZ, out=tmp_path)
    assert result.ok, result.error
    runner = DetectRunner(get_format("onnx").load(result.path))
    assert runner.spec.extra["nms"] == {"flavor": "portable", "topk": 5, "iou": 0.5, "conf": 0.001, "normalized": True,
                                        "layout": "efficientnms"}
    batch, _ = prepare_letterboxed(street_scenes(2, seed=1234), runner.spec.preprocess)
    out = runner.runner(batch)
    assert out["det_boxes"].shape == (2, 5, 4) and out["num_dets"].max() <= 5
    raw = get_format("onnx").load(exports[("onnx", "raw")].path)(batch)["output0"]
    expected = nms_raw(raw, NmsSettings(conf=0.001, iou=0.5, topk=5))
    assert out["num_dets"].max() == 5 and (out["num_dets"] == expected["num_dets"]).all()
    np.testing.assert_allclose(out["det_boxes"], expected["det_boxes"] / IMGSZ, atol=1e-4)  # fractions of the input


def test_verification_catches_shifted_boxes_and_missing_detections(yolo_pt):
    ref = UltralyticsReference(yolo_pt, IMGSZ, NmsSettings(CONF, 0.7, 300)).detect(street_scenes(4, seed=1234))
    assert sum(len(r) for r in ref) > 0
    shifted = [Detections(r.boxes + 3.0, r.scores, r.classes) for r in ref]
    fewer = [Detections(r.boxes[1:], r.scores[1:], r.classes[1:]) for r in ref]
    reclassed = [Detections(r.boxes, r.scores, (r.classes + 1) % 80) for r in ref]
    rescored = [Detections(r.boxes, r.scores + 2e-3, r.classes) for r in ref]
    assert compare_detections(ref, ref, label="same", format="x", track="raw").passed
    for bad in (shifted, fewer, reclassed, rescored):
        assert not compare_detections(ref, bad, label="bad", format="x", track="raw").passed


def test_boxes_clipped_to_zero_area_match_by_corners_only():
    from modelport.detect.verify import iou_matrix

    flat = np.array([[248.93, 480.0, 626.78, 480.0]], np.float32)  # clipped at the bottom edge
    assert iou_matrix(flat, flat + np.float32(0.01))[0, 0] == 1.0
    assert iou_matrix(flat, flat + np.float32(5.0))[0, 0] == 0.0
    box = np.array([[0, 0, 10, 10]], np.float32)
    assert iou_matrix(box, box + np.float32(0.01))[0, 0] < 1.0  # ordinary boxes keep their true IoU


def test_loader_prefers_the_end_to_end_onnx_export(exports, yolo_pt):
    runner = open_detector(yolo_pt, verbose=False)
    assert (runner.format, runner.track) == ("onnx", "e2e-portable")
    dets = runner.detect(street_scenes(2, seed=0))
    assert len(dets) == 2 and all(d.boxes.shape[1] == 4 for d in dets)


def test_runtimes_give_the_same_detections_after_releasing_memory(exports):
    frames = street_scenes(4, seed=5)
    for fmt in ("onnx", "openvino"):
        runner = DetectRunner(load_runtime(get_format(fmt), exports[(fmt, "e2e-portable")].path))
        before = runner.detect(frames)
        runner.release_memory()  # what the benchmark does between pipelines at large batches
        after = runner.detect(frames)
        assert sum(len(d) for d in before) > 0
        for b, a in zip(before, after):
            np.testing.assert_array_equal(a.classes, b.classes)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


# --- TensorRT flavour ----------------------------------------------------------------------------------------

def test_tensorrt_flavour_writes_an_efficientnms_plugin_node(yolo_pt, tmp_path):
    import onnx

    from modelport.detect.graph import tensorrt_node

    (result,) = export_detector(yolo_pt, "onnx", nms=NmsConfig(flavor="tensorrt", topk=100, conf=0.3, iou=0.6),
                                imgsz=IMGSZ, out=tmp_path)
    assert result.ok and result.path.name == "yolo11n.trtnms.onnx" and "TensorRT" in result.note
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model)
    node = tensorrt_node(model)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == "TRT" and attrs["plugin_version"] == b"1"
    assert attrs["max_output_boxes"] == 100 and attrs["box_coding"] == 1 and attrs["background_class"] == -1
    assert attrs["score_threshold"] == pytest.approx(0.3) and attrs["iou_threshold"] == pytest.approx(0.6)
    assert [o.name for o in model.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    # The plugin's inputs have the shapes its definition requires: boxes [B, A, 4], scores [B, A, C].
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in inferred.graph.value_info}
    assert shapes[node.input[0]][1:] == [2100, 4] and shapes[node.input[1]][1:] == [2100, 80]


def test_tensorrt_engine_with_nms_matches_ultralytics(yolo_pt, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA device")
    (result,) = export_detector(yolo_pt, "tensorrt", nms=NmsConfig(flavor="tensorrt", conf=CONF), imgsz=IMGSZ,
                                out=tmp_path, device="cuda")
    assert result.ok, result.error
    assert result.check.detections > 0


# --- several models in one run -----------------------------------------------------------------------------

def test_model_list_exports_each_model_with_its_own_labels(yolo_pt, tmp_path):
    custom = save_untrained(tmp_path / "best.pt", "yolo11n", seed=1, labels=("plate", "car", "truck"), imgsz=IMGSZ,
                            calib_images=4)
    listing = tmp_path / "models.yaml"
    listing.write_text(f"models:\n  - pt_file: {yolo_pt}\n    name: coco_n\n    max_batch: 4\n"
                       "  - pt_file: best.pt\n    name: plates\n    topk: 50\n    names: [licence_plate, car, truck]\n")
    sources = read_model_list(listing)
    assert [(s.name, s.max_batch, s.topk) for s in sources] == [("coco_n", 4, 300), ("plates", 16, 50)]
    results = export_models(sources, "onnx", out=tmp_path / "out", imgsz=IMGSZ, nms=NmsConfig(conf=CONF, topk=None))
    assert all(r.ok for r in results), [r.error for r in results]
    plates = tmp_path / "out" / "plates"
    assert (plates / "labels.txt").read_text() == "licence_plate\ncar\ntruck\n"
    assert (tmp_path / "out" / "coco_n" / "labels.txt").read_text().startswith("person\n")
    spec = get_format("onnx").read_spec(plates / "plates.nms.onnx")
    assert spec.labels == ("licence_plate", "car", "truck") and spec.outputs[1].shape == ("batch", 50, 4)
    assert spec.extra["max_batch"] == 16 and custom.is_file()


def test_labels_txt_of_other_classes_is_never_overwritten(yolo_pt, tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    with pytest.raises(ExportError, match="labels.txt"):
        export_detector(yolo_pt, "onnx", imgsz=IMGSZ, out=tmp_path, verify=False)
    assert (tmp_path / "labels.txt").read_text() == "cat\ndog\n"
    assert not (tmp_path / "yolo11n.onnx").exists()


# --- modelport.load on detectors ----------------------------------------------------------------------------

def test_modelport_load_gives_detector_runners_for_checkpoints_and_artifacts(exports, yolo_pt):
    import modelport

    runner = modelport.load(yolo_pt, verbose=False)
    assert isinstance(runner, DetectRunner) and (runner.format, runner.track) == ("onnx", "e2e-portable")
    frames = street_scenes(2, seed=3)
    expected = runner.detect(frames)
    assert sum(len(d) for d in expected) > 0
    forced = modelport.load(yolo_pt, format="openvino", verbose=False)
    assert (forced.format, forced.track) == ("openvino", "e2e-portable")
    for key in (("onnx", "raw"), ("openvino", "raw")):
        direct = modelport.load(exports[key].path)
        assert isinstance(direct, DetectRunner) and isinstance(direct, Runner)  # modelport.load gives a Runner
        assert (direct.format, direct.track) == (key[0], "raw")
        direct.nms = NmsSettings(conf=CONF)  # the end-to-end graph's threshold
        for ours, theirs in zip(direct.detect(frames), expected):
            assert len(ours) == len(theirs)
            np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=0.5)


def test_modelport_load_skips_unusable_detector_exports_then_falls_back_to_pytorch(exports, yolo_pt, tmp_path,
                                                                                  monkeypatch):
    import shutil

    import modelport

    monkeypatch.chdir(tmp_path)  # nothing in the working directory either
    pt = Path(shutil.copy(yolo_pt, tmp_path / "yolo11n.pt"))
    (tmp_path / "yolo11n.nms.onnx").write_bytes(b"not an onnx file")
    shutil.copy(exports[("onnx", "raw")].path, tmp_path / "yolo11n.onnx")
    runner = modelport.load(pt, verbose=False)
    assert (runner.format, runner.track, runner.path) == ("onnx", "raw", tmp_path / "yolo11n.onnx")
    (tmp_path / "yolo11n.onnx").unlink()
    fallback = modelport.load(pt, verbose=False)
    assert isinstance(fallback, DetectRunner) and fallback.format == "pytorch" and fallback.track == "raw"
    assert fallback.spec.source.kind == "random"  # the test checkpoint is labelled untrained


def test_missing_zoo_weights_load_only_with_allow_random(tmp_path, monkeypatch):
    import modelport
    from modelport.zoo import RandomWeightsWarning

    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError) as info:
        modelport.load(tmp_path / "yolo11n.pt", verbose=False)
    assert "yolo11n.pt" in info.value.message and "--allow-random" in info.value.hint
    with pytest.warns(RandomWeightsWarning, match="seeded RANDOM weights"):
        runner = modelport.load(tmp_path / "yolo11n.pt", allow_random=True, verbose=False)
    assert isinstance(runner, DetectRunner) and runner.format == "pytorch"
    assert runner.spec.source.kind == "random" and len(runner.spec.labels) == 80
    assert not list(tmp_path.iterdir())  # the stand-in checkpoint was temporary
