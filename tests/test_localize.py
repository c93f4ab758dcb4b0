"""verify --localize names the node where a broken export departs from PyTorch; --plot and --tol explain more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from modelport.discover import open_artifact
from modelport.localize import localize, module_path
from modelport.verify import SeededInputs


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"})


def break_conv(source: Path, dest: Path, node_name: str | None = None, scale: float = 1.1, index: int = 20) -> str:
    """Write ``source`` to ``dest`` with one convolution's weights times ``scale``: the one named ``node_name``, else
    the ``index``-th; returns its node name."""
    model = onnx.load(str(source))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    node = next(n for n in convs if n.name == node_name) if node_name else convs[index]
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * scale, weight.name))
    onnx.save(model, str(dest))
    return node.name


@pytest.fixture(scope="module")
def broken(exported_dir, tmp_path_factory) -> tuple[Path, str]:
    """The ONNX export with one convolution in the middle of the network scaled by 1.1, and that node's name."""
    path = tmp_path_factory.mktemp("broken") / "osnet_x0_25_msmt17.onnx"
    return path, break_conv(exported_dir / "osnet_x0_25_msmt17.onnx", path)


@pytest.fixture(scope="module")
def reference(exported_dir):
    ref = open_artifact(exported_dir / "osnet_x0_25_msmt17.pt")
    return ref, SeededInputs.of(ref.spec, 4, 0).batch


def test_scopes_map_to_module_paths():
    modules = {"conv2", "conv2.0", "conv2.0.conv2d", "conv2.0.conv2d.0", "conv2.0.conv2d.0.conv1", "fc", "fc.1"}
    assert module_path("/conv2/conv2.0/conv2d/conv2d.0/conv1", modules) == "conv2.0.conv2d.0.conv1"
    assert module_path("/fc/fc.1", modules) == "fc.1"
    assert module_path("/nowhere/x", modules) is None


def test_a_correct_export_has_no_departure(exported_dir, reference):
    ref, batch = reference
    for artifact in ("osnet_x0_25_msmt17.onnx", "osnet_x0_25_msmt17_openvino_model"):
        found = localize(exported_dir / artifact, ref.module, batch)
        assert found.departure is None, found.summary()
        assert len(found.boundaries) > 100  # it really compared the inside of the network


def test_the_broken_node_is_named_in_onnx_and_openvino(broken, reference, tmp_path):
    import openvino as ov

    path, node = broken
    ref, batch = reference
    found = localize(path, ref.module, batch)
    assert found.departure is not None and found.departure.node == node, found.summary()
    folder = tmp_path / "osnet_x0_25_msmt17_openvino_model"
    folder.mkdir()
    ov.save_model(ov.convert_model(str(path)), str(folder / "osnet_x0_25_msmt17.xml"), compress_to_fp16=False)
    found = localize(folder, ref.module, batch)
    assert found.departure is not None and found.departure.node == node, found.summary()


@pytest.mark.parametrize("node, scale", [
    ("/conv1/conv/Conv", 1.1),  # early: the stem, its BatchNorm folded in
    ("/conv2/conv2.0/conv2b/conv2b.1/conv2/Conv", 1.1),  # middle: a depthwise conv of one branch
    # Issue 27: the block's shortcut (downsample, BatchNorm folded) comes first in the graph; with conv3 broken,
    # every boundary after the add disagrees, so nothing downstream showed the shortcut's disagreement healing.
    ("/conv3/conv3.0/conv3/conv/Conv", -1.0),
    ("/conv3/conv3.0/downsample/conv/Conv", -1.0),  # the sibling itself broken
    ("/conv4/conv4.1/conv3/conv/Conv", 1.1),  # late: the last block
    ("/conv5/conv/Conv", 1.1),  # the last convolution
])
def test_the_broken_node_is_named_at_every_depth(exported_dir, reference, tmp_path, node, scale):
    ref, batch = reference
    path = tmp_path / "osnet_x0_25_msmt17.onnx"
    break_conv(exported_dir / "osnet_x0_25_msmt17.onnx", path, node, scale)
    found = localize(path, ref.module, batch)
    assert found.departure is not None and found.departure.node == node, found.summary()


def test_a_folded_convolution_is_compared_with_its_batchnorm_output(exported_dir, reference):
    """The exporter folds each BatchNorm into the convolution before it: that node's output is the BatchNorm's
    output, so the convolution's boundary agrees with it rather than disagreeing until something heals."""
    ref, batch = reference
    found = localize(exported_dir / "osnet_x0_25_msmt17.onnx", ref.module, batch)
    folded = [b for b in found.boundaries if b.module.endswith("downsample.conv") or b.module == "conv1.conv"]
    assert folded and all(b.agrees(1e-4, 0.9999) for b in folded), folded


def test_verify_localize_plot_and_per_output_tolerance_from_the_cli(exported_dir, broken, tmp_path):
    path, node = broken
    plot = tmp_path / "errors.png"
    result = run("verify", str(exported_dir / "osnet_x0_25_msmt17.pt"), str(path), "--localize", "--plot", str(plot))
    assert result.returncode == 1, result.stderr
    assert f"first departs from PyTorch at node {node}" in result.stdout
    assert plot.stat().st_size > 10_000
    loose = run("verify", str(exported_dir / "osnet_x0_25_msmt17.pt"), str(path), "--tol", "embeddings:max_abs=none",
                "--tol", "embeddings:min_cosine=0.5", "--json", "-")
    assert loose.returncode == 0, loose.stdout + loose.stderr
    row = json.loads(loose.stdout)["results"][0]["outputs"][0]
    assert row["p99_abs"] <= row["max_abs"] and row["p50_abs"] <= row["p99_abs"]
    bad = run("verify", str(exported_dir / "osnet_x0_25_msmt17.pt"), str(path), "--tol", "embeddings:speed=1")
    assert bad.returncode == 2 and "OUTPUT:KEY=VALUE" in bad.stderr
