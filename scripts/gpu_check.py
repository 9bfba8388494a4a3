"""The first command to run on a machine with a CUDA GPU: does deepexp's CUDA path do what it claims?

    python scripts/gpu_check.py                    # every check, within --budget (450 s by default)
    python scripts/gpu_check.py --quick            # fewer compiled runs and one benchmark model
    python scripts/gpu_check.py --out DIR          # gpu_check.json and gpu_check.md in DIR (default: .)
    python scripts/gpu_check.py --device cpu       # the dry run the tests execute: every check, tiny, on the CPU

It needs only the repository and `pip install -e .` (no pytest, no network): the data are synthetic
images, and every run is deepexp's own trainer. The checks, in order:

  environment     torch, CUDA and cuDNN versions, the GPU, native bf16, the dtype amp=true picks, TF32
  deterministic   two deterministic=true ResNet-20 runs, compared bit for bit (final weights), and
                  no "does not have a deterministic implementation" warning from any of its ops
  kill_resume     an MLP with dropout, SIGKILLed in its second epoch and resumed, against the run that
                  never stopped: final weights and every recorded number bit for bit (the CUDA RNG state)
  fp16_resume     an amp=true run checkpointed with a disabled GradScaler (forced to float32, whatever
                  the GPU picks), resumed under float16 AMP: it must finish, with the GradScaler running
  layout_resume   a ResNet-20 with fused Adam checkpointed in NCHW, resumed with channels_last: it must
                  finish, with the optimizer state in the parameters' memory format
  diverge         `deepexp train lr=1e6` must exit 3 and name the first non-finite step
  smoke_<model>   ResNet-18, MobileNetV2 (x0.35) and the bottleneck CNN, one epoch each: eager with SGD in
                  fp32, eager with Adam under amp, compiled with SGD under amp (and, without --quick,
                  compiled with Adam in fp32); every run finite, and the compiled runs log the same
                  per-layer tags (act_mean/, sparsity/, grad_norm/, ...) as the eager one
  bench_<model>   training images/s of ResNet-18 and ResNet-20 at batch 256, as bench_gpu.py measures it
                  (one round): plain fp32, amp, channels_last, tf32, compile, and amp + channels_last + compile

Each check runs under its own time budget (BUDGETS; SIGALRM; subprocesses get a timeout), inside its
own try/except, so one failure or hang never loses the others; the budgets together fit the default
--budget, and the benchmarks' budgets are held back from the checks before them, so that the images/s
table is measured however long those run. A check that no longer fits in the remaining --budget is
skipped. gpu_check.json is rewritten after every check (a check in progress is
marked "running"), so a run cut short by an outer time limit still leaves everything done so far.
The markdown table (gpu_check.md, for BENCHMARKS.md) is printed at the end. Exit status: 0 when every
check ran and passed, 1 when a check failed, ran out of its time or raised, 4 when every check that ran
passed but the budget left some unrun (no proof for those), 2 for bad arguments (one line, nothing written).

CUBLAS_WORKSPACE_CONFIG is set to :4096:8 before torch is imported, unless it is set already: the
deterministic checks run in this one process, and cuBLAS takes its workspace size when it first runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before torch: see the module docstring

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Dict, Iterator, List, Optional  # noqa: E402

import torch  # noqa: E402

import deepexp.train  # noqa: E402
from deepexp.config import compose_train  # noqa: E402
from deepexp.progress import QuietReporter  # noqa: E402
from deepexp.rundir import atomic_write, load_checkpoint, read_metrics, write_json  # noqa: E402

SCRIPT = Path(__file__).resolve()
TIMING = ("seconds", "images_per_s")  # the only recorded numbers that may differ between identical runs
NONDETERMINISTIC = "does not have a deterministic implementation"  # PyTorch's warning under warn_only=True
SMOKE_MODELS = ("resnet18", "mobilenet_v2", "bottleneck_cnn")
BENCH_MODELS = ("resnet18", "resnet20")


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of the runs on one device: full-sized on the GPU, tiny for the CPU's dry run."""

    batch: int  # training batch
    image: int  # synthetic images are image x image pixels
    train: int  # synthetic training images (a tenth is held out for validation)
    bench_train: int  # synthetic training images of a benchmark run
    bench_epochs: int  # epochs of a benchmark run; images/s is the median over those after the first
    mlp: tuple  # overrides of the MLP used by kill_resume, fp16_resume and diverge
    budget: float  # default for --budget, seconds
    check_budget: float  # each check's own budget is this times its BUDGETS entry (a loaded CPU is slow to start)


SCALES = {
    "cuda": Scale(batch=256, image=32, train=2880, bench_train=12_800, bench_epochs=3, mlp=(), budget=450, check_budget=1),
    "cpu": Scale(batch=16, image=8, train=80, bench_train=80, bench_epochs=2, mlp=("model.depth=2", "model.width=32"), budget=3600, check_budget=8),
}
# Each check's own time budget on the GPU, seconds; together they fit the default --budget (450 s: with the
# interpreter's start, under 8 minutes on one GPU). Compilation dominates the smoke checks (two compiled runs
# each) and the benchmarks (two compiled configurations each). Estimates, not yet timed on a GPU.
BUDGETS = {
    "environment": 10,
    "deterministic": 30,
    "kill_resume": 30,
    "fp16_resume": 20,
    "layout_resume": 25,
    "diverge": 15,
    **{f"smoke_{m}": 70 for m in SMOKE_MODELS},
    "bench_resnet18": 60,
    "bench_resnet20": 50,
}
# Checks whose own budget is held back from the checks before them, so that an earlier check running long
# cannot leave the images/s table unmeasured.
RESERVED = tuple(f"bench_{m}" for m in BENCH_MODELS)
# Exit status: every planned check ran and passed / a check failed, ran out of time or raised / every check
# that ran passed, but the budget left some unrun / bad arguments.
EXIT_PASSED, EXIT_FAILED, EXIT_SKIPPED, EXIT_USAGE = 0, 1, 4, 2


class CheckTimeout(Exception):
    """A check ran past its own time budget."""


@dataclasses.dataclass
class Outcome:
    """What one check found: a verdict, one line for the table, and the numbers behind it."""

    passed: bool
    summary: str
    numbers: dict


@dataclasses.dataclass
class Context:
    device: str
    scale: Scale
    quick: bool
    work: Path  # scratch folder for run directories

    def run_dir(self, name: str) -> Path:
        return self.work / name


# --- helpers ----------------------------------------------------------------------------------------


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CheckTimeout in this (the main) thread once `seconds` have passed."""

    def expire(signum, frame):
        raise CheckTimeout(f"over its {seconds:.0f} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def synthetic(ctx: Context, channels: int = 3, train: Optional[int] = None) -> List[str]:
    """Overrides for synthetic images on the check's device, at its scale."""
    return [
        "dataset=synthetic",
        f"dataset.channels={channels}",
        f"dataset.image_shape=[{ctx.scale.image},{ctx.scale.image}]",
        f"dataset.train_size={train or ctx.scale.train}",
        "dataset.test_size=64",
        f"device={ctx.device}",
        f"batch_size={ctx.scale.batch}",
        "monitor.figure=false",
        "monitor.probe_size=64",
    ]


def mlp(ctx: Context) -> List[str]:
    return [*synthetic(ctx, channels=1), "model=mlp", *ctx.scale.mlp]


def train_in_process(ctx: Context, name: str, overrides: List[str]) -> dict:
    """One trainer run in this process (resuming when its run directory holds a checkpoint): its metrics."""
    return deepexp.train.train(compose_train(overrides), ctx.run_dir(name), QuietReporter()).metrics


def steps_per_epoch(overrides: List[str]) -> int:
    cfg = compose_train(overrides)
    n_train = len(deepexp.train.run_splits(cfg).y_train)
    return n_train // min(cfg.batch_size, n_train)


# The killed run's autocast dtype: as `accelerator` picks it on this GPU, or float32 throughout (no autocast,
# so the GradScaler is disabled and its checkpointed state is empty, whatever the GPU would pick for amp=true).
WORKER_AMP = {"as-picked": "as-picked", "float32": None}


def killed_run(ctx: Context, name: str, overrides: List[str], step: int, timeout: float, amp: str = "as-picked") -> int:
    """Train in a subprocess that SIGKILLs itself as training step `step` (1-based, counted over the whole
    run) gathers its batch, with autocast as `amp` (a WORKER_AMP key) says; returns the subprocess's exit
    status (-9 when it was killed as planned)."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--kill-worker", str(step), str(ctx.run_dir(name)), amp, *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != -signal.SIGKILL:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the run to be killed at step {step} exited {out.returncode}: {tail[0]}")
    return out.returncode


def kill_worker(step: int, run_dir: str, amp: str, overrides: List[str]) -> None:
    """The subprocess of `killed_run`: the trainer's batch gather (`take`, twice a step: images, then
    labels) wrapped from the outside, as tests/kill_at.py does, so the code under test is the real one;
    amp="float32" runs it without autocast whatever amp=true would pick on this GPU."""
    if WORKER_AMP[amp] != "as-picked":
        with forced_amp(WORKER_AMP[amp]):
            return kill_worker(step, run_dir, "as-picked", overrides)
    real_take, calls = deepexp.train.take, [0]

    def take(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2 * step - 1:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_take(*args, **kwargs)

    deepexp.train.take = take
    deepexp.train.train(compose_train(overrides), Path(run_dir), QuietReporter())


def checkpoint(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def weights_digest(run_dir: Path) -> str:
    """SHA-256 of the final checkpoint's model tensors, byte for byte (in NCHW order, whatever the layout)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoint(run_dir)["model"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def recorded(metrics: dict) -> list:
    """A run's per-epoch records without the wall-clock numbers."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in metrics["history"]]


def tag_counts(run_dir: Path) -> Dict[str, int]:
    """TensorBoard scalar tags of a run, counted by their prefix (act_mean, grad_norm, ...)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    counts: Dict[str, int] = {}
    for tag in events.Tags()["scalars"]:
        prefix = tag.split("/")[0]
        counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def fused_layouts_agree(run_dir: Path, overrides: List[str]) -> bool:
    """Whether every optimizer state tensor shaped like its parameter has that parameter's strides (the
    check PyTorch's fused CUDA optimizers make), in the run's final checkpoint."""
    cfg = compose_train(overrides)
    names = [n for n, _ in deepexp.train.build_model(cfg, deepexp.train.run_splits(cfg)).named_parameters()]
    state = checkpoint(run_dir)
    for index, name in enumerate(names):
        param = state["model"][name]
        for value in state["optimizer"]["state"].get(index, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                return False
    return True


# --- the checks ---------------------------------------------------------------------------------------


def check_environment(ctx: Context) -> Outcome:
    accel = deepexp.train.accelerator(torch.device(ctx.device), amp=True, compile=True, tf32=True)
    numbers = {
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "device": ctx.device,
        "amp_dtype": str(accel.amp_dtype).removeprefix("torch.") if accel.amp_dtype else None,
        "tf32_available": accel.tf32,
        "compile_applies": accel.compile,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "pytorch_default_tf32": deepexp.train.tf32_flags(),
    }
    if ctx.device == "cpu":
        return Outcome(accel.amp_dtype is None and not accel.tf32, "dry run on the CPU: amp, compile and tf32 do not apply", numbers)
    props = torch.cuda.get_device_properties(0)
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    numbers.update(
        gpu=props.name,
        memory_gib=round(props.total_memory / 2**30, 1),
        capability=f"{props.major}.{props.minor}",
        devices=torch.cuda.device_count(),
        bf16_native=native,
        bf16_with_emulation=torch.cuda.is_bf16_supported(including_emulation=True),
    )
    consistent = accel.amp_dtype == (torch.bfloat16 if native else torch.float16) and accel.tf32 == ((props.major, props.minor) >= (8, 0))
    return Outcome(
        consistent,
        f"{props.name} (compute capability {props.major}.{props.minor}); amp=true -> "
        f"{numbers['amp_dtype']}; tf32=true {'applies' if accel.tf32 else 'does not apply'}",
        numbers,
    )


def check_deterministic(ctx: Context) -> Outcome:
    overrides = [*synthetic(ctx), "model=resnet20", "epochs=1", "deterministic=true", "monitor.enabled=false"]
    digests = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for attempt in (1, 2):
            train_in_process(ctx, f"deterministic_{attempt}", overrides)
            digests.append(weights_digest(ctx.run_dir(f"deterministic_{attempt}")))
    alerts = sorted({str(w.message).split(" does not")[0] for w in caught if NONDETERMINISTIC in str(w.message)})
    restored = not torch.are_deterministic_algorithms_enabled()
    same = digests[0] == digests[1]
    return Outcome(
        same and not alerts and restored,
        f"weights {'identical' if same else 'DIFFER'}; ops without a deterministic kernel: "
        f"{', '.join(alerts) or 'none'}; flags restored after the run: {restored}",
        {"digests": digests, "nondeterministic_ops": alerts, "flags_restored": restored},
    )


def check_kill_resume(ctx: Context, budget: float) -> Outcome:
    overrides = [*mlp(ctx), "model.dropout=0.2", "epochs=2", "deterministic=true", "monitor.every_n_steps=3"]
    full = train_in_process(ctx, "uninterrupted", overrides)
    step = steps_per_epoch(overrides) + 2  # in epoch 2, after the checkpoint of epoch 1
    status = killed_run(ctx, "killed", overrides, step, timeout=budget)
    resumed = train_in_process(ctx, "killed", overrides)
    same_weights = weights_digest(ctx.run_dir("uninterrupted")) == weights_digest(ctx.run_dir("killed"))
    same_numbers = recorded(full) == recorded(resumed) and full["test"] == resumed["test"]
    was_resumed = resumed["provenance"]["resumed_after_epoch"] == 1
    return Outcome(
        same_weights and same_numbers and was_resumed,
        f"killed at step {step} (exit {status}), resumed after epoch 1: weights "
        f"{'identical' if same_weights else 'DIFFER'}, recorded numbers {'identical' if same_numbers else 'DIFFER'}",
        {
            "kill_step": step,
            "exit": status,
            "resumed_after_epoch": resumed["provenance"]["resumed_after_epoch"],
            "same_weights": same_weights,
            "same_numbers": same_numbers,
            "val_acc": [row["val_acc"] for row in resumed["history"]],
        },
    )


@contextmanager
def forced_amp(dtype: Optional[torch.dtype]) -> Iterator[None]:
    """amp=true autocasts to `dtype` on any device: float16 is the trainer's float16 path (autocast +
    GradScaler), as on a GPU without native bf16; None is float32 throughout, with the GradScaler disabled."""
    real = deepexp.train.accelerator

    def forced(device, amp, compile, tf32=False):
        return dataclasses.replace(real(device, amp, compile, tf32), amp_dtype=dtype if amp else None)

    deepexp.train.accelerator = forced
    try:
        yield
    finally:
        deepexp.train.accelerator = real


def check_fp16_resume(ctx: Context, budget: float) -> Outcome:
    """A checkpoint of a disabled GradScaler (written in float32: amp=true on a pre-Ampere GPU would pick
    float16 and checkpoint a running scaler) resumed under float16 AMP."""
    overrides = [*mlp(ctx), "epochs=2", "amp=true", "monitor.enabled=false"]
    step = steps_per_epoch(overrides) + 2
    killed_run(ctx, "fp16_resume", overrides, step, timeout=budget, amp="float32")
    written = checkpoint(ctx.run_dir("fp16_resume"))
    with forced_amp(torch.float16):
        resumed = train_in_process(ctx, "fp16_resume", overrides)
    scaler = checkpoint(ctx.run_dir("fp16_resume"))["scaler"]
    ok = written["scaler"] == {} and resumed["status"] == "completed" and resumed["provenance"]["amp_dtype"] == "float16" and bool(scaler)
    return Outcome(
        ok,
        f"checkpoint written with amp_dtype {written['provenance'][-1].get('amp_dtype')} (GradScaler state "
        f"{'empty' if written['scaler'] == {} else 'not empty'}); resumed under float16: {resumed['status']}, "
        f"loss scale {scaler.get('scale')}",
        {"written_amp_dtype": written["provenance"][-1].get("amp_dtype"), "status": resumed["status"], "scale": scaler.get("scale")},
    )


def check_layout_resume(ctx: Context, budget: float) -> Outcome:
    overrides = [*synthetic(ctx), "model=resnet20", "optim=adam", "lr=1e-3", "epochs=2", "monitor.enabled=false"]
    step = steps_per_epoch(overrides) + 2
    killed_run(ctx, "layout_resume", [*overrides, "channels_last=false"], step, timeout=budget)
    resumed = train_in_process(ctx, "layout_resume", [*overrides, "channels_last=true"])
    agree = fused_layouts_agree(ctx.run_dir("layout_resume"), overrides)
    return Outcome(
        resumed["status"] == "completed" and agree,
        f"fused Adam, NCHW checkpoint resumed in channels_last: {resumed['status']}, optimizer state in the parameters' layout: {agree}",
        {"status": resumed["status"], "layouts_agree": agree},
    )


def check_diverge(ctx: Context, budget: float) -> Outcome:
    run_dir = ctx.run_dir("diverge")
    out = subprocess.run(
        [sys.executable, "-m", "deepexp", "train", *mlp(ctx), "epochs=2", "lr=1e6", f"hydra.run.dir={run_dir}"],
        cwd=ctx.work,
        capture_output=True,
        text=True,
        timeout=budget,
    )
    metrics = read_metrics(run_dir) or {}
    step = metrics.get("diverged_at_step")
    named = step is not None and f"at step {step}" in out.stderr
    return Outcome(
        out.returncode == 3 and metrics.get("status") == "diverged" and isinstance(step, int) and named,
        f"exit {out.returncode}, status {metrics.get('status')}, first non-finite step {step}{' (named on stderr)' if named else ''}",
        {"exit": out.returncode, "status": metrics.get("status"), "diverged_at_step": step},
    )


def check_smoke(ctx: Context, model: str) -> Outcome:
    base = [*synthetic(ctx), f"model={model}", "epochs=1", "monitor.every_n_steps=2"]
    runs = {
        "eager, sgd, fp32": ["optim=sgd", "amp=false", "compile=false"],
        "eager, adam, amp": ["optim=adam", "lr=1e-3", "amp=true", "compile=false"],
        "compiled, sgd, amp": ["optim=sgd", "amp=true", "compile=true"],
    }
    if not ctx.quick:
        runs["compiled, adam, fp32"] = ["optim=adam", "lr=1e-3", "amp=false", "compile=true"]
    found = {}
    for label, extra in runs.items():
        name = f"smoke_{model}_{label.replace(', ', '_')}"
        start = time.perf_counter()
        metrics = train_in_process(ctx, name, [*base, *extra])
        row = metrics["history"][-1] if metrics["history"] else {}
        found[label] = {
            "status": metrics["status"],
            "train_loss": row.get("train_loss"),
            "val_acc": row.get("val_acc"),
            "images_per_s": row.get("images_per_s"),
            "wall_s": round(time.perf_counter() - start, 1),
            "amp_dtype": metrics["provenance"]["amp_dtype"],
            "compiled": metrics["provenance"]["compiled"],
            "tags": tag_counts(ctx.run_dir(name)),
        }
    return smoke_outcome(ctx.device, found)


def smoke_outcome(device: str, found: Dict[str, dict]) -> Outcome:
    """The smoke check's verdict on its runs `found` (label -> what the run recorded): every run finite; the
    compiled runs log the eager run's per-layer tags; and on CUDA, where they apply, the compiled runs ran
    compiled and the amp runs under an autocast dtype (on the CPU dry run neither applies, and the check
    proves only the mechanics)."""
    finite = all(r["status"] == "completed" and r["train_loss"] is not None for r in found.values())
    eager_tags = found["eager, sgd, fp32"]["tags"]
    same_tags = all(r["tags"] == eager_tags for label, r in found.items() if label.startswith("compiled"))
    acts = eager_tags.get("act_mean", 0)
    walls = "; ".join(f"{label.replace(', ', '/')} {r['wall_s']:.0f} s" for label, r in found.items())
    if device == "cuda":
        not_applied = [
            label for label, r in found.items() if (label.startswith("compiled") and not r["compiled"]) or ("amp" in label and not r["amp_dtype"])
        ]
        applied = not not_applied
        how = "compile and amp applied" if applied else f"compile or amp did NOT apply in {'; '.join(not_applied)}"
    else:
        applied, how = True, "dry run on the CPU: the mechanics only, compile and amp do not apply here"
    return Outcome(
        finite and same_tags and acts > 0 and applied,
        f"{len(found)} runs {'finite' if finite else 'NOT ALL FINITE'}; per-layer tags with compile "
        f"{'= without' if same_tags else 'DIFFER from without'} ({acts} act_mean/ tags); {how}; wall clock: {walls}",
        found,
    )


def check_bench(ctx: Context, model: str) -> Outcome:
    from bench_gpu import CONFIGS, PLAIN  # the benchmark's own configurations
    from bench_trainer import trainer_history

    configs = dict(CONFIGS)
    configs["tf32"] = [o if o != "tf32=false" else "tf32=true" for o in CONFIGS[PLAIN]]
    base = [*synthetic(ctx, train=ctx.scale.bench_train), f"model={model}", "eval_test=false", "monitor.enabled=false"]
    found = {}
    for label, extra in configs.items():
        history, _ = trainer_history([*base, *extra], ctx.scale.bench_epochs)
        steady = history[1:] or history
        found[label] = {
            "images_per_s": statistics.median(h["images_per_s"] for h in steady),
            "first_epoch_s": history[0]["seconds"],
            "epochs": len(history),
        }
    plain = found[PLAIN]["images_per_s"]
    for row in found.values():
        row["x_plain"] = round(row["images_per_s"] / plain, 2)
    complete = all(r["epochs"] == ctx.scale.bench_epochs for r in found.values())
    return Outcome(complete, ", ".join(f"{label} {r['images_per_s']:,.0f}/s" for label, r in found.items()), found)


def plan(ctx: Context) -> List[tuple]:
    """(name, function taking the check's own time limit) in the order they run."""
    checks = [
        ("environment", lambda limit: check_environment(ctx)),
        ("deterministic", lambda limit: check_deterministic(ctx)),
        ("kill_resume", lambda limit: check_kill_resume(ctx, limit)),
        ("fp16_resume", lambda limit: check_fp16_resume(ctx, limit)),
        ("layout_resume", lambda limit: check_layout_resume(ctx, limit)),
        ("diverge", lambda limit: check_diverge(ctx, limit)),
    ]
    checks += [(f"smoke_{m}", lambda limit, m=m: check_smoke(ctx, m)) for m in SMOKE_MODELS]
    checks += [(f"bench_{m}", lambda limit, m=m: check_bench(ctx, m)) for m in (BENCH_MODELS[1:] if ctx.quick else BENCH_MODELS)]
    return checks


# --- running and reporting ---------------------------------------------------------------------------------


def run_check(name: str, function: Callable[[float], Outcome], limit: float) -> dict:
    start = time.perf_counter()
    entry: dict = {"name": name}
    try:
        with time_limit(limit):
            outcome = function(limit)
        entry.update(verdict="pass" if outcome.passed else "fail", summary=outcome.summary, numbers=outcome.numbers)
    except CheckTimeout as exc:
        entry.update(verdict="timeout", summary=str(exc), numbers={})
    except subprocess.TimeoutExpired:
        entry.update(verdict="timeout", summary=f"a subprocess ran past the check's {limit:.0f} s budget", numbers={})
    except Exception as exc:  # one check's failure must not lose the others
        entry.update(
            verdict="error",
            summary=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            numbers={"traceback": traceback.format_exc().splitlines()[-12:]},
        )
    entry["seconds"] = round(time.perf_counter() - start, 1)
    return entry


def markdown(report: dict) -> str:
    env = next((c.get("numbers", {}) for c in report["checks"] if c["name"] == "environment"), {})
    where = env.get("gpu") or report["device"]
    lines = [
        f"### scripts/gpu_check.py: {where}, torch {report['torch']}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')} ({report['started'][:10]})",
        "",
        "| check | verdict | seconds | what it found |",
        "| --- | --- | ---: | --- |",
    ]
    lines += [f"| {c['name']} | {c['verdict']} | {c.get('seconds', '')} | {c.get('summary', '').replace('|', '/')} |" for c in report["checks"]]
    bench = [c for c in report["checks"] if c["name"].startswith("bench_") and c["verdict"] in ("pass", "fail")]
    if bench:
        lines += ["", "| model | configuration | images/s | x plain | first epoch (s) |", "| --- | --- | ---: | ---: | ---: |"]
        for c in bench:
            for label, r in c["numbers"].items():
                lines.append(
                    f"| {c['name'].removeprefix('bench_')} | {label} | {r['images_per_s']:,.0f} | {r['x_plain']:.2f} | {r['first_epoch_s']:.1f} |"
                )
    return "\n".join(lines) + "\n"


def refusal(args: argparse.Namespace) -> Optional[str]:
    """The one line that refuses the arguments, or None; checked before anything is written."""
    if args.budget is not None and not args.budget > 0:
        return f"--budget must be a positive number of seconds, got {args.budget:g}"
    unknown = [name for name in args.only or [] if name not in BUDGETS]
    if unknown:
        return f"--only: no check named {', '.join(map(repr, unknown))}; the checks are {', '.join(BUDGETS)}"
    if args.device == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False); run it on a GPU machine, or pass --device cpu for a dry run"
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out} is a file, not a folder"
    return None


def exit_status(checks: List[dict]) -> int:
    """EXIT_FAILED if any check did not pass, EXIT_SKIPPED if some were not run, else EXIT_PASSED."""
    verdicts = {c["verdict"] for c in checks}
    if verdicts - {"pass", "skipped"}:
        return EXIT_FAILED
    return EXIT_SKIPPED if "skipped" in verdicts else EXIT_PASSED


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=sorted(SCALES))
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--quick", action="store_true", help="one compiled run per model and only ResNet-20's benchmark")
    parser.add_argument("--budget", type=float, help="seconds for all checks together (default: 450 on cuda, 3600 on cpu: a ceiling)")
    parser.add_argument("--only", nargs="*", help="run only the checks with these names")
    args = parser.parse_args(argv)
    refused = refusal(args)
    if refused:
        print(f"gpu_check.py: {refused}", file=sys.stderr)
        return EXIT_USAGE
    scale = SCALES[args.device]
    deadline = time.perf_counter() + (args.budget or scale.budget)
    report = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "torch": str(torch.__version__),
        "host": platform.node(),
        "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else argv,
        "checks": [],
    }
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "gpu_check.json", report)
    except OSError as exc:
        print(f"gpu_check.py: cannot write to --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    work = Path(tempfile.mkdtemp(prefix="gpu_check_runs_"))
    ctx = Context(args.device, scale, args.quick, work)
    checks = [(n, f) for n, f in plan(ctx) if not args.only or n in args.only]
    try:
        for i, (name, function) in enumerate(checks):
            own = BUDGETS[name] * scale.check_budget
            held_back = sum(BUDGETS[n] * scale.check_budget for n, _ in checks[i + 1 :] if n in RESERVED)
            left = deadline - time.perf_counter() - held_back
            limit = min(own, left)
            if limit < min(own, 20):
                entry = {"name": name, "verdict": "skipped", "summary": f"{max(left, 0):.0f} s of the budget left", "seconds": 0}
            else:
                report["checks"].append({"name": name, "verdict": "running"})
                write_json(args.out / "gpu_check.json", report)
                report["checks"].pop()
                entry = run_check(name, function, limit)
            report["checks"].append(entry)
            write_json(args.out / "gpu_check.json", report)
            print(f"{name:<24} {entry['verdict']:<8} {entry.get('seconds', 0):>6.1f} s  {entry.get('summary', '')}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(args.out / "gpu_check.json", report)
    table = markdown(report)
    atomic_write(args.out / "gpu_check.md", lambda f: f.write(table), mode="w")
    print("\n" + table)
    return exit_status(report["checks"])


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "--kill-worker":
        kill_worker(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
        sys.exit(0)
    sys.exit(main())
