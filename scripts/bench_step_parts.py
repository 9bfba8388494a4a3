"""Where the trainer's per-step overhead goes: the bare MLP loop with one trainer piece added at a time.

Each variant is the hand-written loop of bench_trainer.py (PyTorch's default SGD) plus one
thing the trainer does every step: the non-finite loss check, the non-finite gradient check
(the fused kernel the trainer uses, or a global norm as before), the LR schedule, the
loss/accuracy sums, the per-layer monitoring at its default rate (LayerMonitor writing to
TensorBoard every 50 steps and on the epoch's last); the last variant has all of the trainer's
per-step checks, without the monitoring. The variants take turns epoch by epoch, and each ratio
is taken against the bare loop of the same round.

Then a logged step, part by part: unlogged and logged steps on one batch take turns, and each
part of the monitoring is timed (the forward hooks' statistics as the logged forward pass's
extra time over the unlogged one, the gradient norms and weight snapshot, the update ratios,
the transfer to the host and the TensorBoard write). An epoch of this MLP has 3-4 logged steps.

    python scripts/bench_step_parts.py              # 10 rounds, about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from deepexp.config import compose_train  # the real config, composed as the tests compose it
from deepexp.data import normalize
from deepexp.host import keep_freed_memory
from deepexp.models import init_weights
from deepexp.monitor import LayerMonitor
from deepexp.train import build_model, non_finite_grads, run_splits

VARIANTS = {
    "bare loop": set(),
    "+ loss check": {"loss"},
    "+ gradient check (fused kernel)": {"grad"},
    "+ gradient check (global norm)": {"norm"},
    "+ LR schedule": {"sched"},
    "+ loss/accuracy sums": {"sums"},
    "+ monitoring every 50 steps": {"monitor"},
    "all of the trainer's": {"loss", "grad", "sched", "sums"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--logged-steps", type=int, default=200, help="pairs of steps for the logged-step breakdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the trainer does
    cfg = compose_train([])
    data = run_splits(cfg)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tempfile.mkdtemp(prefix="bench_step_parts."))

    def setup():
        torch.manual_seed(0)
        model = build_model(cfg, data)
        init_weights(model, cfg.init.name, cfg.act.name)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.optim.momentum)
        monitor = LayerMonitor(model, cfg.act.name, writer, cfg.monitor.every_n_steps)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0), list(model.parameters()), monitor

    def epoch(parts, model, opt, sched, params, monitor) -> float:
        n, bs = len(data.y_train), cfg.batch_size
        steps = n // bs
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        start = time.perf_counter()
        for i in range(steps):
            log = "monitor" in parts and monitor.due(i, i == steps - 1)  # the trainer's calls, in its order
            if "monitor" in parts:
                monitor.capture(log)
            idx = order[i * bs : (i + 1) * bs]
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
            if log:
                grad_norms = norms_and_snapshot(monitor)
            opt.step()
            if log:
                monitor.log_step(i, grad_norms, monitor.update_ratios())
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
    print(f"torch {torch.__version__}, {args.threads} threads, CPU; 12-layer MLP on MNIST, batch {cfg.batch_size}, {args.rounds} rounds")
    for name in VARIANTS:
        ratios = [t / bare for t, bare in zip(times[name], times["bare loop"])]
        print(
            f"  {name:<34} {statistics.median(times[name]):.3f} s per epoch, ratio {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    model, opt, _, _, monitor = states["+ monitoring every 50 steps"]
    logged_step_parts(model, opt, monitor, data, cfg.batch_size, args.logged_steps)


def norms_and_snapshot(monitor: LayerMonitor):
    """What the trainer does on a logged step between backward and the optimizer step."""
    norms = monitor.grad_norms()
    monitor.snapshot_weights()
    return norms


def logged_step_parts(model, opt, monitor, data, batch_size: int, pairs: int) -> None:
    """Median milliseconds of each part of the monitoring on a logged step (see the module docstring)."""
    x = normalize(data.x_train[:batch_size], data.mean, data.std)
    y = data.y_train[:batch_size]
    parts = {
        name: []
        for name in ("forward, unlogged", "forward, logged", "gradient norms + weight snapshot", "update ratios", "to the host + TensorBoard")
    }

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        parts[name].append(time.perf_counter() - start)
        return out

    for i in range(pairs + 10):  # the first 10 pairs warm up
        for log in (False, True):
            monitor.capture(log)
            loss = timed(f"forward, {'logged' if log else 'unlogged'}", lambda: F.cross_entropy(model(x), y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if log:
                grad_norms = timed("gradient norms + weight snapshot", lambda: norms_and_snapshot(monitor))
            opt.step()
            if log:
                ratios = timed("update ratios", monitor.update_ratios)
                timed("to the host + TensorBoard", lambda: monitor.log_step(i, grad_norms, ratios))
        if i == 9:
            for values in parts.values():
                values.clear()
    ms = {name: 1e3 * statistics.median(values) for name, values in parts.items()}
    extra = {
        "hook statistics (logged forward - unlogged)": ms["forward, logged"] - ms["forward, unlogged"],
        **{name: ms[name] for name in list(parts)[2:]},
    }
    print(f"a logged step, part by part (median of {pairs} steps; an unlogged forward pass takes {ms['forward, unlogged']:.2f} ms):")
    for name, value in extra.items():
        print(f"  {name:<44} {value:.2f} ms")
    print(f"  {'monitoring in all':<44} {sum(extra.values()):.2f} ms")


if __name__ == "__main__":
    main()
