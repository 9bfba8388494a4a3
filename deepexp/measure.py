"""Model measurements usable on any registered model: parameters, MACs and latency.

MACs come from `torch.utils.flop_counter.FlopCounterMode` on one input image;
the convention is one multiply-accumulate (MAC) = two FLOPs, so MACs = FLOPs / 2.
Latency comes from `torch.utils.benchmark.Timer` (warm-up, then blocks of calls
until `min_run_time` seconds have passed; median and interquartile range of the
per-call time over the blocks) with a fixed, recorded thread count.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .host import keep_freed_memory

WARMUP_CALLS = 3  # first calls allocate buffers and pick kernels


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass (eval mode) on one image of `input_shape` = (C, H, W)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass
class Latency:
    batch: int
    threads: int
    median_ms: float  # per call (one batch)
    iqr_ms: float
    blocks: int  # timed blocks behind the median

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000)

    def as_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s}


def time_call(call: Callable[[], object], batch: int, threads: int, min_run_time: float) -> Latency:
    """Latency of `call()` (one batch of `batch` images) under `threads` intra-op threads."""
    # torch.utils.benchmark imports cpp_extension, which warns about CUDA_HOME on machines
    # without a CUDA runtime; that line says nothing about the measurement.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    keep_freed_memory()  # as in training, so a latency does not depend on whether this process trained first
    for _ in range(WARMUP_CALLS):
        call()
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(batch, threads, m.median * 1000, m.iqr * 1000, len(m.times))


def torch_latency(model: nn.Module, input_shape: Tuple[int, int, int], batch: int, threads: int, min_run_time: float) -> Latency:
    """PyTorch FP32 CPU inference latency (eval mode, `torch.inference_mode`) on a batch (batch, C, H, W),
    with (C, H, W) = `input_shape`; `min_run_time` in seconds."""
    model = model.eval().cpu()
    x = torch.rand(batch, *input_shape)

    def call() -> None:
        with torch.inference_mode():
            model(x)

    return time_call(call, batch, threads, min_run_time)
