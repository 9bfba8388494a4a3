"""Page faults per training step: glibc's default malloc settings against `deepexp.host.keep_freed_memory`.

PyTorch frees every activation and gradient of a CPU step by the end of it; with glibc's
defaults the memory goes back to the kernel and the next step faults it in again. This
script counts that directly. Each measurement is a fresh process (malloc settings are
process-wide and glibc's default thresholds adapt as a process runs, so they cannot be
restored in place), measured two ways:

  bare step      build the model, take a few warm-up steps, then time SGD steps on a random
                 batch of the dataset's shape for about `--seconds`;
  trainer epoch  two epochs of `deepexp train` on the real dataset, monitoring off; the
                 second epoch's training loop (its time as metrics.json records it, faults
                 and system time counted around the trainer's epoch loop).

with the minor page faults, system CPU time and peak resident memory that `getrusage`
reports. The two settings take turns, round by round, and the speed-up is taken within a
round. Page faults are exact counts; only the times drift with this VM.

    python scripts/bench_page_faults.py                 # mlp, cnn, resnet20; 3 rounds
    python scripts/bench_page_faults.py --models cnn --rounds 5 --kinds "trainer epoch"
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import deepexp.train
from bench_trainer import trainer_history
from deepexp.host import keep_freed_memory
from deepexp.models import create_model

# Each model on the dataset and at the batch size of its study.
CASES = {
    "mlp": dict(dataset="mnist", in_channels=1, image_shape=(28, 28), batch=256),
    "cnn": dict(dataset="cifar10", in_channels=3, image_shape=(32, 32), batch=128),
    "resnet20": dict(dataset="cifar10", in_channels=3, image_shape=(32, 32), batch=128),
}
SETTINGS = ("glibc default", "keep_freed_memory")
KINDS = ("bare step", "trainer epoch")
WARMUP_STEPS = 3


def usage(before: resource.struct_rusage, steps: int) -> dict:
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
        "sys_ms": (after.ru_stime - before.ru_stime) / steps * 1e3,
        "max_rss_mb": after.ru_maxrss / 1024,
    }


def trainer_epoch(model_name: str, threads: int) -> dict:
    """Two epochs of the trainer; the second one's training loop only, in steady state (getrusage around
    the trainer's own epoch loop, so that imports, data loading and evaluation are not counted)."""
    case = CASES[model_name]
    loops: list[dict] = []
    train_epoch = deepexp.train._Run._train_epoch

    def counted(run):
        before = resource.getrusage(resource.RUSAGE_SELF)
        out = train_epoch(run)
        loops.append(usage(before, run.steps_per_epoch))
        return out

    deepexp.train._Run._train_epoch = counted
    history, _ = trainer_history(
        [f"model={model_name}", f"dataset={case['dataset']}", f"batch_size={case['batch']}", "monitor.enabled=false", f"device.threads={threads}"],
        epochs=2,
    )
    return {"step_ms": case["batch"] / history[-1]["images_per_s"] * 1e3, **loops[-1]}


def measure(kind: str, model_name: str, steps: int, threads: int, keep: bool) -> dict:
    """One process's measurement (run as a child of main)."""
    if keep:
        kept = keep_freed_memory()
    else:  # the trainer would set it itself
        kept, deepexp.train.keep_freed_memory = False, lambda: False
    torch.set_num_threads(threads)
    if kind == "trainer epoch":
        return {"kept": kept, **trainer_epoch(model_name, threads)}
    case = CASES[model_name]
    torch.manual_seed(0)
    model = create_model(model_name, in_channels=case["in_channels"], image_shape=case["image_shape"], num_classes=10, act="relu")
    model.to(memory_format=torch.channels_last)  # as the trainer does; an MLP is untouched
    x = torch.randn(case["batch"], case["in_channels"], *case["image_shape"]).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (case["batch"],))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(WARMUP_STEPS):
        step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"kept": kept, "step_ms": seconds / steps * 1e3, **usage(before, steps)}


def child(kind: str, model_name: str, steps: int, threads: int, keep: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, model_name, str(steps), str(threads), str(int(keep))]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, model_name, steps, threads, keep = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), bool(int(sys.argv[6]))
        print(json.dumps(measure(kind, model_name, steps, threads, keep)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="roughly how long each timed bare-step run takes")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {args.threads} threads, CPU; a fresh process per measurement, "
        f"{args.rounds} rounds alternating the two settings; medians over rounds (min-max)"
    )
    for kind in args.kinds:
        for name in args.models:
            compare(kind, name, args)


def compare(kind: str, name: str, args: argparse.Namespace) -> None:
    steps = 0
    if kind == "bare step":
        probe = child(kind, name, 3, args.threads, keep=False)  # a few steps to size the timed runs
        steps = max(10, round(args.seconds * 1e3 / probe["step_ms"]))
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            runs[setting].append(child(kind, name, steps, args.threads, keep=setting == "keep_freed_memory"))
    case = CASES[name]
    what = f"{steps} steps per run" if steps else f"the second of two epochs of real {case['dataset']} per run"
    print(f"\n{kind}: {name}, batch {case['batch']}, {what}")
    for setting, rs in runs.items():
        cols = {k: [r[k] for r in rs] for k in ("step_ms", "faults", "sys_ms", "max_rss_mb")}
        med = {k: statistics.median(v) for k, v in cols.items()}
        print(
            f"  {setting:<18} {med['step_ms']:7.1f} ms/step ({min(cols['step_ms']):.1f}-{max(cols['step_ms']):.1f})  "
            f"{med['faults']:8,.0f} page faults/step  {med['sys_ms']:5.2f} ms system/step  "
            f"peak RSS {med['max_rss_mb']:,.0f} MB  (setting took effect: {rs[0]['kept']})"
        )
    speedups = [d["step_ms"] / k["step_ms"] for d, k in zip(runs["glibc default"], runs["keep_freed_memory"])]
    print(f"  step speed-up within a round: {statistics.median(speedups):.2f}x ({min(speedups):.2f}-{max(speedups):.2f})")


if __name__ == "__main__":
    main()
