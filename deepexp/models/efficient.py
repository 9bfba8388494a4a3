"""Efficient CNNs for project 3: a VGG-style baseline and five cheaper designs.

Every model except MobileNetV2 shares one macro-architecture, so that the block
type is the only difference between them: a 3x3 stem conv, then three stages at
widths c, 2c, 4c (c = 64 x width multiplier) of one, two and two blocks, 2x2
max-pooling after the first two stages, global average pooling and a linear head.

  baseline_cnn    3x3 conv                                   (Simonyan & Zisserman 2015)
  dws_cnn         depthwise 3x3 + pointwise 1x1              (Howard et al. 2017, MobileNet)
  bottleneck_cnn  1x1 reduce to c/4, 3x3, 1x1 expand         (He et al. 2016)
  squeeze_cnn     1x1 squeeze to c/4, then the 3x3 to c      (Iandola et al. 2016, SqueezeNet)
  inception_cnn   parallel 1x1 / 3x3 / double-3x3 / pool     (Szegedy et al. 2015-16)
  mobilenet_v2    inverted residuals with linear bottlenecks (Sandler et al. 2018), its own layout

Every activation is the `act=` choice (MobileNetV2's paper uses ReLU6).
"""

from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

from .activations import act_layer
from .layers import GlobalAvgPool
from .registry import register_model

Act = Callable[[], nn.Module]
STAGE_WIDTHS = (64, 128, 256)  # c, 2c, 4c at width 1.0
BLOCKS_PER_STAGE = (1, 2, 2)  # after the stem, so six 3x3-conv layers deep in the baseline


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor`, never dropping more than 10% (MobileNet's rule)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def conv_norm_act(c_in: int, c_out: int, kernel: int, act: Act | None, batch_norm: bool, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """conv -> [BatchNorm] -> [activation]; `act=None` keeps it linear (MobileNetV2's projections)."""
    layers: List[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --- the blocks, each mapping c_in -> c_out channels at the same resolution ------------------


def standard_block(c_in: int, c_out: int, act: Act, bn: bool) -> nn.Module:
    return conv_norm_act(c_in, c_out, 3, act, bn)


def depthwise_separable_block(c_in: int, c_out: int, act: Act, bn: bool, stride: int = 1) -> nn.Module:
    """k*k*c_in + c_in*c_out weights instead of k*k*c_in*c_out (about 8-9x fewer for 3x3)."""
    return nn.Sequential(conv_norm_act(c_in, c_in, 3, act, bn, stride=stride, groups=c_in), conv_norm_act(c_in, c_out, 1, act, bn))


def bottleneck_block(c_in: int, c_out: int, act: Act, bn: bool) -> nn.Module:
    mid = make_divisible(c_out / 4)
    return nn.Sequential(conv_norm_act(c_in, mid, 1, act, bn), conv_norm_act(mid, mid, 3, act, bn), conv_norm_act(mid, c_out, 1, act, bn))


def squeeze_block(c_in: int, c_out: int, act: Act, bn: bool) -> nn.Module:
    return nn.Sequential(conv_norm_act(c_in, make_divisible(c_out / 4), 1, act, bn), conv_norm_act(make_divisible(c_out / 4), c_out, 3, act, bn))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated: c/4 of 1x1, c/2 of 3x3, c/8 of double 3x3 (a 5x5
    receptive field, Inception-v2's factorisation) and c/8 of 3x3 max-pool + 1x1; the 3x3
    branches first reduce their input with a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, act: Act, bn: bool):
        super().__init__()
        quarter, half, eighth = c_out // 4, c_out // 2, c_out // 8
        c_double = c_out - quarter - half - eighth  # takes the rounding remainder
        self.branches = nn.ModuleList(
            [
                conv_norm_act(c_in, quarter, 1, act, bn),
                nn.Sequential(conv_norm_act(c_in, quarter, 1, act, bn), conv_norm_act(quarter, half, 3, act, bn)),
                nn.Sequential(
                    conv_norm_act(c_in, eighth, 1, act, bn),
                    conv_norm_act(eighth, c_double, 3, act, bn),
                    conv_norm_act(c_double, c_double, 3, act, bn),
                ),
                nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_norm_act(c_in, eighth, 1, act, bn)),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


BLOCKS = {
    "standard": standard_block,
    "depthwise_separable": depthwise_separable_block,
    "bottleneck": bottleneck_block,
    "squeeze": squeeze_block,
    "inception": InceptionBlock,
}


class StagedCNN(nn.Module):
    """Stem conv, three stages of `block`, pooling between stages, global pooling, linear head."""

    def __init__(self, block: str, in_channels: int, num_classes: int, width: float, act: Act, batch_norm: bool):
        super().__init__()
        widths = [make_divisible(c * width) for c in STAGE_WIDTHS]
        self.stem = conv_norm_act(in_channels, widths[0], 3, act, batch_norm)
        layers: List[nn.Module] = []
        c_in = widths[0]
        for stage, (c_out, blocks) in enumerate(zip(widths, BLOCKS_PER_STAGE)):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(blocks):
                layers.append(BLOCKS[block](c_in, c_out, act, batch_norm))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(self.stem(x))))


def _staged(name: str, block: str) -> None:
    @register_model(name)
    def build(*, in_channels: int, image_shape: Tuple[int, int], num_classes: int, act: str, width: float = 1.0, norm: str = "batch") -> StagedCNN:
        return StagedCNN(block, in_channels, num_classes, width, act_layer(act), batch_norm=norm == "batch")


for _name, _block in (
    ("baseline_cnn", "standard"),
    ("dws_cnn", "depthwise_separable"),
    ("bottleneck_cnn", "bottleneck"),
    ("squeeze_cnn", "squeeze"),
    ("inception_cnn", "inception"),
):
    _staged(_name, _block)


# --- MobileNetV2 ----------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """1x1 expand (x t), depthwise 3x3, linear 1x1 projection; identity shortcut when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, act: Act, bn: bool):
        super().__init__()
        hidden = c_in * expand
        layers = [conv_norm_act(c_in, hidden, 1, act, bn)] if expand != 1 else []
        layers += [conv_norm_act(hidden, hidden, 3, act, bn, stride=stride, groups=hidden), conv_norm_act(hidden, c_out, 1, None, bn)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expansion t, channels c, repeats n, first stride s): Sandler et al. 2018, Table 2.
MOBILENET_V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    """Sandler et al. 2018. For images under 64 px on either side the stem and the 24-channel stage keep
    stride 1 (the usual CIFAR adaptation), so a 32 x 32 input ends at 4x4 instead of 1x1."""

    def __init__(self, in_channels: int, num_classes: int, image_shape: Tuple[int, int], width: float, act: Act, batch_norm: bool):
        super().__init__()
        small = min(image_shape) < 64
        c_in = make_divisible(32 * width)
        layers: List[nn.Module] = [conv_norm_act(in_channels, c_in, 3, act, batch_norm, stride=1 if small else 2)]
        for i, (t, c, n, s) in enumerate(MOBILENET_V2_SETTING):
            c_out = make_divisible(c * width)
            for j in range(n):
                stride = 1 if j > 0 or (small and i == 1) else s
                layers.append(InvertedResidual(c_in, c_out, stride, t, act, batch_norm))
                c_in = c_out
        last = make_divisible(1280 * max(1.0, width))  # the paper keeps 1280 below width 1
        layers.append(conv_norm_act(c_in, last, 1, act, batch_norm))
        self.features = nn.Sequential(*layers)
        self.pool = GlobalAvgPool()
        # Plain dropout whatever the activation, SELU included: it feeds the linear classifier and no
        # activation after it, so there is no self-normalisation to keep; alpha dropout's correction
        # also assumes zero-mean unit-variance inputs, which pooled features are not.
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.pool(self.features(x))))


@register_model("mobilenet_v2")
def mobilenet_v2(
    *, in_channels: int, image_shape: Tuple[int, int], num_classes: int, act: str, width: float = 1.0, norm: str = "batch"
) -> MobileNetV2:
    return MobileNetV2(in_channels, num_classes, image_shape, width, act_layer(act), norm == "batch")
