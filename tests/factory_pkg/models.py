"""A small two-input image-to-image generator, shaped like a face-swap model: a target image and a source
identity embedding in, an image of the target's size out. Every layer depends on both inputs."""

from __future__ import annotations

import torch
from torch import nn


class TinySwap(nn.Module):
    def __init__(self, channels: int = 8, embed_dim: int = 16) -> None:
        super().__init__()
        self.encode = nn.Conv2d(3, channels, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * channels)  # identity -> per-channel scale and shift
        self.mix = nn.Conv2d(channels, channels, 3, padding=1)
        self.decode = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.encode(target))
        scale, shift = self.film(source).chunk(2, dim=1)
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h = torch.relu(self.mix(h))
        return torch.tanh(self.decode(h))


def build(channels: int = 8, embed_dim: int = 16) -> nn.Module:
    torch.manual_seed(0)
    return TinySwap(channels, embed_dim)


def not_a_module(**kwargs) -> str:
    return "a string"
