"""The PyTorch reference runner: a model built from a checkpoint (or random weights) by a registered builder.

The builders (the torchreid zoo, later any family) sit above the formats, so they are registered from above
by name, as ``module:function``, and imported only when a weights file is opened: this module never imports
them, and registering one costs nothing at ``import modelport``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelport.errors import ConfigError, UnknownArchitectureError, UnsupportedFormatError
from modelport.formats.base import ExportOptions, Runner
from modelport.formats.torch_call import run_module, torch_device
from modelport.spec import ModelSpec


class Built(Protocol):
    """What a builder returns: the module in eval mode and its spec."""

    module: Any
    spec: ModelSpec


class Builder(Protocol):
    def __call__(self, weights: Path | None, *, arch: str | None = ..., allow_random: bool = ...) -> Built: ...


# name -> "module:function", in asking order: the first builder that knows the architecture builds it.
BUILDERS: dict[str, str] = {}


def register_builder(name: str, target: str) -> None:
    """Register ``target`` (``"package.module:function"``, a :class:`Builder`) to build weights files."""
    module, _, function = target.partition(":")
    if not module or not function:
        raise ConfigError(f"builder {target!r} is not 'module:function'")
    if BUILDERS.get(name, target) != target:
        raise ConfigError(f"a PyTorch builder named {name!r} is already registered ({BUILDERS[name]})",
                          hint=f"registered: {', '.join(BUILDERS)}")
    BUILDERS[name] = target


def _builder(target: str) -> Builder:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def build(path: Path | None, *, arch: str | None = None, allow_random: bool = False) -> Built:
    """The model and spec of ``path`` from the first registered builder that knows its architecture."""
    if not BUILDERS:
        raise UnsupportedFormatError(f"{path}: no PyTorch model builder is registered",
                                     hint="modelport registers its zoo at import; register one with register_builder")
    first: UnknownArchitectureError | None = None
    for target in BUILDERS.values():
        try:
            return _builder(target)(path, arch=arch, allow_random=allow_random)
        except UnknownArchitectureError as exc:
            first = first or exc
    assert first is not None
    raise first


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
    return build(path, arch=arch).spec


def load(path: Path, device: str = "cpu", arch: str | None = None, allow_random: bool = False) -> PyTorchRunner:
    built = build(path, arch=arch, allow_random=allow_random)
    return PyTorchRunner(built.module, built.spec, path, device)
