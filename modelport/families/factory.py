"""The ``factory`` family: any PyTorch model, built by the user's own ``module:function`` and described by an
export YAML (``modelport.families.factory_config``).

The factory is the user's code and is trusted (it is imported and called, and the CLI says so); the weights
are not: they are read with ``weights_only=True`` and loaded strictly. Inputs are plain tensors of the
declared shapes (task ``tensors``), verified on seeded values from each input's declared range, or for an
embedder (``task: embed``) one image prepared as the YAML's ``preprocess`` says, verified on seeded crops.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelport.errors import ConfigError
from modelport.families.factory_config import FactoryConfig, InputDecl, check_factory
from modelport.spec import ModelSpec, Preprocess, Source, TensorSpec, sha256_file

log = logging.getLogger(__name__)
BENCH_SIZE = (720, 1280)  # height, width an image-to-image model is timed at unless its input fixes them
BENCH_BATCHES = (1, 4)  # timed by default (dropped where this machine's memory is short: modelport.bench_memory)


def import_factory(spec: str) -> Any:
    """The callable named by ``module:function``; the current folder is importable, as with ``python -m``."""
    check_factory(spec)
    module_name, func_name = spec.split(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--factory {spec}: cannot import {module_name} ({exc})",
                          hint="run from the folder that holds the package, or install it (pip install -e .)") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"--factory {spec}: {module_name} has no function {func_name!r}")
    return func


def _module(config: FactoryConfig):
    from torch import nn

    log.info("building %s(%s): the factory is your own code and runs as such", config.factory,
             ", ".join(f"{k}={v!r}" for k, v in config.args.items()))
    try:
        module = import_factory(config.factory)(**config.args)
    except TypeError as exc:
        raise ConfigError(f"{config.origin}: args: {config.factory} rejected them ({exc})") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"--factory {config.factory}: returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _example(decl: InputDecl):
    import torch

    gen = torch.Generator().manual_seed(0)
    if decl.dtype.startswith("int") or decl.dtype == "uint8":
        return torch.randint(int(decl.low), max(int(decl.high), int(decl.low) + 1), decl.shape, generator=gen,
                             dtype=getattr(torch, decl.dtype))
    return torch.rand(decl.shape, generator=gen) * (decl.high - decl.low) + decl.low


def _named(shape: tuple[int, ...], axes: dict[int, str]) -> tuple[int | str, ...]:
    return tuple(("batch" if i == 0 else axes[i]) if i in axes else d for i, d in enumerate(shape))


def build_factory(config: FactoryConfig, *, allow_random: bool = False):
    """The module (weights loaded, eval mode) and its spec; output shapes are read from one forward pass."""
    import torch

    from modelport.zoo import BuiltModel
    from modelport.zoo.checkpoints import load_into, read_checkpoint

    if not config.factory:
        raise ConfigError(f"{config.origin}: factory: missing", hint="give --factory mypkg.models:build")
    if not config.inputs:
        raise ConfigError(f"{config.origin}: inputs: missing", hint="declare the inputs in the --config YAML")
    module = _module(config)
    if config.weights is not None:
        state, _ = read_checkpoint(config.weights)  # weights_only=True, size- and pickle-checked
        load_into(module, state, origin=config.weights, arch=config.factory, ignored_prefixes=())
        source = Source("weights", str(config.weights), sha256_file(config.weights))
    elif allow_random:
        log.warning("%s: no weights given; exporting the factory's initial (untrained) weights", config.factory)
        source = Source("random")
    else:
        raise ConfigError(f"{config.origin}: weights: missing",
                          hint="give the checkpoint with --weights best.pth (or --allow-random for initial weights)")
    module.eval()
    examples = tuple(_example(d) for d in config.inputs)
    with torch.no_grad():
        out = module(*examples)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(outs) != len(config.outputs) or not all(isinstance(o, torch.Tensor) for o in outs):
        raise ConfigError(f"{config.origin}: outputs: declares {len(config.outputs)} ({', '.join(config.outputs)}) "
                          f"but the model returned {len(outs)} value(s)",
                          hint="list one name per returned tensor, in order")
    axes = config.dynamic_axes
    dynamic = all(0 in axes.get(d.name, {}) for d in config.inputs)
    inputs = tuple(TensorSpec(d.name, d.dtype, _named(d.shape, axes.get(d.name, {}))) for d in config.inputs)
    outputs = tuple(TensorSpec(n, "float16" if o.dtype == torch.float16 else "float32",
                               _named(tuple(o.shape), axes.get(n, {}))) for n, o in zip(config.outputs, outs))
    image = next((d for d in config.inputs if len(d.shape) == 4), None)
    height, width = (image.shape[2], image.shape[3]) if image else (0, 0)
    pre = config.preprocess
    if config.task == "embed" and (len(outs[0].shape) != 2 or pre is None):
        raise ConfigError(f"{config.origin}: task: embed: the model returned shape {tuple(outs[0].shape)}, not "
                          "(batch, dim)", hint="an embedder returns one vector per image; or use task: tensors")
    name = config.name or (Path(config.weights).stem if config.weights else config.factory.split(":")[1])
    spec = ModelSpec(
        name=name, task=config.task, inputs=inputs, outputs=outputs,
        preprocess=Preprocess(height, width, pre.mean, pre.std, pre.channel_order, scale=pre.scale) if pre else
        Preprocess(height, width, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), scale=1.0),
        source=source,
        extra={"example": {d.name: {"shape": list(d.shape), "low": d.low, "high": d.high} for d in config.inputs},
               "factory": {"function": config.factory, "args": config.args, "trusted_code": True}},
    )
    if not dynamic:
        spec = spec.with_batch(config.inputs[0].shape[0])
    return BuiltModel(module, spec, None)


def is_image_to_image(spec: ModelSpec) -> bool:
    """One 4-d output whose height and width follow a 4-d input's (a generator, a super-resolution net...)."""
    ins = [t for t in spec.inputs if len(t.shape) == 4]
    outs = [t for t in spec.outputs if len(t.shape) == 4]
    return bool(ins) and len(outs) == 1


def bench_spec(spec: ModelSpec, size: tuple[int, int] = BENCH_SIZE) -> ModelSpec:
    """The spec whose example inputs are timed: image inputs with a dynamic height and width at ``size``."""
    if not is_image_to_image(spec):
        return spec
    example = {k: dict(v) for k, v in spec.extra.get("example", {}).items()}
    for t in spec.inputs:
        if len(t.shape) == 4 and isinstance(t.shape[2], str) and isinstance(t.shape[3], str):
            example[t.name]["shape"] = [*example[t.name]["shape"][:2], *size]
    return replace(spec, extra={**spec.extra, "example": example})
