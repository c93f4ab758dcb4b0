"""Shared fixtures: BatchNorm-calibrated random models (see docs/testing.md) and checkpoints in real layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from modelport.zoo.calibrate import calibrated_untrained

MSMT17_CLASSES = 1041
MARKET1501_CLASSES = 751


def calibrated_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A random-init zoo model whose BatchNorm statistics were estimated on 24 varied synthetic crops
    (cheap; the ReID clustering tests use the demo's 64-crop calibration)."""
    return calibrated_untrained(arch, seed, batches=3, batch_size=8, crop_seed=seed * 10)


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
