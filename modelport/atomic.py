"""Files and folders modelport writes appear whole or not at all, and never over an existing file unless forced.

Each is staged under a hidden name beside its destination (same folder, so same filesystem) and renamed into
place; a failure removes the staged copy, so neither a partial file nor a temp file is left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
from pathlib import Path
from typing import Iterator

from modelport.errors import ExportError

FORCE_HINT = "pass --force to replace it"


def refuse_existing(path: str | Path, force: bool, hint: str = FORCE_HINT) -> Path:
    """``path``, or ExportError when something is there and ``force`` is off.

    Writers call it before costly work too, so that a refusal costs nothing.
    """
    path = Path(path)
    if not force and (path.exists() or path.is_symlink()):
        raise ExportError(f"{path}: already exists", hint=hint)
    return path


def _staged(path: Path, kind: str) -> Path:
    # Hidden, so repository and folder listings (Triton's model_dirs, versions) never take it for content.
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def _fsync(path: Path) -> None:
    # Without it a crash soon after the rename can leave an empty file under the final name.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_file(tmp: Path, path: Path, force: bool, hint: str) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        # A hard link fails if ``path`` appeared while we wrote, where a rename would replace it.
        os.link(tmp, path)
    except FileExistsError:
        raise ExportError(f"{path}: already exists", hint=hint) from None
    except OSError:  # a filesystem without hard links: check, then rename
        refuse_existing(path, False, hint)
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(path: str | Path, *, force: bool = False, hint: str = FORCE_HINT) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for the caller to write; it becomes ``path`` when the block ends
    without an error, and is removed when it raises."""
    path = refuse_existing(path, force, hint)
    if path.is_dir() and not path.is_symlink():
        raise ExportError(f"{path}: is a folder, not a file", hint="choose a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staged(path, "tmp")
    try:
        yield tmp
        _fsync(tmp)
        _publish_file(tmp, path, force, hint)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes, *, force: bool = False, hint: str = FORCE_HINT) -> Path:
    with atomic_file(path, force=force, hint=hint) as tmp:
        with open(tmp, "xb") as handle:
            handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, force: bool = False, hint: str = FORCE_HINT,
                      encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding), force=force, hint=hint)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, force: bool = False, hint: str = FORCE_HINT) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; it is renamed to ``path`` when the block ends without an
    error, and removed when it raises.

    With ``force`` an existing ``path`` is moved aside, the new folder renamed in, and the old one removed
    (put back if the rename fails): readers see the old folder or the new one, never a mix.
    """
    path = refuse_existing(path, force, hint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staged(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        for item in tmp.rglob("*"):
            if item.is_file() and not item.is_symlink():
                _fsync(item)
        _publish_dir(tmp, path, force, hint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish_dir(tmp: Path, path: Path, force: bool, hint: str) -> None:
    if not force:
        refuse_existing(path, False, hint)  # again: the block may have run for minutes
        try:
            os.rename(tmp, path)
        except OSError:  # appeared meanwhile (a non-empty folder or a file)
            raise ExportError(f"{path}: already exists", hint=hint) from None
        return
    old = _staged(path, "old") if (path.exists() or path.is_symlink()) else None
    if old is not None:
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def publish(staged: str | Path, path: str | Path, *, force: bool = False, hint: str = FORCE_HINT) -> Path:
    """Move a finished file or folder ``staged`` (beside ``path``) to ``path`` in one rename; an existing
    ``path`` is only replaced with ``force``."""
    staged, path = Path(staged), Path(path)
    if staged.is_dir():
        _publish_dir(staged, path, force, hint)
    else:
        _publish_file(staged, path, force, hint)
    return path


def create_sqlite(path: str | Path, schema: str, *, hint: str = "pass another --db") -> Path:
    """A new SQLite database at ``path`` holding ``schema``; it appears with its tables, never over a file."""
    with atomic_file(path, hint=hint) as tmp:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(schema)
        finally:
            conn.close()
    return Path(path)


__all__ = ["FORCE_HINT", "atomic_dir", "atomic_file", "atomic_write_bytes", "atomic_write_text", "create_sqlite",
           "publish", "refuse_existing"]
