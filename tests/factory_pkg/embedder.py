"""A small image embedder, shaped like a ReID backbone: an RGB crop in, one 32-d vector out (task: embed)."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyEmbedder(nn.Module):
    def __init__(self, width: int = 16, dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def build(width: int = 16, dim: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return TinyEmbedder(width, dim)


class TinyMLP(nn.Module):
    """One plain-tensor input (task: tensors), for INT8 calibrated from an .npz."""

    def __init__(self, features: int = 24) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_mlp(features: int = 24) -> nn.Module:
    torch.manual_seed(0)
    return TinyMLP(features)
