"""Shared fixtures: BatchNorm-calibrated random models (see docs/testing.md) and checkpoints in real layouts."""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from pg_server import pg_url, postgres  # noqa: F401  (a real PostgreSQL + pgvector for the session)
from required_suites import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (CI: no silent skips)

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


def untrained_yolo(path: Path, imgsz: int) -> Path:
    """yolo11n with seeded weights, BatchNorm-calibrated on street scenes at ``imgsz``, saved as Ultralytics does."""
    import warnings

    from modelport.detect.untrained import save_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_untrained(path, "yolo11n", seed=0, imgsz=imgsz)


@dataclass
class BuiltinServer:
    """modelport's builtin server running in a thread of this process; ``address`` is ``127.0.0.1:PORT``."""

    server: Any  # uvicorn.Server
    thread: threading.Thread
    address: str

    def stop(self) -> None:
        """Stop serving (again: nothing); a test may stop it early to see a server go away."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def builtin_server(repo: Path, timeout: float = 60.0) -> Iterator[BuiltinServer]:
    """Serve the model repository ``repo`` with the builtin engine on a free loopback port until the block ends."""
    import uvicorn

    from modelport.serve import create_app
    from modelport.triton.server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(repo), host="127.0.0.1", port=port, log_level="warning"))
    running = BuiltinServer(server, threading.Thread(target=server.run, daemon=True), f"127.0.0.1:{port}")
    running.thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not running.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the builtin server for {repo} did not start within {timeout:.0f} s")
            time.sleep(0.05)
        yield running
    finally:
        running.stop()
