"""Loader: sibling search locations, priority, stale exports, fallbacks and missing runtimes."""

from __future__ import annotations

import shutil
import warnings

import pytest
from conftest import calibrated_model, save_plain

import modelport
from modelport.discover import StaleExportWarning, find_exports, open_artifact
from modelport.errors import MissingRuntimeError, ModelportError, WeightsNotFoundError
from modelport.formats import BY_ID, Format

STEM = "osnet_x0_25_msmt17"


def _remove(weights, suffix):
    target = weights.parent / f"{STEM}{suffix}"
    shutil.rmtree(target) if target.is_dir() else target.unlink()


def test_priority_is_onnx_then_openvino_then_torchscript_then_pytorch(exported, capsys):
    order = [("onnx", ".onnx"), ("openvino", "_openvino_model"), ("torchscript", ".torchscript"), ("pytorch", None)]
    for model_type, suffix in order:
        runner = modelport.load(exported)
        assert runner.model_type == model_type
        if suffix:
            assert runner.path == exported.parent / f"{STEM}{suffix}"
            _remove(exported, suffix)
    assert "→ Found exported ONNX model: " in capsys.readouterr().err


def test_exports_are_found_in_the_working_directory_and_exported_models(exported, tmp_path, monkeypatch):
    weights_dir = exported.parent
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    shutil.move(weights_dir / f"{STEM}.onnx", elsewhere / f"{STEM}.onnx")
    (weights_dir / "exported_models").mkdir()
    shutil.move(weights_dir / f"{STEM}_openvino_model", weights_dir / "exported_models" / f"{STEM}_openvino_model")
    (weights_dir / f"{STEM}.torchscript").unlink()
    monkeypatch.chdir(elsewhere)
    assert modelport.load(exported).path == elsewhere / f"{STEM}.onnx"
    (elsewhere / f"{STEM}.onnx").unlink()
    assert modelport.load(exported).path == weights_dir / "exported_models" / f"{STEM}_openvino_model"


def test_stale_exports_are_skipped_with_a_warning(exported):
    save_plain(calibrated_model("osnet_x0_25", seed=5), exported, 512)  # new weights, old exports
    with pytest.warns(StaleExportWarning, match="different weights"):
        runner = modelport.load(exported)
    assert runner.model_type == "pytorch"


def test_format_can_be_forced_and_exports_load_directly(exported):
    assert modelport.load(exported, format="torchscript").model_type == "torchscript"
    assert modelport.load(exported, format="pytorch").model_type == "pytorch"
    direct = modelport.load(exported.parent / f"{STEM}_openvino_model")
    assert direct.model_type == "openvino"
    with pytest.raises(ModelportError, match="not onnx"):
        modelport.load(exported.parent / f"{STEM}.torchscript", format="onnx")
    _remove(exported, ".onnx")
    with pytest.raises(MissingRuntimeError, match="no usable ONNX export"):
        modelport.load(exported, format="onnx")


def test_unusable_runtime_falls_back_to_the_next_format(exported, monkeypatch):
    real = Format.unavailable_reason

    def no_onnxruntime(self, device="cpu"):
        return "onnxruntime not installed (pip install onnxruntime onnx)" if self.id == "onnx" else real(self, device)

    monkeypatch.setattr(Format, "unavailable_reason", no_onnxruntime)
    assert modelport.load(exported).model_type == "openvino"


def test_no_runtime_at_all_names_the_package_to_install(exported, monkeypatch):
    monkeypatch.setattr(Format, "unavailable_reason", lambda self, device="cpu": f"{self.packages[0]} not installed")
    with pytest.raises(MissingRuntimeError) as info:
        modelport.load(exported)
    assert "pip install" in info.value.hint


def test_missing_weights_use_exports_then_random_only_when_allowed(tmp_path, exported, capsys):
    exported.unlink()
    assert modelport.load(exported).model_type == "onnx"  # exports still serve a deployment box
    assert "without a freshness check" in capsys.readouterr().err
    missing = tmp_path / "osnet_x0_5_market1501.pt"
    with pytest.raises(WeightsNotFoundError, match="osnet_x0_5_market1501.pt"):
        modelport.load(missing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = modelport.load(missing, allow_random=True)
    assert runner.model_type == "random" and runner.spec.name == "osnet_x0_5"


def test_a_broken_export_is_skipped_not_fatal(exported, capsys):
    (exported.parent / f"{STEM}.onnx").write_bytes(b"not an onnx file")
    assert modelport.load(exported).model_type == "openvino"
    assert f"skipping {exported.parent / STEM}.onnx: " in capsys.readouterr().err


def test_find_exports_lists_candidates_in_priority_order(exported):
    found = [c.format.id for c in find_exports(exported)]
    assert found == ["onnx", "openvino", "torchscript"]


def test_cuda_request_without_cuda_runs_on_cpu_and_says_so(exported):
    if BY_ID["tensorrt"].unavailable_reason("cuda") is None:
        pytest.skip("a CUDA device is present")
    with pytest.warns(RuntimeWarning, match="CPU"):
        runner = open_artifact(exported.parent / f"{STEM}.onnx", device="cuda")
    assert runner.device == "cpu" and runner.session.get_providers() == ["CPUExecutionProvider"]


def test_one_discovery_finds_every_family_in_a_folder_named_after_the_weights(exported, tmp_path, monkeypatch):
    # The detector layout (exported_models/yolo11n/yolo11n.onnx) is searched for every family by the same code.
    monkeypatch.chdir(tmp_path)
    nested = tmp_path / "exported_models" / STEM
    nested.mkdir(parents=True)
    for suffix in (".onnx", "_openvino_model", ".torchscript"):
        shutil.move(exported.parent / f"{STEM}{suffix}", nested / f"{STEM}{suffix}")
    assert modelport.load(exported).path == nested / f"{STEM}.onnx"
    assert [c.path.parent for c in find_exports(exported)] == [nested] * 3


def test_the_freshness_rule_says_unknown_when_either_side_has_no_digest():
    from modelport.spec import Source

    made = Source("weights", "w.pt", "a" * 64)
    assert made.made_from("a" * 64) is True and made.made_from("b" * 64) is False
    assert made.made_from(None) is None and Source("random").made_from("a" * 64) is None
