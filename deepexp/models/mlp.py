"""A deep multilayer perceptron, the subject of the activation-function study.

`depth` hidden layers of `width` units, each Linear -> [BatchNorm] -> activation
-> [Dropout], then a linear classifier. Module paths read `layers.0` (the first
Linear), `layers.1` (its activation), ..., `head`. The dropout is the one the
activation table pairs with the activation: alpha dropout for SELU, which keeps a
self-normalising network's activations at zero mean and unit variance (Klambauer
et al. 2017), plain dropout otherwise.
"""

from __future__ import annotations

from typing import Callable, Tuple

from torch import Tensor, nn

from .activations import act_layer, dropout_layer
from .registry import register_model


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int,
        width: int,
        act_layer: Callable[[], nn.Module],
        batch_norm: bool = False,
        dropout: float = 0.0,
        dropout_layer: Callable[[float], nn.Module] = nn.Dropout,
    ):
        super().__init__()
        layers = []
        for i in range(depth):
            layers.append(nn.Linear(in_features if i == 0 else width, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(act_layer())
            if dropout > 0:
                layers.append(dropout_layer(dropout))
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layers(x.flatten(1)))


@register_model("mlp")
def mlp(
    *,
    in_channels: int,
    image_shape: Tuple[int, int],
    num_classes: int,
    act: str,
    depth: int = 12,
    width: int = 256,
    norm: str = "none",
    dropout: float = 0.0,
) -> MLP:
    h, w = image_shape  # the input is flattened: C * H * W features
    return MLP(
        in_channels * h * w, num_classes, depth, width, act_layer(act), batch_norm=norm == "batch", dropout=dropout, dropout_layer=dropout_layer(act)
    )
