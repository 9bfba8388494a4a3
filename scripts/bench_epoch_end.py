"""What an epoch of `deepexp train` costs besides its training loop, part by part.

After each epoch's training loop the trainer validates, probes the layers (with monitoring on),
draws the figure of gradient norm against depth into TensorBoard, saves a checkpoint and
rewrites metrics.json. For a small model on a small dataset these can cost as much as the
training itself. This script runs the real trainer with each of those functions wrapped in a
timer, and prints the median seconds per epoch of each beside the training loop's own.

    python scripts/bench_epoch_end.py                        # the MLP on MNIST, 5 epochs
    python scripts/bench_epoch_end.py model=cnn dataset=cifar10 epochs=3
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

import deepexp.train
from deepexp.config import compose_train  # the real config, composed as the tests compose it
from deepexp.monitor import LayerMonitor
from deepexp.progress import QuietReporter

# part -> (where the trainer finds the function, its name there)
PARTS = {
    "validation": (deepexp.train, "evaluate"),
    "layer probe": (LayerMonitor, "probe"),
    "figure: draw": (deepexp.train, "grad_depth_figure"),
    "figure: render to TensorBoard": (SummaryWriter, "add_figure"),
    "checkpoint": (deepexp.train, "save_checkpoint"),
    "metrics.json": (deepexp.train, "write_metrics"),
}


class EpochEndTimer:
    """Wraps the trainer's end-of-epoch functions; records their seconds in each epoch's end."""

    def __init__(self):
        self.epochs: list[dict[str, float]] = []
        self._current: dict[str, float] | None = None  # set only inside _end_epoch
        for part, (owner, name) in PARTS.items():
            setattr(owner, name, self._timed(getattr(owner, name), part))
        end_epoch = deepexp.train._Run._end_epoch

        @functools.wraps(end_epoch)
        def timed_end_epoch(run):
            self._current = defaultdict(float)
            start = time.perf_counter()
            try:
                return end_epoch(run)
            finally:
                spent = self._current
                spent["end of epoch in all"] = time.perf_counter() - start
                spent["the rest"] = spent["end of epoch in all"] - sum(spent[p] for p in PARTS)
                self.epochs.append(dict(spent))
                self._current = None

        deepexp.train._Run._end_epoch = timed_end_epoch

    def _timed(self, function, part: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if self._current is None:  # e.g. the test-set evaluation after the last epoch
                return function(*args, **kwargs)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._current[part] += time.perf_counter() - start

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="deepexp train overrides (default: its defaults, epochs=5)")
    args = parser.parse_args()
    overrides = args.overrides if any(o.startswith("epochs=") for o in args.overrides) else args.overrides + ["epochs=5"]
    cfg = compose_train(overrides)
    if cfg.epochs < 2:
        sys.exit("bench_epoch_end.py: needs epochs=2 or more (the first epoch, which imports matplotlib, is left out)")
    timer = EpochEndTimer()
    with tempfile.TemporaryDirectory() as tmp:
        history = deepexp.train.train(cfg, Path(tmp), QuietReporter()).metrics["history"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {cfg.model.name} on {cfg.dataset.name}, "
        f"{len(history)} epochs; median seconds per epoch (the first epoch, which imports matplotlib, left out)"
    )
    rows = {"training loop": [h["seconds"] for h in history][1:]}
    rows.update({part: [e.get(part, 0.0) for e in timer.epochs][1:] for part in [*PARTS, "the rest", "end of epoch in all"]})
    for part, values in rows.items():
        print(f"  {part:<32} {statistics.median(values):.3f} s")


if __name__ == "__main__":
    main()
