"""Golden outputs travel with Triton repositories: every version carries seeded inputs and the reference's
outputs; `modelport verify REPO` re-runs each version here (and, with --url, on a server serving the
repository) and fails closed."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import builtin_server
from typer.testing import CliRunner

from modelport.cli import app
from modelport.discover import open_artifact
from modelport.errors import CorruptFileError, ModelportError
from modelport.triton import ModelEntry, build_repository
from modelport.triton.golden import verify_repository, weights_reference
from modelport.triton.server import free_port

STEM = "osnet_x0_25_msmt17"
MODELS = ("osnet", "osnet_ov", "osnet_ts")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported_dir) -> Path:
    root = tmp_path_factory.mktemp("triton-golden") / "repo"
    build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet"),
                      ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="osnet_ov"),
                      ModelEntry(str(exported_dir / f"{STEM}.torchscript"), name="osnet_ts")], root)
    return root


@pytest.fixture
def copy(repo, tmp_path) -> Path:
    """A private copy of the repository that a test may change."""
    return Path(shutil.copytree(repo, tmp_path / "repo"))


def rows(checks) -> list[tuple]:
    return [(c.model, c.version, c.target, c.passed) for c in checks]


def break_onnx(path: Path) -> None:
    """Scale the last convolution's weights by 5 %: the artifact still loads and runs, with other numbers."""
    model = onnx.load(str(path))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    values = onnx.numpy_helper.to_array(weight) * 1.05
    weight.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weight.name))
    onnx.save(model, str(path))


def test_every_version_carries_the_pytorch_models_outputs_and_passes_here(repo):
    for name in MODELS:
        meta = json.loads((repo / name / "1" / "golden" / "golden.json").read_text())
        assert (meta["reference"], meta["rows"], meta["outputs"]) == ("pytorch", 8, ["embeddings"])
    checks = verify_repository(repo)
    assert rows(checks) == [(name, 1, "local", True) for name in MODELS]
    for check in checks:  # each compared real numbers, not nothing
        (out,) = check.result.outputs
        assert out.output == "embeddings" and out.min_cosine > 0.9999 and out.max_abs < 1e-3
        assert check.reference == "pytorch" and not check.self_check and "self-check" not in check.result.label


def test_a_changed_artifact_fails_and_the_other_models_still_pass(copy):
    break_onnx(copy / "osnet" / "1" / "model.onnx")
    checks = verify_repository(copy)
    assert rows(checks) == [("osnet", 1, "local", False), ("osnet_ov", 1, "local", True),
                            ("osnet_ts", 1, "local", True)]
    assert "max abs diff" in checks[0].result.summary()


def test_golden_outputs_are_the_artifacts_own_when_its_weights_are_gone_or_changed(exported, tmp_path):
    from modelport.export import export

    (onnx_path,) = export(exported, "onnx", out=tmp_path / "private")  # its spec names the private weights
    spec = open_artifact(onnx_path).spec
    reference = weights_reference(spec)
    assert reference is not None and reference.format == "pytorch"
    assert weights_reference(replace(spec, source=replace(spec.source, sha256="0" * 64))) is None  # changed since
    exported.unlink()
    assert weights_reference(spec) is None
    root = tmp_path / "repo"
    (built,) = build_repository([ModelEntry(str(onnx_path), name="osnet")], root)
    assert built.golden == "artifact"
    assert json.loads((root / "osnet" / "1" / "golden" / "golden.json").read_text())["reference"] == "artifact"
    (check,) = verify_repository(root)
    # a pass against its own outputs says only that this runtime computes what the build's did: labelled so
    assert rows([check]) == [("osnet", 1, "local", True)]
    assert check.self_check and check.reference == "artifact (self-check)", check
    assert check.result.label == "osnet/1 (self-check)"
    # A process of its own: in this one the CLI's console may have been made earlier, at another width.
    shown = subprocess.run([sys.executable, "-m", "modelport.cli", "verify", str(root)], capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert shown.returncode == 0 and "artifact (self-check)" in shown.stdout, shown.stdout + shown.stderr
    report = json.loads(CliRunner().invoke(app, ["verify", str(root), "--json", "-"]).output)
    (row,) = report["checks"]
    assert row["self_check"] is True and row["reference"] == "artifact (self-check)" and row["passed"]


def test_a_model_exported_from_weights_by_the_build_carries_pytorch_outputs(exported, tmp_path):
    root = tmp_path / "repo"
    (built,) = build_repository([ModelEntry(str(exported), name="osnet", batch=4)], root)  # a fixed-batch export
    assert built.golden == "pytorch"
    assert len(np.load(root / "osnet" / "1" / "golden" / "inputs.npy")) == 8  # padded / chunked to the batch of 4
    assert rows(verify_repository(root)) == [("osnet", 1, "local", True)]


def test_missing_or_tampered_golden_outputs_fail_closed(copy, tmp_path):
    shutil.rmtree(copy / "osnet" / "1" / "golden")
    golden = copy / "osnet_ov" / "1" / "golden"
    np.savez(golden / "outputs.npz")  # no arrays, golden.json still lists embeddings
    ts = copy / "osnet_ts" / "1" / "golden"
    np.savez(ts / "outputs.npz")  # no arrays, and golden.json agrees: nothing to compare with
    meta = json.loads((ts / "golden.json").read_text())
    (ts / "golden.json").write_text(json.dumps({**meta, "outputs": []}))
    checks = verify_repository(copy)
    assert rows(checks) == [(name, 1, "local", False) for name in MODELS]
    assert "holds no golden outputs" in checks[0].result.error
    assert "golden.json lists ['embeddings']" in checks[1].result.error
    assert "no reference for outputs ['embeddings']" in checks[2].result.error
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptFileError, match="holds no model folders"):
        verify_repository(tmp_path / "empty")
    with pytest.raises(ModelportError, match="not a model endpoint"):
        verify_repository(copy, url="http://127.0.0.1:1/osnet/extra")


def test_a_model_without_a_readable_config_fails(copy):
    (copy / "osnet_ts" / "config.pbtxt").write_text("not a config {")
    checks = verify_repository(copy)
    assert rows(checks)[-1] == ("osnet_ts", None, "local", False)


def test_cli_verify_says_pass_or_fail_per_model(repo, copy):
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(repo)], env={"COLUMNS": "200"})
    assert ok.exit_code == 0 and "3 of 3 checks pass" in ok.output, ok.output
    break_onnx(copy / "osnet" / "1" / "model.onnx")
    bad = runner.invoke(app, ["verify", str(copy), "--json", "-"])
    assert bad.exit_code == 1, bad.output
    report = json.loads(bad.output)
    assert not report["passed"] and [c["passed"] for c in report["checks"]] == [False, True, True]
    misuse = runner.invoke(app, ["verify", str(repo / "osnet" / "1" / "model.onnx"), "--url", "http://x:1"])
    assert misuse.exit_code == 2 and "Triton model repository" in misuse.output


@pytest.fixture
def served(tmp_path, repo):
    """modelport's builtin server on a copy of the repository whose ONNX artifact was changed after the build."""
    changed = Path(shutil.copytree(repo, tmp_path / "served"))
    break_onnx(changed / "osnet" / "1" / "model.onnx")
    with builtin_server(changed) as server:
        yield f"http://{server.address}"


def test_the_server_serving_a_repository_is_checked_against_its_golden_outputs(repo, served):
    checks = verify_repository(repo, url=served)
    # here every artifact is the one built; the server runs a changed ONNX model, and that one fails
    assert rows(checks) == [("osnet", 1, "local", True), ("osnet", 1, served, False),
                            ("osnet_ov", 1, "local", True), ("osnet_ov", 1, served, True),
                            ("osnet_ts", 1, "local", True), ("osnet_ts", 1, served, True)]
    assert "max abs diff" in checks[1].result.summary()
    remote_only = CliRunner().invoke(app, ["verify", str(repo), "--url", served, "--no-local"], env={"COLUMNS": "200"})
    assert remote_only.exit_code == 1 and "2 of 3 checks pass" in remote_only.output, remote_only.output


def test_an_unreachable_server_fails_every_model(repo):
    url = f"http://127.0.0.1:{free_port()}"
    checks = verify_repository(repo, url=url, local=False)
    assert rows(checks) == [(name, 1, url, False) for name in MODELS]
    assert all("failed" in c.result.error for c in checks)


def test_a_repository_is_verified_on_a_machine_without_pytorch(repo):
    """ONNX and OpenVINO versions pass with their runtimes alone; TorchScript needs torch, so it fails, saying so."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from modelport.triton.golden import verify_repository\n"
            f"checks = verify_repository({str(repo)!r})\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "for c in checks: print(c.model, c.passed, c.result.error)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["osnet True None", "osnet_ov True None"], done.stdout
    assert lines[2].startswith("osnet_ts False cannot open the artifact here"), done.stdout


def test_golden_files_are_plain_numpy_without_pickles(repo):
    golden = repo / "osnet" / "1" / "golden"
    inputs = np.load(golden / "inputs.npy", allow_pickle=False)
    assert inputs.shape == (8, 3, 256, 128) and inputs.dtype == np.float32
    with np.load(io.BytesIO((golden / "outputs.npz").read_bytes()), allow_pickle=False) as npz:
        assert npz["embeddings"].shape == (8, 512)
