"""YAML configuration for the ReID pipeline: documented keys, ``${var}`` interpolation, CLI overrides.

Example::

    models_dir: models
    db: data/db/detections.db
    model: ${models_dir}/reid/osnet_x0_25_msmt17.onnx
    cluster:
      out: runs/${cluster.threshold}
      threshold: auto
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from modelport.errors import ModelportError

# Every key, its default and what it does. Top-level keys are shared by all commands; a section's keys
# belong to one command. Unknown keys are errors, so a typo never silently falls back to a default.
KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "": {
        "db": ("data/db/detections.db", "SQLite detections database"),
        "model": (None, "weights file or exported artifact used by extract (the loader's fallback chain applies)"),
        "allow_random": (False, "allow random weights when the model file is missing (outputs say model_type: random)"),
        "device": ("cpu", "cpu or cuda"),
        "class_name": ("person", "only detections of this class"),
    },
    "demo_data": {
        "out": ("data/demo", "folder for video.mp4, det.txt and gt.txt"),
        "people": (8, "number of people in the scene"),
        "frames": (450, "number of frames"),
        "seed": (0, "random seed of the scene"),
        "camera": ("A", "synthetic camera: A (clean daylight), B (dusk: uneven, flickering light; noisy, blocky) "
                        "or C (dense fog)"),
    },
    "import": {
        "video": (None, "video file or image folder"),
        "detections": (None, "MOTChallenge detections file (frame,id,x,y,w,h,conf,...)"),
        "gt": (None, "optional MOTChallenge ground truth, matched to detections by IoU >= 0.5"),
        "fps": (None, "frame rate (default: the video's; 25 for image folders)"),
        "min_conf": (0.0, "drop detections below this confidence"),
    },
    "extract": {
        "batch": (16, "crops per inference batch"),
        "set_default": (False, "make this model the one whose vectors fill object_detections.reid_embedding"),
    },
    "cluster": {
        "out": ("reid_output", "output folder"),
        "model": (None, "which stored embeddings to cluster: the weights file or export given to extract (matched "
                         "by sha256), a model key or name; default: the top-level model, else the default model"),
        "threshold": (0.70, "cosine similarity needed to merge (number) or 'auto' (best silhouette)"),
        "max_persons": (None, "at most this many identities"),
        "standardize": (False, "standardise embedding dimensions with the dataset's mean and std first"),
        "per_track": (16, "best crops (confidence, sharpness) averaged per track"),
        "cooccurrence": (True, "tracks seen in the same frame are kept apart"),
    },
    "adapt": {
        "out": (None, "adapted checkpoint to write (default: <weights stem>_adabn[_<camera>].pt beside the weights)"),
        "camera": (None, "adapt to this camera only (the table's camera column, else the video's name or folder)"),
        "crops": (2048, "at most this many crops estimate the BatchNorm statistics"),
        "holdout": (0.5, "share of the people with ground truth kept out of adaptation to measure it"),
        "holdout_by": ("people", "hold out whole people, or 'tracks': some of their tracks (others may be used)"),
        "export": ("onnx", "formats to export and verify the new checkpoint in (comma-separated; 'none': skip)"),
    },
    "finetune": {
        "out": (None, "checkpoint to write (default: <weights stem>_finetuned[_<camera>].pt beside the weights)"),
        "camera": (None, "train on this camera only (the table's camera column, else the video's name or folder)"),
        "epochs": (5, "passes over the training crops in P x K batches (torchreid's identity sampler)"),
        "crops": (1024, "at most this many crops, spread evenly along the tracks, are trained on"),
        "tracks_per_batch": (8, "P: tracks per batch (seeds and a co-occurring partner of each)"),
        "crops_per_track": (4, "K: crops per track per batch"),
        "lr": (None, "Adam learning rate (default: 1e-3 with train 'norm', torchreid's 3e-4 with 'all')"),
        "train": ("norm", "'norm': only the normalisation layers' scale and shift (robust on a few tracks); "
                          "'all': every weight (many tracks)"),
        "margin": (0.3, "triplet loss margin (on L2-normalised features)"),
        "holdout": (0.5, "share of the people (or, with holdout_by 'tracks', of their tracks) with ground truth "
                         "kept out of training to measure it"),
        "holdout_by": ("people", "hold out whole people (all their tracks), or 'tracks': some of their tracks (their "
                                 "other tracks may be trained on, unlabelled, which can flatter the scores)"),
        "seed": (0, "random seed of the hold-out, the batches and the flips"),
        "export": ("onnx", "formats to export and verify the new checkpoint in (comma-separated; 'none': skip)"),
    },
    "report": {
        "output": ("report/timeline.html", "HTML file to write"),
        "use_reid": (False, "rows are identities (from `reid cluster`) instead of tracks"),
        "model": (None, "whose identities to show with use_reid (as cluster.model)"),
    },
}

VAR = re.compile(r"\$\{([^}]+)\}")


class ConfigError(ModelportError, ValueError):
    """A configuration file is unreadable, has unknown keys, or references an undefined variable."""


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read, validate and interpolate a config file; None gives an empty config."""
    if path is None:
        return {}
    from modelport.yaml_file import read_yaml

    path = Path(path)
    raw = read_yaml(path, "config file", invalid=ConfigError) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    _validate(raw, path)
    return _interpolate(raw, path)


def _validate(raw: dict, path: Path) -> None:
    variables = raw.get("vars", {})
    if not isinstance(variables, dict):
        raise ConfigError(f"{path}: 'vars' must be a mapping")
    for key, value in raw.items():
        if key == "vars" or key in KEYS[""]:
            continue
        if key in KEYS and key:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: section '{key}' must be a mapping")
            unknown = sorted(set(value) - set(KEYS[key]))
            if unknown:
                raise ConfigError(f"{path}: unknown key(s) {', '.join(f'{key}.{u}' for u in unknown)}",
                                  hint=f"'{key}' accepts: {', '.join(KEYS[key])}")
            continue
        # Plain top-level scalars are variables too (``models_dir: models`` then ``${models_dir}``).
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: unknown section '{key}'",
                              hint=f"sections: {', '.join(k for k in KEYS if k)}; shared keys: {', '.join(KEYS[''])}")


def _lookup(raw: dict, name: str, path: Path) -> Any:
    if name.startswith("env:"):
        value = os.environ.get(name[4:])
        if value is None:
            raise ConfigError(f"{path}: ${{{name}}} refers to an unset environment variable")
        return value
    node: Any = raw.get("vars", {}) if name in raw.get("vars", {}) else raw
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{path}: ${{{name}}} is not defined",
                              hint="define it at the top level or under 'vars:', or use ${env:NAME}")
        node = node[part]
    return node


def _interpolate(raw: dict, path: Path) -> dict:
    def resolve(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, depth) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        if depth > 10:
            raise ConfigError(f"{path}: variables refer to each other in a cycle ({value})")
        whole = VAR.fullmatch(value)
        if whole:  # a lone reference keeps the referenced value's type (numbers stay numbers)
            return resolve(_lookup(raw, whole.group(1), path), depth + 1)
        return VAR.sub(lambda m: str(resolve(_lookup(raw, m.group(1), path), depth + 1)), value)

    return resolve(raw)


def setting(config: dict, section: str, key: str, cli_value: Any = None) -> Any:
    """The CLI flag when given, else the section's value, else the top-level value, else the default."""
    if cli_value is not None:
        return cli_value
    if section and key in config.get(section, {}):
        return config[section][key]
    if key in KEYS[""] and key in config:
        return config[key]
    if section and key in KEYS.get(section, {}):
        return KEYS[section][key][0]
    return KEYS[""][key][0] if key in KEYS[""] else None


def describe() -> str:
    """Every key with its default, for `modelport reid config-keys` and the docs."""
    lines = []
    for section, keys in KEYS.items():
        lines.append(f"{section or '(top level)'}:")
        for key, (default, text) in keys.items():
            lines.append(f"  {key}: {default!r}  # {text}")
    return "\n".join(lines)
