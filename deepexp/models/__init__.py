"""Model families; importing this package registers every model by name."""

from . import cnn, densenet, efficient, mlp, nas_space, resnet  # noqa: F401  (registration side effects)
from .activations import ACTIVATIONS, act_layer, is_activation
from .init import init_weights
from .registry import check_input_fits, create_model, list_models

__all__ = ["ACTIVATIONS", "act_layer", "is_activation", "init_weights", "check_input_fits", "create_model", "list_models"]
