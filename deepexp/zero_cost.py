"""Zero-cost proxies: scores of an untrained network from one batch, to rank candidates before training.

  grad_norm  sum over layers of the L2 norm of dLoss/dW                       (Abdelfattah et al. 2021)
  snip       sum |W * dLoss/dW|, connection sensitivity                        (Lee et al. 2019)
  synflow    sum |W * dR/dW| with R the output of the all-|W| network on ones (Tanaka et al. 2020), data-free
  naswot     log|K| of the Hamming-similarity kernel of the batch's binary activation codes (Mellor et al. 2021)

Higher is better for every one of them. Together they cost one forward and backward pass on the
batch (grad_norm and snip share it), one forward pass (naswot) and synflow's pass on one image.

Every tensor a proxy makes lives on the device of its inputs (the model and the batch, which must
share one), and each proxy returns a 0-dim tensor there: on a GPU nothing is copied between devices
and nothing waits for the GPU until `score_all` reads the four scores at the end.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import is_activation
from .models.layers import weight_layers

PROXIES = ("synflow", "naswot", "grad_norm", "snip")

Gradients = List[Tuple[Tensor, Tensor]]  # (weight, dLoss/dweight) per scored connection


def _weights(model: nn.Module) -> List[Tensor]:
    """The weights of the weight layers (models.layers.WEIGHT_LAYERS: dense and convolution kernels), the
    connections the proxies score. Each proxy sums over connections of any kind (Lee et al. 2019 and Tanaka
    et al. 2020 score every weight), so the set is the one initialisation and the monitor use."""
    return [m.weight for _, m in weight_layers(model)]


def loss_gradients(model: nn.Module, x: Tensor, y: Tensor) -> Gradients:
    """One forward and backward pass of the cross-entropy on a batch: images x (N, C, H, W) and labels
    y (N,), both on the model's device."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [(w.detach(), w.grad) for w in _weights(model) if w.grad is not None]


def grad_norm(grads: Gradients) -> Tensor:
    """sum over scored layers of ||dLoss/dW||_2 (Abdelfattah et al. 2021), 0-dim on the gradients' device."""
    return sum(g.norm() for _, g in grads)


def snip(grads: Gradients) -> Tensor:
    """sum |W * dLoss/dW| (Lee et al. 2019), 0-dim on the gradients' device."""
    return sum((w * g).abs().sum() for w, g in grads)


def synflow(model: nn.Module, x: Tensor) -> Tensor:
    """sum |W * dR/dW| with R the summed output of a float64 copy of the network whose weights are |W|,
    on one all-ones image of x's shape (C, H, W) (Tanaka et al. 2020); 0-dim float64 on x's device,
    which must be the model's."""
    net = copy.deepcopy(model).double().eval()  # eval: BatchNorm uses its (initial) running statistics
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    net(torch.ones(1, *x.shape[1:], dtype=torch.float64, device=x.device)).sum().backward()
    return sum((w.detach() * w.grad).abs().sum() for w in _weights(net) if w.grad is not None)


def naswot(model: nn.Module, x: Tensor) -> Tensor:
    """log|K| with K[i, j] the number of units on which images i and j agree (both active or both not),
    for the batch x (N, C, H, W) on the model's device; 0-dim float64 on x's device (Mellor et al. 2021).

    Summed layer by layer: for a layer's binary codes c (images x D units) with r active units per
    image, c c^T + (1 - c)(1 - c)^T = 2 c c^T + D - r_i - r_j, so one matrix product per layer and
    no concatenated code matrix. Counts are integers: exact in float32 while a layer has fewer than
    2**24 units (CIFAR's largest here: 256 x 32 x 32 = 262,144), in float64 beyond."""
    agree = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)

    def add_layer(_module: nn.Module, _inputs, out: Tensor) -> None:
        units = out[0].numel()
        c = (out.detach().flatten(1) > 0).to(torch.float32 if units < 2**24 else torch.float64)
        active = c.sum(1).double()
        agree.add_((2 * (c @ c.T)).double() + c.shape[1] - active[:, None] - active[None, :])

    hooks = [m.register_forward_hook(add_layer) for m in model.modules() if is_activation(m)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return torch.linalg.slogdet(agree).logabsdet


def score_all(model: nn.Module, x: Tensor, y: Tensor) -> Dict[str, float]:
    """Every proxy (PROXIES) on one batch, images x (N, C, H, W) and labels y (N,) on the model's device,
    as Python floats; the model's weights and mode are left as they were."""
    was_training = model.training
    model.train()
    # synflow first: it evaluates with BatchNorm's running statistics, which the training-mode passes move.
    out = {"synflow": synflow(model, x), "naswot": naswot(model, x)}
    grads = loss_gradients(model, x, y)  # one backward pass serves both gradient proxies
    out.update(grad_norm=grad_norm(grads), snip=snip(grads))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: float(score) for name, score in out.items()}  # the only reads of the device: at the end
