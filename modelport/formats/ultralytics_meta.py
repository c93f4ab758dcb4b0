"""Ultralytics' own metadata beside modelport's spec, in the slot each of its loaders reads, so that
``ultralytics.YOLO(path)`` opens a modelport export as it opens its own (``nn/backends/base.py``,
``BaseBackend.read_metadata``): ONNX ``metadata_props`` (one ``str(value)`` per key), a ``metadata.yaml`` beside an
OpenVINO ``.xml``, the TorchScript extra file ``config.txt`` (JSON), and a TensorRT engine's length-prefixed JSON
header (which then also carries the spec, under ``modelport``).

A spec carries the metadata in ``extra["ultralytics"]`` when a family puts it there (the ``yolo`` family, from the
Ultralytics model object); every other spec writes nothing more.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from modelport.spec import SPEC_KEY, ModelSpec

KEY = "ultralytics"  # spec.extra key
YAML_FILE = "metadata.yaml"  # OpenVINO: beside the .xml
TORCHSCRIPT_FILE = "config.txt"  # TorchScript: the extra file Ultralytics reads


def metadata(spec: ModelSpec) -> dict[str, Any] | None:
    """Ultralytics' metadata for this artifact, or None when the spec has none. Class names are keyed by int, as
    Ultralytics writes them (a spec read back from JSON has them keyed by str)."""
    meta = spec.extra.get(KEY)
    if not meta:
        return None
    meta = dict(meta)
    if isinstance(meta.get("names"), dict):
        meta["names"] = {int(k): v for k, v in meta["names"].items()}
    return meta


def dynamic(meta: dict[str, Any]) -> bool:
    """Whether Ultralytics is told that height and width are dynamic (its ``dynamic=True``)."""
    return bool((meta.get("args") or {}).get("dynamic"))


def onnx_props(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """``metadata_props`` entries as Ultralytics' exporter writes them (``str(v)``, read back with literal_eval)."""
    return [(str(k), str(v)) for k, v in meta.items()]


def yaml_text(meta: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def engine_header(meta: dict[str, Any], spec: ModelSpec) -> bytes:
    """Ultralytics' TensorRT header: 4-byte little-endian length, then that many bytes of JSON (here with the
    spec under ``modelport``, which modelport's reader takes back out)."""
    body = json.dumps({**meta, SPEC_KEY: spec.to_json()}).encode()
    return struct.pack("<I", len(body)) + body


def read_engine_header(data: bytes) -> tuple[str, int] | None:
    """(spec JSON, offset of the engine bytes) from an engine written with ``engine_header``; None otherwise."""
    if len(data) < 4:
        return None
    (length,) = struct.unpack("<I", data[:4])
    if not 0 < length <= len(data) - 4:
        return None
    try:
        meta = json.loads(data[4 : 4 + length])
    except ValueError:  # engine bytes, not a header
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get(SPEC_KEY), str):
        return None
    return meta[SPEC_KEY], 4 + length
