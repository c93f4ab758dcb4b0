"""Read a torch checkpoint's pickle without running it: the globals it names and the ones it would call."""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

from modelport.errors import CorruptFileError

# A checkpoint's pickle is metadata (tensors live in separate records); real ones are a few MB at most.
MAX_PICKLE_BYTES = 256 << 20


def checkpoint_pickle(path: str | Path) -> bytes | None:
    """The ``data.pkl`` record of a ``torch.save`` zip checkpoint, or None for the legacy (non-zip) layout."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            info = next((i for i in archive.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"),
                        None)
            if info is None:
                raise CorruptFileError(f"{path}: a zip file without a data.pkl record, not a torch.save checkpoint",
                                       hint="give a checkpoint written by torch.save")
            if info.file_size > MAX_PICKLE_BYTES:
                raise CorruptFileError(f"{path}: its pickle declares {info.file_size} bytes, more than a checkpoint's "
                                       f"metadata ever needs ({MAX_PICKLE_BYTES})", hint="the file is not a checkpoint")
            return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CorruptFileError(f"{path}: truncated or corrupted checkpoint archive ({type(exc).__name__})",
                               hint="the file is incomplete or not a PyTorch file; copy it again") from None


def pickle_globals(data: bytes) -> tuple[set[str], set[str]]:
    """``(named, called)``: every global the pickle names, and those it would call with REDUCE.

    Legitimate checkpoints create module objects with NEWOBJ (``cls.__new__``, no ``__init__``); a class
    that is REDUCE-called runs its constructor with arguments from the file, so callers allow-listing
    classes must refuse those. The stack is simulated symbolically from pickletools' opcode table.
    """
    named: set[str] = set()
    called: set[str] = set()
    stack: list[str | None] = []
    marks: list[int] = []
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name == "GLOBAL":
                ref = str(arg).replace(" ", ".", 1)
                if ref.startswith("__builtin__."):  # protocol 2 spells builtins the Python 2 way
                    ref = "builtins." + ref.removeprefix("__builtin__.")
                named.add(ref)
                stack.append(ref)
            elif name == "STACK_GLOBAL":
                del stack[-2:]
                named.add("<STACK_GLOBAL>")  # torch's weights-only reader refuses it; so do we
                stack.append("<STACK_GLOBAL>")
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1] if stack else None
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg)))
            elif name == "MARK":
                marks.append(len(stack))
            elif name == "REDUCE":
                func = stack[-2] if len(stack) >= 2 else None
                if func:
                    called.add(func)
                del stack[-2:]
                stack.append(None)
            else:
                _generic(op, stack, marks)
    except (ValueError, IndexError, KeyError) as exc:
        raise CorruptFileError(f"not a valid pickle ({type(exc).__name__}: {exc})"[:200]) from None
    return named, called


def _generic(op: pickletools.OpcodeInfo, stack: list, marks: list[int]) -> None:
    before = op.stack_before
    if pickletools.markobject in before:
        del stack[marks.pop() if marks else 0:]
        below = before.index(pickletools.markobject)
        if below:
            del stack[-below:]
    elif before:
        del stack[-len(before):]
    if pickletools.markobject in op.stack_after:
        marks.append(len(stack))
    else:
        stack.extend([None] * len(op.stack_after))
