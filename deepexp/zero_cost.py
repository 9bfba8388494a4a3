"""Zero-cost proxies: scores of an untrained network from one batch, to rank candidates before training.

  grad_norm  sum over layers of the L2 norm of dLoss/dW                       (Abdelfattah et al. 2021)
  snip       sum |W * dLoss/dW|, connection sensitivity                        (Lee et al. 2019)
  synflow    sum |W * dR/dW| with R the output of the all-|W| network on ones (Tanaka et al. 2020), data-free
  naswot     log|K| of the Hamming-similarity kernel of the batch's binary activation codes (Mellor et al. 2021)

Higher is better for every one of them. Each needs one forward (and backward) pass.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import is_activation

PROXIES = ("synflow", "naswot", "grad_norm", "snip")


def _weights(model: nn.Module):
    """Conv and linear weights: the connections the proxies score."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _loss_gradients(model: nn.Module, x: Tensor, y: Tensor):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [(w, w.grad) for w in _weights(model) if w.grad is not None]


def grad_norm(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float(sum(g.norm() for _, g in _loss_gradients(model, x, y)))


def snip(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float(sum((w.detach() * g).abs().sum() for w, g in _loss_gradients(model, x, y)))


def synflow(model: nn.Module, x: Tensor, y: Tensor) -> float:
    net = copy.deepcopy(model).double().eval()  # eval: BatchNorm uses its (initial) running statistics
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    net(torch.ones(1, *x.shape[1:], dtype=torch.float64)).sum().backward()
    return float(sum((w.detach() * w.grad).abs().sum() for w in _weights(net) if w.grad is not None))


def naswot(model: nn.Module, x: Tensor, y: Tensor) -> float:
    codes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: codes.append((out.detach().flatten(1) > 0).double()))
             for m in model.modules() if is_activation(m)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T  # units on which each pair of images agrees
    return float(torch.linalg.slogdet(kernel).logabsdet)


SCORERS: Dict[str, Callable[[nn.Module, Tensor, Tensor], float]] = {
    "synflow": synflow, "naswot": naswot, "grad_norm": grad_norm, "snip": snip}


def score_all(model: nn.Module, x: Tensor, y: Tensor) -> Dict[str, float]:
    """Every proxy on one batch; the model's weights and mode are left as they were."""
    was_training = model.training
    model.train()
    out = {name: fn(model, x, y) for name, fn in SCORERS.items()}
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return out
