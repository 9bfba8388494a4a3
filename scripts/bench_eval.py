"""Evaluation speed: `deepexp efficient train_models=false` and the zero-cost ranking of 100 NAS candidates.

1. `deepexp efficient train_models=false` as a user runs it (a subprocess, into a fresh folder): every
   model built, counted, exported to ONNX, quantized to INT8 and timed. Wall clock, start-up included.
2. 100 random NAS candidates within the default max_macs (60M), each built, initialised and
   scored with all four zero-cost proxies on the 64 training images `deepexp nas` uses
   (`Search.measure`, the code the search runs), then ranked by synflow. Seconds in all and per
   candidate (median, min-max), against the seconds of one proxy training for scale.
3. ONNX export of three seeds of every `deepexp efficient` model (CIFAR-shaped, each model's own
   width, BatchNorm statistics as after training): traced anew for each seed, against one trace
   per model that the later seeds put their weights into (what the study does). Both in this run,
   the two orders taking turns per model; the ratio is the baseline's seconds over the study's.

    python scripts/bench_eval.py
    python scripts/bench_eval.py --candidates 20 --skip-efficient --skip-exports
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from deepexp.config import compose_config, compose_train, hydra_override, to_plain, validate
from deepexp.deploy import Deployable, OnnxExporter
from deepexp.experiments.nas import Search
from deepexp.models import create_model
from deepexp.models.nas_space import spec_key


def efficient_measure_only(folder: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "deepexp", "efficient", "train_models=false", hydra_override("hydra.run.dir", str(folder))],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"deepexp efficient failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def zero_cost_ranking(folder: Path, n: int) -> None:
    study = validate(compose_config("nas"))
    search = Search(study, folder, f"sqlite:///{folder / 'bench.db'}", Console())
    specs = [search.affordable(random.Random(i)) for i in range(n)]
    seconds, scores = [], []
    start = time.perf_counter()
    for spec in specs:
        t = time.perf_counter()
        scores.append(search.measure(spec))
        seconds.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    ranked = sorted(zip(specs, scores), key=lambda pair: -pair[1]["synflow"])
    macs = [s["macs"] / 1e6 for s in scores]
    print(
        f"zero-cost ranking of {n} candidates (MACs {min(macs):.1f}M-{max(macs):.1f}M, median {statistics.median(macs):.1f}M): "
        f"{total:.1f} s, per candidate {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}); "
        f"best by synflow {spec_key(ranked[0][0])}"
    )


def trained_looking(name: str, seed: int) -> Deployable:
    """`name` as `deepexp efficient` builds it for CIFAR-10, its BatchNorm statistics moved off their defaults."""
    torch.manual_seed(seed)
    options = {k: v for k, v in to_plain(compose_train([f"model={name}"]).model).items() if k != "name"}
    model = create_model(name, in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", **options)
    with torch.no_grad():
        model.train()(torch.randn(64, 3, 32, 32))
    return Deployable(model, torch.rand(3), torch.rand(3) + 0.5).eval()


def seed_exports(folder: Path, seeds: int = 3) -> None:
    models = validate(compose_config("efficient")).models
    example = torch.rand(2, 3, 32, 32)
    OnnxExporter().export(trained_looking(models[0], 0), example, folder / "warm-up.onnx")  # the exporter's first-call set-up
    totals = {"a trace per seed": 0.0, "a trace per model": 0.0}
    for i, name in enumerate(models):
        weights = [trained_looking(name, seed) for seed in range(seeds)]
        ways = list(totals) if i % 2 == 0 else list(reversed(totals))
        for way in ways:
            shared = OnnxExporter()
            start = time.perf_counter()
            for seed, model in enumerate(weights):
                exporter = shared if way == "a trace per model" else OnnxExporter()
                exporter.export(model, example, folder / f"{name}-s{seed}.onnx", architecture=name)
            seconds = time.perf_counter() - start
            totals[way] += seconds
            print(f"  {name}, {way}: {seconds:.1f} s")
    base, ours = totals["a trace per seed"], totals["a trace per model"]
    print(f"ONNX export of {seeds} seeds x {len(models)} models: a trace per seed {base:.1f} s, a trace per model {ours:.1f} s, {base / ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--skip-efficient", action="store_true")
    parser.add_argument("--skip-exports", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_efficient:
            print(f"deepexp efficient train_models=false: {efficient_measure_only(Path(tmp) / 'efficient'):.1f} s wall")
        zero_cost_ranking(Path(tmp), args.candidates)
        if not args.skip_exports:
            seed_exports(Path(tmp))


if __name__ == "__main__":
    main()
