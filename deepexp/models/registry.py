"""The model registry: `create_model(name, ...)` and `list_models()`.

Every builder takes the same data-shape keywords (in_channels, image_shape = (H, W),
num_classes) and the activation name, plus its family's options from
`configs/model/<name>.yaml`.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def create_model(name: str, *, in_channels: int, image_shape: Tuple[int, int], num_classes: int, act: str = "relu", **options: Any) -> nn.Module:
    """The registered model `name` for inputs (N, in_channels, H, W) with (H, W) = `image_shape`, giving
    logits (N, num_classes). Raises ConfigError for an unknown name or an option its family does not take."""
    builder = MODELS.get(name)
    try:
        return builder(in_channels=in_channels, image_shape=tuple(image_shape), num_classes=num_classes, act=act, **options)
    except TypeError as exc:  # an option this family does not take
        raise ConfigError(f"model {name!r}: {exc}") from None


@torch.no_grad()
def check_input_fits(model: nn.Module, name: str, input_shape: Tuple[int, int, int]) -> None:
    """Raise ConfigError (one line) where `model` cannot take one image of `input_shape` = (C, H, W), e.g.
    a side too small for its pooling; found by one forward pass on zeros (eval mode, on the model's device)."""
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    except RuntimeError as exc:
        c, h, w = input_shape
        raise ConfigError(
            f"model {name!r} cannot take {h}x{w} images with {c} channel(s) ({str(exc).splitlines()[0]}); "
            f"use larger images or a model that downsamples less"
        ) from None
    finally:
        model.train(was_training)


def list_models() -> List[str]:
    return MODELS.names()
