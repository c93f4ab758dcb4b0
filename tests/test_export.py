"""Export: locations, embedded metadata, dynamic and fixed batch, and what a failed export leaves behind."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import save_plain

from modelport.discover import open_artifact
from modelport.errors import ExportError, UnsupportedFormatError, VerificationError
from modelport.export import export, export_all
from modelport.formats import get_format
from modelport.formats.base import example_batch
from modelport.samples import person_crops
from modelport.spec import sha256_file
from modelport.zoo import BuiltModel, build

FORMATS = ("onnx", "torchscript", "openvino")


def test_exports_land_next_to_the_weights_with_standard_names(exported):
    folder = exported.parent
    assert (folder / "osnet_x0_25_msmt17.onnx").is_file()
    assert (folder / "osnet_x0_25_msmt17.torchscript").is_file()
    ov_dir = folder / "osnet_x0_25_msmt17_openvino_model"
    assert (ov_dir / "osnet_x0_25_msmt17.xml").is_file() and (ov_dir / "metadata.json").is_file()
    # nothing half-written is left behind
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_artifact_embeds_the_spec(exported, fmt):
    path = get_format(fmt).artifact_path(exported.parent, "osnet_x0_25_msmt17")
    spec = get_format(fmt).read_spec(path)
    assert spec.name == "osnet_x0_25" and spec.task == "embed"
    assert spec.inputs[0].name == "images" and spec.inputs[0].shape == ("batch", 3, 256, 128)
    assert spec.outputs[0].shape == ("batch", 512)
    assert spec.preprocess.mean == (0.485, 0.456, 0.406) and spec.preprocess.height == 256
    assert spec.source.kind == "weights" and spec.source.sha256 == sha256_file(exported)
    assert spec.source.file.endswith("osnet_x0_25_msmt17.pt")
    assert spec.modelport_version


def test_onnx_metadata_is_standard_metadata_props(exported):
    model = onnx.load(str(exported.with_suffix(".onnx")))
    keys = {p.key for p in model.metadata_props}
    assert "modelport" in keys
    assert model.opset_import[0].version == 17
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"


@pytest.mark.parametrize("fmt", FORMATS)
def test_dynamic_batch_artifacts_accept_any_batch_size(exported, osnet_model, fmt):
    runner = open_artifact(get_format(fmt).artifact_path(exported.parent, "osnet_x0_25_msmt17"))
    assert runner.max_batch is None
    for n in (1, 3, 70):  # 70 > the runner's internal chunk of 64
        batch = example_batch(runner.spec, count=n, seed=n)
        with torch.no_grad():
            expected = osnet_model(torch.from_numpy(batch)).numpy()
        got = runner(batch)["embeddings"]
        assert got.shape == (n, 512)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-4)


def test_fixed_batch_models_pad_and_chunk_transparently(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_fixed.pt", 512)
    paths = export(weights, "onnx,openvino", batch=16, out=tmp_path / "fixed")
    model = onnx.load(str(paths[0]))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 16
    reference = open_artifact(weights)
    for path in paths:
        runner = open_artifact(path)
        assert runner.max_batch == 16
        for n in (5, 40):
            crops = person_crops(n, seed=n)
            np.testing.assert_allclose(runner.embed(crops), reference.embed(crops), atol=1e-5)


def test_out_dir_and_returned_paths(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pth.tar", 512)
    paths = export(weights, ["onnx"], out=tmp_path / "elsewhere")
    assert paths == [tmp_path / "elsewhere" / "osnet_x0_25_msmt17.onnx"]
    assert not (tmp_path / "osnet_x0_25_msmt17.onnx").exists()


def test_untrained_models_are_labelled_random_in_every_artifact(tmp_path):
    with pytest.warns(UserWarning, match="RANDOM"):
        paths = export(None, "onnx,torchscript", arch="osnet_x0_25", allow_random=True, out=tmp_path)
    assert [p.name for p in paths] == ["osnet_x0_25_untrained.onnx", "osnet_x0_25_untrained.torchscript"]
    for path in paths:
        assert open_artifact(path).spec.source.kind == "random"


class TraceOnlyBug(torch.nn.Module):
    """Computes something different when traced/exported than in eager mode: a classic export bug."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return out * 1.01
        return out


def test_failed_verification_leaves_no_artifact(tmp_path, osnet_model, monkeypatch):
    import importlib

    export_module = importlib.import_module("modelport.export")  # the module; modelport.export is the function
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    good = build(weights)
    buggy = BuiltModel(TraceOnlyBug(good.module), good.spec, good.entry)
    references, original = [], export_module.verification_batch

    def counted(*args, **kwargs):  # PyTorch's outputs: computed once per run, both formats judged against them
        references.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(export_module, "verification_batch", counted)
    results = export_all(weights, "onnx,torchscript", built=buggy)
    assert len(references) == 1
    for result in results:
        assert not result.ok and result.path is None
        assert "verification failed" in result.error and "max abs diff" in result.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["osnet_x0_25_msmt17.pt"]
    with pytest.raises(VerificationError, match="onnx"):
        export(weights, "onnx", built=buggy)


def test_reexport_replaces_the_previous_artifact(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    first = export(weights, "onnx")[0]
    before = get_format("onnx").read_spec(first).source.sha256
    save_plain(osnet_model, weights, 512, classes=751)  # same backbone, new file bytes
    second = export(weights, "onnx")[0]
    assert second == first and get_format("onnx").read_spec(second).source.sha256 != before


def test_exports_never_clobber_the_source_file(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_weights.torchscript", 512)
    original = weights.read_bytes()
    with pytest.raises(ExportError, match="refusing to overwrite"):
        export(weights, "torchscript", arch="osnet_x0_25")
    assert weights.read_bytes() == original


def test_bad_format_names_are_rejected(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    with pytest.raises(UnsupportedFormatError, match="'tflite'"):
        export(weights, "tflite")
    with pytest.raises(ExportError, match="source format"):
        export(weights, "pytorch")


def test_simplified_onnx_still_verifies_and_keeps_metadata(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    plain = export(weights, "onnx", out=tmp_path / "plain")[0]
    slim = export(weights, "onnx", out=tmp_path / "slim", simplify=True)[0]
    nodes = lambda p: len(onnx.load(str(p)).graph.node)  # noqa: E731
    assert nodes(slim) <= nodes(plain)
    assert get_format("onnx").read_spec(slim).name == "osnet_x0_25"
    assert open_artifact(slim).max_batch is None
