"""Roofline: training images/s of the 12-layer MLP against what its matrix multiplications reach alone.

A training step of the MLP is, arithmetically, three matmuls per Linear layer (forward
X @ W^T, backward dY @ W for the input gradient, dY^T @ X for the weight gradient; the
first layer needs no input gradient). This script times exactly those matmuls on the
same shapes with `torch.utils.benchmark` (the ceiling: nothing but arithmetic), then
deepexp's trainer on real MNIST with monitoring off, at the same batch size and threads,
and prints trainer images/s as a fraction of the matmul-only rate. The hand-written loop
of bench_trainer.py gets the same treatment, which separates what any PyTorch training
step costs beyond its matmuls (activations, bias gradients, the SGD update, the loss)
from what deepexp adds. This VM's speed drifts (the matmul rate alone has moved between
137 and 270 GFLOP/s from one minute to the next), so the measurements take turns: each
round times the matmuls, the trainer and the loop (2 epochs each) and the matmuls again,
and a fraction is taken within its round; the median over rounds is reported with a 95%
bootstrap interval (scipy.stats.bootstrap over the rounds), which says whether a target
inside the spread is met, missed, or not resolved by this many rounds.

    python scripts/bench_roofline.py                    # batch 256, 5 rounds
    python scripts/bench_roofline.py --batch-sizes 128 256 512 --threads 2
    python scripts/bench_roofline.py --profile          # instead: where a step's time goes, op by op

Target (issue #8): at least 60% of the matmul rate at batch 256.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.utils.benchmark as benchmark
from torch import nn

from bench_trainer import RawLoop, median_interval, raw_loop, trainer_history  # the same timings as the overhead benchmark
from deepexp.host import keep_freed_memory
from deepexp.models import create_model

BASE = ["model=mlp", "dataset=mnist", "monitor.enabled=false"]


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def matmul_images_per_s(shapes: list[tuple[int, int]], batch: int, min_run_time: float) -> tuple[float, float, float]:
    """(images/s, GFLOP/s, spread as IQR/median) of the step's matmuls alone, in float32."""
    ops = []
    for i, (d_in, d_out) in enumerate(shapes):
        x, w, dy = torch.randn(batch, d_in), torch.randn(d_out, d_in), torch.randn(batch, d_out)
        ops.append((x, w, dy, i > 0))

    def step() -> None:
        for x, w, dy, needs_input_grad in ops:
            torch.matmul(x, w.t())  # forward
            if needs_input_grad:
                torch.matmul(dy, w)  # gradient to the layer below
            torch.matmul(dy.t(), x)  # weight gradient

    flops = sum(2 * batch * d_in * d_out * (3 if i else 2) for i, (d_in, d_out) in enumerate(shapes))
    # Timer runs its statement single-threaded unless told otherwise
    m = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=min_run_time)
    return batch / m.median, flops / m.median / 1e9, m.iqr / m.median


def profile_loop(overrides: list[str], rows: int) -> None:
    """Print the ops that an epoch of the bare loop (with the trainer's kernels) spends its time in.

    Self CPU time per op as a share of the epoch's, from torch.profiler. The profiler adds a cost
    of its own to every op: read the shares, not the absolute times."""
    from torch.profiler import ProfilerActivity, profile

    loop = RawLoop(overrides, as_trainer=True)
    loop.epoch(0)  # warm-up: first calls, allocations
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop.epoch(1)
    ops = sorted(prof.key_averages(), key=lambda op: op.self_cpu_time_total, reverse=True)
    total = sum(op.self_cpu_time_total for op in ops)
    matmuls = sum(op.self_cpu_time_total for op in ops if op.key in ("aten::mm", "aten::addmm"))
    print(
        f"  an epoch of the loop, profiled: {total / loop.steps / 1e3:.2f} ms of self CPU time per step, "
        f"{matmuls / total:.0%} of it in matmuls (aten::mm, aten::addmm)"
    )
    for op in ops[:rows]:
        print(
            f"    {op.key[:44]:<44} {op.self_cpu_time_total / total:6.1%}  {op.count / loop.steps:5.1f} per step, "
            f"{op.self_cpu_time_total / op.count:7.1f} us each"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the trainer and of the loop per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--profile", action="store_true", help="instead of the rounds, profile one epoch of the loop")
    parser.add_argument("--profile-rows", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The trainer sets this on its first run, process-wide; set it first so the baselines of every round,
    # the first included, run under the same malloc settings (its own gain: bench_page_faults.py).
    keep_freed_memory()
    model = create_model("mlp", in_channels=1, image_shape=(28, 28), num_classes=10, act="relu", depth=12, width=256)
    shapes = linear_shapes(model)
    plan = "a profile of one epoch" if args.profile else f"{args.rounds} rounds of {args.epochs} epochs"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; MLP Linear shapes {shapes}; {plan}")
    for batch in args.batch_sizes:
        overrides = BASE + [f"batch_size={batch}", f"device.threads={args.threads}"]
        if args.profile:
            print(f"batch {batch}:")
            profile_loop(overrides, args.profile_rows)
            continue
        ceilings: list[float] = []
        fractions: dict[str, list[float]] = {"deepexp trainer": [], "hand-written PyTorch loop": []}
        rates: dict[str, list[float]] = {name: [] for name in fractions}
        for _ in range(args.rounds):
            before = matmul_images_per_s(shapes, batch, args.min_run_time)
            history, _ = trainer_history(overrides, args.epochs)
            raw_times, images = raw_loop(overrides, args.epochs)  # as written by hand: x[idx], default SGD
            after = matmul_images_per_s(shapes, batch, args.min_run_time)
            ceiling = statistics.fmean([before[0], after[0]])  # drift within the round hits both sides alike
            ceilings += [before[1], after[1]]
            for name, epoch_rates in (
                ("deepexp trainer", [h["images_per_s"] for h in history]),  # as metrics.json has it
                ("hand-written PyTorch loop", [images / t for t in raw_times]),
            ):
                rates[name].append(statistics.median(epoch_rates))
                fractions[name].append(statistics.median(epoch_rates) / ceiling)
        print(f"batch {batch}: matmuls alone {statistics.median(ceilings):.1f} GFLOP/s (rounds: min {min(ceilings):.1f}, max {max(ceilings):.1f})")
        for name, f in fractions.items():
            low, high = median_interval(f)
            print(
                f"  {name:<26} {statistics.median(rates[name]):,.0f} images/s = {statistics.median(f):.2f} of the matmul rate "
                f"(95% interval of the median {low:.2f}-{high:.2f}; rounds: min {min(f):.2f}, max {max(f):.2f})"
            )


if __name__ == "__main__":
    main()
