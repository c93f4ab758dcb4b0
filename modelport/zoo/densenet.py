"""DenseNet-121 with torchreid's module names, as a 1024-d embedding network."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from modelport.zoo.osnet import torchreid_init
from modelport.zoo.registry import register_model


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck) then BN-ReLU-3x3 conv; output is concatenated to the input.

    Attribute names are ``norm1``/``conv1``/``norm2``/``conv2`` as in current torchreid and
    torchvision; old torchvision ImageNet files spell them ``norm.1`` etc., but torchreid renames
    those on load, so torchreid-trained checkpoints use the dot-free names.
    """

    def __init__(self, cin: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(self.relu1(self.norm1(x)))
        new = self.conv2(self.relu2(self.norm2(new)))
        return torch.cat([x, new], 1)


class _Transition(nn.Sequential):
    """BN-ReLU-1x1 conv halving the channels, then 2x2 average pooling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(nn.Module):
    """DenseNet without ``fc`` (torchreid's fc_dims=None); returns the pooled feature.

    Everything up to the final BN lives in one ``features`` Sequential, so keys read
    ``features.conv0``, ``features.denseblock1.denselayer1.norm1``, ``features.transition1.conv``,
    ``features.norm5``.
    """

    def __init__(
        self,
        block_config: tuple[int, ...],
        growth_rate: int = 32,
        num_init_features: int = 64,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        channels = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            block = nn.Sequential()
            for j in range(num_layers):
                layer = _DenseLayer(channels + j * growth_rate, growth_rate, bn_size)
                block.add_module(f"denselayer{j + 1}", layer)
            self.features.add_module(f"denseblock{i}", block)
            channels += num_layers * growth_rate
            if i != len(block_config):
                self.features.add_module(f"transition{i}", _Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        torchreid_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The final ReLU is applied in forward (not a module), as torchreid does after ``norm5``.
        f = F.relu(self.features(x))
        return self.global_avgpool(f).flatten(1)


@register_model(family="densenet", feature_dim=1024)
def densenet121() -> nn.Module:
    """DenseNet-121 (torchreid, growth 32, blocks 6/12/24/16, no fc), 1024-d embedding."""
    return DenseNet((6, 12, 24, 16), growth_rate=32, num_init_features=64)
