"""Confine every path the dashboard touches to its --root: resolved, symlinks followed, nothing outside."""

from __future__ import annotations

from pathlib import Path

from modelport.errors import ModelportError


class OutsideRootError(ModelportError, PermissionError):
    """A requested path resolves outside the dashboard's root (``..``, an absolute path, a symlink out)."""


class BadPathError(ModelportError, ValueError):
    """A requested path is malformed or names nothing usable."""


def confine(root: Path, value: str | Path, *, must_exist: bool = True) -> Path:
    """The absolute, symlink-resolved path ``value`` names under ``root``.

    ``value`` is taken relative to ``root`` (an absolute one must still land inside it). Anything that
    resolves outside ``root`` raises OutsideRootError; with ``must_exist`` a missing path is a BadPathError.
    """
    root = Path(root).resolve(strict=True)
    text = str(value)
    if not text.strip() or "\x00" in text:
        raise BadPathError(f"{text!r}: not a usable path", hint="pick a file from the listing")
    try:
        resolved = (root / text).resolve(strict=False)  # follows every symlink that exists
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise BadPathError(f"{text}: cannot be resolved ({exc})") from None
    if not resolved.is_relative_to(root):
        raise OutsideRootError(f"{text}: outside the dashboard's root {root}",
                               hint="the dashboard only reads and writes files under --root")
    if must_exist and not resolved.exists():
        raise BadPathError(f"{text}: not found under {root}", hint="reload the listing")
    return resolved


def relative(root: Path, path: Path) -> str:
    """``path`` as the dashboard names it: relative to ``root``, with forward slashes."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
