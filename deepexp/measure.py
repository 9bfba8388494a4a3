"""Model measurements usable on any registered model: parameters and MACs.

MACs come from `torch.utils.flop_counter.FlopCounterMode` on one input image;
the convention is one multiply-accumulate (MAC) = two FLOPs, so MACs = FLOPs / 2.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, in_channels: int, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (eval mode)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, image_size, image_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
