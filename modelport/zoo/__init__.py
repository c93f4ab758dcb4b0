"""Model zoo: build a named architecture from a checkpoint (or, when asked, random weights) with its spec."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modelport.errors import RandomWeightsNotAllowedError, RandomWeightsWarning, UnknownArchitectureError
from modelport.spec import ModelSpec, Preprocess, Source, TensorSpec, sha256_file
from modelport.version import __version__
from modelport.zoo.checkpoints import RANDOM_MARKER, load_into, read_checkpoint
from modelport.zoo.registry import ZooEntry, create_model, get_entry, infer_architecture, list_models

__all__ = ["BuiltModel", "build", "create_model", "get_entry", "infer_architecture", "list_models", "spec_for"]


@dataclass(frozen=True)
class BuiltModel:
    module: nn.Module
    spec: ModelSpec
    entry: ZooEntry


def spec_for(entry: ZooEntry, source: Source, batch: int | None = None) -> ModelSpec:
    """The spec of a zoo model with a dynamic (None) or fixed batch dimension."""
    spec = ModelSpec(
        name=entry.name,
        task=entry.task,
        inputs=(TensorSpec("images", "float32", ("batch", 3, entry.height, entry.width)),),
        outputs=(TensorSpec("embeddings", "float32", ("batch", entry.feature_dim)),),
        preprocess=Preprocess(height=entry.height, width=entry.width, mean=entry.mean, std=entry.std),
        source=source,
        modelport_version=__version__,
    )
    return spec.with_batch(batch)


def resolve_architecture(weights: str | Path | None, arch: str | None) -> ZooEntry:
    if arch:
        return get_entry(arch)
    if weights is None:
        raise UnknownArchitectureError(
            "no weights file and no architecture given", hint=f"name one of: {', '.join(list_models())}"
        )
    name = infer_architecture(Path(weights).name)
    if name is None:
        raise UnknownArchitectureError(
            f"{weights}: cannot tell the architecture from the file name",
            hint=f"pass --arch with one of: {', '.join(list_models())}",
        )
    return get_entry(name)


def warn_random(name: str) -> None:
    warnings.warn(
        f"{name} is running with RANDOM, UNTRAINED weights: its embeddings mean nothing for re-identification",
        RandomWeightsWarning,
        stacklevel=3,
    )


def build(
    weights: str | Path | None = None,
    *,
    arch: str | None = None,
    allow_random: bool = False,
    batch: int | None = None,
) -> BuiltModel:
    """Build a zoo model in eval mode from ``weights``, or with random weights when allowed."""
    # Read first: a missing, corrupt or unsafe file says so before its name is judged.
    state_dict, extras = read_checkpoint(weights) if weights is not None else ({}, {})
    entry = resolve_architecture(weights, arch)
    module = entry.builder().eval()
    if weights is None:
        if not allow_random:
            raise RandomWeightsNotAllowedError(
                f"no weights given for {entry.name}",
                hint="pass a checkpoint file, or allow_random=True / --allow-random for an untrained model",
            )
        warn_random(entry.name)
        return BuiltModel(module, spec_for(entry, Source(kind="random"), batch), entry)

    load_into(module, state_dict, origin=weights, arch=entry.name, ignored_prefixes=entry.ignored_prefixes)
    kind = "random" if extras.get(RANDOM_MARKER) == "random" else "weights"
    if kind == "random":
        warn_random(entry.name)
    source = Source(kind=kind, file=str(Path(weights).resolve()), sha256=sha256_file(weights))
    return BuiltModel(module.eval(), spec_for(entry, source, batch), entry)


def save_untrained(module: nn.Module, path: str | Path) -> Path:
    """Save a random-weight model as a checkpoint that stays labelled ``random`` wherever it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), RANDOM_MARKER: "random"}, path)
    return path
