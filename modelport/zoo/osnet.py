"""OSNet (Zhou et al., ICCV 2019) with torchreid's module names, as an embedding network."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from modelport.zoo.registry import register_model

# Stem, conv2, conv3, conv4 widths per variant (torchreid osnet.py); every variant embeds to 512-d.
_WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "x1_0": (64, 256, 384, 512),
    "x0_75": (48, 192, 288, 384),
    "x0_5": (32, 128, 192, 256),
    "x0_25": (16, 64, 96, 128),
}
_BLOCKS_PER_STAGE = 2
_FEATURE_DIM = 512


class ConvLayer(nn.Module):
    """k x k convolution + BN + ReLU (torchreid ``ConvLayer``/``Conv1x1``; both name ``conv``/``bn``)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1Linear(nn.Module):
    """1x1 convolution + BN, no activation."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """Pointwise 1x1 (linear) then depthwise 3x3, BN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, groups=cout)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Squeeze-excitation style sigmoid gate; one instance is shared by all four streams."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))
        return x * g


class OSBlock(nn.Module):
    """Omni-scale residual block: four streams of 1-4 stacked light 3x3 convs, gated and summed."""

    def __init__(self, cin: int, cout: int, bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = cout // bottleneck_reduction
        self.conv1 = ConvLayer(cin, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, cout)
        self.downsample = Conv1x1Linear(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        # Summation order matches torchreid so float results agree bit for bit.
        x2 = (
            self.gate(self.conv2a(x1))
            + self.gate(self.conv2b(x1))
            + self.gate(self.conv2c(x1))
            + self.gate(self.conv2d(x1))
        )
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(x2) + identity)


def _stage(cin: int, cout: int, reduce_spatial_size: bool) -> nn.Sequential:
    layers: list[nn.Module] = [OSBlock(cin, cout)]
    layers += [OSBlock(cout, cout) for _ in range(1, _BLOCKS_PER_STAGE)]
    if reduce_spatial_size:
        # Transition sits at index 2 of the stage: ``convN.2.0`` is its 1x1 conv layer.
        layers.append(nn.Sequential(ConvLayer(cout, cout), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


class OSNet(nn.Module):
    """OSNet backbone + ``fc`` (Linear, BN1d, ReLU); ``forward`` returns the embedding."""

    def __init__(self, widths: tuple[int, int, int, int], feature_dim: int = _FEATURE_DIM) -> None:
        super().__init__()
        c0, c1, c2, c3 = widths
        self.feature_dim = feature_dim
        self.conv1 = ConvLayer(3, c0, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(c0, c1, reduce_spatial_size=True)
        self.conv3 = _stage(c1, c2, reduce_spatial_size=True)
        self.conv4 = _stage(c2, c3, reduce_spatial_size=False)
        self.conv5 = ConvLayer(c3, c3)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(c3, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True)
        )
        torchreid_init(self)

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.global_avgpool(self.featuremaps(x)).flatten(1)
        return self.fc(v)


def torchreid_init(model: nn.Module) -> None:
    """torchreid's random init, shared by every zoo family: kaiming convs, unit BN, N(0, 0.01) linears.

    One deliberate change: the conv fan-out counts only the outputs one input channel feeds
    (``out_channels // groups``). For dense convs this is exactly torchreid's kaiming fan_out; for
    depthwise convs torchreid's fan_out is ``groups`` times too large, which shrinks activations
    layer by layer until a freshly built MobileNetV2 emits ~1e-10 embeddings.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            fan_out = m.out_channels // m.groups * kh * kw
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _osnet(widths: tuple[int, int, int, int]) -> OSNet:
    return OSNet(widths)


@register_model(family="osnet", feature_dim=_FEATURE_DIM)
def osnet_x1_0() -> nn.Module:
    """OSNet x1.0 (torchreid), 512-d embedding."""
    return _osnet(_WIDTHS["x1_0"])


@register_model(family="osnet", feature_dim=_FEATURE_DIM)
def osnet_x0_75() -> nn.Module:
    """OSNet x0.75 (torchreid), 512-d embedding."""
    return _osnet(_WIDTHS["x0_75"])


@register_model(family="osnet", feature_dim=_FEATURE_DIM)
def osnet_x0_5() -> nn.Module:
    """OSNet x0.5 (torchreid), 512-d embedding."""
    return _osnet(_WIDTHS["x0_5"])


@register_model(family="osnet", feature_dim=_FEATURE_DIM)
def osnet_x0_25() -> nn.Module:
    """OSNet x0.25 (torchreid), 512-d embedding."""
    return _osnet(_WIDTHS["x0_25"])
