"""Evaluation batch size: the trainer's `evaluate` at several batch sizes, per model family.

Evaluation has no backward pass, so one might expect the largest batch to be the cheapest.
On a CPU it is not, for conv nets: a batch of 1,024 CIFAR images makes activations of tens of
megabytes per layer, far beyond the caches, and eager PyTorch reads and writes each of them
for every BatchNorm and activation. This script times `deepexp.train.evaluate` (inference
mode, channels_last as the trainer runs it) on random uint8 images of each dataset's shape,
each batch size once per round, and prints the median over rounds and the ratio to the
default `eval_batch_size` (configs/train.yaml).

    python scripts/bench_eval_batch.py
    python scripts/bench_eval_batch.py --models resnet20 mobilenet_v2 --batch-sizes 1024 256 128 64 32
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from deepexp.config import compose_train  # the real config, composed as the tests compose it
from deepexp.data import Splits
from deepexp.models import create_model, list_models
from deepexp.train import evaluate

SHAPES = {"mlp": (10_000, 1, 28, 28)}  # MNIST's test set; the conv nets get CIFAR-10's subset (1,017 images)


def time_evaluate(name: str, batch_sizes: list[int], rounds: int) -> dict[int, float]:
    n, c, h, w = SHAPES.get(name, (1_017, 3, 32, 32))
    model = create_model(name, in_channels=c, image_shape=(h, w), num_classes=10, act="relu").to(memory_format=torch.channels_last)
    x, y = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8), torch.randint(0, 10, (n,))
    data = Splits(x, y, x, y, x, y, torch.zeros(c), torch.ones(c), 10, False, "random")
    evaluate(model, x, y, data, batch_sizes[0], nullcontext, torch.channels_last)  # warm-up
    times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for _ in range(rounds):  # batch sizes take turns, so that drift hits each alike
        for b in batch_sizes:
            start = time.perf_counter()
            evaluate(model, x, y, data, b, nullcontext, torch.channels_last)
            times[b].append(time.perf_counter() - start)
    return {b: statistics.median(t) for b, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["mlp", "cnn", "resnet20", "dws_cnn", "mobilenet_v2", "baseline_cnn"], choices=list_models())
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1024, 512, 256, 128, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default = compose_train([]).eval_batch_size
    sizes = sorted(set(args.batch_sizes) | {default}, reverse=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; seconds to evaluate the test set "
        f"(median of {args.rounds} rounds); ratio = time at the default {default} / time at that size"
    )
    for name in args.models:
        med = time_evaluate(name, sizes, args.rounds)
        cells = "  ".join(f"{b}: {med[b]:.3f} s ({med[default] / med[b]:.2f})" for b in sizes)
        print(f"  {name:<13} {cells}")


if __name__ == "__main__":
    main()
