"""Weight initialisation schemes, with `auto` matched to the activation.

Glorot & Bengio 2010 (xavier), He et al. 2015 (kaiming), LeCun et al. 1998 /
Klambauer et al. 2017 (lecun, what SELU needs).
"""

from __future__ import annotations

import math

from torch import nn

from .activations import ACTIVATIONS
from .layers import weight_layers


def init_weights(model: nn.Module, scheme: str, act: str) -> str:
    """Initialise the weight of every weight layer of `model` (layers.WEIGHT_LAYERS); their biases start at zero.

    Returns the scheme actually used (`auto` resolved).
    """
    info = ACTIVATIONS.get(act)
    if scheme == "auto":
        scheme = info.matched_init
    if scheme == "default":
        return scheme
    for _, module in weight_layers(model):
        weight = module.weight
        if scheme == "kaiming":
            nn.init.kaiming_normal_(weight, a=info.slope, mode="fan_in", nonlinearity=info.gain)
        elif scheme == "xavier":
            nn.init.xavier_normal_(weight, gain=nn.init.calculate_gain(info.gain, info.slope or None))
        elif scheme == "lecun":
            nn.init.normal_(weight, 0.0, 1.0 / math.sqrt(weight[0].numel()))
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return scheme
