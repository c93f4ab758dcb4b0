"""The `modelport` command: exit codes, tables/JSON, and user errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import calibrated_model, save_plain


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def test_models_lists_the_zoo_with_dims_and_params():
    result = run("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {n: r["feature_dim"] for n, r in rows.items() if r["task"] == "embed"} == {
        "osnet_x1_0": 512, "osnet_x0_75": 512, "osnet_x0_5": 512, "osnet_x0_25": 512,
        "resnet50": 2048, "densenet121": 1024, "mobilenetv2_x1_0": 1280,
    }
    assert rows["resnet50"]["params"] > rows["osnet_x0_25"]["params"] > 0
    assert {n for n, r in rows.items() if r["task"] == "detect"} == {f"yolo11{s}" for s in "nsmlx"}
    # MobileCLIPs come from open_clip's configs (not built): both encoders' inputs, no parameter count
    clip = {n: r for n, r in rows.items() if r["family"] == "clip"}
    assert {"MobileCLIP2-S0", "MobileCLIP2-S2", "MobileCLIP2-L-14", "MobileCLIP-S1"} <= set(clip)
    assert clip["MobileCLIP2-S0"] == {"name": "MobileCLIP2-S0", "family": "clip", "task": "embed+embed_text",
                                      "feature_dim": 512, "input": [3, 256, 256], "text_input": [77], "params": None}
    assert clip["MobileCLIP2-S4"]["feature_dim"] == 768 and clip["MobileCLIP2-B"]["input"] == [3, 224, 224]


def test_export_info_verify_round_trip(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    result = run("export", str(weights), "--format", "onnx,torchscript", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["format"] for r in rows] == ["onnx", "torchscript"] and all(r["ok"] for r in rows)
    onnx_path = tmp_path / "osnet_x0_25_msmt17.onnx"

    info = run("info", str(onnx_path), "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["name"] == "osnet_x0_25"
    table = run("info", str(onnx_path))
    assert "osnet_x0_25" in table.stdout and "sha256" in table.stdout

    report_file = tmp_path / "verify.json"
    check = run("verify", str(weights), str(onnx_path), str(tmp_path / "osnet_x0_25_msmt17.torchscript"),
                "--json", str(report_file))
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(report_file.read_text())
    assert report["passed"] and len(report["results"]) == 2


def test_verify_exits_non_zero_on_mismatch(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    assert run("export", str(weights), "--format", "onnx").returncode == 0
    other = save_plain(calibrated_model("osnet_x0_25", seed=9), tmp_path / "osnet_x0_25_other.pt", 512)
    result = run("verify", str(other), str(tmp_path / "osnet_x0_25_msmt17.onnx"))
    assert result.returncode == 1
    assert "max abs diff" in result.stdout


def test_fixed_batch_export_from_the_cli(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    result = run("export", str(weights), "--format", "onnx", "--batch", "4", "--out", str(tmp_path / "b4"))
    assert result.returncode == 0, result.stderr
    info = json.loads(run("info", str(tmp_path / "b4" / "osnet_x0_25_msmt17.onnx"), "--json").stdout)
    assert info["inputs"][0]["shape"][0] == 4


def _assert_user_error(result, *needles):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_user_errors_get_one_line_and_a_hint(tmp_path, osnet_model):
    _assert_user_error(run("export", str(tmp_path / "osnet_x0_25_missing.pt")), "not found", "hint:")
    good = save_plain(osnet_model, tmp_path / "mystery.pt", 512)
    _assert_user_error(run("export", str(good)), "cannot tell the architecture", "--arch")
    _assert_user_error(run("export", str(good), "--arch", "osnet_x7"), "unknown architecture 'osnet_x7'")
    truncated = tmp_path / "osnet_x0_25_cut.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    _assert_user_error(run("export", str(truncated)), "truncated or corrupted")
    objects = tmp_path / "osnet_x0_25_objects.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, objects)
    _assert_user_error(run("export", str(objects)), "refers to torch.nn.modules.linear.Linear")
    _assert_user_error(run("export", str(good), "--arch", "resnet50"), "do not fit", "resnet50")
    _assert_user_error(run("export", str(good), "--arch", "osnet_x0_25", "--format", "tensorrt"),
                       "TensorRT is unavailable", "pip install")
    _assert_user_error(run("export", "osnet_x0_25"), "no weights given", "--allow-random")
    _assert_user_error(run("info", str(tmp_path / "x.unknown")), "unrecognised artifact type")


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = run("demo", "--workdir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UNTRAINED" in result.stdout
    assert "loader picked: onnx" in result.stdout
    for name in ("osnet_x0_25_untrained.pt", "osnet_x0_25_untrained.onnx", "osnet_x0_25_untrained.torchscript",
                 "osnet_x0_25_untrained_openvino_model"):
        assert (tmp_path / "demo" / name).exists()
    info = json.loads(run("info", str(tmp_path / "demo" / "osnet_x0_25_untrained.onnx"), "--json").stdout)
    assert info["source"]["kind"] == "random"


@pytest.mark.parametrize("args", [["--help"], ["export", "--help"]])
def test_help_works(args):
    result = run(*args)
    assert result.returncode == 0 and "Usage" in result.stdout


MISSING_EXTRAS = '''
import importlib.abc, sys
MISSING = {"fastapi", "uvicorn", "multipart", "tritonclient", "pytriton", "click"}

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
'''


@pytest.mark.parametrize("args, said", [
    (["serve", "{repo}"], "pip install 'modelport[serve]'"),
    (["serve", "{repo}", "--engine", "triton"], "pip install 'modelport[serve]'"),
    (["ui", "--root", "{repo}"], "pip install 'modelport[serve]'"),
    (["exprot", "x.pt"], "No such command 'exprot'"),
])
def test_the_default_install_names_the_extra_a_command_needs_and_a_typo_is_a_usage_error(tmp_path, args, said):
    """As the default install is (no serve extra, and no click beside typer's vendored copy): one message and
    exit 2, never a traceback or a crash report."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(MISSING_EXTRAS)
    (tmp_path / "m").mkdir()  # a model repository's layout: serve checks that before it needs the extra
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nplatform: "onnxruntime_onnx"\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               MODELPORT_LOG_DIR=str(tmp_path / "logs"))
    argv = [a.format(repo=tmp_path) for a in args]
    done = subprocess.run([sys.executable, "-m", "modelport.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert not (tmp_path / "logs").exists()
