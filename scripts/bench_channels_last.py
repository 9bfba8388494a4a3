"""channels_last on the CPU: a CIFAR-10 training step and an evaluation batch, NCHW against NHWC.

On CUDA, channels_last lets cuDNN use its tensor-core kernels; on the CPU the answer depends
on oneDNN's kernels for each layer, so it is measured rather than assumed. This script times a
whole training step (forward, backward, SGD) and an inference-mode forward pass of the same
model on the same batch, once with the default memory format and once with the model and the
batch in channels_last, alternating the two with `torch.utils.benchmark`.

    python scripts/bench_channels_last.py                    # cnn, resnet20, dws_cnn at batch 128
    python scripts/bench_channels_last.py --models resnet18 --batch-size 64

The trainer ignores `channels_last=true` on the CPU (with a warning) unless this shows a gain.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark

from deepexp.models import create_model, init_weights, list_models

FORMATS = {"contiguous (NCHW)": torch.contiguous_format, "channels_last (NHWC)": torch.channels_last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["cnn", "resnet20", "dws_cnn"], choices=list_models())
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two formats")
    parser.add_argument("--min-run-time", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, CPU; batch {args.batch_size} of 3x32x32, "
        f"{args.rounds} alternating rounds, median of each"
    )
    for name in args.models:
        x = torch.randn(args.batch_size, 3, 32, 32)
        y = torch.randint(0, 10, (args.batch_size,))
        models = {}
        for label, fmt in FORMATS.items():
            torch.manual_seed(0)
            model = create_model(name, in_channels=3, image_shape=(32, 32), num_classes=10, act="relu")
            init_weights(model, "auto", "relu")
            models[label] = (
                model.to(memory_format=fmt),
                x.contiguous(memory_format=fmt),
                torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True),
            )
        train_ms = {label: [] for label in FORMATS}
        eval_ms = {label: [] for label in FORMATS}
        for _ in range(args.rounds):
            for label, (model, xb, opt) in models.items():

                def step(model=model, xb=xb, opt=opt):
                    loss = F.cross_entropy(model(xb), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                def infer(model=model, xb=xb):
                    with torch.inference_mode():
                        model(xb)

                model.train()
                timer = benchmark.Timer(stmt="fn()", globals={"fn": step}, num_threads=args.threads)
                train_ms[label].append(timer.blocked_autorange(min_run_time=args.min_run_time).median * 1e3)
                model.eval()
                timer = benchmark.Timer(stmt="fn()", globals={"fn": infer}, num_threads=args.threads)
                eval_ms[label].append(timer.blocked_autorange(min_run_time=args.min_run_time).median * 1e3)
        base, last = list(FORMATS)
        for what, table in (("train step", train_ms), ("eval batch", eval_ms)):
            a, b = statistics.median(table[base]), statistics.median(table[last])
            print(
                f"{name} {what}: {base} {a:.1f} ms, {last} {b:.1f} ms; channels_last speed-up {a / b:.2f}x "
                f"(rounds {', '.join(f'{p / q:.2f}' for p, q in zip(table[base], table[last]))})"
            )


if __name__ == "__main__":
    main()
