"""ResNets written from scratch, and the same networks without shortcuts ("plain").

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016: the
ImageNet-style ResNet-18/50 (here with the CIFAR stem: one 3x3 conv, no max-pool)
and the CIFAR family ResNet-(6n+2) with 16/32/64 channels. Shortcut options as
in the paper: A = identity with zero-padded extra channels, B = 1x1 projection
only where the shape changes, C = projection everywhere. `residual=False` drops
the shortcuts, so `plain20` vs `resnet20` differ in nothing else.
Structure follows torchvision's BasicBlock / Bottleneck / _make_layer.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple, Type, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .activations import act_layer
from .layers import GlobalAvgPool
from .registry import register_model

NormLayer = Callable[[int], nn.Module]


def norm_layer_for(norm: str) -> NormLayer:
    return nn.BatchNorm2d if norm == "batch" else (lambda channels: nn.Identity())


def conv3x3(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


def conv1x1(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias)


class PadShortcut(nn.Module):
    """Option A: subsample spatially and zero-pad the new channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def make_shortcut(c_in: int, c_out: int, stride: int, option: str, norm_layer: NormLayer, bias: bool) -> nn.Module:
    """The one place that decides between identity, zero-padding and projection."""
    same_shape = stride == 1 and c_in == c_out
    if option == "C" or (option == "B" and not same_shape):
        return nn.Sequential(conv1x1(c_in, c_out, stride, bias), norm_layer(c_out))
    if same_shape:
        return nn.Identity()
    return PadShortcut(stride, c_out - c_in)


class BasicBlock(nn.Module):
    """Two 3x3 convs; the activation after the addition, as in the paper."""

    expansion = 1

    def __init__(
        self, c_in: int, width: int, stride: int, act_layer: Callable[[], nn.Module], norm_layer: NormLayer, shortcut: str, residual: bool, bias: bool
    ):
        super().__init__()
        self.conv1 = conv3x3(c_in, width, stride, bias)
        self.bn1 = norm_layer(width)
        self.act1 = act_layer()
        self.conv2 = conv3x3(width, width, 1, bias)
        self.bn2 = norm_layer(width)
        self.act2 = act_layer()
        self.shortcut = make_shortcut(c_in, width, stride, shortcut, norm_layer, bias) if residual else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(identity)
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), stride on the 3x3 (torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(
        self, c_in: int, width: int, stride: int, act_layer: Callable[[], nn.Module], norm_layer: NormLayer, shortcut: str, residual: bool, bias: bool
    ):
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = conv1x1(c_in, width, 1, bias)
        self.bn1 = norm_layer(width)
        self.act1 = act_layer()
        self.conv2 = conv3x3(width, width, stride, bias)
        self.bn2 = norm_layer(width)
        self.act2 = act_layer()
        self.conv3 = conv1x1(width, c_out, 1, bias)
        self.bn3 = norm_layer(c_out)
        self.act3 = act_layer()
        self.shortcut = make_shortcut(c_in, c_out, stride, shortcut, norm_layer, bias) if residual else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(identity)
        return self.act3(out)


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Module):
    def __init__(
        self,
        block: Block,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        in_channels: int,
        num_classes: int,
        act_layer: Callable[[], nn.Module],
        norm: str = "batch",
        shortcut: str = "B",
        residual: bool = True,
    ):
        super().__init__()
        norm_layer = norm_layer_for(norm)
        bias = norm != "batch"  # a conv followed by batch norm needs no bias
        stem_width = widths[0]
        self.stem = nn.Sequential(conv3x3(in_channels, stem_width, 1, bias), norm_layer(stem_width), act_layer())
        stages: List[nn.Module] = []
        c_in = stem_width
        for i, (n, width) in enumerate(zip(blocks_per_stage, widths)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(block(c_in, width, stride if j == 0 else 1, act_layer, norm_layer, shortcut, residual, bias))
                c_in = width * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.layers(self.stem(x))))


def _resnet(
    block: Block,
    blocks_per_stage: Sequence[int],
    widths: Sequence[int],
    *,
    in_channels: int,
    image_shape: Tuple[int, int],
    num_classes: int,
    act: str,
    norm: str = "batch",
    shortcut: str = "B",
    residual: bool = True,
) -> ResNet:
    return ResNet(block, blocks_per_stage, widths, in_channels, num_classes, act_layer(act), norm, shortcut, residual)


IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)


@register_model("resnet18")
def resnet18(**kw) -> ResNet:
    return _resnet(BasicBlock, (2, 2, 2, 2), IMAGENET_WIDTHS, **kw)


@register_model("plain18")
def plain18(**kw) -> ResNet:
    return _resnet(BasicBlock, (2, 2, 2, 2), IMAGENET_WIDTHS, residual=False, **kw)


@register_model("resnet50")
def resnet50(**kw) -> ResNet:
    return _resnet(Bottleneck, (3, 4, 6, 3), IMAGENET_WIDTHS, **kw)


def _cifar(depth: int, residual: bool, **kw) -> ResNet:
    n = (depth - 2) // 6  # 6n + 2 layers: three stages of n two-conv blocks, plus stem and head
    return _resnet(BasicBlock, (n, n, n), CIFAR_WIDTHS, residual=residual, **kw)


@register_model("resnet20")
def resnet20(**kw) -> ResNet:
    return _cifar(20, True, **kw)


@register_model("resnet32")
def resnet32(**kw) -> ResNet:
    return _cifar(32, True, **kw)


@register_model("resnet44")
def resnet44(**kw) -> ResNet:
    return _cifar(44, True, **kw)


@register_model("resnet56")
def resnet56(**kw) -> ResNet:
    return _cifar(56, True, **kw)


@register_model("resnet110")
def resnet110(**kw) -> ResNet:
    return _cifar(110, True, **kw)


@register_model("plain20")
def plain20(**kw) -> ResNet:
    return _cifar(20, False, **kw)


@register_model("plain32")
def plain32(**kw) -> ResNet:
    return _cifar(32, False, **kw)


@register_model("plain44")
def plain44(**kw) -> ResNet:
    return _cifar(44, False, **kw)


@register_model("plain56")
def plain56(**kw) -> ResNet:
    return _cifar(56, False, **kw)


@register_model("plain110")
def plain110(**kw) -> ResNet:
    return _cifar(110, False, **kw)
