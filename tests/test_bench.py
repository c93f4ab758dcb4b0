"""bench: the record's contents, statuses, the fastest-runtime choice it drives, plots and packages."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from conftest import save_plain

import modelport
from modelport.bench import fastest, record_path, run_benchmark, write_plot
from modelport.errors import ExportError
from modelport.package import package
from modelport.preprocess import prepare
from modelport.spec import sha256_file
from modelport.timing import percentiles


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def weights(tmp_path, osnet_model):
    folder = tmp_path / "w"
    folder.mkdir()
    return save_plain(osnet_model, folder / "osnet_x0_25_msmt17.pt", 512)


def _bench(weights, **kw):
    kw = {"formats": ["onnx", "torchscript", "tensorrt"], "batches": (1, 3), "seconds": 0.3, "rounds": 2, **kw}
    return run_benchmark(weights, **kw)


def test_percentiles():
    stats = percentiles([0.001 * i for i in range(1, 101)])
    assert stats["p50"] == pytest.approx(50.5) and stats["p99"] == pytest.approx(99.01) and stats["n"] == 100


def test_record_has_machine_settings_and_a_row_per_runtime_and_batch(cache, weights):
    report = _bench(weights, baseline=True)
    assert report["schema"] == 2 and report["family"] == "reid" and report["machine"]["physical_cores"] >= 1
    assert report["machine"]["libraries"]["onnxruntime"] and report["peak_gflops"] > 0
    assert report["model"]["gflop_per_image"] == pytest.approx(0.165, rel=0.05)
    # provenance: the recipe comes from the spec's source (a weights file not labelled random, named by sha256)
    assert report["recipe"]["kind"] == "trained" and sha256_file(weights) in report["recipe"]["origin"]
    assert len(report["commit"]) == 40 and isinstance(report["dirty"], bool) and "vnni" in report["cpu"]
    runtimes = {r["runtime"] for r in report["rows"]}
    assert {"pytorch", "onnx", "torchscript", "tensorrt"} <= runtimes
    assert len(report["rows"]) == len(runtimes) * 2
    by = {(r["runtime"], r["batch"]): r for r in report["rows"]}
    onnx = by[("onnx", 3)]
    assert onnx["status"] == "ok" and onnx["throughput"] > 0 and onnx["latency_ms"]["p50"] > 0
    assert onnx["latency_ms"]["p50"] <= onnx["latency_ms"]["p90"] <= onnx["latency_ms"]["p99"]
    assert onnx["parity"]["passed"] and onnx["parity"]["min_cosine"] > 0.9999
    assert onnx["settings"]["intra_op_num_threads"] >= 1 and onnx["size_mb"] > 0 and onnx["load_s"] > 0
    # exports go to the cache, not next to the user's weights
    assert str(cache) in onnx["path"] and not (weights.parent / "osnet_x0_25_msmt17.onnx").exists()
    trt = by[("tensorrt", 1)]
    if trt["status"] == "unavailable":
        assert trt["reason"] and trt["throughput"] is None
    assert any(r.startswith("onnx-baseline") for r in runtimes)
    assert record_path(sha256_file(weights)).exists()


def test_second_run_reuses_the_cached_exports(cache, weights):
    _bench(weights, formats=["onnx"], batches=(1,))
    again = _bench(weights, formats=["onnx"], batches=(1,))
    row = next(r for r in again["rows"] if r["runtime"] == "onnx")
    assert row["export_s"] is None  # reused, not exported again


def test_fresh_siblings_are_measured_in_place(cache, weights):
    modelport.export(weights, "onnx")
    report = _bench(weights, formats=["onnx"], batches=(1,))
    row = next(r for r in report["rows"] if r["runtime"] == "onnx")
    assert row["path"] == str(weights.parent / "osnet_x0_25_msmt17.onnx")


def test_prefer_fastest_uses_this_machines_record(cache, weights, capsys):
    runner = modelport.load(weights, prefer="fastest")
    assert "No benchmark" in capsys.readouterr().err and runner.model_type == "pytorch"
    report = _bench(weights, formats=["onnx", "torchscript"])
    best = fastest(weights)
    ok_rows = [r for r in report["rows"] if r["batch"] == 3 and r["status"] == "ok"
               and not r["runtime"].startswith("onnx-baseline")]
    assert best["throughput"] == max(r["throughput"] for r in ok_rows)
    runner = modelport.load(weights, prefer="fastest")
    assert runner.model_type == best["format"]
    assert "Fastest verified runtime on this machine" in capsys.readouterr().err


def test_records_from_another_machine_are_ignored(cache, weights):
    _bench(weights, formats=["onnx"], batches=(1,))
    path = record_path(sha256_file(weights))
    records = json.loads(path.read_text())
    path.write_text(json.dumps({"someothermachine": next(iter(records.values()))}))
    assert fastest(weights) is None


def test_parity_failures_are_reported_and_never_chosen(cache, weights, monkeypatch):
    from modelport.formats.onnx import OnnxRunner

    real = OnnxRunner._infer
    monkeypatch.setattr(OnnxRunner, "_infer", lambda self, batch: {k: v * 1.5 for k, v in real(self, batch).items()})
    report = _bench(weights, formats=["onnx", "torchscript"], batches=(2,))
    rows = {r["runtime"]: r for r in report["rows"]}
    assert rows["onnx"]["status"] == "parity-failed" and "max abs diff" in rows["onnx"]["reason"]
    assert rows["onnx"]["throughput"] is None and rows["torchscript"]["status"] == "ok"
    assert fastest(weights)["runtime"] in ("pytorch", "torchscript")


def test_plot_is_a_png(cache, weights, tmp_path):
    report = _bench(weights, formats=["onnx"], batches=(1, 2))
    path = write_plot(report, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_package_contains_artifact_benchmark_sample_and_spec(cache, weights, tmp_path):
    _bench(weights, formats=["onnx"], batches=(1,))
    out = package(weights, tmp_path / "pkg.tar.gz")
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert {"model.json", "benchmark.json", "sample.png", "sample_output.npy", "README.md"} <= names
        artifact = next(n for n in names if n.startswith("osnet_x0_25_msmt17."))
        assert json.loads(tar.extractfile("model.json").read())["name"] == "osnet_x0_25"
        readme = tar.extractfile("README.md").read().decode()
        expected = np.load(io.BytesIO(tar.extractfile("sample_output.npy").read()))
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert "img/s" in readme and expected.shape == (1, 512)
    from PIL import Image

    runner = modelport.load(tmp_path / "unpacked" / artifact)
    crop = np.asarray(Image.open(tmp_path / "unpacked" / "sample.png").convert("RGB"))[..., ::-1]
    got = runner(prepare([crop.copy()], runner.spec.preprocess))["embeddings"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ExportError, match="already exists"):
        package(weights, out)


def test_interleave_gives_every_item_its_turns_in_order():
    from modelport.timing import interleave

    calls: list[str] = []
    after: list[str] = []

    def measure(item: str) -> int:
        calls.append(item)
        return len(calls)

    samples = interleave(["a", "b", "c"], measure, seconds=0.0, rounds=3, key=str.upper, after_turn=after.append)
    assert set(samples) == {"A", "B", "C"}
    assert calls == ["a", "b", "c"] * 3  # a zero slot still takes one sample per turn, round by round
    assert after == calls and samples["B"] == [2, 5, 8]
