"""Layers shared by the model families.

`GlobalAvgPool` is the global average pooling before every conv net's classifier,
written as the mean over height and width that it is. `nn.AdaptiveAvgPool2d(1)`
computes the same numbers (ATen's `adaptive_avg_pool2d` itself takes `mean` when the
output is 1x1, aten/src/ATen/native/AdaptiveAveragePooling.cpp), but only through
that shortcut: its own CUDA backward kernel, `adaptive_avg_pool2d_backward_cuda`,
has no deterministic implementation (torch.use_deterministic_algorithms' list), and
the mean's backward (a broadcast division) is deterministic on every device. It
exports to ONNX as ReduceMean. timm pools the same way (FastAdaptiveAvgPool).
"""
from __future__ import annotations

from torch import Tensor, nn


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: (N, C, H, W) -> (N, C), in any memory format."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))
