"""Triton model repositories: layout, config.pbtxt from Triton's own schema, versions, status, validate, clean."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import calibrated_model, save_plain
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from modelport.cli import app
from modelport.discover import open_artifact
from modelport.errors import CorruptFileError, ExportError, ModelportError
from modelport.spec import SPEC_KEY, ModelSpec
from modelport.triton import ConfigOptions, ModelEntry, build_model, build_repository, read_models_yaml
from modelport.triton.config import make_config, parse_version_policy, read_signature
from modelport.triton.layout import open_version
from modelport.triton.repo import clean_repository, repository_status, validate_repository

STEM = "osnet_x0_25_msmt17"


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported_dir) -> Path:
    """A repository made from the three CPU exports of one seeded, BN-calibrated OSNet."""
    root = tmp_path_factory.mktemp("triton") / "repo"
    build_repository([
        ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet"),
        ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="osnet_ov",
                   options=ConfigOptions(dynamic_batching=False, instances=2)),
        ModelEntry(str(exported_dir / f"{STEM}.torchscript"), name="osnet_ts",
                   options=ConfigOptions(max_batch_size=8, preferred_batch_sizes=(2, 4, 32), version_policy="all")),
    ], root)
    return root


def test_layout_uses_the_file_names_triton_looks_for(repo):
    assert (repo / "osnet" / "1" / "model.onnx").is_file()
    assert (repo / "osnet_ts" / "1" / "model.pt").is_file()
    assert {p.name for p in (repo / "osnet_ov" / "1").iterdir()} == {"model.xml", "model.bin", "metadata.json",
                                                                     "golden"}
    assert all((repo / m / "config.pbtxt").is_file() for m in ("osnet", "osnet_ov", "osnet_ts"))


def test_config_parses_with_tritons_schema_and_matches_the_artifact(repo):
    onnx_cfg = parse(repo / "osnet" / "config.pbtxt")
    assert (onnx_cfg.name, onnx_cfg.platform, onnx_cfg.backend) == ("osnet", "onnxruntime_onnx", "onnxruntime")
    assert onnx_cfg.max_batch_size == 16
    (inp,), (out,) = onnx_cfg.input, onnx_cfg.output
    # dims exclude the (dynamic) batch dimension
    assert (inp.name, inp.data_type, list(inp.dims)) == ("images", model_config_pb2.TYPE_FP32, [3, 256, 128])
    assert (out.name, out.data_type, list(out.dims)) == ("embeddings", model_config_pb2.TYPE_FP32, [512])
    assert list(onnx_cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert onnx_cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, g.kind) for g in onnx_cfg.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert onnx_cfg.version_policy.latest.num_versions == 1

    ov = parse(repo / "osnet_ov" / "config.pbtxt")
    assert (ov.platform, ov.backend) == ("", "openvino")
    assert not ov.HasField("dynamic_batching") and ov.instance_group[0].count == 2

    ts = parse(repo / "osnet_ts" / "config.pbtxt")
    assert (ts.platform, ts.backend) == ("pytorch_libtorch", "pytorch")
    # libtorch binds tensors by <name>__<index>; preferred sizes above max_batch_size are dropped
    assert [t.name for t in ts.input] == ["images__0"] and [t.name for t in ts.output] == ["embeddings__0"]
    assert ts.max_batch_size == 8 and list(ts.dynamic_batching.preferred_batch_size) == [2, 4]
    assert ts.version_policy.HasField("all")


def test_config_dims_come_from_the_artifact_not_the_spec(exported_dir):
    path = exported_dir / f"{STEM}.onnx"
    sig = read_signature("onnx", path)
    spec = open_artifact(path).spec
    # a spec that lies about its shapes must not leak into the config
    lying = replace(spec, outputs=(replace(spec.outputs[0], shape=("batch", 999)),))
    config = make_config("m", "onnx", sig, lying, ConfigOptions())
    assert list(config.output[0].dims) == [512]


def test_fixed_batch_export_gets_max_batch_size_zero(tmp_path, exported_dir):
    weights = exported_dir / f"{STEM}.pt"
    built = build_model(ModelEntry(str(weights), name="fixed", batch=2), tmp_path / "repo")
    config = parse(built.config)
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 3, 256, 128] and list(config.output[0].dims) == [2, 512]
    (result,) = validate_repository(tmp_path / "repo")
    assert result.ok and result.outputs == {"embeddings": [2, 512]}, result.problems


def test_repository_model_computes_what_the_pytorch_model_computes(repo, exported_dir, tmp_path):
    """Each version (ONNX, OpenVINO, TorchScript) against the PyTorch model the exports were made from, on person
    crops; the same comparison tells a model of other weights apart."""
    from modelport.preprocess import prepare
    from modelport.samples import person_crops

    source = open_artifact(exported_dir / f"{STEM}.pt")
    pre = source.spec.preprocess
    batch = prepare(person_crops(3, pre.height, pre.width, seed=3), pre)
    reference = source(batch)["embeddings"]

    def agrees(got: np.ndarray) -> bool:
        return np.allclose(got, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())

    other = save_plain(calibrated_model("osnet_x0_25", seed=1), tmp_path / f"{STEM}.pt", 512)
    assert not agrees(open_artifact(other)(batch)["embeddings"])
    for name in ("osnet", "osnet_ov", "osnet_ts"):
        config = parse(repo / name / "config.pbtxt")
        with open_version(repo / name, 1, config) as runner:
            got = runner(batch)[runner.spec.outputs[0].name]
        assert agrees(got), (name, float(np.abs(got - reference).max()), float(np.abs(reference).max()))


def test_versions_are_added_and_never_overwritten_silently(tmp_path, exported_dir):
    onnx = str(exported_dir / f"{STEM}.onnx")
    root = tmp_path / "repo"
    assert build_model(ModelEntry(onnx, name="m"), root).version == 1
    assert build_model(ModelEntry(onnx, name="m"), root).version == 2
    with pytest.raises(ExportError, match="already exists"):
        build_model(ModelEntry(onnx, name="m", version=1), root)
    changed = build_model(ModelEntry(onnx, name="m", version=1, options=ConfigOptions(max_batch_size=4)), root,
                          force=True)
    assert changed.backup is not None and "max_batch_size: 16" in changed.backup.read_text()
    assert parse(root / "m" / "config.pbtxt").max_batch_size == 4


def test_one_model_has_one_backend(tmp_path, exported_dir):
    root = tmp_path / "repo"
    build_model(ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="m"), root)
    with pytest.raises(ExportError, match="one backend"):
        build_model(ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="m"), root)
    assert sorted(p.name for p in (root / "m").iterdir()) == ["1", "config.pbtxt"]


def test_export_cannot_be_rewritten_as_another_format(tmp_path, exported_dir):
    with pytest.raises(ModelportError, match="cannot be written as openvino"):
        build_model(ModelEntry(str(exported_dir / f"{STEM}.onnx"), format="openvino"), tmp_path / "repo")


def test_detector_labels_are_written_and_named_in_the_config(tmp_path, exported_dir):
    import onnx

    model = onnx.load(str(exported_dir / f"{STEM}.onnx"))
    spec = ModelSpec.from_json(next(p.value for p in model.metadata_props if p.key == SPEC_KEY))
    model.metadata_props[0].value = replace(spec, task="detect", labels=("person", "bicycle")).to_json()
    onnx.save(model, str(tmp_path / "det.onnx"))
    built = build_model(ModelEntry(str(tmp_path / "det.onnx")), tmp_path / "repo")
    assert built.name == "det"
    assert parse(built.config).output[0].label_filename == "labels.txt"
    assert (tmp_path / "repo" / "det" / "labels.txt").read_text().split() == ["person", "bicycle"]


def test_status_reports_config_problems(tmp_path, repo):
    root = tmp_path / "repo"
    shutil.copytree(repo, root)
    assert all(m.ok for m in repository_status(root))
    cfg = root / "osnet" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("dims: 256", "dims: 224"))
    (root / "osnet_ov" / "config.pbtxt").write_text("name: 'osnet_ov' max_batch_size: lots")
    shutil.rmtree(root / "osnet_ts" / "1")
    status = {m.name: m for m in repository_status(root)}
    assert any("dims [3, 224, 128]" in p for p in status["osnet"].versions[0].problems)
    assert "not a valid Triton model config" in status["osnet_ov"].problems[0]
    assert status["osnet_ts"].problems == ["no version folders"]
    validation = {r.name: r for r in validate_repository(root)}
    assert not validation["osnet"].ok and not validation["osnet_ov"].ok and not validation["osnet_ts"].ok


def test_validate_loads_every_version_and_runs_a_request(repo):
    results = validate_repository(repo)
    assert [(r.name, r.version, r.ok) for r in results] == [("osnet", 1, True), ("osnet_ov", 1, True),
                                                           ("osnet_ts", 1, True)]
    assert results[2].outputs == {"embeddings__0": [1, 512]}


def test_clean_backs_configs_up_before_removing_exports(tmp_path, repo):
    root = tmp_path / "repo"
    shutil.copytree(repo, root)
    (root / "osnet_ts" / "notes.md").write_text("mine")  # not written by modelport: must survive
    with pytest.raises(ModelportError, match="no models named"):
        clean_repository(root, ["nope"], backup=tmp_path / "b0")
    result = clean_repository(root, backup=tmp_path / "backup")
    for name in ("osnet", "osnet_ov", "osnet_ts"):
        assert parse(result.backup / name / "config.pbtxt").name == name
    assert sorted(p.name for p in root.iterdir()) == ["osnet_ts"]
    assert [p.name for p in (root / "osnet_ts").iterdir()] == ["notes.md"]
    with pytest.raises(ModelportError, match="not empty"):
        clean_repository(root, backup=tmp_path / "backup")


def test_yaml_lists_models_and_rejects_unknown_keys(tmp_path, exported_dir):
    shutil.copy(exported_dir / f"{STEM}.onnx", tmp_path / "a.onnx")
    good = tmp_path / "models.yaml"
    good.write_text("models:\n  - source: a.onnx\n    name: first\n    max_batch_size: 4\n"
                    "    preferred_batch_sizes: [2]\n  - source: a.onnx\n    version_policy: all\n")
    entries = read_models_yaml(good)
    assert [e.name for e in entries] == ["first", None]
    assert entries[0].options.max_batch_size == 4 and entries[0].options.preferred_batch_sizes == (2,)
    assert Path(entries[1].source) == tmp_path / "a.onnx"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - source: a.onnx\n    max_batch: 4\n")
    with pytest.raises(CorruptFileError, match=r"unknown keys \['max_batch'\]"):
        read_models_yaml(bad)


def test_bad_options_are_rejected_with_the_accepted_forms():
    for policy in ("latest:0", "newest", "specific:", "specific:a"):
        with pytest.raises(ModelportError, match="version policy"):
            parse_version_policy(policy)
    with pytest.raises(ModelportError, match="max_batch_size"):
        ConfigOptions(max_batch_size=0)


def test_cli_build_status_validate_clean(tmp_path, exported_dir):
    runner = CliRunner()
    root = tmp_path / "repo"
    shutil.copy(exported_dir / f"{STEM}.onnx", tmp_path / "reid.onnx")
    res = runner.invoke(app, ["triton", "build", str(tmp_path / "reid.onnx"), "--repo", str(root),
                              "--preferred", "2,4", "--max-queue-delay-us", "500", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["name"] == "reid"
    assert list(parse(root / "reid" / "config.pbtxt").dynamic_batching.preferred_batch_size) == [2, 4]
    assert runner.invoke(app, ["triton", "status", str(root)]).exit_code == 0
    res = runner.invoke(app, ["triton", "validate", str(root), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)[0]["ok"]
    res = runner.invoke(app, ["triton", "clean", str(root), "--yes", "--backup", str(tmp_path / "bk")])
    assert res.exit_code == 0 and (tmp_path / "bk" / "reid" / "config.pbtxt").is_file()


def _tensorrt_ready() -> str | None:
    from modelport.formats import get_format

    return get_format("tensorrt").unavailable_reason("cuda")


@pytest.mark.skipif(_tensorrt_ready() is not None, reason=f"TensorRT unavailable: {_tensorrt_ready()}")
def test_tensorrt_plan_is_a_bare_engine_with_its_spec_beside_it(tmp_path, exported_dir):
    built = build_model(ModelEntry(str(exported_dir / f"{STEM}.pt"), name="trt", format="tensorrt"),
                        tmp_path / "repo", device="cuda")
    plan = built.path / "model.plan"
    assert not plan.read_bytes().startswith(b"MPTRT")  # Triton deserialises the file as it is
    config = parse(built.config)
    assert config.platform == "tensorrt_plan"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    (result,) = validate_repository(tmp_path / "repo", device="cuda")
    assert result.ok, result.problems


def test_every_source_is_checked_before_anything_is_written(tmp_path, exported_dir):
    from modelport.errors import UnsupportedFormatError, WeightsNotFoundError

    good = ModelEntry(str(exported_dir / f"{STEM}.onnx"))
    with pytest.raises(WeightsNotFoundError, match="missing.onnx: model source not found"):
        build_repository([good, ModelEntry(str(tmp_path / "missing.onnx"))], tmp_path / "repo")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UnsupportedFormatError, match="unrecognised artifact type"):
        build_repository([good, ModelEntry(str(tmp_path / "notes.txt"))], tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_every_config_carries_the_spec_and_format_in_its_parameters(repo, exported_dir):
    from modelport.triton.config import PARAM_FORMAT, config_spec

    for name, fmt, artifact in (("osnet", "onnx", f"{STEM}.onnx"), ("osnet_ov", "openvino", f"{STEM}_openvino_model"),
                                ("osnet_ts", "torchscript", f"{STEM}.torchscript")):
        config = parse(repo / name / "config.pbtxt")
        assert config.parameters[PARAM_FORMAT].string_value == fmt
        assert config_spec(config) == open_artifact(exported_dir / artifact).spec


def test_python_backend_models_are_built_checked_validated_and_cleaned(tmp_path, exported_dir):
    from modelport.triton.python_backend import model_py

    root = tmp_path / "repo"
    res = CliRunner().invoke(app, ["triton", "build", str(exported_dir / f"{STEM}.onnx"), "--repo", str(root),
                                   "--name", "py", "--backend", "python", "--instances", "2"])
    assert res.exit_code == 0, res.output
    build_model(ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="py_ov",
                           options=ConfigOptions(backend="python")), root)
    config = parse(root / "py" / "config.pbtxt")
    assert (config.backend, config.platform, config.default_model_filename) == ("python", "", "")
    assert (root / "py" / "1" / "model.py").read_text() == model_py()
    assert all(r.ok for r in repository_status(root))
    assert [(r.name, r.ok) for r in validate_repository(root)] == [("py", True), ("py_ov", True)]
    with pytest.raises(ExportError, match="one backend"):  # a native version cannot join a Python model
        build_model(ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="py"), root)
    with pytest.raises(ModelportError, match="backend must be one of native, python"):
        ConfigOptions(backend="torch")  # Triton names it pytorch
    result = clean_repository(root, backup=tmp_path / "backup")
    assert not root.exists() or not any(root.iterdir()), result.left_alone


def test_serve_engine_triton_mirrors_configs_as_python_models_keeping_batching(tmp_path, repo):
    from modelport.serve.triton_engine import mirror_repository, python_config
    from modelport.triton.config import PARAM_FORMAT, PARAM_THREADS

    native = parse(repo / "osnet_ov" / "config.pbtxt")
    native.instance_group[0].kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    converted = python_config(native, device="cpu", threads=2)
    assert (converted.backend, converted.platform) == ("python", "")
    assert converted.parameters[PARAM_FORMAT].string_value == "openvino"
    assert converted.parameters[PARAM_THREADS].string_value == "2"
    assert converted.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert (converted.max_batch_size, converted.instance_group[0].count) == (native.max_batch_size, 2)
    assert converted.HasField("dynamic_batching") == native.HasField("dynamic_batching")
    assert mirror_repository(repo, tmp_path / "mirror") == ["osnet", "osnet_ov", "osnet_ts"]
    version = tmp_path / "mirror" / "osnet" / "1"
    assert (version / "model.onnx").is_symlink() and (version / "model.py").is_file()
    assert parse(tmp_path / "mirror" / "osnet" / "config.pbtxt").dynamic_batching == \
        parse(repo / "osnet" / "config.pbtxt").dynamic_batching
    assert not (repo / "osnet" / "1" / "model.py").exists()  # the repository itself is not changed
