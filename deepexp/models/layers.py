"""Layers shared by the model families.

`GlobalAvgPool` is the global average pooling before every conv net's classifier,
written as the mean over height and width that it is. `nn.AdaptiveAvgPool2d(1)`
computes the same numbers (ATen's `adaptive_avg_pool2d` itself takes `mean` when the
output is 1x1, aten/src/ATen/native/AdaptiveAveragePooling.cpp), but only through
that shortcut: its own CUDA backward kernel, `adaptive_avg_pool2d_backward_cuda`,
has no deterministic implementation (torch.use_deterministic_algorithms' list), and
the mean's backward (a broadcast division) is deterministic on every device. It
exports to ONNX as ReduceMean. timm pools the same way (FastAdaptiveAvgPool).

`WEIGHT_LAYERS` are the layers whose weight is a matrix of connections (a dense or
convolution kernel): the ones weight initialisation sets, the per-layer monitor
measures and the zero-cost proxies score. Normalisation layers carry a `weight` too,
but it is a per-channel scale, not a set of connections, and all three leave it alone.
"""

from __future__ import annotations

from torch import Tensor, nn

# Dense and convolution layers: the MLP's Linear and the conv nets' Conv2d; and Conv1d, which no family here
# uses yet but whose kernel is connections just as Conv2d's is, so a model that has one needs no change elsewhere.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The WEIGHT_LAYERS of `model` as (module path, module), from input to output in definition order
    (`named_modules`' order: for deepexp's models, the order of the forward pass)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: (N, C, H, W) -> (N, C), in any memory format."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))
