"""Checkpoint layouts, architecture inference, strict loading and the errors for bad files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import MARKET1501_CLASSES, calibrated_model, save_plain, save_trainer

from modelport.errors import (
    CorruptFileError,
    NotACheckpointError,
    RandomWeightsNotAllowedError,
    UnknownArchitectureError,
    UnsafeCheckpointError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from modelport.formats.pytorch import PyTorchRunner
from modelport.naming import weights_stem
from modelport.samples import person_crops
from modelport.zoo import RandomWeightsWarning, build, infer_architecture, save_untrained


def _embed(module, spec):
    return PyTorchRunner(module, spec, None).embed(person_crops(4, seed=3))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pth.tar"])
def test_plain_and_trainer_layouts_load_and_match_the_original(tmp_path, osnet_model, suffix):
    plain = save_plain(osnet_model, tmp_path / f"osnet_x0_25_msmt17{suffix}", 512)
    trainer = save_trainer(osnet_model, tmp_path / f"osnet_x0_25_market1501_trainer{suffix}", 512)
    reference = build(plain)
    expected = _embed(osnet_model, reference.spec)
    for path in (plain, trainer):
        built = build(path)
        assert built.spec.name == "osnet_x0_25"
        assert built.spec.source.kind == "weights" and len(built.spec.source.sha256) == 64
        np.testing.assert_allclose(_embed(built.module, built.spec), expected, atol=1e-6)


@pytest.mark.parametrize(
    "filename, arch",
    [
        ("osnet_x0_25_msmt17.pt", "osnet_x0_25"),
        ("osnet_x1_0_market1501.pth.tar", "osnet_x1_0"),
        ("osnet_x0_5_dukemtmcreid.pth", "osnet_x0_5"),
        ("OSNet_X0_75_imagenet.pth", "osnet_x0_75"),
        ("mobilenetv2_x1_0_msmt17.pt", "mobilenetv2_x1_0"),
        ("resnet50_market.pt", "resnet50"),
        ("densenet121_duke.pth.tar", "densenet121"),
        ("my_model.pt", None),
    ],
)
def test_architecture_is_inferred_from_the_file_name(filename, arch):
    assert infer_architecture(filename) == arch


def test_weights_stem_strips_compound_suffixes():
    assert weights_stem("a/osnet_x1_0_market1501.pth.tar") == "osnet_x1_0_market1501"
    assert weights_stem("osnet_x0_25_msmt17.pt") == "osnet_x0_25_msmt17"


def test_unknown_architecture_names_the_file_and_the_choices(tmp_path, osnet_model):
    path = save_plain(osnet_model, tmp_path / "reid_model.pt", 512)
    with pytest.raises(UnknownArchitectureError) as info:
        build(path)
    assert "reid_model.pt" in info.value.message and "osnet_x0_25" in info.value.hint
    with pytest.raises(UnknownArchitectureError, match="'osnet_x9'"):
        build(path, arch="osnet_x9")
    assert build(path, arch="osnet_x0_25").spec.name == "osnet_x0_25"


def test_classifier_of_any_size_is_ignored(tmp_path, osnet_model):
    for classes in (1, MARKET1501_CLASSES, 5000):
        path = save_plain(osnet_model, tmp_path / f"osnet_x0_25_{classes}.pt", 512, classes=classes)
        assert build(path).spec.outputs[0].shape == ("batch", 512)


def test_weights_of_another_architecture_are_rejected_with_shapes(tmp_path, osnet_model):
    path = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    with pytest.raises(WeightsMismatchError) as info:
        build(path, arch="osnet_x1_0")
    assert "wrong shape" in info.value.message and "osnet_x1_0" in info.value.message
    assert str(path) in info.value.message


def test_missing_and_unexpected_keys_are_listed(tmp_path, osnet_model):
    state = dict(osnet_model.state_dict())
    dropped = "conv1.conv.weight"
    del state[dropped]
    state["extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "osnet_x0_25_broken.pt"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError) as info:
        build(path)
    assert dropped in info.value.message and "extra_head.weight" in info.value.message
    assert "missing 1" in info.value.message and "unexpected 1" in info.value.message


def test_checkpoints_without_batchnorm_counters_still_load(tmp_path, osnet_model):
    state = {k: v for k, v in osnet_model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "osnet_x0_25_old.pt"
    torch.save(state, path)
    assert build(path).spec.name == "osnet_x0_25"


def test_missing_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nothere.pt"):
        build(tmp_path / "osnet_x0_25_nothere.pt")


def test_truncated_file_is_reported_as_corrupted(tmp_path, osnet_model):
    good = save_plain(osnet_model, tmp_path / "osnet_x0_25_good.pt", 512)
    bad = tmp_path / "osnet_x0_25_truncated.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="truncated or corrupted"):
        build(bad)


def test_garbage_bytes_are_reported_as_corrupted(tmp_path):
    bad = tmp_path / "osnet_x0_25_garbage.pt"
    bad.write_bytes(b"\x00\x01not a checkpoint" * 100)
    with pytest.raises(CorruptFileError):
        build(bad)


class Arbitrary:
    """A Python object: unpickling it would run code, so weights_only loading refuses."""


def test_pickle_of_python_objects_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "osnet_x0_25_object.pt"
    torch.save({"model": Arbitrary()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refers to test_checkpoints\.Arbitrary"):
        build(path)
    raw = tmp_path / "osnet_x0_25_rawpickle.pt"
    raw.write_bytes(pickle.dumps(Arbitrary()))
    with pytest.raises((NotACheckpointError, CorruptFileError)):
        build(raw)


@pytest.mark.parametrize("payload", [[1, 2, 3], {"epoch": 3, "name": "x"}, torch.zeros(3)])
def test_files_without_a_state_dict_are_rejected(tmp_path, payload):
    path = tmp_path / "osnet_x0_25_notweights.pt"
    torch.save(payload, path)
    with pytest.raises(NotACheckpointError):
        build(path)


def test_random_weights_need_permission_and_are_labelled(tmp_path):
    with pytest.raises(RandomWeightsNotAllowedError):
        build(arch="osnet_x0_25")
    with pytest.warns(RandomWeightsWarning):
        built = build(arch="osnet_x0_25", allow_random=True)
    assert built.spec.source.kind == "random" and built.spec.is_random
    path = save_untrained(calibrated_model("osnet_x0_25"), tmp_path / "osnet_x0_25_untrained.pt")
    with pytest.warns(RandomWeightsWarning):
        again = build(path)
    assert again.spec.source.kind == "random" and again.spec.source.sha256
