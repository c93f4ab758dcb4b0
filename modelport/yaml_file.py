"""Reading the YAML files users write (export configs, model lists, ReID configs): ``yaml.safe_load`` only (no
tags, no code), the size checked before anything is read, every failure a typed error naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelport.errors import ConfigError, CorruptFileError, ModelportError

MAX_BYTES = 1 << 20  # these files are a few hundred bytes to a few KB


def read_yaml(path: str | Path, what: str, *, hint: str = "", missing: type[ModelportError] = ConfigError,
              invalid: type[ModelportError] = CorruptFileError, max_bytes: int = MAX_BYTES) -> Any:
    """The parsed contents of ``path`` (``what`` it is, for messages: "model list", "export config"...)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise missing(f"{path}: {what} not found", hint=hint)
    size = path.stat().st_size
    if size > max_bytes:
        raise invalid(f"{path}: {size} bytes; a {what} is a few KB at most",
                      hint=hint or "check that the option names the YAML file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise invalid(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
