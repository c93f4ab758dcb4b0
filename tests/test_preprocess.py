"""Shared preprocessing and Runner.embed: accepted inputs, colour order, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modelport.errors import CorruptFileError, WeightsNotFoundError
from modelport.formats.pytorch import PyTorchRunner
from modelport.preprocess import normalize, prepare, resize_all
from modelport.samples import person_crops
from modelport.spec import Preprocess, Source
from modelport.zoo import get_entry, spec_for

PRE = Preprocess(height=256, width=128, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def test_normalize_matches_the_textbook_formula():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 256, 128, 3), dtype=np.uint8)
    expected = ((rgb / 255.0 - np.array(PRE.mean)) / np.array(PRE.std)).transpose(0, 3, 1, 2)
    got = normalize(rgb, PRE)
    assert got.dtype == np.float32 and got.shape == (2, 3, 256, 128)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert normalize(rgb[:0], PRE).shape == (0, 3, 256, 128)


def test_bgr_arrays_pil_images_and_paths_give_the_same_input(tmp_path):
    bgr = person_crops(1, 300, 150, seed=4)[0]
    pil = Image.fromarray(bgr[..., ::-1].copy())
    path = tmp_path / "crop.png"
    pil.save(path)
    a, b, c = prepare([bgr], PRE), prepare([pil], PRE), prepare([path], PRE)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # the colour order matters: feeding the BGR array as if it were RGB gives a different input
    assert not np.allclose(a, prepare([Image.fromarray(bgr)], PRE))


def test_enlarged_crops_stay_within_one_grey_level_of_pillow():
    """Crops smaller than the model input are enlarged with OpenCV (the same bilinear interpolation as
    Pillow's, cheaper); the pixels may differ by rounding only. Larger crops keep Pillow's antialiasing."""
    small = person_crops(1, 110, 40, seed=2)[0]
    pil = Image.fromarray(small[..., ::-1].copy())
    a, b = resize_all([small], PRE).astype(int), resize_all([pil], PRE).astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.5
    bgr_spec = Preprocess(height=256, width=128, mean=PRE.mean, std=PRE.std, channel_order="BGR")
    rgb = resize_all([small], PRE)
    bgr = rgb[..., ::-1] / 255.0  # a BGR-order model gets the planes reversed, then its own mean/std
    expected = ((bgr - np.array(PRE.mean)) / np.array(PRE.std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(normalize(rgb, bgr_spec), expected, atol=1e-5)


def test_single_items_and_float_batches():
    crop = person_crops(1, seed=1)[0]
    assert prepare(crop, PRE).shape == (1, 3, 256, 128)
    batch = prepare(person_crops(3), PRE)
    assert prepare(batch, PRE) is batch
    assert resize_all([], PRE).shape == (0, 256, 128, 3)


def test_bad_inputs_are_rejected_clearly(tmp_path):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        prepare([np.zeros((10, 10), np.uint8)], PRE)
    with pytest.raises(TypeError, match="int"):
        prepare([3], PRE)
    with pytest.raises(WeightsNotFoundError, match="nope.jpg"):
        prepare([tmp_path / "nope.jpg"], PRE)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(CorruptFileError, match="bad.jpg"):
        prepare([bad], PRE)


def test_unreadable_image_is_reported_even_after_ultralytics_patches_pillow(tmp_path):
    # Ultralytics swaps PIL.Image.open for a wrapper that pip-installs pi-heif on unknown files.
    pytest.importorskip("ultralytics")
    import ultralytics.utils.patches  # noqa: F401
    from PIL import Image as PILImage

    assert PILImage.open.__module__ != "PIL.Image"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptFileError, match="bad.png"):
        prepare([bad], PRE)
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 90), (10, 200, 30)).save(good)
    assert prepare([good], PRE).shape == (1, 3, 256, 128)


def test_embed_returns_unit_vectors_that_depend_on_the_input(osnet_model):
    runner = PyTorchRunner(osnet_model, spec_for(get_entry("osnet_x0_25"), Source("random")), None)
    emb = runner.embed(person_crops(6, seed=2))
    assert emb.shape == (6, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[~np.eye(6, dtype=bool)].max() < 0.99  # a BN-calibrated model tells crops apart
    with pytest.raises(ValueError, match="expected input shape"):
        runner(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="float32"):
        runner(np.zeros((1, 3, 256, 128), np.int64))


def test_public_api_names_are_functions_even_after_submodule_imports():
    import modelport
    import modelport.export  # noqa: F401
    import modelport.verify  # noqa: F401

    assert callable(modelport.export) and callable(modelport.verify) and callable(modelport.load)
    assert callable(modelport.benchmark)


@pytest.mark.parametrize("variant", ["float RGB", "float BGR", "in-graph uint8", "centre crop"])
def test_crop_batch_is_exactly_prepare_crop_by_crop(variant):
    from dataclasses import replace

    from modelport.preprocess import CropBatch

    pre = {"float RGB": PRE, "float BGR": replace(PRE, channel_order="BGR"),
           "in-graph uint8": replace(PRE, in_graph=True), "centre crop": replace(PRE, resize="center_crop")}[variant]
    rng = np.random.default_rng(3)
    # Enlarged crops (OpenCV), shrunk ones (Pillow's antialiasing), one of exactly the input size, one strided view.
    crops = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
             [(110, 40, 3), (300, 180, 3), (256, 128, 3), (90, 200, 3)]]
    crops.append(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)[20:150, 30:90])
    batch = CropBatch(8, pre)
    for c in crops:
        batch.add(c)
    got, want = batch.finish(), prepare(crops, pre)
    assert got.dtype == want.dtype and got.shape == want.shape == (
        (5, 256, 128, 3) if pre.in_graph else (5, 3, 256, 128))
    np.testing.assert_array_equal(got, want)
    if not pre.in_graph:  # float inputs: into a given array, and the pixel buffer is reused
        out = np.full((8, 3, 256, 128), np.nan, np.float32)
        assert np.shares_memory(batch.finish(out), out)
        np.testing.assert_array_equal(out[:5], want)
        with pytest.raises(ValueError, match="C-contiguous float32"):
            batch.finish(np.empty((8, 256, 128, 3), np.float32))
        assert batch.empty() is batch and len(batch) == 0
        for c in crops[3:]:  # a shorter batch through the same pixel buffer and channel planes
            batch.add(c)
        np.testing.assert_array_equal(batch.finish(), prepare(crops[3:], pre))
    else:  # the input is the pixel buffer itself: the next batch needs its own
        again = batch.empty()
        assert again is not batch and not np.shares_memory(again.pixels, got) and len(batch) == 5
    full = CropBatch(1, pre)
    full.add(crops[0])
    with pytest.raises(ValueError, match="already holds 1"):
        full.add(crops[1])
    assert CropBatch(4, pre).finish().shape[0] == 0
