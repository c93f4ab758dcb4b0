"""Form values -> checked job parameters: paths confined to the root, numbers in range, choices known.
Every error names the field and the bad value (shown in the page with its hint)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from modelport.errors import ModelportError
from modelport.ui.paths import confine


class ParamError(ModelportError, ValueError):
    """A form value is missing or out of range."""


def text(params: dict, key: str, default: str | None = None, *, max_len: int = 300) -> str | None:
    value = params.get(key, default)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if not isinstance(value, str) or len(value) > max_len:
        raise ParamError(f"{key}: expected text of at most {max_len} characters, got {str(value)[:40]!r}")
    return value.strip()


def path(root: Path, params: dict, key: str, *, must_exist: bool = True, default: str | None = None) -> Path:
    value = text(params, key, default, max_len=1000)
    if value is None:
        raise ParamError(f"{key}: a path is required", hint="pick one from the listing")
    return confine(root, value, must_exist=must_exist)


def flag(params: dict, key: str, default: bool = False) -> bool:
    value = params.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "on", "yes", "0", "false", "off", "no", ""):
        return value.lower() in ("1", "true", "on", "yes")
    raise ParamError(f"{key}: expected true or false, got {value!r}")


def integer(params: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = params.get(key, default)
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ParamError(f"{key}: expected a whole number, got {value!r}") from None
    if not lo <= number <= hi:
        raise ParamError(f"{key}: {number} is outside {lo}..{hi}")
    return number


def number(params: dict, key: str, default: float, lo: float, hi: float) -> float:
    value = params.get(key, default)
    if value is None or value == "":
        return default
    try:
        result = float(str(value).strip())
    except ValueError:
        raise ParamError(f"{key}: expected a number, got {value!r}") from None
    if not math.isfinite(result) or not lo <= result <= hi:
        raise ParamError(f"{key}: {result} is outside {lo}..{hi}")
    return result


def choice(params: dict, key: str, default: str, accepted: Sequence[str]) -> str:
    value = text(params, key, default)
    if value not in accepted:
        raise ParamError(f"{key}: {value!r} is not one of {', '.join(accepted)}")
    return value


def choices(params: dict, key: str, accepted: Sequence[str], default: Sequence[str] | None = None) -> list[str]:
    """A list (or comma-separated text) of values from ``accepted``; an empty one falls back to ``default``."""
    value: Any = params.get(key)
    items = value.split(",") if isinstance(value, str) else list(value or [])
    items = [str(v).strip() for v in items if str(v).strip()]
    bad = [v for v in items if v not in accepted]
    if bad:
        raise ParamError(f"{key}: {', '.join(map(repr, bad))} not in {', '.join(accepted)}")
    if not items and default is None:
        raise ParamError(f"{key}: choose at least one of {', '.join(accepted)}")
    return items or list(default or [])


def int_list(params: dict, key: str, default: str, lo: int, hi: int) -> list[int]:
    value = text(params, key, default) or default
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ParamError(f"{key}: expected comma-separated whole numbers, got {value!r}") from None
    if not items or any(not lo <= v <= hi for v in items):
        raise ParamError(f"{key}: {value!r}: each value must be within {lo}..{hi}")
    return items
