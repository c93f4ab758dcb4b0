"""The PyTorch reference runner: a zoo model built from a checkpoint (or random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelport.errors import UnsupportedFormatError
from modelport.formats.base import ExportOptions, Runner, run_module, torch_device
from modelport.spec import ModelSpec


class PyTorchRunner(Runner):
    format_id = "pytorch"

    def __init__(self, module, spec: ModelSpec, path: Path | None, device: str = "cpu") -> None:
        device = torch_device(device, path or spec.name)
        super().__init__(spec, path, device)
        import torch

        self.settings = {"mode": "eager", "torch_threads": torch.get_num_threads()}
        self.module = module.to(device).eval()

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return run_module(self.module, self.spec, self.device, (batch,))

    def _infer_many(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_module(self.module, self.spec, self.device, tuple(feeds[t.name] for t in self.spec.inputs))


def export(module, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    raise UnsupportedFormatError("PyTorch is the source format; there is nothing to export to")


def read_spec(path: Path, arch: str | None = None) -> ModelSpec:
    from modelport.zoo import build

    return build(path, arch=arch).spec


def load(path: Path, device: str = "cpu", arch: str | None = None, allow_random: bool = False) -> PyTorchRunner:
    from modelport.zoo import build

    built = build(path, arch=arch, allow_random=allow_random)
    return PyTorchRunner(built.module, built.spec, path, device)
