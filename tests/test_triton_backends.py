"""`triton build --backend onnxruntime|openvino`: repositories for the backends of NVIDIA's Triton containers.

The pip tritonserver here has only the Python backend, so these repositories are not served here: their configs
are checked against Triton's schema and the artifact, their model files against the export (bytes, and outputs
in the runtime that backend embeds), and the combinations a backend cannot load are refused before any work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import calibrated_model, save_plain
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import ConfigError, ExportError, ModelportError
from modelport.formats import get_format
from modelport.serve.triton_engine import python_config
from modelport.triton import ConfigOptions, ModelEntry, build_model, build_repository
from modelport.triton.config import PARAM_FORMAT, config_problems, format_of_config, read_signature
from modelport.triton.repo import repository_status, validate_repository

STEM = "osnet_x0_25_msmt17"


def parse(path: Path) -> model_config_pb2.ModelConfig:
    # Triton's own schema: an unknown field or a wrong type fails here.
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def crops(export: Path, n: int = 5) -> np.ndarray:
    """``n`` person crops prepared as the export's embedded spec says."""
    from modelport.preprocess import prepare
    from modelport.samples import person_crops

    pre = get_format("onnx").read_spec(export).preprocess
    return prepare(person_crops(n, pre.height, pre.width, seed=3), pre)


def openvino_outputs(model_file: Path, batch: np.ndarray) -> np.ndarray:
    """What Triton's OpenVINO backend computes: OpenVINO reading the version folder's file itself."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(model_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(batch)[compiled.outputs[0]]


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= 1e-4 * scale
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported_dir) -> Path:
    root = tmp_path_factory.mktemp("backends") / "repo"
    build_repository([
        ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="ort", options=ConfigOptions(backend="onnxruntime")),
        ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="ov",
                   options=ConfigOptions(backend="openvino", max_batch_size=8, preferred_batch_sizes=(2, 4))),
        ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="ov_onnx", options=ConfigOptions(backend="openvino")),
    ], root)
    return root


def test_onnxruntime_config_follows_tritons_schema_and_the_embedded_spec(repo, exported_dir):
    config = parse(repo / "ort" / "config.pbtxt")
    assert (config.platform, config.backend, config.default_model_filename) == ("onnxruntime_onnx", "onnxruntime", "")
    (inp,), (out,) = config.input, config.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("images", model_config_pb2.TYPE_FP32, [3, 256, 128])
    assert (out.name, out.data_type, list(out.dims)) == ("embeddings", model_config_pb2.TYPE_FP32, [512])
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert (repo / "ort" / "1" / "model.onnx").read_bytes() == (exported_dir / f"{STEM}.onnx").read_bytes()
    assert config_problems(config, read_signature("onnx", repo / "ort" / "1" / "model.onnx")) == []


def test_openvino_backend_serves_the_ir_unchanged(repo, exported_dir):
    config = parse(repo / "ov" / "config.pbtxt")
    assert (config.platform, config.backend, config.default_model_filename) == ("", "openvino", "")
    assert (config.max_batch_size, list(config.dynamic_batching.preferred_batch_size)) == (8, [2, 4])
    assert [t.name for t in config.input] == ["images"] and list(config.output[0].dims) == [512]
    export = exported_dir / f"{STEM}_openvino_model"
    for name, suffix in (("model.xml", ".xml"), ("model.bin", ".bin")):
        assert (repo / "ov" / "1" / name).read_bytes() == (export / f"{STEM}{suffix}").read_bytes()
    batch = crops(exported_dir / f"{STEM}.onnx")
    want = get_format("openvino").load(export, "cpu")(batch)["embeddings"]
    assert_close(openvino_outputs(repo / "ov" / "1" / "model.xml", batch), want)


def test_openvino_backend_also_serves_onnx_named_by_default_model_filename(repo, exported_dir):
    # As NVIDIA's OpenVINO quick-deploy tutorial writes it: backend "openvino", default_model_filename "model.onnx".
    config = parse(repo / "ov_onnx" / "config.pbtxt")
    assert (config.platform, config.backend, config.default_model_filename) == ("", "openvino", "model.onnx")
    assert format_of_config(config) == "onnx" and config.parameters[PARAM_FORMAT].string_value == "onnx"
    model = repo / "ov_onnx" / "1" / "model.onnx"
    assert model.read_bytes() == (exported_dir / f"{STEM}.onnx").read_bytes()
    batch = crops(exported_dir / f"{STEM}.onnx")
    want = get_format("onnx").load(exported_dir / f"{STEM}.onnx", "cpu")(batch)["embeddings"]
    assert_close(openvino_outputs(model, batch), want)  # OpenVINO's ONNX reader computes what ONNX Runtime does
    # modelport's own tools read it too: status, validate (ONNX Runtime), and the Python-backend mirror.
    assert all(s.ok for s in repository_status(repo))
    assert all(r.ok for r in validate_repository(repo))
    mirrored = python_config(config)
    assert (mirrored.backend, mirrored.default_model_filename) == ("python", "")
    assert mirrored.parameters[PARAM_FORMAT].string_value == "onnx"


def test_cli_backend_picks_its_own_format_for_weights_and_keeps_a_fixed_batch(tmp_path):
    weights = save_plain(calibrated_model("osnet_x0_25", seed=2), tmp_path / f"{STEM}.pt", 512)
    root = tmp_path / "repo"
    runner = CliRunner()
    res = runner.invoke(app, ["triton", "build", str(weights), "--repo", str(root), "--backend", "openvino",
                              "--batch", "4", "--name", "ov4", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["format"] == "openvino"
    config = parse(root / "ov4" / "config.pbtxt")
    assert (config.backend, config.max_batch_size, config.HasField("dynamic_batching")) == ("openvino", 0, False)
    assert list(config.input[0].dims) == [4, 3, 256, 128] and list(config.output[0].dims) == [4, 512]
    assert {p.name for p in (root / "ov4" / "1").iterdir()} >= {"model.xml", "model.bin"}


@pytest.mark.parametrize(("backend", "source", "fmt", "hint"), [
    ("onnxruntime", f"{STEM}_openvino_model", None, "--backend openvino or --backend python"),
    ("pytorch", f"{STEM}.onnx", None, "--backend onnxruntime or --backend openvino or --backend python"),
    ("onnxruntime", f"{STEM}.pt", "torchscript", "give --format onnx"),
    ("openvino", f"{STEM}.pt", "torchscript", "give --format openvino or --format onnx"),
])
def test_a_backend_that_cannot_load_the_format_is_refused_before_any_work(tmp_path, exported_dir, backend, source,
                                                                            fmt, hint):
    root = tmp_path / "repo"
    entry = ModelEntry(str(exported_dir / source), format=fmt, options=ConfigOptions(backend=backend))
    with pytest.raises(ConfigError, match=f"Triton's {backend} backend loads") as caught:
        build_repository([entry], root)
    assert hint in caught.value.hint
    assert not root.exists()  # refused before the export and before the repository was made


def test_cli_refusal_names_what_to_give(tmp_path, exported_dir, monkeypatch, capsys):
    from modelport.cli import main

    monkeypatch.setattr("sys.argv", ["modelport", "triton", "build", str(exported_dir / f"{STEM}.torchscript"),
                                     "--repo", str(tmp_path / "repo"), "--backend", "openvino"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == ConfigError.exit_code
    said = " ".join(capsys.readouterr().err.split())
    assert "error: Triton's openvino backend loads openvino or onnx models, not torchscript" in said
    assert "hint: give --format openvino or --format onnx" in said and "--backend pytorch or --backend python" in said


def test_unknown_backend_lists_the_accepted_ones():
    with pytest.raises(ModelportError, match="native, python, onnxruntime, tensorrt, openvino, pytorch"):
        ConfigOptions(backend="tensorflow")


def test_one_model_keeps_one_backend(tmp_path, exported_dir):
    root = tmp_path / "repo"
    shutil.copytree(exported_dir, tmp_path / "exports")
    onnx = str(tmp_path / "exports" / f"{STEM}.onnx")
    build_model(ModelEntry(onnx, name="m", options=ConfigOptions(backend="onnxruntime")), root)
    with pytest.raises(ExportError, match="by the onnxruntime backend.*for the openvino backend cannot join"):
        build_model(ModelEntry(onnx, name="m", options=ConfigOptions(backend="openvino")), root)
    build_model(ModelEntry(onnx, name="m", options=ConfigOptions(backend="native")), root)  # native: the same one
    assert sorted(p.name for p in (root / "m").iterdir() if p.is_dir()) == ["1", "2"]
