"""The import contracts in pyproject.toml cover the whole package, ignore nothing, and keep ``import modelport``
light; the PyTorch format builds weights files through builders registered from above it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modelport"
HEAVY = ("torch", "onnxruntime", "openvino", "ultralytics", "open_clip")


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def layers_contract() -> dict:
    (contract,) = [c for c in contracts() if c["type"] == "layers"]
    return contract


def layer_modules(contract: dict) -> set[str]:
    """Every module the layers name, in full (``containers`` prefixed; optional ``(name)`` unwrapped)."""
    prefixes = [f"{c}." for c in contract.get("containers", [])] or [""]
    names = set()
    for layer in contract["layers"]:
        for item in layer.replace("|", ":").split(":"):
            names |= {prefix + item.strip().strip("()") for prefix in prefixes}
    return names


def top_level_modules() -> set[str]:
    """modelport's direct children on disk: its modules and packages (read from the tree, nothing imported)."""
    modules = {f"modelport.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return modules | {f"modelport.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}


def test_every_top_level_module_is_a_layer() -> None:
    missing = top_level_modules() - layer_modules(layers_contract())
    assert not missing, f"not in the layers contract of pyproject.toml: {sorted(missing)}"


def test_layers_contract_declares_itself_exhaustive() -> None:
    contract = layers_contract()
    assert contract.get("exhaustive") is True and contract.get("containers") == ["modelport"]


def test_no_contract_ignores_an_import() -> None:
    ignoring = [c["name"] for c in contracts() if c.get("ignore_imports")]
    assert not ignoring, f"contracts with ignore_imports: {ignoring}"


def test_every_family_is_in_the_independence_contract() -> None:
    from modelport.families import FAMILIES

    (independent,) = [c for c in contracts() if c["name"] == "Families never import each other"]
    assert {f.impl for f in FAMILIES} <= set(independent["modules"])


def test_import_modelport_loads_no_framework_or_runtime() -> None:
    code = f"import json, sys, modelport; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def toy_build(weights: Path | None, *, arch: str | None = None, allow_random: bool = False) -> SimpleNamespace:
    from torch import nn

    from modelport.spec import ModelSpec, Preprocess, Source, TensorSpec

    spec = ModelSpec(name=arch or "toy", task="embed", inputs=(TensorSpec("images", "float32", ("batch", 3, 4, 4)),),
                     outputs=(TensorSpec("embeddings", "float32", ("batch", 48)),),
                     preprocess=Preprocess(4, 4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), source=Source("random"))
    return SimpleNamespace(module=nn.Flatten(), spec=spec)


def test_pytorch_format_builds_weights_with_the_registered_builder(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from modelport.formats import get_format, pytorch

    assert pytorch.BUILDERS["zoo"] == "modelport.zoo:build"  # registered by `import modelport`
    monkeypatch.setattr(pytorch, "BUILDERS", {})
    pytorch.register_builder("toy", f"{__name__}:toy_build")
    runner = get_format("pytorch").load(tmp_path / "toy.pt", arch="toy")
    assert runner.spec.name == "toy"
    assert runner.embed(np.ones((2, 3, 4, 4), np.float32), prepared=True).shape == (2, 48)


def test_register_builder_refuses_a_second_target_for_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelport.errors import ConfigError
    from modelport.formats import pytorch

    monkeypatch.setattr(pytorch, "BUILDERS", {"zoo": "modelport.zoo:build"})
    pytorch.register_builder("zoo", "modelport.zoo:build")  # the same again is fine
    with pytest.raises(ConfigError, match="already registered"):
        pytorch.register_builder("zoo", "elsewhere:build")
    with pytest.raises(ConfigError, match="module:function"):
        pytorch.register_builder("bad", "no_function_here")
