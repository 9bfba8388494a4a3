"""Model measurements usable on any registered model: parameters, MACs and latency.

MACs come from `torch.utils.flop_counter.FlopCounterMode` on one input image;
the convention is one multiply-accumulate (MAC) = two FLOPs, so MACs = FLOPs / 2.
Latency comes from `torch.utils.benchmark.Timer` (warm-up, then blocks of calls
until `min_run_time` seconds have passed; median and interquartile range of the
per-call time over the blocks) with a fixed, recorded thread count.

A latency is only as good as its spread: it needs at least `MIN_BLOCKS` timed blocks
(a slow call gets more time, so that it has them), and an interquartile range above
`MAX_RELATIVE_IQR` of the median marks it as not measured reliably.

None of these functions changes the caller's model: its device, and the train/eval
mode of each of its modules, are as they were before the call.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, List, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .host import keep_freed_memory

WARMUP_CALLS = 3  # first calls allocate buffers and pick kernels
MIN_BLOCKS = 5  # timed blocks behind a median: with fewer, a quartile is one block and there is no spread to speak of
# An interquartile range above a quarter of the median: torch.utils.benchmark's own threshold for "significant
# environmental influence" (Measurement, _IQR_GROSS_WARN_THRESHOLD); it warns already at 10% ("system fluctuation").
MAX_RELATIVE_IQR = 0.25


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_device(model: nn.Module) -> torch.device:
    """The device of `model`'s first parameter or buffer (the CPU for a model without either)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block; afterwards every module is back in its own mode (a model may hold
    frozen eval-mode parts inside a training one, which `model.train(was_training)` would not restore)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def on_cpu(model: nn.Module) -> nn.Module:
    """`model` itself where all its tensors are on the CPU, else a CPU copy (the caller's model stays where it is)."""
    if all(t.device.type == "cpu" for t in itertools.chain(model.parameters(), model.buffers())):
        return model
    return copy.deepcopy(model).cpu()


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass (eval mode) on one image of `input_shape` = (C, H, W),
    computed on the model's own device."""
    x = torch.zeros(1, *input_shape, device=model_device(model))
    with evaluating(model), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@dataclass
class Latency:
    """One latency figure: the median and interquartile range (ms) of the time per call over `blocks` timed blocks,
    one call being one batch of `batch` images with `threads` intra-op threads."""

    batch: int
    threads: int
    median_ms: float  # per call (one batch)
    iqr_ms: float
    blocks: int  # timed blocks behind the median

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000)

    @property
    def relative_iqr(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def problems(self) -> List[str]:
        """Why the figure's own spread does not support it (few blocks, a wide IQR); empty where it does."""
        return spread_problems(self.blocks, self.relative_iqr)

    def as_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s, "relative_iqr": self.relative_iqr}


def spread_problems(blocks: int, relative_iqr: float) -> List[str]:
    """The reasons a latency over `blocks` timed blocks with IQR / median = `relative_iqr` is not measured reliably
    (MIN_BLOCKS, MAX_RELATIVE_IQR); empty where there are none."""
    out = []
    if blocks < MIN_BLOCKS:
        out.append(f"{blocks} timed block{'s' if blocks != 1 else ''} (fewer than {MIN_BLOCKS}: no spread)")
    if relative_iqr > MAX_RELATIVE_IQR:
        out.append(f"IQR {relative_iqr:.0%} of the median (above {MAX_RELATIVE_IQR:.0%})")
    return out


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_call(call: Callable[[], object], batch: int, threads: int, min_run_time: float) -> Latency:
    """Latency of `call()` (one batch of `batch` images) under `threads` intra-op threads.

    Timed in blocks for at least `min_run_time` seconds and at least MIN_BLOCKS blocks: a call slower
    than min_run_time / MIN_BLOCKS gets the time of MIN_BLOCKS + 1 calls, and blocks are added should
    the machine slow down meanwhile. The thread count applies to PyTorch; an ONNX Runtime session
    has its own, fixed when it was created."""
    # torch.utils.benchmark imports cpp_extension, which warns about CUDA_HOME on machines
    # without a CUDA runtime; that line says nothing about the measurement.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    keep_freed_memory()  # as in training, so a latency does not depend on whether this process trained first
    with _threads(threads):
        warm = []
        for _ in range(WARMUP_CALLS):
            start = time.perf_counter()
            call()
            warm.append(time.perf_counter() - start)
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=max(min_run_time, (MIN_BLOCKS + 1) * min(warm)))
    number = m.number_per_run
    while len(m.times) < MIN_BLOCKS:
        m = benchmark.Measurement.merge([m, timer.timeit(number)])[0]
    return Latency(batch, threads, m.median * 1000, m.iqr * 1000, len(m.times))


def torch_latency(model: nn.Module, input_shape: Tuple[int, int, int], batch: int, threads: int, min_run_time: float) -> Latency:
    """PyTorch FP32 CPU inference latency (eval mode, `torch.inference_mode`) on a batch (batch, C, H, W),
    with (C, H, W) = `input_shape`; `min_run_time` in seconds. A model on another device is timed as a CPU copy."""
    cpu_model = on_cpu(model)
    x = torch.rand(batch, *input_shape)

    def call() -> None:
        with torch.inference_mode():
            cpu_model(x)

    with evaluating(cpu_model):
        return time_call(call, batch, threads, min_run_time)
