"""A small VGG-style CNN (Simonyan & Zisserman 2015, scaled down for 28-32 px images).

Three stages of two 3x3 convs (width, 2x width, 4x width), each stage followed by
2x2 max-pooling, then global average pooling and a linear classifier.
"""

from __future__ import annotations

from typing import Callable, Tuple

from torch import Tensor, nn

from .activations import act_layer
from .layers import GlobalAvgPool
from .registry import register_model


def conv_bn_act(c_in: int, c_out: int, act_layer: Callable[[], nn.Module], batch_norm: bool) -> nn.Sequential:
    """3x3 conv -> [BatchNorm] -> activation (bias only where there is no norm to absorb it)."""
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(act_layer())
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int, act_layer: Callable[[], nn.Module], batch_norm: bool = True):
        super().__init__()
        stages, c_in = [], in_channels
        for c_out in (width, 2 * width, 4 * width):
            stages += [conv_bn_act(c_in, c_out, act_layer, batch_norm), conv_bn_act(c_out, c_out, act_layer, batch_norm), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


@register_model("cnn")
def cnn(*, in_channels: int, image_shape: Tuple[int, int], num_classes: int, act: str, width: int = 32, norm: str = "batch") -> SmallCNN:
    return SmallCNN(in_channels, num_classes, width, act_layer(act), batch_norm=norm == "batch")
