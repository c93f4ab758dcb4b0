"""modelport: export PyTorch vision models to every runtime, verify them, and load the best one.

``import modelport`` is light: torch, the runtimes and the model families are imported by the code that
uses them, so the CLI's help, its error paths and ``modelport verify PACKAGE`` on an edge box without
PyTorch do not pay for them.
"""

from __future__ import annotations

from typing import Any

# `export` and `verify` are both submodules and functions of the same name: they are bound eagerly (the
# modules import only light code at the top), since a submodule import would replace a lazy attribute.
from modelport import export as _export_module, verify as _verify_module  # noqa: F401 - submodules first, so the
from modelport.api import export, verify  # functions bound below stay the names; every family, typed arguments
from modelport.formats.pytorch import register_builder
from modelport.version import __version__  # defined once, in pyproject.toml

# The composition root: the PyTorch format (a low layer) builds weights files with the zoo (above it), named
# here and imported only when a weights file is opened.
register_builder("zoo", "modelport.zoo:build")

__all__ = ["__version__", "benchmark", "export", "load", "verify"]


def __getattr__(name: str) -> Any:
    if name == "benchmark":
        from modelport.api import benchmark

        return benchmark
    if name == "load":
        from modelport.api import load

        return load
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")
