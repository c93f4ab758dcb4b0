"""`modelport bench` and `export` tables read in 80 columns: no cell cut to 'op…', every column with --wide,
and the JSON keeps every field. Rows are the recorded benchmarks under benchmarks/results/ and realistic exports."""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from modelport.cli_table import print_table

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def rendered(table, *, wide: bool = False, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    print_table(console, table, wide=wide)
    return console.export_text()


def assert_fits_80_uncut(text: str) -> None:
    longest = max(text.splitlines(), key=len)
    assert len(longest) <= 80, f"{len(longest)} columns: {longest}"
    assert "…" not in text, text


def header_line(text: str, first: str) -> str:
    """The table's header row (the one with ``first`` in it), not the title."""
    return next(line for line in text.splitlines() if line.startswith("┃") and first in line)


def record(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def reid_record() -> dict:
    """osnet_x1_0's record (its runtimes include the 38-character onnx-baseline one), plus a parity failure."""
    report = record("osnet_x1_0.json")
    failed = copy.deepcopy(next(r for r in report["rows"] if r["runtime"] == "openvino.int8"))
    failed.update(status="parity-failed", reason="min cosine 0.9312 < 0.99; nearest-neighbour agreement 0.62 < 0.9")
    report["rows"].append(failed)
    return report


def test_reid_bench_table_fits_80_columns_without_cutting_a_cell():
    from modelport.cli import BENCH_COLUMNS, bench_notes, bench_table

    report = reid_record()
    text = rendered(bench_table(report))
    assert_fits_80_uncut(text)
    header = header_line(text, "runtime")
    for col in ("runtime", "batch", "status", "p50 ms", "img/s", "x pytorch"):
        assert col in header
    assert "p99 ms" not in text and "load s" not in text  # the default leaves the tail columns to --wide
    for name in ("onnx.int8", "openvino.int8", "torchscript", "tensorrt", "unavailable", "parity-failed", "6.30x"):
        assert name in text  # whole, on one line
    # the reasons are too long for a cell: said in full under the table
    assert "tensorrt unavailable: tensorrt not installed (pip install tensorrt)" in bench_notes(report)
    assert any(line.endswith("nearest-neighbour agreement 0.62 < 0.9") for line in bench_notes(report))

    wide = rendered(bench_table(report, wide=True), wide=True)
    assert "…" not in wide
    assert all(c.header in header_line(wide, "runtime") for c in BENCH_COLUMNS)
    assert "onnx-baseline (opset12, default-session)" in wide  # natural width: every cell on one line


def test_clip_bench_table_fits_80_columns_without_cutting_a_cell():
    from modelport.clip.cli import BENCH_COLUMNS, bench_table

    report = record("clip_mobileclip2_s0.json")["benchmark"]
    text = rendered(bench_table(report))
    assert_fits_80_uncut(text)
    assert all(c in header_line(text, "encoder") for c in ("encoder", "runtime", "batch", "items/s", "x pytorch"))
    assert "torchscript" in text and "unavailable" in text
    wide = rendered(bench_table(report, wide=True), wide=True)
    assert "…" not in wide and all(c.header in header_line(wide, "encoder") for c in BENCH_COLUMNS)


def test_detector_bench_table_fits_80_columns_without_cutting_a_cell():
    from modelport.detect.cli import BENCH_COLUMNS, bench_table

    report = record("yolo11n.json")
    for r in report["rows"]:  # this record predates the shared schema's name for images/s
        r.setdefault("throughput", r.get("fps"))
    text = rendered(bench_table(report))
    assert_fits_80_uncut(text)
    assert all(c in header_line(text, "pipeline") for c in ("pipeline", "batch", "p50 ms", "img/s", "x Ultralytics"))
    assert "ultralytics-pytorch-2t" in text and "openvino-e2e" in text
    wide = rendered(bench_table(report, wide=True), wide=True)
    assert "…" not in wide and all(c.header in header_line(wide, "pipeline") for c in BENCH_COLUMNS)
    assert "in graph" in wide  # e2e tracks: NMS inside the graph


def reid_exports(folder: Path) -> list:
    from modelport.families.base import ExportRow

    stem = "osnet_x1_0_msmt17"
    (folder / f"{stem}.onnx").write_bytes(b"\0" * 8_700_000)
    (folder / f"{stem}_openvino_model").mkdir()
    (folder / f"{stem}_openvino_model" / f"{stem}.bin").write_bytes(b"\0" * 9_000_000)
    (folder / f"{stem}.int8.onnx").write_bytes(b"\0" * 2_800_000)
    return [ExportRow("reid", "osnet_x1_0", "onnx", folder / f"{stem}.onnx", 4.31, True, max_abs=8.3e-6,
                      min_cosine=0.9999999),
            ExportRow("reid", "osnet_x1_0", "openvino", folder / f"{stem}_openvino_model", 6.02, True,
                      max_abs=1.3e-5, min_cosine=0.9999998),
            ExportRow("reid", "osnet_x1_0", "onnx", folder / f"{stem}.int8.onnx", 31.5, True, max_abs=0.48,
                      min_cosine=0.99878, note="INT8: 12 of 87 quantised nodes kept in fp32 to hold cosine 0.998"),
            ExportRow("reid", "osnet_x1_0", "tensorrt", None, 0.01, False,
                      error="tensorrt not installed (pip install 'modelport[tensorrt]'); needs an NVIDIA GPU "
                            "(--device cuda)")]


def test_export_table_fits_80_columns_and_keeps_file_names_whole(tmp_path):
    from modelport.cli_export import EXPORT_COLUMNS, export_notes, export_table

    rows = reid_exports(tmp_path)
    text = rendered(export_table(rows))
    assert_fits_80_uncut(text)
    assert all(c in header_line(text, "format") for c in ("format", "status", "max abs", "MB", "file"))
    for name in ("osnet_x1_0_msmt17.onnx", "osnet_x1_0_msmt17_openvino_model", "osnet_x1_0_msmt17.int8.onnx",
                 "8.30e-06", "failed"):
        assert name in text
    assert "9.0" in text and "2.8" in text  # sizes in MB, the OpenVINO folder's summed
    assert str(tmp_path) not in text  # the full path is --wide's
    assert export_notes(rows) == ["onnx: INT8: 12 of 87 quantised nodes kept in fp32 to hold cosine 0.998",
                                  "tensorrt: " + rows[3].error]
    wide = rendered(export_table(rows, wide=True), wide=True)
    assert "…" not in wide and all(c.header in header_line(wide, "format") for c in EXPORT_COLUMNS
                                   if c.shown != "narrow")
    assert str(tmp_path / "osnet_x1_0_msmt17_openvino_model") in wide and "1.000000" in wide


def test_export_json_keeps_every_field(tmp_path, capsys):
    from modelport.cli_export import render

    rows = reid_exports(tmp_path)
    render(rows, True)  # as before --wide existed: the JSON does not depend on it
    printed = json.loads(capsys.readouterr().out)
    assert printed == [{**r.to_dict(), "format": r.format} for r in rows]
    assert set(printed[2]) == {"family", "model", "format", "part", "path", "ok", "seconds", "error", "note",
                               "checked", "found", "max_abs", "min_cosine"}


def detector_exports(folder: Path, models=("yolo11n",)) -> list:
    check = SimpleNamespace(detections=187, ties=2, min_iou=0.99731, max_score_diff=3.1e-4, warnings=[])
    results = []
    for model in models:
        for fmt, name in (("onnx", f"{model}.nms.onnx"), ("openvino", f"{model}_nms_openvino_model"),
                          ("torchscript", f"{model}.nms.torchscript")):
            results.append(SimpleNamespace(model=model, format=fmt, track="e2e-portable", path=folder / name,
                                           seconds=12.4, check=check, error=None, note="", ok=True))
        results.append(SimpleNamespace(model=model, format="tensorrt", track="e2e-portable", path=None, seconds=0.0,
                                       check=None, error="tensorrt not installed (pip install 'modelport[tensorrt]')",
                                       note="", ok=False))
    return results


@pytest.mark.parametrize("models", [("yolo11n",), ("yolo11n", "yolo11s-people")])
def test_detector_export_table_fits_80_columns(tmp_path, models):
    from modelport.detect.cli import export_table

    results = detector_exports(tmp_path, models)
    text = rendered(export_table(results))
    assert_fits_80_uncut(text)
    assert "e2e-portable track" in text  # one track per command: said once, in the title
    assert "187 (2 ties)" in text and "torchscript" in text
    if len(models) == 1:
        assert "yolo11n_nms_openvino_model" in text and "0.9973" in text
    else:  # the model column in place of the file (named after its model) and min IoU
        assert "yolo11s-people" in text and "_nms_" not in text
    wide = rendered(export_table(results, wide=True), wide=True)
    assert "…" not in wide
    assert all(c in header_line(wide, "format") for c in ("model", "track", "max score diff", "path"))


def test_clip_export_table_fits_80_columns(tmp_path):
    from modelport.clip.cli import EXPORT_COLUMNS, export_table

    rows = [{"encoder": which, "format": fmt, "path": str(tmp_path / f"MobileCLIP2-S0_{which}{suffix}"), "ok": True,
             "seconds": 21.3, "error": None, "max_abs": 2.4e-5, "min_cosine": 0.999999}
            for which in ("image", "text") for fmt, suffix in (("onnx", ".onnx"), ("openvino", "_openvino_model"),
                                                               ("torchscript", ".torchscript"))]
    text = rendered(export_table(rows, title="MobileCLIP2-S0 exports (mean [0.0, 0.0, 0.0], std [1.0, 1.0, 1.0] "
                                 "folded into the image encoder)"))
    assert_fits_80_uncut(text)
    assert "MobileCLIP2-S0_image_openvino_model" in text and "MobileCLIP2-S0_text.torchscript" in text
    wide = rendered(export_table(rows, wide=True), wide=True)
    assert "…" not in wide and all(c.header in header_line(wide, "encoder") for c in EXPORT_COLUMNS
                                   if c.shown != "narrow")


def test_export_command_prints_a_table_that_fits_80_columns(tmp_path):
    """End to end: `modelport export` of an untrained osnet_x0_25 in an 80-column terminal."""
    done = subprocess.run([sys.executable, "-m", "modelport.cli", "export", "osnet_x0_25", "--allow-random",
                           "--format", "onnx", "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert_fits_80_uncut(done.stdout)
    assert "osnet_x0_25_untrained.onnx" in done.stdout


def test_bench_and_export_take_wide():
    for command in ("bench", "export"):
        done = subprocess.run([sys.executable, "-m", "modelport.cli", command, "--help"], capture_output=True,
                              text=True, env={**os.environ, "COLUMNS": "120"})
        assert "--wide" in done.stdout, done.stdout + done.stderr


def remote_record(url: str) -> dict:
    """What ``bench_endpoint`` records for osnet_x1_0 served by two Triton replicas, timed from a 16-core client."""
    import numpy as np

    from modelport.bench_record import row

    rng = np.random.default_rng(0)
    rows = [row("remote", "remote", b, path=url, load_s=0.412, settings={"protocol": "http", "max_batch_size": 32},
                latencies=list(ms / 1000 * rng.uniform(0.9, 1.6, size=calls)))
            for b, ms, calls in ((1, 3.8, 790), (16, 27.4, 110), (64, 118.9, 25))]
    return {"model": {"name": "osnet_x1_0_msmt17"}, "machine": {"cpu": "AMD EPYC 7R13 Processor", "physical_cores": 16},
            "rows": rows}


def test_remote_bench_table_fits_80_columns_without_cutting_a_cell():
    from modelport.triton.cli import REMOTE_BENCH_COLUMNS, remote_bench_table

    url = "http://triton-a.internal:8000/osnet_x1_0_msmt17,http://triton-b.internal:8000/osnet_x1_0_msmt17"
    report = remote_record(url)
    text = rendered(remote_bench_table(report, url))
    assert_fits_80_uncut(text)
    assert all(c in header_line(text, "batch") for c in ("batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "calls"))
    assert "mean ms" not in text and "connect s" not in text  # left to --wide
    assert all(f" {r['latency_ms']['n']} " in text for r in report["rows"])  # every count whole

    wide = rendered(remote_bench_table(report, url, wide=True), wide=True)
    assert "…" not in wide and all(c.header in header_line(wide, "batch") for c in REMOTE_BENCH_COLUMNS)
    assert "0.41" in wide  # the time to connect
