"""GPU throughput: training images/s of ResNet-18 and ResNet-20 with and without each CUDA option.

Every configuration is one run of deepexp's own trainer (monitoring off) on CIFAR-shaped
synthetic images (3x32x32, 10 classes, uint8 on the GPU, as the trainer keeps any dataset):
first plain fp32 (tf32=false: IEEE float32 matmuls and convolutions), NCHW and eager, then AMP
(bf16 autocast where the GPU computes it natively, else fp16), channels_last and `compile=true`
one at a time, then all three. The configurations take turns within each
round (each round starting with the next one), and each one's images/s is divided by the plain
run's of the same round, so drift between rounds cancels. Images/s is the median over the epochs
after the first; the first epoch (cuDNN's algorithm search, torch.compile's compilation) is
reported as warm-up.

    python scripts/bench_gpu.py                            # resnet18 + resnet20, batch 256, 3 rounds
    python scripts/bench_gpu.py --models resnet20 --batch-size 512 --rounds 5
    python scripts/bench_gpu.py --device cpu --train-size 1024 --epochs 2 --rounds 1 --models resnet20
                                                           # a dry run of the mechanics: on the CPU amp, tf32 and
                                                           # compile fall back (with a warning) to plain
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from bench_trainer import trainer_history  # one trainer run in a scratch folder, as the other benchmarks time it
from deepexp.config import first_line
from deepexp.errors import DeepexpError
from deepexp.models import list_models

PLAIN = "plain (fp32, NCHW, eager)"
# tf32=false in every configuration: float32 matmuls and convolutions are IEEE float32, as the labels say.
CONFIGS = {
    PLAIN: ["amp=false", "channels_last=false", "compile=false", "tf32=false"],
    "amp": ["amp=true", "channels_last=false", "compile=false", "tf32=false"],
    "channels_last": ["amp=false", "channels_last=true", "compile=false", "tf32=false"],
    "compile": ["amp=false", "channels_last=false", "compile=true", "tf32=false"],
    "amp + channels_last + compile": ["amp=true", "channels_last=true", "compile=true", "tf32=false"],
}


def run(overrides: list[str], epochs: int) -> tuple[float, float]:
    """One trainer run: (median images/s over the epochs after the first, first-epoch seconds)."""
    history, _ = trainer_history(overrides, epochs)
    if len(history) < epochs:  # diverged: the epochs it has are not the ones asked for
        sys.exit(f"bench_gpu.py: the run {' '.join(overrides)} stopped after {len(history)} of {epochs} epochs")
    steady = history[1:] or history
    return statistics.median(h["images_per_s"] for h in steady), history[0]["seconds"]


def refuse(line: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"bench_gpu.py: {line}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["resnet18", "resnet20"], choices=list_models())
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=25_600, help="synthetic images per epoch (a tenth is held out)")
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every configuration")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    for option in ("batch_size", "train_size", "epochs", "rounds"):
        if getattr(args, option) < 1:
            refuse(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        refuse("no CUDA GPU is visible (torch.cuda.is_available() is False); run it on a GPU machine, or pass --device cpu for a dry run")
    try:
        measure(args)
    except DeepexpError as exc:  # a configuration the trainer refuses (too few images for a batch, ...): its one line
        refuse(first_line(exc))


def measure(args: argparse.Namespace) -> None:
    """Every configuration of every model, `args.rounds` times; prints the table."""
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        where = (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, native bf16 {torch.cuda.is_bf16_supported(including_emulation=False)}"
        )
    else:
        where = f"CPU, {torch.get_num_threads()} threads (dry run: amp, compile and tf32 fall back to plain float32 here)"
    print(f"torch {torch.__version__}, {where}")
    print(
        f"batch {args.batch_size}, {args.train_size:,} synthetic 3x32x32 images (90% trained on per epoch), "
        f"{args.epochs} epochs per run (images/s: median of epochs 2-{args.epochs}), {args.rounds} rounds, monitoring off"
    )
    data = [
        "dataset=synthetic",
        "dataset.channels=3",
        "dataset.image_shape=[32,32]",
        f"dataset.train_size={args.train_size}",
        "dataset.test_size=16",
        "eval_test=false",
        "monitor.enabled=false",
    ]
    for name in args.models:
        base = [f"model={name}", f"device={args.device}", f"batch_size={args.batch_size}", *data]
        rates: dict[str, list[float]] = {c: [] for c in CONFIGS}
        warmup: dict[str, float] = {}
        order = list(CONFIGS)
        for r in range(args.rounds):
            for config in order[r % len(order) :] + order[: r % len(order)]:  # each round starts with another one
                rate, first = run(base + CONFIGS[config], args.epochs)
                rates[config].append(rate)
                warmup.setdefault(config, first)  # the first round's, before this process has cached anything for it
        print(f"\n{name}")
        for config, values in rates.items():
            ratios = [v / p for v, p in zip(values, rates[PLAIN])]
            print(
                f"  {config:<30} {statistics.median(values):>9,.0f} images/s (rounds {min(values):,.0f}-{max(values):,.0f})  "
                f"{statistics.median(ratios):.2f}x plain (rounds {min(ratios):.2f}-{max(ratios):.2f})  "
                f"first epoch {warmup[config]:.1f} s"
            )


if __name__ == "__main__":
    main()
