"""Shared fixtures: BatchNorm-calibrated random models (see TESTING.md) and checkpoints in real layouts."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from modelport.preprocess import prepare
from modelport.samples import person_crops
from modelport.zoo import RandomWeightsWarning, build
from modelport.zoo.calibrate import calibrate_batchnorm

MSMT17_CLASSES = 1041
MARKET1501_CLASSES = 751


def calibrated_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A random-init zoo model whose BatchNorm statistics were estimated on varied synthetic crops."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        built = build(arch=arch, allow_random=True)
    pre = built.spec.preprocess
    batches = [torch.from_numpy(prepare(person_crops(8, pre.height, pre.width, seed=seed * 10 + i), pre))
               for i in range(3)]
    return calibrate_batchnorm(built.module, batches)


def with_classifier(model: torch.nn.Module, num_classes: int, feature_dim: int) -> dict[str, torch.Tensor]:
    """The model's state dict plus a training classifier head, as torchreid saves it."""
    state = dict(model.state_dict())
    state["classifier.weight"] = torch.randn(num_classes, feature_dim)
    state["classifier.bias"] = torch.zeros(num_classes)
    return state


def save_plain(model: torch.nn.Module, path: Path, feature_dim: int, classes: int = MSMT17_CLASSES) -> Path:
    """BoxMOT / model-zoo layout: a plain state dict with the classifier of its training set."""
    torch.save(with_classifier(model, classes, feature_dim), path)
    return path


def save_trainer(model: torch.nn.Module, path: Path, feature_dim: int, classes: int = MARKET1501_CLASSES) -> Path:
    """torchreid trainer layout after multi-GPU training: ``module.`` keys under ``state_dict``."""
    state = {f"module.{k}": v for k, v in with_classifier(model, classes, feature_dim).items()}
    torch.save({"state_dict": state, "epoch": 60, "rank1": 0.5, "optimizer": {}}, path)
    return path


@pytest.fixture(scope="session")
def osnet_model() -> torch.nn.Module:
    return calibrated_model("osnet_x0_25")


@pytest.fixture(scope="session")
def exported_dir(tmp_path_factory, osnet_model) -> Path:
    """``osnet_x0_25_msmt17.pt`` with ONNX, TorchScript and OpenVINO exports beside it (made once)."""
    from modelport.export import export

    folder = tmp_path_factory.mktemp("exported")
    weights = save_plain(osnet_model, folder / "osnet_x0_25_msmt17.pt", 512)
    export(weights, "onnx,torchscript,openvino")
    return folder


@pytest.fixture
def exported(exported_dir, tmp_path) -> Path:
    """A private copy of ``exported_dir`` that a test may change; returns the weights path."""
    target = tmp_path / "models"
    shutil.copytree(exported_dir, target)
    return target / "osnet_x0_25_msmt17.pt"
