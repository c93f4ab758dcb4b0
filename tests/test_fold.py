"""Preprocessing folded into the graph (``--uint8-input``): same embeddings from raw pixels, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_plain

from modelport import load
from modelport.errors import ExportError
from modelport.export import available_formats, export_all
from modelport.fold import FoldedPreprocess, fold
from modelport.preprocess import normalize, prepare, resize_all
from modelport.samples import person_crops
from modelport.spec import Source
from modelport.verify import verify
from modelport.zoo import build, get_entry, spec_for


@pytest.fixture(scope="module")
def folded(tmp_path_factory, osnet_model) -> Path:
    """Weights with a plain ONNX export and uint8-input exports to every usable format beside them."""
    folder = tmp_path_factory.mktemp("folded")
    weights = save_plain(osnet_model, folder / "osnet_x0_25_msmt17.pt", 512)
    plain = export_all(weights, "onnx")
    assert all(r.ok for r in plain)
    results = export_all(weights, uint8_input=True)
    assert results and all(r.ok for r in results), [r.error for r in results]
    return weights


def test_exports_are_tagged_take_uint8_pixels_and_leave_the_source_alone(folded):
    before = folded.read_bytes()
    names = sorted(p.name for p in folded.parent.iterdir() if "uint8in" in p.name)
    expected = {"onnx": "osnet_x0_25_msmt17.uint8in.onnx", "torchscript": "osnet_x0_25_msmt17.uint8in.torchscript",
                "openvino": "osnet_x0_25_msmt17_uint8in_openvino_model"}
    assert sorted(expected[f.id] for f in available_formats() if f.id in expected) == names
    for name in names:
        runner = load(folded.parent / name)
        image = runner.spec.inputs[0]
        assert (image.dtype, image.shape[1:]) == ("uint8", (256, 128, 3))
        assert runner.spec.preprocess.in_graph
        assert runner.spec.source.sha256 == load(folded).spec.source.sha256  # same weights, same ReID key
    assert folded.read_bytes() == before
    # Discovery of the plain siblings is unchanged: a tagged variant is never picked by default.
    assert load(folded).path.name == "osnet_x0_25_msmt17.onnx"


def test_embeddings_match_the_float_export_on_the_same_crops(folded):
    crops = person_crops(7, 300, 140, seed=11)  # not the model's size: the host still resizes
    reference = load(folded.parent / "osnet_x0_25_msmt17.onnx").embed(crops)
    for name in ("osnet_x0_25_msmt17.uint8in.onnx", "osnet_x0_25_msmt17.uint8in.torchscript"):
        got = load(folded.parent / name).embed(crops)
        assert np.abs(got - reference).max() < 1e-4
        assert (got * reference).sum(axis=1).min() > 0.99999


def test_verify_compares_uint8_and_float_inputs_on_identical_pixels(folded):
    report = verify([folded.parent / "osnet_x0_25_msmt17.uint8in.onnx", folded.parent / "osnet_x0_25_msmt17.onnx"],
                    folded)
    assert report.passed, [r.outputs for r in report.results]
    assert len(report.results) == 2


def test_wrong_input_is_a_clear_error(folded):
    runner = load(folded.parent / "osnet_x0_25_msmt17.uint8in.onnx")
    floats = prepare(person_crops(2, seed=1), replace(runner.spec.preprocess, in_graph=False))
    with pytest.raises(ValueError, match="uint8"):
        runner(floats)
    pixels = prepare(person_crops(2, seed=1), runner.spec.preprocess)
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 256, 128, 3)
    assert runner.embed(pixels, prepared=True).shape == (2, 512)


def test_bgr_trained_models_get_rgb_pixels_flipped_inside(osnet_model):
    spec = spec_for(get_entry("osnet_x0_25"), Source("random"))
    bgr = replace(spec, preprocess=replace(spec.preprocess, channel_order="BGR"))
    wrapped, folded_spec = fold(osnet_model, bgr)
    assert isinstance(wrapped, FoldedPreprocess) and folded_spec.preprocess.channel_order == "RGB"
    pixels = resize_all(person_crops(3, seed=4), spec.preprocess)
    with torch.no_grad():
        got = wrapped(torch.from_numpy(pixels)).numpy()
        want = osnet_model(torch.from_numpy(normalize(pixels, bgr.preprocess))).numpy()
        unflipped = osnet_model(torch.from_numpy(normalize(pixels, spec.preprocess))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got - unflipped).max() > 1e-3  # the flip is real, so the check above means something


def test_refused_combinations(osnet_model, tmp_path):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    with pytest.raises(ExportError, match="fp32 only"):
        export_all(weights, "onnx", uint8_input=True, precision="int8")
    built = build(weights)
    detector = replace(built.spec, task="detect")
    with pytest.raises(ExportError, match="image embedders"):
        fold(built.module, detector)


def test_cli_flag_writes_the_variant(osnet_model, tmp_path):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    proc = subprocess.run([sys.executable, "-m", "modelport.cli", "export", str(weights), "--format", "onnx",
                           "--uint8-input"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "osnet_x0_25_msmt17.uint8in.onnx").is_file()
    assert not (tmp_path / "osnet_x0_25_msmt17.onnx").exists()


def test_reid_extract_with_a_uint8_export_stores_the_same_embeddings(folded, tmp_path):
    from modelport.reid import store
    from modelport.reid.extract import extract
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    scene = write_demo_data(tmp_path / "scene", people=3, frames=40, seed=5)
    vectors = []
    for name in ("osnet_x0_25_msmt17.onnx", "osnet_x0_25_msmt17.uint8in.onnx"):
        db = tmp_path / f"{name}.db"
        import_mot(db, scene.video, scene.detections)
        result = extract(db, load(folded.parent / name), batch=8)
        assert result.computed > 20
        conn = store.connect(db)
        try:
            vectors.append(store.load_detections(conn, "person", result.model.key)[1])
        finally:
            conn.close()
    assert vectors[0].shape == vectors[1].shape
    assert (vectors[0] * vectors[1]).sum(axis=1).min() > 0.99999
