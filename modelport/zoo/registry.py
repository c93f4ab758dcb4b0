"""Zoo registry: model names map to builders and the metadata a deployment needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from modelport.errors import UnknownArchitectureError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class ZooEntry:
    """One named architecture: how to build it and what its input and output look like."""

    name: str
    family: str
    feature_dim: int
    builder: Callable[[], nn.Module]
    height: int = 256
    width: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    task: str = "embed"
    # State-dict key prefixes that belong to training heads and are ignored when loading.
    ignored_prefixes: tuple[str, ...] = ("classifier.",)
    # Builds the same layers on the meta device itself, without running them (parameter counts); default:
    # ``builder`` under a meta-device context.
    layers: Callable[[], nn.Module] | None = None

    def parameter_count(self) -> int:
        """Parameters of the architecture, counted on the meta device: no weights allocated or initialised."""
        import torch

        if self.layers is not None:
            module = self.layers()
        else:
            with torch.device("meta"):
                module = self.builder()
        return sum(p.numel() for p in module.parameters())


_REGISTRY: dict[str, ZooEntry] = {}


def register_model(*, family: str, feature_dim: int, **meta) -> Callable:
    """Decorator: register a zero-argument builder under its function name."""

    def wrap(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ZooEntry(name=name, family=family, feature_dim=feature_dim, builder=fn, **meta)
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_model decorators.
    from modelport.zoo import densenet, mobilenet, osnet, resnet, yolo  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ZooEntry:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}",
            hint=f"choose one of: {', '.join(sorted(_REGISTRY))}",
        ) from None


def create_model(name: str) -> nn.Module:
    """Build ``name`` with its default (random) initialisation, in eval mode."""
    model = get_entry(name).builder()
    return model.eval()


def infer_architecture(filename: str) -> str | None:
    """The longest zoo name contained in a weights file name, or None.

    ``osnet_x1_0_market1501.pth.tar`` -> ``osnet_x1_0``; longest wins so that a name that is a
    prefix of another (``osnet_x0_5`` vs a hypothetical ``osnet_x0_50``) cannot shadow it.
    """
    _ensure_loaded()
    lowered = filename.lower()
    hits = [name for name in _REGISTRY if name in lowered]
    return max(hits, key=len) if hits else None
