"""The factory family: any PyTorch model from the user's own module:function and an export YAML, with two
inputs, through the one export pipeline (stage, verify on seeded inputs of the declared shapes, move)."""

from __future__ import annotations

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
