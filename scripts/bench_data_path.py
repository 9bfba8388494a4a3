"""Data path: batched augmentation and normalisation as a fraction of a CIFAR-10 training step.

The trainer keeps the images as uint8 tensors in memory and, per step, takes a batch
(`take`, one index_select), applies `random_crop_flip` (one gather for the whole batch) and
`normalize`, then runs forward, backward and the SGD step. This script times the data part
alone and the whole step (data included, the trainer's channels_last layout and fused SGD)
with `torch.utils.benchmark`, on the same batch, model and threads, and prints the fraction.
First it times the batch gather and the normalisation against the kernels they replaced
(advanced indexing `x[idx]`, a broadcast `addcmul`) on MNIST- and CIFAR-shaped batches.

    python scripts/bench_data_path.py                       # cnn and resnet20, batch 128
    python scripts/bench_data_path.py --models cnn --batch-size 256

Target (issue #8): under 10% of a step.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from deepexp.config import compose_train  # the real config, composed as the tests compose it
from deepexp.data import normalize, random_crop_flip, take
from deepexp.measure import time_call
from deepexp.models import init_weights, list_models
from deepexp.train import build_model, build_optimizer, run_splits


def addcmul_normalize(x, mean, std):
    """The normalisation before 2026-11-23, kept here as the baseline."""
    return torch.addcmul(-(mean / std).view(1, -1, 1, 1), x.float(), (1.0 / (255.0 * std)).view(1, -1, 1, 1))


def gather_and_normalize(batch_size: int, threads: int, min_run_time: float) -> None:
    for shape in ((15_691, 1, 28, 28), (4_577, 3, 32, 32)):  # the MNIST and CIFAR-10 training sets here
        x = torch.randint(0, 256, shape, dtype=torch.uint8)
        idx = torch.randperm(shape[0], generator=torch.Generator().manual_seed(0))[:batch_size]
        mean, std = torch.full((shape[1],), 0.45), torch.full((shape[1],), 0.25)
        xb = take(x, idx)
        t = {
            label: time_call(fn, batch_size, threads, min_run_time).median_ms * 1e3
            for label, fn in (
                ("x[idx]", lambda: x[idx]),
                ("take", lambda: take(x, idx)),
                ("addcmul", lambda: addcmul_normalize(xb, mean, std)),
                ("normalize", lambda: normalize(xb, mean, std)),
            )
        }
        print(
            f"uint8 batch {(batch_size, *shape[1:])}: gather x[idx] {t['x[idx]']:.1f} us, take (index_select) {t['take']:.1f} us "
            f"({t['x[idx]'] / t['take']:.1f}x); normalise with a broadcast addcmul {t['addcmul']:.1f} us, normalize "
            f"{t['normalize']:.1f} us ({t['addcmul'] / t['normalize']:.1f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["cnn", "resnet20"], choices=list_models())
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--min-run-time", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gather_and_normalize(args.batch_size, args.threads, args.min_run_time / 3)
    data = run_splits(compose_train(["dataset=cifar10"]))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.y_train), generator=generator)
    idx = order[: args.batch_size]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; CIFAR-10 {len(data.y_train)} training images "
        f"(uint8 {tuple(data.x_train.shape)}), batch {args.batch_size}, augment={data.augment}"
    )

    def data_part():
        x = random_crop_flip(take(data.x_train, idx), generator)  # exactly the trainer's per-step data work
        return normalize(x, data.mean, data.std).contiguous(memory_format=torch.channels_last), take(data.y_train, idx)

    for name in args.models:
        cfg = compose_train(["dataset=cifar10", f"model={name}"])
        torch.manual_seed(0)
        model = build_model(cfg, data)
        init_weights(model, cfg.init.name, cfg.act.name)
        model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, cfg)

        def step():
            x, y = data_part()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        timings = {
            label: time_call(fn, args.batch_size, args.threads, args.min_run_time)
            for label, fn in (("data", data_part), ("step", step), ("data again", data_part))
        }
        data_ms = (timings["data"].median_ms + timings["data again"].median_ms) / 2  # before and after the steps
        step_ms = timings["step"].median_ms
        print(
            f"{name}: augmentation + normalisation {data_ms:.2f} ms (IQR {timings['data'].iqr_ms:.2f}), "
            f"whole step {step_ms:.1f} ms (IQR {timings['step'].iqr_ms:.1f}): data path = {data_ms / step_ms:.1%} of a step"
        )


if __name__ == "__main__":
    main()
