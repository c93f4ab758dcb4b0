"""Ultralytics checkpoints read with ``torch.load(weights_only=True)`` and an allow-list of the model classes
such a file legitimately holds, derived from the installed torch and Ultralytics, before Ultralytics sees it."""

from __future__ import annotations

import functools
import logging
import os
import pickle
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from modelport.errors import CorruptFileError, UnsafeCheckpointError
from modelport.pickle_scan import checkpoint_pickle, pickle_globals
from modelport.trust import checkpoints_trusted

log = logging.getLogger(__name__)
# Model definitions only: torch's layers and Ultralytics' blocks, heads and task models. Runtime wrappers
# elsewhere in ultralytics.nn (AutoBackend loads files and installs packages) are deliberately outside.
MODEL_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules.", "ultralytics.nn.tasks")
HELPER_MODULES = ("ultralytics.utils",)  # data holders such as IterableSimpleNamespace (old checkpoints' args)
_TRUST_HINT = "if you made this file yourself and trust it, pass --trust-checkpoint (trust_checkpoint=True)"


def _ultralytics():
    # Ultralytics installs missing packages at run time unless told not to; modelport never does.
    os.environ["YOLO_AUTOINSTALL"] = "False"
    import ultralytics.nn.tasks  # noqa: F401  (imports every block and head module)
    import ultralytics.utils

    return ultralytics


@functools.cache
def detector_globals() -> dict[str, type]:
    """``{"module.Class": class}`` for every nn.Module defined in MODEL_MODULES and every SimpleNamespace
    helper in HELPER_MODULES, as installed."""
    _ultralytics()
    allowed: dict[str, type] = {}
    for mod_name, module in list(sys.modules.items()):
        models = mod_name.startswith(MODEL_MODULES)
        if module is None or not (models or mod_name in HELPER_MODULES):
            continue
        base = nn.Module if models else SimpleNamespace
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == mod_name:
                allowed[f"{mod_name}.{obj.__qualname__}"] = obj
    return allowed


def is_ultralytics_checkpoint(path: str | Path) -> bool:
    """A torch zip whose pickle names Ultralytics' model classes (read without unpickling)."""
    try:
        data = checkpoint_pickle(path)
        return data is not None and any(g.startswith("ultralytics.nn.") for g in pickle_globals(data)[0])
    except (CorruptFileError, OSError):
        return False


def check_detector_pickle(path: Path) -> list[type]:
    """The allow-listed classes ``path`` needs; UnsafeCheckpointError naming any other global it holds, or an
    allow-listed class it would construct with arguments from the file."""
    data = checkpoint_pickle(path)
    if data is None:
        raise CorruptFileError(f"{path}: not a zip checkpoint; Ultralytics saves detectors with torch.save's "
                               "zip layout",
                               hint="re-save the model with Ultralytics (YOLO(...).save(path))")
    try:
        named, called = pickle_globals(data)
    except CorruptFileError as exc:
        raise CorruptFileError(f"{path}: {exc.message}",
                               hint="the file is incomplete or corrupted; copy it again") from None
    allowed = detector_globals()
    default = set(torch._weights_only_unpickler._get_allowed_globals())  # torch's own weights-only set
    foreign = sorted(g for g in named if g not in allowed and g not in default)
    if foreign:
        raise UnsafeCheckpointError(
            f"{path}: refers to {foreign[0]}" + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
            + ", which is not a torch or Ultralytics model class; refused without unpickling",
            hint=_TRUST_HINT)
    constructed = sorted(g for g in called if g in allowed)
    if constructed:
        raise UnsafeCheckpointError(
            f"{path}: calls the constructor of {constructed[0]} with arguments from the file; real checkpoints "
            "never do, so it was refused without unpickling", hint=_TRUST_HINT)
    return [allowed[g] for g in sorted(named) if g in allowed]


def read_detector_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, read with ``weights_only=True`` and the allow-list (or in full, warned, when
    checkpoints are trusted)."""
    path = Path(path)
    if checkpoints_trusted():
        warnings.warn(f"{path}: unpickled in full (--trust-checkpoint); only do this for files you made",
                      stacklevel=2)
        _ultralytics()
        loader = functools.partial(torch.load, path, map_location="cpu", weights_only=False)
    else:
        classes = check_detector_pickle(path)
        loader = lambda: _load_restricted(path, classes)  # noqa: E731
    try:
        ckpt = loader()
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, AttributeError, TypeError,
            KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CorruptFileError(f"{path}: not a loadable Ultralytics checkpoint ({first})",
                               hint="give a .pt saved by Ultralytics (YOLO(...).save or training)") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ema") or ckpt.get("model"), nn.Module):
        raise CorruptFileError(f"{path}: holds no Ultralytics model (no 'model' or 'ema' module entry)",
                               hint="give a .pt saved by Ultralytics (YOLO(...).save or training)")
    return ckpt


def _load_restricted(path: Path, classes: list[type]) -> dict:
    with torch.serialization.safe_globals(classes):
        return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(path: Path, ckpt: dict) -> nn.Module:
    """The fp32 eval model Ultralytics' ``load_checkpoint`` would return, without its loader (which unpickles in
    full and may install packages)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import guess_model_task

    model = (ckpt.get("ema") or ckpt["model"]).float()
    model.args = {**DEFAULT_CFG_DICT, **(ckpt.get("train_args") or {})}
    model.pt_path = str(path)
    model.task = getattr(model, "task", None) or guess_model_task(model)
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    model = model.eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = True
        elif isinstance(m, nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None  # checkpoints pickled by torch < 1.11
    return model
