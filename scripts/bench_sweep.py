"""Sweep throughput: the quick activation sweep run one job at a time against two jobs at once.

The sweep is the quick activation study's grid as a `deepexp train -m` multirun (9 activations
x 2 seeds, 12-layer MLP, 3,000 MNIST images, 3 epochs). It runs twice, as a user would type it:
sequentially with Hydra's basic launcher (each job using every thread), and with
`hydra/launcher=joblib` running `--jobs` jobs at once with the threads split between them,
so that jobs do not fight over the cores. Each sweep is timed from the outside (wall clock,
process start included); the ratio is the speed-up.

    python scripts/bench_sweep.py
    python scripts/bench_sweep.py --acts relu,tanh --seeds 0,1 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepexp.config import hydra_override

ACTS = "sigmoid,tanh,relu,leaky_relu,elu,selu,gelu,prelu,swish"
GRID = ["model=mlp", "subset=3000", "epochs=3", "lr=0.01", "batch_size=128"]  # configs/activations/preset/quick.yaml


def sweep(extra: list[str], acts: str, seeds: str, folder: Path) -> tuple[float, list[dict]]:
    args = [
        sys.executable,
        "-m",
        "deepexp",
        "train",
        "-m",
        f"act={acts}",
        f"seed={seeds}",
        *GRID,
        *extra,
        hydra_override("hydra.sweep.dir", str(folder)),
    ]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"sweep failed: {done.stderr.strip()[-500:]}")
    return wall, [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--acts", default=ACTS)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    per_job = max(1, args.threads // args.jobs)
    modes = {
        f"sequential, {args.threads} threads per job": [f"device.threads={args.threads}"],
        f"joblib, {args.jobs} jobs x {per_job} thread(s)": [
            "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={args.jobs}",
            f"device.threads={per_job}",
        ],
    }
    n = len(args.acts.split(",")) * len(args.seeds.split(","))
    print(f"{n} runs ({args.acts} x seeds {args.seeds}); {' '.join(GRID)}; {os.cpu_count()} CPUs")
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (mode, extra) in enumerate(modes.items()):
            walls[mode], metrics = sweep(extra, args.acts, args.seeds, Path(tmp) / str(i))
            train_s = sum(m["seconds"] for m in metrics)
            accs = sorted(round(m["test"]["acc"], 4) for m in metrics if m.get("test"))
            print(f"{mode}: {walls[mode]:.1f} s wall for {len(metrics)} runs ({train_s:.1f} s of training loops); test acc {accs[0]}-{accs[-1]}")
    (seq, seq_wall), (par, par_wall) = walls.items()
    print(f"speed-up of `{par}` over `{seq}`: {seq_wall / par_wall:.2f}x")


if __name__ == "__main__":
    main()
