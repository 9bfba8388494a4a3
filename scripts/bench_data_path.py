"""Data path: batched augmentation and normalisation as a fraction of a CIFAR-10 training step.

The trainer keeps the images as uint8 tensors in memory and, per step, slices a batch,
applies `random_crop_flip` (one gather for the whole batch) and `normalize`, then runs
forward, backward and the SGD step. This script times the data part alone and the whole
step (data included) with `torch.utils.benchmark`, on the same batch, model and threads,
and prints the fraction.

    python scripts/bench_data_path.py                       # cnn and resnet20, batch 128
    python scripts/bench_data_path.py --models cnn --batch-size 256

Target (issue #8): under 10% of a step.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import compose_train  # noqa: E402

from deepexp.data import load_splits, normalize, random_crop_flip  # noqa: E402
from deepexp.models import create_model, init_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["cnn", "resnet20"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--min-run-time", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_train(["dataset=cifar10"])
    data = load_splits(cfg.dataset, cfg.data, cfg.seed, cfg.val_fraction, cfg.subset)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.y_train), generator=generator)
    idx = order[:args.batch_size]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; CIFAR-10 {len(data.y_train)} training images "
          f"(uint8 {tuple(data.x_train.shape)}), batch {args.batch_size}, augment={data.augment}")

    def data_part():
        x = random_crop_flip(data.x_train[idx], generator)  # exactly the trainer's per-step data work
        return normalize(x, data.mean, data.std), data.y_train[idx]

    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, in_channels=3, image_size=32, num_classes=10, act="relu")
        init_weights(model, "auto", "relu")
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            x, y = data_part()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        timings = {}
        for label, fn in (("data", data_part), ("step", step), ("data again", data_part)):
            timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=args.threads)  # (its default is 1 thread)
            timings[label] = timer.blocked_autorange(min_run_time=args.min_run_time)
        data_ms = (timings["data"].median + timings["data again"].median) / 2 * 1e3  # before and after the steps
        step_ms = timings["step"].median * 1e3
        print(f"{name}: augmentation + normalisation {data_ms:.2f} ms (IQR {timings['data'].iqr * 1e3:.2f}), "
              f"whole step {step_ms:.1f} ms (IQR {timings['step'].iqr * 1e3:.1f}): data path = {data_ms / step_ms:.1%} of a step")


if __name__ == "__main__":
    main()
