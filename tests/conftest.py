"""Shared fixtures: BatchNorm-calibrated random models (see docs/testing.md) and checkpoints in real layouts."""

from __future__ import annotations

import os
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
# Documents whose blocks serve on fixed ports (8000, 8080, 9000-9002, as a reader would): run by one worker.
FIXED_PORT_DOCUMENTS = ("README.md", "docs/triton.md", "docs/ui.md")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (the README's ``-n 2``) each worker keeps to cores of its own: one each on a 2-core
    machine. ONNX Runtime, OpenVINO and torch size their thread pools by the cores they may use
    (``modelport.machine.physical_cores``), and so do the CLI processes and document blocks a worker starts: two
    workers sharing both cores ran two-thread pools each, whose threads waited on each other's core
    (docs/testing.md)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and hasattr(os, "sched_setaffinity")):
        return
    index, workers = int(worker[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(os.sched_getaffinity(0))
    mine = cpus[index::workers] if len(cpus) >= workers else [cpus[index % len(cpus)]]
    os.sched_setaffinity(0, set(mine))
    torch.set_num_threads(len(mine))


def xdist_scope(nodeid: str) -> str:
    """The unit pytest-xdist gives one worker: a test file (its module and session fixtures are built once), but
    each document of tests/test_docs.py on its own (its blocks share a scratch folder and run in order), and the
    documents that serve on fixed ports together."""
    path, _, name = nodeid.partition("::")
    if path.endswith("test_docs.py") and name.startswith("test_block_runs_as_written["):
        document = name[len("test_block_runs_as_written["):].rsplit(":", 1)[0]
        return "fixed-ports" if document in FIXED_PORT_DOCUMENTS else f"{path}::{document}"
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByFileAndDocument(LoadScopeScheduling):
        """xdist's scope scheduling over ``xdist_scope``'s units, the documents first: they are the longest units
        (a minute to several), and one started last would keep a worker busy while the other idles."""

        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:
                self.ordered = True
                documents = [scope for scope in self.workqueue if not scope.endswith(".py")]
                for scope in reversed(documents):
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return ByFileAndDocument(config, log)


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
