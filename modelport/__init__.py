"""modelport: export PyTorch vision models to every runtime, verify them, and load the best one."""

from __future__ import annotations

from modelport.version import __version__  # defined once, in pyproject.toml

# Imported eagerly on purpose: the submodules `export` and `verify` share these names, and a lazy
# attribute would be shadowed by the submodule as soon as anything imported it. Optional runtimes
# (onnxruntime, openvino, tensorrt) are still imported only when a format is used.
from modelport.bench import run_benchmark as benchmark  # noqa: E402
from modelport.discover import load  # noqa: E402
from modelport.export import export  # noqa: E402
from modelport.verify import verify  # noqa: E402

__all__ = ["__version__", "benchmark", "export", "load", "verify"]
