"""INT8 and fp16 as variants of any family's export (here: the factory family), calibrated on the user's data
through the model's task and judged on a held-out split of it that never calibrates (issue 28, 29)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modelport.errors import CalibrationError, ConfigError
from modelport.families import ExportRequest, family_for
from modelport.formats import get_format
from modelport.preprocess import prepare
from modelport.quantize import HOLDOUT_EVERY, HOLDOUT_RUN, calibration_batch, split_holdout
from modelport.samples import person_crops
from modelport.spec import Preprocess

TESTS = Path(__file__).parent
EMBEDDER = """
factory: factory_pkg.embedder:build
weights: embedder.pth
name: tiny_embedder
task: embed
preprocess: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
inputs:
  - {name: images, shape: [1, 3, 64, 32]}
outputs: [embeddings]
dynamic_axes: {images: [0], embeddings: [0]}
"""
MLP = """
factory: factory_pkg.embedder:build_mlp
weights: mlp.pth
name: tiny_mlp
inputs:
  - {name: x, shape: [1, 24], range: [-1, 1]}
outputs: [y]
dynamic_axes: {x: [0], y: [0]}
"""


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def _photo_crops(folder: Path, count: int) -> Path:
    """``count`` crops of the ultralytics wheel's two real photos (windows of varied place and size)."""
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    photos = [Image.open(assets / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % 2]
        w = int(rng.integers(photo.width // 8, photo.width // 3))
        h = min(photo.height - 1, 2 * w)
        x, y = int(rng.integers(0, photo.width - w)), int(rng.integers(0, photo.height - h))
        photo.crop((x, y, x + w, y + h)).save(folder / f"crop_{i:03d}.jpg")
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """An embedder whose BatchNorm statistics come from varied crops (so it is input-dependent, as a trained
    one is: docs/testing.md), a plain-tensor MLP, their YAMLs and a folder of real photo crops."""
    from factory_pkg.embedder import build, build_mlp

    root = tmp_path_factory.mktemp("int8_factory")
    model = build()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    pre = Preprocess(64, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # as the YAML says
    with torch.no_grad():
        for seed in range(4):
            model(torch.from_numpy(prepare(person_crops(16, 64, 32, seed=seed), pre)))
    torch.save(model.eval().state_dict(), root / "embedder.pth")
    torch.save(build_mlp().state_dict(), root / "mlp.pth")
    (root / "embedder.yaml").write_text(EMBEDDER)
    (root / "mlp.yaml").write_text(MLP)
    _photo_crops(root / "calib", 48)
    return root


def _request(project: Path, config: str, **kw) -> ExportRequest:
    return ExportRequest(config=project / config, factory=None, **kw)


def _export(project: Path, config: str, out: Path, **kw):
    request = _request(project, config, out=out, **kw)
    return family_for(None, request).export(None, request)


def test_split_holds_out_every_fourth_run_of_four_and_at_least_one():
    fit, held = split_holdout(list(range(40)))
    assert held == [12, 13, 14, 15, 28, 29, 30, 31] and fit == [i for i in range(40) if i not in held]
    assert split_holdout(list(range(8))) == ([0, 1, 2, 3, 4, 5], [6, 7])  # too few for a run: the last quarter
    assert split_holdout(["a", "b"]) == (["a"], ["b"])
    assert (HOLDOUT_EVERY, HOLDOUT_RUN) == (4, 4)
    with pytest.raises(CalibrationError, match="at least 2 calibration items"):
        split_holdout(["only"])


def test_int8_is_judged_on_held_out_crops_that_never_calibrate(project, tmp_path, monkeypatch):
    export_module = importlib.import_module("modelport.export")  # the package's export() shadows the name
    judged = []
    original = export_module.compare_runner

    def spy(expected, runner, batch, tolerance, label=""):
        judged.append(np.asarray(batch))
        return original(expected, runner, batch, tolerance, label=label)

    monkeypatch.setattr(export_module, "compare_runner", spy)
    rows = _export(project, "embedder.yaml", tmp_path, formats=("onnx",), precision="int8",
                   calib=project / "calib")
    (row,) = rows
    assert judged, row.error
    spec = get_format("onnx").read_spec(row.path) if row.ok else None
    # The calibration the export made, rebuilt from the same folder: 36 crops calibrate, 12 are held out.
    from modelport.families.factory import build_factory
    from modelport.families.factory_config import read_config

    built = build_factory(read_config(project / "embedder.yaml"))
    calibration = calibration_batch(built.spec, project / "calib")
    assert (len(calibration.batch), len(calibration.holdout)) == (36, 12)
    (rows_judged,) = judged
    assert np.array_equal(rows_judged, calibration.holdout)
    flat_fit = calibration.batch.reshape(len(calibration.batch), -1)
    for held in rows_judged.reshape(len(rows_judged), -1):  # no judged row is a calibration row
        assert not (np.abs(flat_fit - held).max(axis=1) == 0).any()
    assert row.ok, row.error
    assert spec is not None and spec.precision == "int8" and spec.task == "embed"
    assert spec.extra["calibration"]["count"] == 36 and spec.extra["calibration"]["held_out"] == 12
    assert "every 4th run of 4" in spec.extra["calibration"]["split"]
    assert row.path.name == "embedder.int8.onnx"


def test_factory_cli_exports_half_and_int8_of_an_image_embedder(project, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "MODELPORT_CACHE": str(tmp_path / "cache")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "modelport.cli", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=600)

    base = ["export", "--config", "embedder.yaml", "--out", str(tmp_path), "--json"]
    half = cli(*base, "--half")
    assert half.returncode == 0, half.stdout + half.stderr
    rows = json.loads(half.stdout)
    # Default formats: fp16 is made for ONNX and OpenVINO; TorchScript is reported, not failed.
    assert {r["format"] for r in rows if r["path"]} == {"onnx", "openvino"} and all(r["ok"] for r in rows)
    assert any("not made in fp16" in r["note"] for r in rows if r["format"] == "torchscript")
    assert get_format("onnx").read_spec(tmp_path / "embedder.fp16.onnx").precision == "fp16"
    int8 = cli(*base, "--int8", "--calib", "calib", "--format", "openvino")
    assert int8.returncode == 0, int8.stdout + int8.stderr
    (row,) = json.loads(int8.stdout)
    assert row["ok"] and row["path"].endswith("embedder_int8_openvino_model")
    spec = get_format("openvino").read_spec(Path(row["path"]))
    assert spec.precision == "int8" and spec.extra["calibration"]["held_out"] == 12
    refused = cli(*base, "--calib", "calib")  # --calib without --int8 is a usage error, as for ReID models
    assert refused.returncode == 2 and "--calib is only used with --int8" in refused.stderr


def test_plain_tensor_model_calibrates_from_an_npz(project, tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calib.npz", x=rng.uniform(-1, 1, (40, 24)).astype(np.float32))
    (row,) = _export(project, "mlp.yaml", tmp_path / "out", formats=("onnx",), precision="int8",
                     calib=tmp_path / "calib.npz")
    assert row.ok, row.error
    record = get_format("onnx").read_spec(row.path).extra["calibration"]
    assert (record["count"], record["held_out"]) == (32, 8)


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.zeros((8, 24), np.float32)}, "no array named 'x'"),
    ({"x": np.zeros((8, 12), np.float32)}, r"x has shape \(8, 12\); the model takes"),
    ({"x": np.zeros((8, 24), np.int64)}, "x is int64; the model takes float32"),
])
def test_unusable_npz_calibration_is_a_typed_error_naming_the_file(project, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CalibrationError, match=message) as caught:
        _export(project, "mlp.yaml", tmp_path / "out", formats=("onnx",), precision="int8",
                calib=tmp_path / "bad.npz")
    assert "bad.npz" in str(caught.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_pickled_npz_is_refused_without_unpickling(project, tmp_path):
    np.savez(tmp_path / "pickled.npz", x=np.array([object()] * 4, dtype=object))
    with pytest.raises(CalibrationError, match="pickled.npz"):
        _export(project, "mlp.yaml", tmp_path / "out", formats=("onnx",), precision="int8",
                calib=tmp_path / "pickled.npz")


def test_int8_of_a_two_input_model_is_refused_by_name(tmp_path):
    from factory_pkg.models import build

    torch.save(build().state_dict(), tmp_path / "best.pth")
    (tmp_path / "swap.yaml").write_text(
        "factory: factory_pkg.models:build\nweights: best.pth\ninputs:\n"
        "  - {name: target, shape: [1, 3, 16, 16]}\n  - {name: source, shape: [1, 16]}\noutputs: [out]\n")
    with pytest.raises(CalibrationError, match=r"one input; this one takes 2 \(target, source\)"):
        _export(tmp_path, "swap.yaml", tmp_path / "out", formats=("onnx",), precision="int8")


@pytest.mark.parametrize("edit, message", [
    ("task: classify\n", "task: 'classify' is not one of tensors, embed"),
    ("task: embed\n", "preprocess: task: embed needs"),
    ("task: embed\npreprocess: {mean: [0.5, 0.5], std: [1, 1, 1]}\n", r"preprocess.mean: \[0.5, 0.5\] must list 3"),
    ("task: embed\npreprocess: {mean: [0, 0, 0], std: [1, 0, 1]}\n", "preprocess.std"),
    ("preprocess: {mean: [0, 0, 0], std: [1, 1, 1]}\n", "preprocess: applies to task: embed"),
    ("precision: int8\n", "--int8 --calib"),
])
def test_bad_task_and_preprocess_fields_name_the_file_and_field(tmp_path, edit, message):
    from modelport.families.factory_config import read_config

    (tmp_path / "bad.yaml").write_text(MLP.replace("name: tiny_mlp\n", "name: tiny_mlp\n" + edit)
                                       .replace("shape: [1, 24]", "shape: [1, 3, 8, 8]")
                                       if "embed" in edit else MLP + edit)
    with pytest.raises(ConfigError, match=message) as caught:
        read_config(tmp_path / "bad.yaml")
    assert "bad.yaml" in str(caught.value)


def test_neighbour_agreement_counts_a_swap_of_tied_neighbours_as_agreement_and_a_clear_one_as_not():
    from modelport.verify import NN_TIE, nn_agreement

    def at(angle: float) -> list[float]:
        return [np.cos(angle), np.sin(angle), 0.0]

    # Row 0's neighbours: row 1 at angle 0.30 and row 2 at 0.31 (similarities 0.955 and 0.952, a tie); rows 3
    # and 4 are far off on their own axis, each the other's clear nearest.
    ref = np.array([at(0.0), at(0.30), at(-0.31), [0, 0.1, 1.0], [0, -0.1, 1.0]])
    swapped = ref.copy()
    swapped[2] = at(-0.29)  # now row 2 is row 0's nearest: within the tie
    assert nn_agreement(ref, ref) == 1.0 and nn_agreement(ref, swapped) == 1.0
    clear = ref.copy()
    clear[3] = at(0.05)  # row 3 moves next to row 0: far from any tie under the reference
    assert np.cos(0.30) - np.cos(0.31) < NN_TIE
    assert nn_agreement(ref, clear) < 1.0


def test_int8_target_sets_what_the_export_must_reach_and_is_recorded(project, tmp_path):
    from modelport.int8 import Int8Settings
    from modelport.int8.settings import parse_target
    from modelport.verify import INT8

    (row,) = _export(project, "embedder.yaml", tmp_path / "default", formats=("onnx",), precision="int8",
                     calib=project / "calib")
    record = get_format("onnx").read_spec(row.path).extra["int8"]
    assert record["target"] == "min cosine >= 0.99, centred cosine >= 0.98, NN agreement >= 0.99"
    assert 0.99 < record["points"][0]["median_cosine"] <= 1.0
    # A median no INT8 model reaches: refused with what was tried, in the target's own words, nothing written.
    strict = Int8Settings(tolerance=parse_target("median_cosine=1,nn_agreement=none", INT8), accuracy_control=False)
    (row,) = _export(project, "embedder.yaml", tmp_path / "strict", formats=("onnx",), precision="int8",
                     calib=project / "calib", int8=strict)
    assert not row.ok and row.path is None and not list((tmp_path / "strict").glob("*.onnx"))
    assert "no INT8 configuration met the target (min cosine >= 0.99, median cosine >= 1, centred cosine >= 0.98)" \
        in row.error and "best: full INT8: median cosine 0.99" in row.error


@pytest.mark.parametrize("text, message", [
    ("median_cosine=0.99,min_cosine=0.97", None),
    ("bogus=1", "'bogus=1' is not KEY=VALUE with a known key"),
    ("min_cosine", "is not KEY=VALUE"),
    ("min_cosine=high", "is not a number"),
    ("min_cosine=2", "outside"),
    ("min_cosine=none,centered_cosine=none,nn_agreement=none", "judged by nothing"),
    ("", "is empty"),
])
def test_int8_target_parsing(text, message):
    from modelport.int8.settings import parse_target
    from modelport.verify import INT8

    if message is None:
        target = parse_target(text, INT8)
        assert (target.min_median_cosine, target.min_cosine, target.min_nn_agreement) == (0.99, 0.97, 0.99)
        return
    with pytest.raises(CalibrationError, match=message):
        parse_target(text, INT8)


def test_cli_int8_target_without_int8_or_malformed_is_a_usage_error(project):
    from typer.testing import CliRunner

    from modelport.cli import app

    runner = CliRunner()
    alone = runner.invoke(app, ["export", "--config", str(project / "mlp.yaml"), "--int8-target", "min_cosine=0.9"])
    assert alone.exit_code == 2 and "only used with --int8" in alone.output
    bad = runner.invoke(app, ["export", "--config", str(project / "mlp.yaml"), "--int8", "--int8-target", "x=1"])
    assert bad.exit_code == 2 and "not KEY=VALUE" in bad.output


def test_bench_times_the_int8_variant_beside_fp32_with_held_out_parity(project, monkeypatch):
    import modelport

    monkeypatch.setenv("MODELPORT_CACHE", str(project / "bench_cache"))
    record = modelport.benchmark(config=project / "embedder.yaml", formats="onnx", batches=(1,), seconds=0.2,
                                 rounds=1, precision="int8", calib=project / "calib")
    timed = {r["runtime"]: r for r in record["rows"] if r["throughput"]}
    assert {"pytorch", "onnx", "onnx.int8"} <= set(timed)
    parity = timed["onnx.int8"]["parity"]
    assert parity["min_cosine"] >= 0.99 and record["model"]["task"] == "embed"
