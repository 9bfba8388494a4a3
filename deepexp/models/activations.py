"""The one table of activation functions: name -> module factory and its properties.

Every block takes an activation factory resolved here, the activation study iterates
over this table, and the monitor recognises activation modules through it.
References: Klambauer et al. 2017 (SELU), Hendrycks & Gimpel 2016 (GELU),
Ramachandran et al. 2017 (Swish = SiLU), He et al. 2015 (PReLU).

The table also says which dropout goes with an activation: SELU's self-normalisation
(zero mean, unit variance carried from layer to layer) survives only alpha dropout,
which sets dropped units to SELU's negative saturation value and rescales so that the
mean and variance are kept (Klambauer et al. 2017, section "New Dropout Technique").
Plain dropout keeps the mean of its input but not its variance: a 12-layer SELU MLP
with dropout 0.2 drifts to mean 0.14, std 1.46 at its last hidden layer in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple, Type

from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class Activation:
    """One activation function and everything deepexp derives from it; `module` is derived from `make`."""

    make: Callable[[], nn.Module]  # a fresh module (PReLU has its own parameter per use)
    matched_init: str  # init=auto picks this: kaiming | lecun | xavier
    gain: str  # nn.init.calculate_gain name for xavier / kaiming
    slope: float = 0.0  # negative slope, for kaiming's gain with leaky units
    bounds: Optional[Tuple[float, float]] = None  # bounded outputs can saturate
    dropout: Callable[[float], nn.Module] = nn.Dropout  # the dropout that keeps this activation's statistics
    module: Type[nn.Module] = field(init=False)  # the class of what `make` builds: how is_activation finds the layers

    def __post_init__(self) -> None:
        object.__setattr__(self, "module", type(self.make()))


ACTIVATIONS: Registry[Activation] = Registry("activation")


def _add(name: str, act: Activation) -> None:
    ACTIVATIONS.register(name)(act)


_add("sigmoid", Activation(nn.Sigmoid, "xavier", "sigmoid", bounds=(0.0, 1.0)))
_add("tanh", Activation(nn.Tanh, "xavier", "tanh", bounds=(-1.0, 1.0)))
_add("relu", Activation(nn.ReLU, "kaiming", "relu"))
_add("leaky_relu", Activation(lambda: nn.LeakyReLU(0.01), "kaiming", "leaky_relu", slope=0.01))
_add("elu", Activation(nn.ELU, "kaiming", "relu"))
_add("selu", Activation(nn.SELU, "lecun", "selu", dropout=nn.AlphaDropout))
_add("gelu", Activation(nn.GELU, "kaiming", "relu"))
_add("prelu", Activation(lambda: nn.PReLU(init=0.25), "kaiming", "leaky_relu", slope=0.25))
_add("swish", Activation(nn.SiLU, "kaiming", "relu"))


def act_layer(name: str) -> Callable[[], nn.Module]:
    """The module factory for activation `name` (raises a one-line error for unknown names)."""
    return ACTIVATIONS.get(name).make


def dropout_layer(name: str) -> Callable[[float], nn.Module]:
    """The dropout factory (called with the drop probability p) that suits activation `name`:
    `nn.AlphaDropout` for SELU (Klambauer et al. 2017), `nn.Dropout` otherwise. Raises a
    one-line error for unknown names."""
    return ACTIVATIONS.get(name).dropout


def activation_types() -> Tuple[Type[nn.Module], ...]:
    """The module classes of every registered activation (`Activation.module`), in name order."""
    return tuple(ACTIVATIONS.get(name).module for name in ACTIVATIONS.names())


def is_activation(module: nn.Module) -> bool:
    """Whether `module` is a layer of a registered activation (an instance of one of `activation_types()`): the
    layers the monitor and the zero-cost proxies hook."""
    return isinstance(module, activation_types())
