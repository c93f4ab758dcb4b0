"""Safe checkpoint reading (weights_only), key clean-up and strict, explained weight loading."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from modelport.errors import (
    CorruptFileError,
    NotACheckpointError,
    UnsafeCheckpointError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from modelport.pickle_scan import checkpoint_globals

# Trainer checkpoints keep the weights under one of these keys (torchreid uses "state_dict").
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Marker written by modelport itself into checkpoints of untrained (random) models.
RANDOM_MARKER = "modelport_source"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, extras)`` from a plain state dict or a trainer checkpoint.

    ``extras`` holds the checkpoint's other top-level entries (epoch, marker, ...).
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsNotFoundError(f"{path}: is a directory, not a weights file",
                                   hint="give the checkpoint file itself (.pt, .pth or .pth.tar)")
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{path}: weights file not found",
            hint="check the path; pretrained weights cannot be downloaded here, so place the file there yourself",
        )
    with path.open("rb") as f:
        head = f.read(8)
    # torch.save writes a zip archive; older torch a bare pickle (protocol 2 and later start with 0x80)
    if head and not head.startswith((b"PK", b"\x80")):
        raise CorruptFileError(f"{path}: not a PyTorch checkpoint, neither the zip archive nor the pickle torch.save "
                               f"writes (it starts {head!r}): another kind of file, or corrupted",
                               hint="give the .pt/.pth file torch.save wrote (a failed download often saves an HTML "
                               "or text page under the checkpoint's name)")
    foreign = _foreign_globals(path)
    if foreign:
        raise _unsafe(path, foreign[0] + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's concern
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # "Unsupported global" means a well-formed pickle that references Python classes (one the static scan
        # could not reach); anything else from the weights-only unpickler means the bytes are not a valid pickle.
        match = re.search(r"GLOBAL (\S+)", str(exc))
        if "unsupported global" in str(exc).lower():
            raise _unsafe(path, match.group(1) if match else "a Python global") from None
        raise CorruptFileError(
            f"{path}: truncated or corrupted checkpoint (not a valid PyTorch pickle)",
            hint="the file is incomplete or not a PyTorch file; copy it again",
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, MemoryError, OverflowError) as exc:
        size = path.stat().st_size
        detail = "empty file" if size == 0 else f"{type(exc).__name__}: {_first_line(exc)}"
        raise CorruptFileError(
            f"{path}: truncated or corrupted checkpoint ({detail})",
            hint="the file is incomplete or not a PyTorch file; copy it again",
        ) from None
    return _split_state_dict(obj, path)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else "no details"


def _foreign_globals(path: Path) -> list[str]:
    """Globals outside torch's weights-only set, read statically (nothing is unpickled)."""
    try:
        named, _called = checkpoint_globals(path)
    except (CorruptFileError, OSError):
        return []  # torch.load below gives the precise error
    allowed = set(torch._weights_only_unpickler._get_allowed_globals())
    return sorted(g for g in named if g not in allowed)


def _unsafe(path: Path, what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path}: the pickle refers to {what}, not only tensors; refused without running it",
        hint="save the model's state_dict (torch.save(model.state_dict(), path)); "
        "modelport never unpickles arbitrary objects",
    )


def _split_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, Mapping):
        raise NotACheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict",
            hint="expected a dict of tensors or a trainer checkpoint with a 'state_dict' entry",
        )
    extras: dict[str, Any] = {}
    for key in _NESTED_KEYS:
        if isinstance(obj.get(key), Mapping):
            extras = {k: v for k, v in obj.items() if k != key}
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise NotACheckpointError(
            f"{path}: no tensors found (top-level keys: {', '.join(map(str, list(obj)[:8])) or 'none'})",
            hint="expected a dict of tensors or a trainer checkpoint with a 'state_dict' entry",
        )
    return {_strip_prefix(k): v for k, v in tensors.items()}, extras


def _strip_prefix(key: str) -> str:
    # DataParallel / DistributedDataParallel checkpoints prefix every key with "module.".
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    origin: str | Path,
    arch: str,
    ignored_prefixes: tuple[str, ...] = ("classifier.",),
) -> None:
    """Load strictly: every key other than the ignored training heads must match in name and shape."""
    wanted = model.state_dict()
    given = {k: v for k, v in state_dict.items() if not k.startswith(ignored_prefixes)}
    # Checkpoints from PyTorch < 0.4.1 predate BatchNorm's counter; it does not affect inference.
    missing = [k for k in wanted if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in wanted]
    wrong_shape = [
        f"{k} {tuple(given[k].shape)} vs {tuple(wanted[k].shape)}"
        for k in wanted
        if k in given and given[k].shape != wanted[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shape {len(wrong_shape)} (file vs {arch}): {_listing(wrong_shape)}")
        raise WeightsMismatchError(
            f"{origin}: weights do not fit architecture {arch!r}; " + "; ".join(parts),
            hint="pass the right architecture with --arch, or check that the file belongs to this model",
        )
    merged = {**wanted, **given}
    model.load_state_dict(merged, strict=True)
