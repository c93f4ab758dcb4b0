"""MobileCLIP rows for `modelport models`, read from open_clip's model configs without building the models.

Importing open_clip and building nine MobileCLIPs (even on the meta device) took 20 s here; the configs are
the JSON files open_clip itself reads, so listing them costs milliseconds. Parameter counts need a build and
are left out (null).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

PREFIX = "MobileCLIP"


def _config_dir() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return folder if folder.is_dir() else None


def _configs() -> dict[str, dict]:
    folder = _config_dir()
    if folder is not None:
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob(f"{PREFIX}*.json"))}
    if importlib.util.find_spec("open_clip") is None:
        return {}  # the optional extra is not installed: no CLIP models
    from modelport.clip.model import _open_clip, clip_models  # another layout: ask open_clip itself

    oc = _open_clip()
    return {name: oc.get_model_config(name) for name in clip_models()}


def clip_rows() -> list[dict]:
    """One row per MobileCLIP open_clip knows: name, family, task, embedding dim, image and text inputs."""
    rows = []
    for name, cfg in _configs().items():
        vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        size = vision.get("image_size", 224)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        rows.append({"name": name, "family": "clip", "task": "embed+embed_text", "feature_dim": cfg["embed_dim"],
                     "input": [3, height, width], "text_input": [text.get("context_length", 77)], "params": None})
    return rows
