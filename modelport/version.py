"""The package version, defined once (in pyproject.toml) and read from the installed metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelport")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
