"""Read a torch checkpoint's pickle without running it: the globals it names and the ones it would call."""

from __future__ import annotations

import io
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


def checkpoint_globals(path: str | Path) -> tuple[set[str], set[str]]:
    """``pickle_globals`` of a checkpoint in either layout: the zip's ``data.pkl``, or the leading pickles of a
    legacy ``torch.save`` file or a bare pickle (magic number, protocol, system info, then the object)."""
    data = checkpoint_pickle(path)
    if data is not None:
        return pickle_globals(data)
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read(MAX_PICKLE_BYTES))
    named: set[str] = set()
    called: set[str] = set()
    for _ in range(4):
        if stream.tell() >= len(stream.getbuffer()):
            break
        try:
            more_named, more_called = pickle_globals(stream)
        except CorruptFileError:
            break  # raw tensor bytes follow the last pickle of a legacy file
        named |= more_named
        called |= more_called
    return named, called


def pickle_globals(data: bytes | io.BytesIO) -> tuple[set[str], set[str]]:
    """``(named, called)``: every global the pickle names, and those it would call with REDUCE.

    Legitimate checkpoints create module objects with NEWOBJ (``cls.__new__``, no ``__init__``); a class
    that is REDUCE-called runs its constructor with arguments from the file, so callers allow-listing
    classes must refuse those. The stack is simulated symbolically from pickletools' opcode table.
    """
    named: set[str] = set()
    called: set[str] = set()
    # Symbolic stack: ("g", "module.name") for a global, ("s", text) for a string, None for anything else.
    stack: list[tuple[str, str] | None] = []
    marks: list[int] = []
    memo: dict[int, tuple[str, str] | None] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name == "GLOBAL":
                stack.append(("g", _global(*str(arg).split(" ", 1))))
            elif name == "STACK_GLOBAL":
                module, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                del stack[-2:]
                known = module and attr and module[0] == attr[0] == "s"
                stack.append(("g", _global(module[1], attr[1]) if known else "<computed global>"))
            elif isinstance(arg, str) and op.stack_after == [pickletools.pyunicode]:
                stack.append(("s", arg))
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
                if func and func[0] == "g":
                    called.add(func[1])
                del stack[-2:]
                stack.append(None)
            else:
                _generic(op, stack, marks)
            if stack and stack[-1] and stack[-1][0] == "g":
                named.add(stack[-1][1])
    except (ValueError, IndexError, KeyError) as exc:
        raise CorruptFileError(f"not a valid pickle ({type(exc).__name__}: {exc})"[:200]) from None
    return named, called


def _global(module: str, name: str) -> str:
    if module == "__builtin__":  # protocol 2 spells builtins the Python 2 way
        module = "builtins"
    return f"{module}.{name}"


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
