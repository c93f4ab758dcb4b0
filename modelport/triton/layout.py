"""Where things are in a Triton model repository, and how modelport opens one version of a model.

``REPO/{name}/config.pbtxt``, ``REPO/{name}/{version}/model.onnx|model.plan|model.pt|model.xml+model.bin``.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, ModelportError, WeightsNotFoundError
from modelport.formats import Runner, get_format
from modelport.spec import ModelSpec
from modelport.triton.config import CONFIG_FILE, format_of_config, model_file, read_plan_spec

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ModelportError(f"invalid model name {name!r}",
                             hint="use letters, digits, '_', '-' and '.', not starting with '.' or '-'")
    return name


def model_dirs(repo: Path) -> list[Path]:
    """Every model folder of a repository (hidden folders, e.g. staging, are not models)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise WeightsNotFoundError(f"{repo}: model repository not found")
    return sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))


def versions(model_dir: Path) -> list[int]:
    """Version folders present on disk, ascending (Triton ignores non-numeric folders)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def served_versions(config, available: list[int]) -> list[int]:
    """The versions Triton's version policy would load, newest first."""
    policy = config.version_policy
    chosen = policy.WhichOneof("policy_choice") if config.HasField("version_policy") else "latest"
    newest_first = sorted(available, reverse=True)
    if chosen == "all":
        return newest_first
    if chosen == "specific":
        return [v for v in newest_first if v in set(policy.specific.versions)]
    count = policy.latest.num_versions if config.HasField("version_policy") else 1
    return newest_first[: max(count, 1)]


def open_version(model_dir: Path, version: int, config, device: str = "cpu", threads: int | None = None) -> Runner:
    """Load one version of a repository model with modelport's runner for its format (``threads``: runtime
    threads per instance where the runtime takes a setting, default its own)."""
    fmt_id = format_of_config(config)
    vdir = Path(model_dir) / str(version)
    path = vdir / model_file(config)
    if not path.exists():
        raise WeightsNotFoundError(f"{path}: model file missing for version {version}")
    if fmt_id == "openvino":
        return get_format("openvino").load(vdir, device, threads=threads)  # model.xml + model.bin + metadata.json
    if fmt_id == "tensorrt":
        return _open_plan(path, device)
    return get_format(fmt_id).load(path, device, threads=threads)


def _open_plan(plan: Path, device: str) -> Runner:
    """A bare Triton plan plus its metadata.json, re-joined into the header+engine file modelport loads."""
    from modelport.formats.tensorrt import MAGIC

    header = read_plan_spec(plan).to_json().encode()
    fd, tmp = tempfile.mkstemp(suffix=".engine")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + struct.pack("<I", len(header)) + header + plan.read_bytes())
        return get_format("tensorrt").load(Path(tmp), device)  # the engine is deserialised into memory
    finally:
        os.unlink(tmp)


def split_engine(engine: Path) -> tuple[ModelSpec, bytes]:
    """modelport's engine file -> (spec, the bare TensorRT plan Triton loads)."""
    from modelport.formats.tensorrt import split_engine

    return split_engine(engine)


def outputs_by_config(config, runner: Runner, result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runner outputs (keyed by the spec's names) keyed by the config's names, matched by position."""
    if len(config.output) != len(runner.spec.outputs):
        raise CorruptFileError(f"model {config.name!r}: config has {len(config.output)} outputs, "
                               f"the artifact {len(runner.spec.outputs)}")
    return {c.name: result[s.name] for c, s in zip(config.output, runner.spec.outputs)}


def config_path(model_dir: Path) -> Path:
    return Path(model_dir) / CONFIG_FILE
