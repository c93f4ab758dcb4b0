"""Golden outputs travel with packages: the target machine re-checks the artifact, and a changed one fails."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import calibrated_model, save_plain

from modelport.golden import verify_package
from modelport.package import build_package

BENCH = {"machine": {"cpu": "test cpu", "physical_cores": 2}, "modelport": "test", "rows": []}


@pytest.fixture(scope="module")
def other_onnx(tmp_path_factory) -> Path:
    """The same architecture, file name and signature as ``exported_dir``'s ONNX, from other (seeded) weights."""
    from modelport.export import export

    folder = tmp_path_factory.mktemp("other")
    (path,) = export(save_plain(calibrated_model("osnet_x0_25", seed=1), folder / "osnet_x0_25_msmt17.pt", 512),
                     "onnx")
    return path


@pytest.fixture(scope="module")
def package_file(exported_dir, tmp_path_factory) -> Path:
    from modelport.discover import open_artifact

    runner = open_artifact(exported_dir / "osnet_x0_25_msmt17.onnx")
    reference = open_artifact(exported_dir / "osnet_x0_25_msmt17.pt")
    return build_package(runner, BENCH, tmp_path_factory.mktemp("pkg") / "osnet_edge.tar.gz", reference=reference)


def test_a_package_carries_pytorch_golden_outputs_and_passes_on_the_target(package_file):
    with tarfile.open(package_file) as tar:
        names = set(tar.getnames())
        meta = tar.extractfile("golden/golden.json").read().decode()
    assert {"golden/inputs.npy", "golden/outputs.npz", "golden/golden.json"} <= names
    assert '"reference": "pytorch"' in meta
    result = verify_package(package_file)
    assert result.passed, result.summary()
    assert result.outputs[0].min_cosine > 0.9999 and result.outputs[0].max_abs < 1e-3


def _rewrite(package: Path, out: Path, change) -> Path:
    """A copy of ``package`` whose members pass through ``change(name, data) -> data``."""
    with tarfile.open(package) as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            data = change(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def test_a_changed_artifact_fails_against_its_golden_outputs(package_file, tmp_path):
    def break_last_conv(name: str, data: bytes) -> bytes:
        if not name.endswith(".onnx"):
            return data
        model = onnx.load_from_string(data)
        conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
        weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
        values = onnx.numpy_helper.to_array(weight) * 1.05  # 5 % off in one layer
        weight.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weight.name))
        return model.SerializeToString()

    broken = _rewrite(package_file, tmp_path / "broken.tar.gz", break_last_conv)
    result = verify_package(broken)
    assert not result.passed and "max abs diff" in result.summary()


def test_a_package_holding_another_models_artifact_fails(package_file, other_onnx, tmp_path):
    """The golden outputs are the PyTorch model's, not the artifact's: an export of other weights fails."""
    swapped = _rewrite(package_file, tmp_path / "swapped.tar.gz",
                       lambda name, data: other_onnx.read_bytes() if name.endswith(".onnx") else data)
    result = verify_package(swapped)
    assert not result.passed and "max abs diff" in result.summary(), result.summary()


def test_a_package_without_weights_to_compare_with_is_labelled_a_self_check(exported_dir, tmp_path):
    from modelport.discover import open_artifact

    own = build_package(open_artifact(exported_dir / "osnet_x0_25_msmt17.onnx"), BENCH, tmp_path / "own.tar.gz")
    result = verify_package(own)
    assert result.passed and result.label.endswith("(self-check)"), result.label


def test_the_cli_verifies_a_package_and_exits_non_zero_when_it_fails(package_file, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "modelport.cli", "verify", str(package_file)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "pass" in ok.stdout, ok.stdout + ok.stderr
    drop = _rewrite(package_file, tmp_path / "nogolden.tar.gz",
                    lambda name, data: b"{}" if name == "golden/golden.json" else data)
    bad = subprocess.run([sys.executable, "-m", "modelport.cli", "verify", str(drop)], capture_output=True, text=True)
    assert bad.returncode == 2 and "unreadable golden outputs" in bad.stderr, bad.stderr


def test_a_package_with_a_path_outside_its_folder_is_refused(package_file, tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    from modelport.errors import CorruptFileError

    with pytest.raises(CorruptFileError, match="evil.tar.gz"):
        verify_package(evil)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_a_package_is_verified_on_a_machine_without_pytorch(package_file):
    """The edge box may have only onnxruntime: torch is made unimportable in the checking process."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from modelport.golden import verify_package\n"
            f"result = verify_package({str(package_file)!r})\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('PASSED' if result.passed else 'FAILED ' + result.summary())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stdout + done.stderr


def test_import_modelport_does_not_import_torch():
    code = ("import sys, modelport, modelport.cli\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'ultralytics', 'open_clip') "
            "if m in sys.modules]\n"
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_large_rows_are_trimmed_to_the_byte_budget_but_never_below_two(exported_dir, other_onnx, monkeypatch):
    import modelport.golden as golden
    from modelport.discover import open_artifact

    runner = open_artifact(exported_dir / "osnet_x0_25_msmt17.onnx")
    reference = open_artifact(exported_dir / "osnet_x0_25_msmt17.pt")
    row = 3 * 256 * 128 * 4 + 512 * 4  # one crop and its embedding, float32
    monkeypatch.setattr(golden, "GOLDEN_MAX_BYTES", 3 * row + 1)
    made = golden.make_golden(runner, reference)
    assert len(made.inputs) == 3 and made.outputs["embeddings"].shape == (3, 512)
    monkeypatch.setattr(golden, "GOLDEN_MAX_BYTES", 1)
    assert len(golden.make_golden(runner).inputs) == 2
    # the trimmed rows still check: the export against PyTorch's outputs passes, another model's export fails
    assert golden.check_golden(runner, made).passed
    assert not golden.check_golden(open_artifact(other_onnx), made).passed
