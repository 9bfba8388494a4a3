"""Trainer overhead: an epoch of deepexp's trainer against a minimal hand-written PyTorch loop.

Same model, same in-memory uint8 data, same batch size, same thread count, timed
in the same process. The raw loop is what one would write by hand: index a batch,
normalise, forward, cross-entropy, backward, SGD step; it runs twice per round, once
with the trainer's batch gather, fused SGD and channels_last layout (the ratio is then
the trainer's own overhead) and once with `x[idx]` and PyTorch's defaults (what a loop
written by hand usually gets). This VM's speed drifts by
10-20% over minutes, more than the overhead being measured, so the configurations
take turns: each round runs the raw loop and every trainer configuration for a few
epochs, and a ratio is taken within a round (median epoch time, training loop only,
as recorded in metrics.json, over the raw loop's median of that round). We report the
median of the rounds' ratios with their min-max.

    python scripts/bench_trainer.py                 # MLP on MNIST + small CNN on CIFAR-10
    python scripts/bench_trainer.py --rounds 5 --epochs 2 --threads 2

Targets (issue #3/#8): monitoring off within 5% of the raw loop; monitoring on at its
default rate (every 50 steps) within 15%. Full histograms are reported separately.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepexp.config import compose_train  # the real config, composed as the tests compose it
from deepexp.data import normalize, random_crop_flip, take
from deepexp.host import keep_freed_memory
from deepexp.models import init_weights
from deepexp.progress import QuietReporter
from deepexp.train import build_model, build_optimizer, run_splits, train

CASES = {
    "mlp-mnist": ["model=mlp", "dataset=mnist"],
    "cnn-cifar10": ["model=cnn", "dataset=cifar10"],
}
MODES = {
    "monitor off": ["monitor.enabled=false"],
    "monitor on (every 50 steps)": ["monitor.enabled=true", "monitor.figure=true"],
    "monitor + histograms every 50": ["monitor.enabled=true", "monitor.hist_every_n_steps=50"],
}


def raw_loop_epochs(overrides: list[str], epochs: int, as_trainer: bool = False) -> list[float]:
    """The hand-written baseline: per-epoch seconds of a bare SGD loop over the same tensors."""
    return raw_loop(overrides, epochs, as_trainer)[0]


class RawLoop:
    """The bare loop, built once (data, model, optimizer); `epoch` trains one pass and returns its seconds.

    `as_trainer`: the batch gather (index_select), fused SGD and memory format (channels_last) the
    trainer uses, rather than what a loop written by hand gets, so that the ratio isolates the
    trainer's own overhead."""

    def __init__(self, overrides: list[str], as_trainer: bool = False):
        cfg = compose_train(overrides)
        self.data = run_splits(cfg)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.data)
        init_weights(self.model, cfg.init.name, cfg.act.name)
        self.layout = torch.channels_last if as_trainer and cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.layout)
        self.opt = (
            build_optimizer(self.model, cfg) if as_trainer else torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.optim.momentum)
        )
        self.as_trainer, self.batch_size = as_trainer, cfg.batch_size
        self.steps = len(self.data.y_train) // self.batch_size
        self.images = self.steps * self.batch_size  # per epoch: the incomplete last batch is dropped

    def epoch(self, epoch: int) -> float:
        data, model, opt, bs = self.data, self.model, self.opt, self.batch_size
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(data.y_train), generator=g)
        start = time.perf_counter()
        for i in range(self.steps):
            idx = order[i * bs : (i + 1) * bs]
            if self.as_trainer:
                x, y = take(data.x_train, idx), take(data.y_train, idx)
            else:
                x, y = data.x_train[idx], data.y_train[idx]
            if data.augment:
                x = random_crop_flip(x, g)
            loss = F.cross_entropy(model(normalize(x, data.mean, data.std).contiguous(memory_format=self.layout)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start


def raw_loop(overrides: list[str], epochs: int, as_trainer: bool = False) -> tuple[list[float], int]:
    """Per-epoch seconds of the bare loop (a fresh one: RawLoop), and the images it trains on per epoch."""
    loop = RawLoop(overrides, as_trainer)
    return [loop.epoch(e) for e in range(epochs)], loop.images


def trainer_history(overrides: list[str], epochs: int) -> tuple[list[dict], float]:
    """deepexp's own per-epoch records (training-loop seconds, images/s), and the whole wall time per epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train(overrides + [f"epochs={epochs}"])
        start = time.perf_counter()
        metrics = train(cfg, Path(tmp), QuietReporter()).metrics
        wall = time.perf_counter() - start
    return metrics["history"], wall / epochs


def trainer_epochs(overrides: list[str], epochs: int) -> tuple[list[float], float]:
    """Per-epoch training-loop seconds, and the whole wall time per epoch."""
    history, wall = trainer_history(overrides, epochs)
    return [h["seconds"] for h in history], wall


def median_interval(values: list[float]) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of `values` (one per round); one round is its own interval."""
    from scipy.stats import bootstrap

    if len(values) < 2:  # bootstrap needs two observations
        return values[0], values[0]

    result = bootstrap((np.asarray(values),), np.median, confidence_level=0.95, method="percentile", random_state=np.random.default_rng(0))
    return result.confidence_interval.low, result.confidence_interval.high


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.3f}s (min {min(times):.3f}, max {max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per configuration per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--modes", nargs="*", default=list(MODES), choices=list(MODES), help="trainer configurations to time (quote each: they contain spaces)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The trainer sets this on its first run, process-wide; set it first so the baselines of every round,
    # the first included, run under the same malloc settings (its own gain: bench_page_faults.py).
    keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.rounds} rounds of {args.epochs} epochs per configuration")
    for case in args.cases:
        base = CASES[case] + [f"device.threads={args.threads}"]
        raw: list[float] = []
        by_hand: list[float] = []
        times: dict[str, list[float]] = {mode: [] for mode in args.modes}
        ratios: dict[str, list[float]] = {mode: [] for mode in args.modes}
        hand_ratios: dict[str, list[float]] = {mode: [] for mode in args.modes}
        walls: dict[str, list[float]] = {mode: [] for mode in args.modes}
        for _ in range(args.rounds):
            round_raw = raw_loop_epochs(base, args.epochs, as_trainer=True)
            round_hand = raw_loop_epochs(base, args.epochs)
            raw += round_raw
            by_hand += round_hand
            for mode in args.modes:
                epochs, wall = trainer_epochs(base + MODES[mode], args.epochs)
                times[mode] += epochs
                walls[mode].append(wall)
                ratios[mode].append(statistics.median(epochs) / statistics.median(round_raw))
                hand_ratios[mode].append(statistics.median(epochs) / statistics.median(round_hand))
        print(
            f"\n{case}: raw PyTorch loop {summary(raw)} per epoch (fused SGD and channels_last, as the trainer); "
            f"with PyTorch's defaults {summary(by_hand)}"
        )
        for mode in args.modes:
            r, h = ratios[mode], hand_ratios[mode]
            low, high = median_interval(r)
            print(
                f"  {mode:<32} {summary(times[mode])}  ratio {statistics.median(r):.3f} (rounds: min {min(r):.3f}, "
                f"max {max(r):.3f}; 95% interval of the median {low:.3f}-{high:.3f}); "
                f"against the loop with defaults {statistics.median(h):.3f}; "
                f"whole epoch incl. val/probe/checkpoint {statistics.median(walls[mode]):.3f}s"
            )


if __name__ == "__main__":
    main()
