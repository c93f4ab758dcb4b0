"""The factory family: any PyTorch model from the user's own module:function and an export YAML, with two
inputs, through the one export pipeline (stage, verify on seeded inputs of the declared shapes, move)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelport.errors import ConfigError, UnsafeCheckpointError, WeightsMismatchError
from modelport.families import ExportRequest, family_for
from modelport.formats import format_of_path

TESTS = Path(__file__).parent
CONFIG = """
factory: factory_pkg.models:build
args: {{channels: 8, embed_dim: 16}}
weights: best.pth
name: tiny_swap
inputs:
  - {{name: target, shape: [1, 3, 48, 80], dtype: float32, range: [0, 1]}}
  - {{name: source, shape: [1, 16], dtype: float32, range: [-1, 1]}}
outputs: [swapped]
dynamic_axes:
  target: {{0: batch, 2: height, 3: width}}
  source: {{0: batch}}
  swapped: {{0: batch, 2: height, 3: width}}
opset: {opset}
"""


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # the user's package, importable as from their project folder


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    from factory_pkg.models import build

    torch.save({"state_dict": build(channels=8, embed_dim=16).state_dict(), "epoch": 3}, tmp_path / "best.pth")
    (tmp_path / "export.yaml").write_text(CONFIG.format(opset=17))
    return tmp_path


def _export(project: Path, **kw) -> list:
    request = ExportRequest(config=project / "export.yaml", **kw)
    family = family_for(None, request)
    assert family.name == "factory"
    return family.export(None, request)


def test_two_input_model_exports_to_every_format_here_and_each_is_verified(project):
    rows = _export(project)
    formats = {r.format for r in rows}
    assert {"onnx", "openvino", "torchscript"} <= formats
    for row in rows:
        assert row.ok, row.error
        assert row.path is not None and row.path.exists() and row.path.parent == project
        assert row.min_cosine is not None and row.min_cosine > 0.9999  # compared, not skipped
    onnx = next(r.path for r in rows if r.format == "onnx")
    spec = format_of_path(onnx).read_spec(onnx)
    assert [t.name for t in spec.inputs] == ["target", "source"]
    assert spec.inputs[0].shape == ("batch", 3, "height", "width") and spec.task == "tensors"
    assert spec.source.kind == "weights" and spec.extra["factory"]["trusted_code"] is True


def test_exports_run_at_other_batch_and_image_sizes_than_traced(project):
    from factory_pkg.models import build

    rows = _export(project, formats=("onnx", "openvino"))
    module = build(channels=8, embed_dim=16).eval()
    module.load_state_dict(torch.load(project / "best.pth", weights_only=True)["state_dict"])
    rng = np.random.default_rng(5)
    feeds = {"target": rng.random((3, 3, 64, 112), dtype=np.float32),
             "source": rng.uniform(-1, 1, (3, 16)).astype(np.float32)}
    with torch.no_grad():
        want = module(torch.from_numpy(feeds["target"]), torch.from_numpy(feeds["source"])).numpy()
    for row in rows:
        runner = format_of_path(row.path).load(row.path)
        got = runner(feeds)["swapped"]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
        other = runner({**feeds, "source": -feeds["source"]})["swapped"]
        assert np.abs(other - got).max() > 1e-2  # the second input matters: the check compares something


def test_a_runner_of_a_two_input_model_names_what_it_needs(project):
    (row,) = _export(project, formats=("onnx",))
    runner = format_of_path(row.path).load(row.path)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        runner(np.zeros((1, 3, 48, 80), np.float32))
    with pytest.raises(ValueError, match="expected inputs"):
        runner({"target": np.zeros((1, 3, 48, 80), np.float32)})
    with pytest.raises(ValueError, match="differ in batch size"):
        runner({"target": np.zeros((2, 3, 48, 80), np.float32), "source": np.zeros((1, 16), np.float32)})


def test_older_opset_is_accepted_where_the_operators_allow(project):
    (project / "export.yaml").write_text(CONFIG.format(opset=11))
    (row,) = _export(project, formats=("onnx",))
    import onnx

    model = onnx.load(str(row.path))
    assert row.ok and next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 11


def test_a_wrong_export_fails_verification_and_leaves_nothing(project, monkeypatch):
    import modelport.formats.onnx as onnx_format

    real = onnx_format.write_onnx

    def broken(module, spec, dest, **kw):  # the artifact computes something else than the module
        class Off(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = module

            def forward(self, a, b):
                return self.inner(a, b * 0.5)

        return real(Off(), spec, dest, **kw)

    monkeypatch.setattr(onnx_format, "write_onnx", broken)
    (row,) = _export(project, formats=("onnx",))
    assert not row.ok and "verification failed" in row.error
    assert not list(project.glob("*.onnx"))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("factory_pkg.models:build", "factory_pkg.models:not_a_module"), "not a torch.nn.Module"),
    (lambda t: t.replace("factory_pkg.models:build", "factory_pkg.nowhere:build"), "cannot import"),
    (lambda t: t.replace("factory_pkg.models:build", "os.system('x')"), "is not module.path:function"),
    (lambda t: t.replace("outputs: [swapped]", "outputs: [swapped, extra]"), "outputs: declares 2"),
    (lambda t: t.replace("opset: 17", "opset: 99"), "opset"),
    (lambda t: t + "colour: red\n", "colour: unknown field"),
    (lambda t: t.replace("shape: [1, 16]", "shape: [1, -16]"), "inputs[1].shape"),
    (lambda t: t.replace("{channels: 8, embed_dim: 16}", "{channels: 8, embed_dim: 16, wings: 2}"), "args"),
    (lambda t: t.replace("  source: {0: batch}\n", "  nowhere: {0: batch}\n"), "dynamic_axes.nowhere"),
])
def test_bad_configs_name_the_file_and_field(project, edit, message):
    path = project / "export.yaml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as info:
        _export(project)
    assert str(path) in str(info.value) or "--factory" in str(info.value)


def test_weights_that_do_not_fit_the_factory_are_refused_by_name(project):
    (project / "export.yaml").write_text(CONFIG.format(opset=17).replace("channels: 8", "channels: 4"))
    with pytest.raises(WeightsMismatchError, match="factory_pkg.models:build"):
        _export(project)


def test_weights_are_read_without_running_their_pickle(project):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    (project / "best.pth").write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(UnsafeCheckpointError):
        _export(project)


def test_a_huge_config_is_refused_before_parsing(project):
    (project / "export.yaml").write_text("#" * (2 << 20))
    with pytest.raises(ConfigError, match="bytes"):
        _export(project)


def test_options_of_other_families_are_refused(project):
    with pytest.raises(ConfigError, match="--nms"):
        _export(project, nms=True)


def test_a_factory_that_names_no_function_says_so():
    from modelport.families.factory import import_factory

    with pytest.raises(ConfigError, match="no function"):
        import_factory("factory_pkg.models:missing")


def _cli(args: list[str], cwd: Path):
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(TESTS), "MODELPORT_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "modelport.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_cli_export_bench_package_and_verify_a_factory_model(project):
    args = ["--factory", "factory_pkg.models:build", "--weights", "best.pth", "--config", "export.yaml"]
    done = _cli(["export", *args, "--json"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "your own code" in done.stderr  # the CLI says the factory is trusted code
    rows = json.loads(done.stdout)
    assert {r["format"] for r in rows} >= {"onnx", "openvino", "torchscript"} and all(r["ok"] for r in rows)
    bench = _cli(["bench", *args, "--seconds", "0.3", "--batch", "1", "--size", "96x64", "--formats", "onnx"],
                 project)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    record = json.loads((project / "benchmark.json").read_text())
    assert record["model"]["task"] == "tensors"
    assert record["model"]["example_shapes"]["target"] == [1, 3, 64, 96]  # timed at --size, WxH
    timed = {r["runtime"] for r in record["rows"] if r["throughput"]}
    assert {"pytorch", "onnx"} <= timed
    pack = _cli(["package", "best.onnx", "--out", "swap.tar.gz"], project)
    assert pack.returncode == 0, pack.stdout + pack.stderr
    import tarfile

    with tarfile.open(project / "swap.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"best.onnx", "benchmark.json", "sample_input.npz", "golden/inputs.npz"} <= names
    check = _cli(["verify", "swap.tar.gz"], project)
    assert check.returncode == 0 and "pass" in check.stdout, check.stdout + check.stderr


def test_bench_times_image_to_image_models_at_1280x720_by_default(project):
    from modelport.families.factory import BENCH_SIZE, bench_spec, build_factory
    from modelport.families.factory_config import read_config

    built = build_factory(read_config(project / "export.yaml"))
    assert BENCH_SIZE == (720, 1280)
    assert bench_spec(built.spec).extra["example"]["target"]["shape"] == [1, 3, 720, 1280]
    assert bench_spec(built.spec).extra["example"]["source"]["shape"] == [1, 16]


def test_export_help_lists_every_family_options_in_panels():
    from typer.testing import CliRunner

    from modelport.cli import app

    text = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--nms", "--conf", "--topk", "--images", "--imgsz", "--weights", "--factory", "--config",
                 "--trt-builder", "--half", "--int8", "--uint8-input"):
        assert flag in text, flag
    for panel in ("Detectors (Ultralytics YOLO11)", "ReID embedders", "your own models (factory)"):
        assert panel in text


def test_python_api_exports_any_family_and_refuses_foreign_options(project, tmp_path):
    import modelport
    from modelport.zoo.calibrate import make_untrained_checkpoint

    paths = modelport.export(factory="factory_pkg.models:build", config=project / "export.yaml", formats="onnx")
    assert [p.name for p in paths] == ["best.onnx"]
    weights = make_untrained_checkpoint(tmp_path, "osnet_x0_25")
    (reid_onnx,) = modelport.export(weights, "onnx", out=tmp_path / "reid")
    assert reid_onnx.suffix == ".onnx" and modelport.load(reid_onnx).spec.task == "embed"
    with pytest.raises(ConfigError, match="--nms"):
        modelport.export(weights, "onnx", nms=True)
    # fp16 and INT8 are variants of every family's export (INT8: tests/test_int8_factory.py).
    (half,) = modelport.export(factory="factory_pkg.models:build", config=project / "export.yaml", formats="onnx",
                               precision="fp16")
    assert half.name == "best.fp16.onnx" and modelport.load(half).spec.precision == "fp16"
    from modelport.int8 import Int8Settings

    with pytest.raises(ConfigError, match="INT8 settings are only used with precision int8"):
        modelport.export(factory="factory_pkg.models:build", config=project / "export.yaml",
                         int8=Int8Settings(method="entropy"))


def test_python_api_exports_a_detector(tmp_path):
    pytest.importorskip("ultralytics")
    import warnings

    import modelport
    from modelport.detect.untrained import save_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pt = save_untrained(tmp_path / "yolo11n.pt", seed=0, imgsz=320)
    (path,) = modelport.export(pt, "onnx", nms=True, imgsz=320, conf=0.01)
    assert path.name == "yolo11n.nms.onnx"
    runner = modelport.load(path)
    assert hasattr(runner, "detect")


def test_python_verify_compares_a_factory_models_exports(project):
    import modelport

    paths = modelport.export(factory="factory_pkg.models:build", config=project / "export.yaml",
                             formats="onnx,openvino")
    onnx, openvino = sorted(paths, key=lambda p: p.suffix != ".onnx")
    report = modelport.verify([openvino], onnx, count=3)  # both inputs seeded as declared
    assert report.passed and report.results[0].outputs[0].min_cosine > 0.9999
    torch.save({"state_dict": _perturbed(project / "best.pth")}, project / "best.pth")
    (changed,) = modelport.export(factory="factory_pkg.models:build", config=project / "export.yaml",
                                  formats="onnx", out=project / "changed")
    assert not modelport.verify([changed], onnx, count=3).passed  # other weights: the comparison does compare


def _perturbed(path: Path) -> dict:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


def test_python_benchmark_takes_any_family_and_refuses_foreign_options(project, monkeypatch):
    import modelport

    monkeypatch.setenv("MODELPORT_CACHE", str(project / "cache"))
    report = modelport.benchmark(factory="factory_pkg.models:build", config=project / "export.yaml",
                                 formats=["onnx"], batches=[1], seconds=0.2, rounds=1, size=(96, 64))
    assert report["model"]["task"] == "tensors" and report["model"]["example_shapes"]["target"] == [1, 3, 64, 96]
    rows = {r["runtime"]: r for r in report["rows"]}
    assert rows["onnx"]["status"] == "ok" and rows["onnx"]["parity"]["min_cosine"] > 0.9999
    with pytest.raises(ConfigError, match="--imgsz"):
        modelport.benchmark(factory="factory_pkg.models:build", config=project / "export.yaml", imgsz=320)
    with pytest.raises(ConfigError, match="--size"):
        modelport.benchmark("osnet_x0_25", allow_random=True, size=(96, 64))


def test_a_format_the_yaml_lists_but_this_machine_cannot_build_is_reported_and_the_rest_exported(project):
    from modelport.formats import get_format

    if get_format("tensorrt").unavailable_reason("cpu") is None:
        pytest.skip("TensorRT is usable here")
    (project / "export.yaml").write_text(CONFIG.format(opset=17) + "formats: [onnx, tensorrt]\n")
    rows = {r.format: r for r in _export(project)}
    assert rows["onnx"].ok and rows["onnx"].path.exists()
    assert rows["tensorrt"].ok and rows["tensorrt"].path is None and "unavailable here" in rows["tensorrt"].note
    with pytest.raises(Exception, match="TensorRT is unavailable"):  # asked for on the command line: an error
        _export(project, formats=("tensorrt",))


def test_bench_refuses_to_replace_another_models_benchmark_json(project):
    other = {"model": {"name": "someone_else", "source": {"sha256": "ab" * 32}}, "rows": []}
    (project / "benchmark.json").write_text(json.dumps(other))
    args = ["--factory", "factory_pkg.models:build", "--weights", "best.pth", "--config", "export.yaml"]
    done = _cli(["bench", *args, "--seconds", "0.1", "--batch", "1", "--size", "48x32", "--formats", "onnx"], project)
    assert done.returncode != 0 and "someone_else" in done.stderr and "--json" in done.stderr, done.stderr
    assert json.loads((project / "benchmark.json").read_text()) == other  # untouched
    assert not (project / "cache" / "benchmarks").exists()  # refused before the run


def _rows_per_call(monkeypatch) -> list[int]:
    """The batch sizes every runner (the PyTorch reference included) is called with, in order."""
    from modelport.formats.base import Runner

    calls: list[int] = []
    original = Runner._call_many

    def counted(self, feeds, single=False):
        size = self.max_batch or self.chunk
        n = len(next(iter(feeds.values())))
        calls.extend([size] * (n // size) + ([n % size] if n % size else []))
        return original(self, feeds, single)

    monkeypatch.setattr(Runner, "_call_many", counted)
    return calls


def test_verification_runs_in_calls_that_fit_the_memory_bound_at_a_batch_other_than_traced(project, monkeypatch):
    import modelport.bench_memory as memory

    # A fake bound: at 48x80 the model needs ~0.4 MB a row, so 0.5 MB per call allows one row (raised to two).
    monkeypatch.setattr(memory, "CALL_BYTES", 1 << 19)
    calls = _rows_per_call(monkeypatch)
    rows = _export(project, formats=("onnx",))
    assert rows[0].ok, rows[0].error
    assert calls and max(calls) == 2  # was one call of all 5 rows per runtime
    assert sum(calls) == 2 * 5  # every row checked, by the reference and the artifact
    assert rows[0].min_cosine is not None and rows[0].min_cosine > 0.9999


def test_verification_of_a_small_input_keeps_its_rows_in_one_call(project, monkeypatch):
    calls = _rows_per_call(monkeypatch)
    rows = _export(project, formats=("onnx",))
    assert rows[0].ok and calls == [5, 5]


def test_package_runs_only_the_golden_rows_it_keeps(project, monkeypatch, tmp_path):
    import modelport.golden as golden
    from modelport.golden import verify_package
    from modelport.package import package

    onnx_path = _export(project, formats=("onnx",))[0].path
    # A fake size bound: two 48x80 rows (inputs and output, ~0.1 MB each) are kept, as two 720p rows would be.
    monkeypatch.setattr(golden, "GOLDEN_MAX_BYTES", 200_000)
    calls = _rows_per_call(monkeypatch)
    out = package(onnx_path, tmp_path / "tiny_swap.tar.gz", seconds=0.05)
    assert max(calls) == 2  # was one call of all 8 golden rows, 6 of them dropped afterwards
    assert verify_package(out).passed
