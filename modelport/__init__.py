"""modelport: export PyTorch vision models to every runtime, verify them, and load the best one."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "export", "load", "verify"]


def __getattr__(name: str):
    # Lazy so that `import modelport` stays cheap and never fails on a missing optional runtime.
    if name == "export":
        from modelport.export import export

        return export
    if name == "load":
        from modelport.discover import load

        return load
    if name == "verify":
        from modelport.verify import verify

        return verify
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")
