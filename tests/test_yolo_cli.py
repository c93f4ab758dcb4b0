"""The CLI for detectors: the shared commands dispatch by family, export with --nms, verify's exit code, bench."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ultralytics")

from modelport.cli import app  # noqa: E402
from modelport.detect.untrained import save_untrained  # noqa: E402

IMGSZ = 320


@pytest.fixture(scope="module")
def pts(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("yolo_cli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = save_untrained(folder / "yolo11n.pt", seed=0, imgsz=IMGSZ)
        other = save_untrained(folder / "other" / "yolo11n.pt", seed=5, imgsz=IMGSZ, calib_images=4)
    return first, other


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_one_export_command_claims_detectors_by_family_and_leaves_reid_alone(pts, tmp_path):
    from modelport.families import ExportRequest, family_for

    def claimed(source: str) -> str:
        return family_for(source, ExportRequest()).name

    assert claimed(str(pts[0])) == "yolo"
    assert claimed("missing/yolo11x.pt") == "yolo"  # so the error says where to put the file
    assert claimed("yolo11n") == "yolo"
    assert claimed("osnet_x0_25_msmt17.pt") == "reid"
    assert claimed("MobileCLIP-S0") == "clip"
    assert claimed("models.yaml") == "yolo"  # a model list: several detectors in one run


def test_export_with_nms_then_verify_passes_and_other_weights_fail(pts, tmp_path):
    first, other = pts
    result = invoke(["export", str(first), "--format", "onnx", "--nms", "--imgsz", str(IMGSZ), "--conf", "0.01",
                     "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["ok"] and rows[0]["check"]["detections"] > 0
    artifact = tmp_path / "yolo11n.nms.onnx"
    assert artifact.is_file() and (tmp_path / "labels.txt").is_file()
    ok = invoke(["verify", str(first), str(artifact), "--count", "3"])
    assert ok.exit_code == 0, ok.output
    assert "vs Ultralytics predict" in ok.output
    bad = invoke(["verify", str(other), str(artifact), "--count", "3"])
    assert bad.exit_code == 1


def test_missing_weights_exit_with_a_message(tmp_path, monkeypatch):
    from modelport.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="yolo11s.pt"):
        invoke(["export", str(tmp_path / "yolo11s.pt")])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError) as info:  # a bare zoo name stands for yolo11n.pt here
        invoke(["export", "yolo11n", "--format", "onnx"])
    assert "yolo11n.pt" in info.value.message
    assert str(tmp_path / "yolo11n.pt") in info.value.hint and "--allow-random" in info.value.hint
    assert not list(tmp_path.iterdir())


def test_export_zoo_name_with_allow_random_builds_seeded_random_weights(tmp_path, monkeypatch):
    from modelport.formats import get_format
    from modelport.zoo import RandomWeightsWarning

    monkeypatch.chdir(tmp_path)
    args = ["export", "yolo11n", "--allow-random", "--format", "onnx", "--nms", "--imgsz", str(IMGSZ),
            "--conf", "0.01", "--json"]
    with pytest.warns(RandomWeightsWarning, match="yolo11n.yaml with seeded RANDOM weights"):
        result = invoke(args)
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)[0]
    assert row["ok"] and row["check"]["detections"] > 0  # verified against Ultralytics on the stand-in
    spec = get_format("onnx").read_spec(tmp_path / "yolo11n.nms.onnx")
    assert spec.source.kind == "random" and len(spec.labels) == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "yolo11n.nms.onnx"]  # no .pt left behind
    loaded = invoke(["load", "yolo11n.pt"])  # the weights are still missing: the export is found by name
    assert loaded.exit_code == 0 and "track=e2e-portable" in loaded.output
    with pytest.warns(RandomWeightsWarning):
        assert invoke([*args, "--out", str(tmp_path / "again")]).exit_code == 0

    def weights(path: Path) -> dict:
        import onnx
        from onnx import numpy_helper

        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    # Seeded: the same weights again (BatchNorm statistics up to float summation order).
    first, again = weights(tmp_path / "yolo11n.nms.onnx"), weights(tmp_path / "again" / "yolo11n.nms.onnx")
    assert first.keys() == again.keys()
    for name, value in first.items():
        np.testing.assert_allclose(again[name], value, rtol=1e-2, atol=1e-3, err_msg=name)


def test_bench_splits_latency_and_reports_fps(pts, tmp_path):
    from modelport.detect.bench import markdown_table, run_detect_benchmark

    report = run_detect_benchmark(pts[0], batches=[1, 2], imgsz=IMGSZ, conf=0.01, seconds=1.0, rounds=1,
                                  tracks=["onnx-e2e", "onnx-raw"], export_dir=tmp_path)
    rows = {(r["runtime"], r["batch"]): r for r in report["rows"]}
    shipped = report["settings"]["torch_threads_ultralytics_default"]
    assert rows[("ultralytics-pytorch", 1)]["torch_threads"] == shipped  # Ultralytics' own choice, untouched
    pipelines = ["ultralytics-pytorch", "onnx-e2e", "onnx-raw"]
    if shipped != report["settings"]["threads"]:  # and once more on every core
        pipelines.append(f"ultralytics-pytorch-{report['settings']['threads']}t")
    assert set(rows) == {(p, b) for p in pipelines for b in (1, 2)}
    for row in rows.values():
        assert row["status"] == "ok", row["reason"]
        assert row["throughput"] > 0 and row["latency_ms"]["n"] >= 1
        assert set(row["split_ms"]) == {"preprocess", "inference", "nms", "postprocess"}
    assert rows[("onnx-raw", 1)]["split_ms"]["nms"] > 0 and rows[("onnx-e2e", 2)]["parity"]["passed"]
    best = max(r["x_ultralytics"] for r in rows.values() if r["format"] == "ultralytics" and r["batch"] == 1)
    assert best == pytest.approx(1.0)  # ratios are against the faster Ultralytics configuration
    assert "in graph" in markdown_table(report)
    from io import StringIO

    from rich.console import Console

    from modelport.detect.cli import bench_table

    console = Console(width=80, file=StringIO(), record=True)
    console.print(bench_table(report))  # the CLI's table of this live record fits 80 columns, no cell cut
    text = console.export_text()
    assert "…" not in text and "onnx-e2e" in text
    assert (report["schema"], report["family"], report["model"]["task"]) == (2, "yolo", "detect")
    assert report["model"]["untrained"] and report["model"]["source"]["sha256"]


def test_bench_never_replaces_another_models_record(pts, tmp_path):
    from modelport.errors import ExportError

    weights = tmp_path / "yolo11n.pt"  # a copy: the exports bench makes beside it stay out of the shared folder
    weights.write_bytes(pts[0].read_bytes())
    record = tmp_path / "benchmark.json"
    record.write_text(json.dumps({"model": {"name": "osnet_x0_25", "source": {"sha256": "0" * 64}}, "rows": []}))
    before = record.read_text()
    with pytest.raises(ExportError, match="already exists and holds the benchmark record of 'osnet_x0_25'"):
        invoke(["bench", str(weights), "--tracks", "onnx-raw", "--batch", "1", "--seconds", "0.2",
                "--imgsz", str(IMGSZ), "--json", str(record)])
    assert record.read_text() == before  # untouched; a re-run of the same model replaces its own record
    invoke(["bench", str(weights), "--tracks", "onnx-raw", "--batch", "1", "--seconds", "0.2",
            "--imgsz", str(IMGSZ), "--json", str(tmp_path / "mine.json")])
    invoke(["bench", str(weights), "--tracks", "onnx-raw", "--batch", "1", "--seconds", "0.2",
            "--imgsz", str(IMGSZ), "--json", str(tmp_path / "mine.json")])
    assert json.loads((tmp_path / "mine.json").read_text())["model"]["name"] == "yolo11n"
