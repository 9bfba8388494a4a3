"""DenseNet-BC for CIFAR: every layer sees the feature maps of all layers before it.

Huang et al., "Densely Connected Convolutional Networks", CVPR 2017. BC = bottleneck
layers (BN-act-1x1 conv to 4k channels, then BN-act-3x3 conv to k channels) and
compression 0.5 in the transitions (BN-act-1x1 conv, 2x2 average pooling).
`densenet` is DenseNet-BC-100 with growth rate k = 12: 0.77M parameters for 10
classes, sized to compare with ResNet-56 (0.85M).
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor, nn

from .activations import act_layer
from .layers import GlobalAvgPool
from .registry import register_model
from .resnet import NormLayer, norm_layer_for


class DenseLayer(nn.Module):
    """Pre-activation bottleneck: norm-act-1x1 (4k) -> norm-act-3x3 (k); output is concatenated."""

    def __init__(self, c_in: int, growth: int, act_layer: Callable[[], nn.Module], norm_layer: NormLayer, bias: bool):
        super().__init__()
        width = 4 * growth
        self.bn1 = norm_layer(c_in)
        self.act1 = act_layer()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=bias)
        self.bn2 = norm_layer(width)
        self.act2 = act_layer()
        self.conv2 = nn.Conv2d(width, growth, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.act1(self.bn1(x)))
        out = self.conv2(self.act2(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, act_layer: Callable[[], nn.Module], norm_layer: NormLayer, bias: bool):
        super().__init__(norm_layer(c_in), act_layer(), nn.Conv2d(c_in, c_out, 1, bias=bias), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    def __init__(
        self,
        depth: int,
        growth: int,
        in_channels: int,
        num_classes: int,
        act_layer: Callable[[], nn.Module],
        norm: str = "batch",
        compression: float = 0.5,
    ):
        super().__init__()
        n = (depth - 4) // 6  # bottleneck layers per dense block: two convs each, three blocks, plus stem, 2 transitions, head
        norm_layer = norm_layer_for(norm)
        bias = norm != "batch"
        channels = 2 * growth
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=bias)
        stages = []
        for block in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(channels, growth, act_layer, norm_layer, bias))
                channels += growth
            stages.append(nn.Sequential(*layers))
            if block < 2:
                reduced = int(channels * compression)
                stages.append(Transition(channels, reduced, act_layer, norm_layer, bias))
                channels = reduced
        self.layers = nn.Sequential(*stages)
        self.final = nn.Sequential(norm_layer(channels), act_layer())
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.final(self.layers(self.stem(x)))))


def _densenet(
    depth: int, growth: int, *, in_channels: int, image_shape: Tuple[int, int], num_classes: int, act: str, norm: str = "batch"
) -> DenseNet:
    return DenseNet(depth, growth, in_channels, num_classes, act_layer(act), norm)


@register_model("densenet")
def densenet(**kw) -> DenseNet:
    return _densenet(100, 12, **kw)
