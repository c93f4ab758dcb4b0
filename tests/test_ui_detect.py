"""The dashboard's detector benchmark away from the browser: which pipeline it picks, what it plots, and
which form values it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.ui.detect_actions import fastest_pipeline, validate_detect_bench, write_detect_plot
from modelport.ui.params import ParamError


def _row(runtime: str, batch: int, fps: float | None, status: str = "ok", fmt: str = "onnx") -> dict:
    row = {"runtime": runtime, "format": fmt, "track": "ultralytics" if fmt == "ultralytics" else "raw",
           "batch": batch, "status": status, "reason": "", "path": f"/m/{runtime}", "parity": {}}
    if fps is not None:
        row.update(throughput=fps, x_ultralytics=fps / 10.0)
    return row


def _report(rows: list[dict]) -> dict:
    return {"model": {"name": "yolo11n", "imgsz": 160, "untrained": True}, "machine": {"cpu": "test cpu"},
            "rows": rows}


def test_the_pick_is_the_fastest_matching_pipeline_at_the_largest_batch():
    report = _report([_row("ultralytics-pytorch", 1, 10.0, fmt="ultralytics"), _row("onnx-raw", 1, 30.0),
                      _row("onnx-e2e", 1, 90.0, "parity-failed"),
                      _row("ultralytics-pytorch", 8, 12.0, fmt="ultralytics"), _row("onnx-raw", 8, 20.0),
                      _row("onnx-e2e", 8, 80.0, "parity-failed"), _row("openvino-raw", 8, None, "unavailable")])
    best = fastest_pipeline(report)
    assert (best["runtime"], best["batch"], best["export"]) == ("onnx-raw", 8, True)
    assert best["parity_failed"] == ["onnx-e2e"] and best["x_ultralytics"] == pytest.approx(2.0)


def test_the_pick_falls_back_to_ultralytics_and_is_none_without_a_measured_match():
    only_reference = _report([_row("ultralytics-pytorch", 1, 10.0, fmt="ultralytics"),
                              _row("onnx-e2e", 1, 90.0, "parity-failed")])
    best = fastest_pipeline(only_reference)
    assert best["runtime"] == "ultralytics-pytorch" and not best["export"]
    assert fastest_pipeline(_report([_row("onnx-e2e", 1, 90.0, "parity-failed")])) is None
    assert fastest_pipeline(_report([_row("openvino-raw", 1, None, "unavailable")])) is None


def test_the_plot_is_written_for_pipelines_measured_at_different_batches(tmp_path):
    report = _report([_row("ultralytics-pytorch", 1, 10.0, fmt="ultralytics"),
                      _row("onnx-e2e", 1, 90.0, "parity-failed"), _row("onnx-raw", 2, 30.0)])
    path = write_detect_plot(report, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


@pytest.mark.parametrize(("params", "message"), [
    ({"tracks": ["onnx-raw"], "imgsz": "100"}, "not a multiple of 32"),
    ({"tracks": ["rm -rf"]}, "not in"),
    ({"tracks": []}, "choose at least one"),
    ({"tracks": ["onnx-raw"], "batches": "1,x"}, "comma-separated"),
    ({"tracks": ["onnx-raw"], "seconds": "nan"}, "outside"),
])
def test_detector_benchmark_form_values_are_checked(params, message):
    with pytest.raises(ParamError, match=message):
        validate_detect_bench(Path("/m/yolo11n.pt"), params)


def test_empty_batch_sizes_leave_the_library_its_default():
    checked = validate_detect_bench(Path("/m/yolo11n.pt"), {"tracks": ["onnx-raw"], "batches": ""})
    assert checked["batches"] is None and checked["seconds"] == 20.0 and checked["imgsz"] == 640


def test_verify_on_a_detector_export_compares_it_with_ultralytics(tmp_path):
    """The page's Verify makes the CLI's call (detect.verify.verify_artifacts) and renders its boxes."""
    import warnings

    pytest.importorskip("ultralytics")
    from modelport.detect.export import export_detector
    from modelport.detect.graph import NmsConfig
    from modelport.detect.untrained import save_untrained
    from modelport.ui.actions import run_verify, validate_verify
    from modelport.ui.render import _verify

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pt = save_untrained(tmp_path / "yolo11n.pt", seed=0, imgsz=320)
    (result,) = export_detector(pt, "onnx", nms=NmsConfig(conf=0.01), imgsz=320)
    assert result.ok, result.error
    params = validate_verify(tmp_path, {"path": result.path.name})
    assert params["detector"] and Path(params["reference"]) == pt
    done = run_verify(params)
    assert done["passed"] and done["boxes"] > 0  # boxes were compared, not zero of them
    assert "Detections vs Ultralytics predict" in _verify(done, tmp_path, None)
