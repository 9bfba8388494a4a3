"""The model registry: `create_model(name, ...)` and `list_models()`.

Every builder takes the same data-shape keywords (in_channels, image_shape = (H, W),
num_classes) and the activation name, plus its family's options from
`configs/model/<name>.yaml`.
"""
from __future__ import annotations

from typing import Any, Callable, List, Tuple

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def create_model(name: str, *, in_channels: int, image_shape: Tuple[int, int], num_classes: int, act: str = "relu",
                 **options: Any) -> nn.Module:
    """The registered model `name` for inputs (N, in_channels, H, W) with (H, W) = `image_shape`, giving
    logits (N, num_classes). Raises ConfigError for an unknown name or an option its family does not take."""
    builder = MODELS.get(name)
    try:
        return builder(in_channels=in_channels, image_shape=tuple(image_shape), num_classes=num_classes, act=act, **options)
    except TypeError as exc:  # an option this family does not take
        raise ConfigError(f"model {name!r}: {exc}") from None


def list_models() -> List[str]:
    return MODELS.names()
