"""MobileNetV2 x1.0 with torchreid's module names, as a 1280-d embedding network."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from modelport.zoo.osnet import torchreid_init
from modelport.zoo.registry import register_model

# Inverted-residual stages conv2..conv8 (torchreid mobilenetv2.py):
# (expansion t, output channels c, blocks n, first stride s).
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBlock(nn.Module):
    """Convolution (no bias) + BN + ReLU6."""

    def __init__(self, cin: int, cout: int, k: int, s: int = 1, p: int = 0, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=False, groups=g)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection (``conv3.0``/``conv3.1``)."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int = 1) -> None:
        super().__init__()
        mid = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.conv1 = ConvBlock(cin, mid, 1)
        self.dwconv2 = ConvBlock(mid, mid, 3, stride, 1, g=mid)
        self.conv3 = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.conv3(self.dwconv2(self.conv1(x)))
        # use_residual is fixed at construction, so tracing records a single static path.
        return x + m if self.use_residual else m


class MobileNetV2(nn.Module):
    """MobileNetV2 without ``fc`` (torchreid's fc_dims=None); returns the pooled conv9 feature."""

    def __init__(self, feature_dim: int = 1280) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.conv1 = ConvBlock(3, 32, 3, s=2, p=1)
        cin = 32
        # Stages are attributes conv2..conv8, as in torchreid.
        for i, (t, c, n, s) in enumerate(_STAGES, start=2):
            blocks = [Bottleneck(cin, c, t, s)] + [Bottleneck(c, c, t) for _ in range(1, n)]
            self.add_module(f"conv{i}", nn.Sequential(*blocks))
            cin = c
        self.conv9 = ConvBlock(cin, feature_dim, 1)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        torchreid_init(self)

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.conv9(self.conv8(self.conv7(self.conv6(self.conv5(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_avgpool(self.featuremaps(x)).flatten(1)


@register_model(family="mobilenet", feature_dim=1280)
def mobilenetv2_x1_0() -> nn.Module:
    """MobileNetV2 x1.0 (torchreid, no fc), 1280-d embedding."""
    return MobileNetV2(1280)
