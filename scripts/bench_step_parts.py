"""Where the trainer's per-step overhead goes: the bare MLP loop with one trainer piece added at a time.

Each variant is the hand-written loop of bench_trainer.py (PyTorch's default SGD) plus one
thing the trainer does every step: the non-finite loss check, the non-finite gradient check
(the fused kernel the trainer uses, or a global norm as before), the LR schedule, the
loss/accuracy sums; the last variant has all of the trainer's. The variants take turns
epoch by epoch, and each ratio is taken against the bare loop of the same round.

    python scripts/bench_step_parts.py              # 10 rounds, about 2 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import compose_train  # noqa: E402

from deepexp.data import normalize  # noqa: E402
from deepexp.models import init_weights  # noqa: E402
from deepexp.train import build_model, non_finite_grads, run_splits  # noqa: E402

VARIANTS = {
    "bare loop": set(),
    "+ loss check": {"loss"},
    "+ gradient check (fused kernel)": {"grad"},
    "+ gradient check (global norm)": {"norm"},
    "+ LR schedule": {"sched"},
    "+ loss/accuracy sums": {"sums"},
    "all of the trainer's": {"loss", "grad", "sched", "sums"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_train([])
    data = run_splits(cfg)

    def setup():
        torch.manual_seed(0)
        model = build_model(cfg, data)
        init_weights(model, cfg.init.name, cfg.act.name)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.optim.momentum)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0), list(model.parameters())

    def epoch(parts, model, opt, sched, params) -> float:
        n, bs = len(data.y_train), cfg.batch_size
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        start = time.perf_counter()
        for i in range(n // bs):
            idx = order[i * bs:(i + 1) * bs]
            yb = data.y_train[idx]
            logits = model(normalize(data.x_train[idx], data.mean, data.std))
            loss = F.cross_entropy(logits, yb)
            if "loss" in parts and bool(~torch.isfinite(loss.detach())):
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if "grad" in parts and bool(non_finite_grads(params)):
                break
            if "norm" in parts and bool(~torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params]))):
                break
            opt.step()
            if "sched" in parts:
                sched.step()
            if "sums" in parts:
                loss_sum.add_(loss.detach(), alpha=len(yb))
                correct.add_((logits.argmax(1) == yb).sum())
        return time.perf_counter() - start

    states = {name: setup() for name in VARIANTS}
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, parts in VARIANTS.items():
            times[name].append(epoch(parts, *states[name]))
    print(f"torch {torch.__version__}, {args.threads} threads, CPU; 12-layer MLP on MNIST, batch {cfg.batch_size}, "
          f"{args.rounds} rounds")
    for name in VARIANTS:
        ratios = [t / bare for t, bare in zip(times[name], times["bare loop"])]
        print(f"  {name:<34} {statistics.median(times[name]):.3f} s per epoch, ratio {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
