"""The one training loop behind every deepexp command.

`train(cfg, run_dir)` does the whole job for one run and returns its metrics:
seed everything, load the data into memory once, build and initialise the model,
then per epoch: train (with per-layer monitoring), validate, probe the layers,
checkpoint, rewrite metrics.json. The test set is touched once, at the end.
A run directory with a checkpoint is resumed exactly (model, optimizer,
scheduler, RNG; the data order is a pure function of seed and epoch), so an
interrupted CPU run ends with the same metrics as an uninterrupted one.
It knows nothing about any one project.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import os
import platform
import random
import subprocess
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, MutableMapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import __version__
from .config import SchedConfig, TrainConfig, first_line, to_plain
from .data import Splits, load_splits, normalize, random_crop_flip, take
from .errors import CheckpointError, ConfigError
from .host import host_load, keep_freed_memory, oversubscription_warning
from .models import check_input_fits, create_model, init_weights
from .monitor import LayerMonitor, grad_depth_figure, layer_charts, write_scalars
from .progress import ConsoleReporter
from .rundir import EXECUTION_KEYS, NEW_OPTION_DEFAULTS, RunLock, load_latest_checkpoint, read_metrics, save_checkpoint, write_metrics

EXIT_OK, EXIT_DIVERGED = 0, 3
# The progress bar is redrawn 10 times a second; reading the running loss more often than this is wasted,
# and on a GPU each read is a host sync in the hot loop.
PROGRESS_EVERY_S = 0.25
# Keys that may change between an interrupted run and its resumption: where and how it
# runs, and what it logs, but nothing that changes the numbers.
RESUMABLE_CHANGES = EXECUTION_KEYS
# Whether a run of this process compiled its model already (then the next compiled run resets dynamo first).
_COMPILED_BEFORE = False
# Where `compile=true` compiles the model; elsewhere it warns and the run stays eager. (The tests widen
# this to the CPU, with torch.compile's "eager" backend, to run the compiled path without a GPU.)
COMPILE_DEVICES = ("cuda",)


@dataclass
class RunResult:
    metrics: dict
    exit_code: int


@dataclass
class EpochStats:
    """What one pass over the training images did, as host numbers."""

    seconds: float  # wall clock of the pass, monitoring included (validation and the probe are not)
    images: int  # images that went through a training step, skipped batches included (they took their time)
    diverged_at: Optional[int] = None  # the step of a non-finite loss or gradient that ends the run
    loss: float = math.nan  # mean cross-entropy of the batches whose update was applied (before the update)
    acc: float = math.nan  # training accuracy of the same batches
    lr: float = math.nan  # mean learning rate of the applied updates
    updates: int = 0  # optimizer steps taken (under fp16 AMP, GradScaler itself may still skip one with inf gradients)
    skipped: int = 0  # batches dropped by on_nan=skip_batch
    clipped: Optional[int] = None  # updates whose gradient norm exceeded grad_clip (None: no clipping)


class StepStatus(enum.Enum):
    UPDATED = "updated"  # the optimizer stepped (under fp16 AMP, GradScaler may still have skipped an inf gradient)
    SKIPPED = "skipped"  # on_nan=skip_batch dropped the batch: its loss or gradient was not finite
    DIVERGED = "diverged"  # a non-finite loss or gradient ends the run


@dataclass(frozen=True)
class StepOutcome:
    """What one training step did with its batch (`_Run._step`)."""

    status: StepStatus
    why: str = ""  # SKIPPED, DIVERGED: what was not finite: "loss", "gradient" ("loss or gradient": found later, on the GPU)
    diverged_at: Optional[int] = None  # DIVERGED: the first step with a non-finite loss or gradient (maybe an earlier one)
    loss: Optional[Tensor] = None  # UPDATED: the batch's mean cross-entropy before the update, 0-d on the device
    correct: Optional[Tensor] = None  # UPDATED: how many of the batch's images were classified right, 0-d int64 on the device
    lr: float = math.nan  # UPDATED: the learning rate of the update
    clipped: Optional[Tensor] = None  # UPDATED with grad_clip: whether grad_clip scaled the gradients, 0-d bool on the device


@dataclass(frozen=True)
class Accelerator:
    """What a run's CUDA options amount to on its device (on the CPU each is off, with a warning)."""

    amp_dtype: Optional[torch.dtype]  # the autocast dtype of amp=true; None: float32 throughout
    compile: bool  # the training forward runs through torch.compile
    tf32: bool = False  # float32 matmuls and convolutions run on TF32 tensor cores

    @property
    def grad_scaler(self) -> bool:
        """float16 needs loss scaling against underflowing gradients; bfloat16 has float32's exponent range."""
        return self.amp_dtype == torch.float16


def accelerator(device: torch.device, amp: bool, compile: bool, tf32: bool = False) -> Accelerator:
    """The CUDA options a run asked for, as they apply on `device`.

    tf32=true takes effect on GPUs with TF32 tensor cores (compute capability 8.0 and up); elsewhere, and
    with tf32=false, float32 matmuls and convolutions compute in IEEE float32.

    amp=true autocasts to bfloat16 where the run's GPU computes it natively (compute capability 8.0 and up:
    Ampere, Hopper, ...), else to float16 with a GradScaler. `torch.cuda.is_bf16_supported()` says yes on a
    T4 or V100 too, where bfloat16 is emulated (slower than float32, and cuDNN has no bfloat16 convolution
    engines below 8.0), and asks about the current GPU, not `device`; so the capability of `device` decides
    (the test is_bf16_supported(including_emulation=False) makes, for the GPU the run trains on).
    """
    on_cuda = device.type == "cuda"
    dtype = None
    if amp and on_cuda:
        dtype = torch.bfloat16 if torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY else torch.float16
    tf32 = tf32 and on_cuda and torch.cuda.get_device_capability(device) >= (8, 0)
    return Accelerator(amp_dtype=dtype, compile=compile and compile_unavailable(device) is None, tf32=tf32)


# Native bfloat16 arithmetic: Ampere (8.0) and later.
NATIVE_BF16_CAPABILITY = (8, 0)
# torch.compile's default backend (inductor) generates Triton kernels on CUDA, which need compute capability 7.0
# (Volta) and up: below it inductor raises GPUTooOldForTriton, and without the triton package TritonMissing.
TRITON_MIN_CAPABILITY = (7, 0)


def compile_unavailable(device: torch.device) -> Optional[str]:
    """Why `compile=true` cannot compile on `device` (None: it can): a device outside COMPILE_DEVICES, a GPU
    below compute capability 7.0, or no triton package (torch.compile's inductor needs Triton on CUDA)."""
    if device.type not in COMPILE_DEVICES:
        return f"torch.compile is used on {' and '.join(COMPILE_DEVICES)} only"
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < TRITON_MIN_CAPABILITY:
            return f"compute capability {capability[0]}.{capability[1]} is below the 7.0 that torch.compile's Triton kernels need"
        if importlib.util.find_spec("triton") is None:
            return "the triton package, which torch.compile needs on CUDA, is not installed"
    return None


# --- small pure helpers -------------------------------------------------------------------


def flat_config(cfg: TrainConfig) -> Dict[str, Any]:
    """One level of keys: group choices by name (`model: mlp`), every other leaf as `group.key`."""
    flat: Dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                if "name" in value:
                    flat[name] = value["name"]
                walk(f"{name}.", {k: v for k, v in value.items() if k != "name"})
            else:
                flat[name] = value

    walk("", to_plain(cfg))
    return flat


def lr_factor(step: int, steps_per_epoch: int, epochs: int, sched: SchedConfig) -> float:
    """Learning-rate multiplier at optimizer step `step` (0-based).

    1. Linear warm-up over `warmup_epochs` from ~0 to 1.
    2. Then none: 1; step: gamma ** (completed epochs // step_size);
       cosine: from 1 down to min_lr_factor over the remaining steps.
    """
    warmup = int(sched.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if sched.name == "step":
        return sched.gamma ** ((step // steps_per_epoch) // sched.step_size)
    if sched.name == "cosine":
        total = max(1, epochs * steps_per_epoch - warmup)
        progress = min(1.0, (step - warmup) / total)
        return sched.min_lr_factor + (1 - sched.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch.manual_seed seeds every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tf32_flags() -> tuple:
    """The float32 precision settings of cuBLAS matmuls and cuDNN convolutions (and RNNs), read through the API
    `set_tf32_flags` sets them with: PyTorch's fp32_precision settings where this torch has them (the matmul's,
    cuDNN conv's and RNN's: "ieee", "tf32" or "none", which follows the enclosing setting), else the legacy
    flags (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32). Once anything in the
    process used the newer settings, PyTorch refuses to read the legacy flags ("a mix of the legacy and new
    APIs"; notes on TensorFloat-32 in its CUDA semantics), so deepexp never reads them there."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision
    return matmul.allow_tf32, cudnn.allow_tf32


def set_tf32_flags(flags: tuple) -> None:
    """Put back settings `tf32_flags` read."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = flags
    else:
        matmul.allow_tf32, cudnn.allow_tf32 = flags


def use_tf32(tf32: bool) -> None:
    """cuBLAS matmuls and cuDNN convolutions (and RNNs) in TF32 (`tf32`) or IEEE float32, through the API
    `tf32_flags` reads."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        set_tf32_flags(("tf32" if tf32 else "ieee",) * 3)
    else:
        set_tf32_flags((tf32, tf32))


@contextmanager
def run_flags(deterministic: bool, tf32: bool, threads: int = 0) -> Iterator[None]:
    """Set the process-wide flags a run depends on for the run, and put back what was there after it, so
    that a study's next run, the tests, or whoever called `train` find them as they were.

    threads: torch's intra-op CPU threads (device.threads; 0 leaves the process's setting).

    deterministic=true: torch.use_deterministic_algorithms (warn_only: an op without a deterministic kernel
    warns rather than stopping the run) and no cuDNN algorithm search. Otherwise cuDNN searches for the
    fastest convolution kernels for the run's fixed shapes (PyTorch's performance tuning guide); the kernels
    it picks may differ between runs.

    tf32: cuBLAS matmuls and cuDNN convolutions both, explicitly (`use_tf32`). PyTorch's defaults differ between
    the two (matmuls float32, convolutions TF32). They are set, and restored, through PyTorch's fp32_precision
    settings where this torch has them, else through the legacy allow_tf32 flags (`tf32_flags`). The restored
    settings read as before; one that followed an enclosing setting before the run (torch.backends.fp32_precision)
    holds its value explicitly after it, as PyTorch offers no way to unset it."""
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.benchmark,
        tf32_flags(),
        torch.get_num_threads(),
    )
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    cudnn.benchmark = not deterministic
    use_tf32(tf32)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.benchmark = saved[2]
        set_tf32_flags(saved[3])
        if torch.get_num_threads() != saved[4]:
            torch.set_num_threads(saved[4])


# One of the two workspace settings with which cuBLAS is deterministic (PyTorch's reproducibility notes).
CUBLAS_DETERMINISTIC = ":4096:8"


def fix_cublas_workspace(deterministic: bool, environ: MutableMapping[str, str] = os.environ, cuda_in_use: Optional[bool] = None) -> Optional[str]:
    """For deterministic=true, fix cuBLAS's workspace (CUBLAS_WORKSPACE_CONFIG) unless the user set it.

    What counts is the process's first cuBLAS work, not CUDA's start: PyTorch creates a cuBLAS handle when
    the first matrix product on a device needs one and gives it a workspace sized from this variable, read
    once per process (aten/src/ATen/cuda/CublasHandlePool.cpp); starting CUDA (torch.cuda.set_device, moving
    a model to the GPU) creates no handle. So the variable is set whether or not CUDA is in use. Where it is
    (`cuda_in_use`; default torch.cuda.is_initialized()), earlier work of this process may have run matrix
    products already, and the returned line says that cuBLAS may then keep its old workspace; a study's
    worker process calls this before it starts CUDA, so that its runs never see the line."""
    if not deterministic or "CUBLAS_WORKSPACE_CONFIG" in environ:
        return None
    environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
    if torch.cuda.is_initialized() if cuda_in_use is None else cuda_in_use:
        return (
            f"deterministic=true: CUBLAS_WORKSPACE_CONFIG={CUBLAS_DETERMINISTIC} was set after CUDA started in this "
            "process; if the process ran matrix products on the GPU before, cuBLAS keeps its earlier workspace and may "
            "not be deterministic (set the variable before starting Python to be sure)"
        )
    return None


def resolve_device(kind: str, index: Optional[int] = None) -> torch.device:
    """The torch device of `device.type` (cpu | cuda | auto) and `device.index` (a CUDA GPU's number, or None
    for the current GPU); raises a one-line ConfigError for CUDA without a GPU or an index beyond the GPUs."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible (torch.cuda.is_available() is False); use device=cpu or device=auto")
    if kind == "cuda" and index is not None:
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"device.index={index} but {count} CUDA GPU(s) are visible (0 to {count - 1})")
        return torch.device("cuda", index)
    return torch.device(kind)


def run_splits(cfg: TrainConfig) -> Splits:
    """The run's data split (seeded by the run's seed, so the same normalisation wherever it is rebuilt)."""
    return load_splits(cfg.dataset, cfg.data, cfg.seed, cfg.val_fraction, cfg.subset)


def build_model(cfg: TrainConfig, data: Splits) -> nn.Module:
    """The run's network, shaped for its data (weights as the model's constructor leaves them)."""
    options = {k: v for k, v in to_plain(cfg.model).items() if k != "name"}
    model = create_model(
        cfg.model.name, in_channels=data.in_channels, image_shape=data.image_shape, num_classes=data.num_classes, act=cfg.act.name, **options
    )
    check_input_fits(model, cfg.model.name, data.input_shape)  # images too small for the model's pooling: one line
    return model


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # fused: one kernel per step for all parameters instead of a few ops per parameter. The same
    # update (within float rounding); on the CPU, SGD steps 1.6x and Adam 3x faster (BENCHMARKS.md).
    params, o = list(model.parameters()), cfg.optim
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=cfg.weight_decay, fused=fused)
    optim_class = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return optim_class(params, lr=cfg.lr, betas=tuple(o.betas), weight_decay=cfg.weight_decay, fused=fused)


def match_param_layouts(optimizer: torch.optim.Optimizer) -> int:
    """Give every optimizer state tensor shaped like its parameter (momentum, Adam's moments) the
    parameter's strides; returns how many were copied.

    `Optimizer.load_state_dict` casts saved state to each parameter's dtype and device but keeps the
    layout it was saved in: a run saved in NCHW and resumed with channels_last (or the reverse) has
    NCHW moments against NHWC weights. PyTorch's fused CUDA optimizers require parameters, gradients and
    state to share strides (ATen's check_fast_path_restrictions, "params, grads, exp_avgs, and
    exp_avg_sqs must have same dtype, device, and layout") and raise; the fused CPU kernels take any
    layout. Gradients follow their parameter's strides already (autograd's gradient layout contract), and
    the check ignores the strides of size-1 dimensions (pytorch/pytorch#134546), where the gradient of a
    compiled 1x1 convolution may differ from its weight's."""
    moved = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
                    moved += 1
    return moved


def _git(*args: str) -> Optional[str]:
    """The output of `git ARGS` in deepexp's source folder; None outside a git checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> Optional[str]:
    """The commit checked out in deepexp's source folder; None outside a git checkout."""
    return _git("rev-parse", "HEAD")


def git_dirty() -> Optional[bool]:
    """Whether tracked files differ from the commit `git_commit` names: then the commit alone does not
    say which code ran. None outside a git checkout."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def rng_state(device: Optional[torch.device] = None) -> dict:
    """Every generator a run draws from, as tensors and plain values (torch.load(weights_only=True) reads them):
    torch's CPU generator, each CUDA device's (dropout on the GPU draws from it), Python's and NumPy's.

    The CUDA states (torch.cuda.get_rng_state_all: one ByteTensor per visible device) are taken once CUDA is
    in use in this process, as it is in a CUDA run; asking earlier would start a CUDA context for a CPU run.
    The generator of the run's own `device` is saved once more on its own ("cuda_run"), as a resume may put
    the run on a GPU with another number."""
    np_state = np.random.get_state()
    cuda_in_use = torch.cuda.is_initialized()
    own = device is not None and device.type == "cuda" and cuda_in_use
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if cuda_in_use else [],
        "cuda_run": torch.cuda.get_rng_state(device) if own else None,
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": np_state[2], "has_gauss": np_state[3], "cached": np_state[4]},
    }


def set_rng_state(state: dict, device: Optional[torch.device] = None) -> None:
    """Put back what `rng_state` saved. The run's own CUDA generator ("cuda_run") goes into `device`, the GPU
    the run trains on now, whatever its number was before (a study's pool decides it anew on resume). The
    other CUDA generators go back device by device, as many as both machines have: a checkpoint from a
    machine with more GPUs restores the ones this one has, and devices it did not have keep their seeded
    state. Checkpoints written before "cuda_run" was saved restore by number only."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda", [])  # checkpoints written before CUDA states were saved have none
    if cuda and torch.cuda.is_initialized():
        for index, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)
    own = state.get("cuda_run")
    if own is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(own, device)  # last: the run's generator wins over the one saved under its number
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))


@torch.inference_mode()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, data: Splits, batch_size: int, autocast: Callable, memory_format) -> Tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y), in large batches, with one host sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), batch_size):
        xb = normalize(x[i : i + batch_size], data.mean, data.std).contiguous(memory_format=memory_format)
        yb = y[i : i + batch_size]
        with autocast():
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(1, len(y))
    return loss_sum.item() / n, correct.item() / n


def as_run_here(flat: Dict[str, Any]) -> Dict[str, Any]:
    """A flat config with `amp` and `tf32` as they take effect on this machine's device for it (`accelerator`):
    amp=true on the CPU runs in float32, as amp=false does, so the two compare equal. A device this machine
    does not have leaves the config as it is (the run itself then refuses it)."""
    if not flat.get("amp") and not flat.get("tf32"):
        return flat
    try:
        device = resolve_device(str(flat.get("device.type", "cpu")), flat.get("device.index"))
    except ConfigError:
        return flat
    applied = accelerator(device, bool(flat.get("amp")), False, bool(flat.get("tf32")))
    return {**flat, "amp": applied.amp_dtype is not None, "tf32": applied.tf32}


def check_resumable(saved: Dict[str, Any], current: Dict[str, Any], where: Path, advice: str = "choose a new hydra.run.dir to start afresh") -> None:
    """Refuse to continue a run whose config changed in a way that changes the numbers; `advice` ends the
    line (how to start afresh: another run folder, or in a sweep another sweep folder).

    Keys the saved run does not have are options added to deepexp since; their defaults
    keep the old behaviour, so only a non-default value there counts as a change. Keys only the
    saved run has are ones deepexp no longer records for this choice of groups (older runs held
    every dataset's own keys): they cannot change the numbers. `amp` and `tf32` compare as they take
    effect here (`as_run_here`), not as asked for; `compile` never changes the numbers.

    Raises CheckpointError naming up to four changed keys."""
    saved, current = as_run_here(saved), as_run_here(current)
    changed = sorted(k for k in current if saved.get(k, NEW_OPTION_DEFAULTS.get(k)) != current.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
        raise CheckpointError(f"{where} holds a run with another config ({diffs}); {advice}")


# --- the run ------------------------------------------------------------------------------


def train(cfg: TrainConfig, run_dir: Path | str, reporter: Optional[ConsoleReporter] = None, provenance: Optional[dict] = None) -> RunResult:
    """Train one model as `cfg` says, writing everything into `run_dir`; resume if it holds a checkpoint.

    Returns the run's metrics (metrics.json's content) and exit status (EXIT_OK, EXIT_DIVERGED). Raises
    ConfigError, CheckpointError, RunLockedError (DeepexpError's one-line messages) for what cannot run.
    Process-wide state is the run's only while it runs (`run_flags`), with one exception: with compile=true,
    a run after another compiled run of the same process calls torch._dynamo.reset(), which also drops what
    the caller compiled with torch.compile in that process (it compiles again on its next call)."""
    run_dir = Path(run_dir)
    reporter = reporter or ConsoleReporter()
    flat = flat_config(cfg)
    warning = fix_cublas_workspace(cfg.deterministic)  # first: before this run's CUDA work
    if warning:
        reporter.warn(warning)
    with RunLock(run_dir):
        done = read_metrics(run_dir)
        if done and done.get("status") in ("completed", "diverged"):
            check_resumable(done.get("config", {}), flat, run_dir)
            reporter.info(f"{run_dir}: already {done['status']}; nothing to do")
            return RunResult(done, EXIT_OK if done["status"] == "completed" else EXIT_DIVERGED)
        with run_flags(cfg.deterministic, cfg.tf32, cfg.device.threads):
            return _Run(cfg, flat, run_dir, reporter, provenance or {}).fit()


class NonFiniteWatch:
    """Finds the first training step whose loss or gradient is not finite.

    Where a host read is cheap (the CPU), or each bad batch must be skipped as it comes
    (on_nan=skip_batch), every value is read at once. On the GPU a read would stall the
    queue, so the first bad step is kept on the device and read every `every` steps."""

    def __init__(self, device: torch.device, eager: bool, every: int):
        self.eager, self.every = eager, every
        self.first = torch.full((), -1, device=device, dtype=torch.long)

    def bad_now(self, bad: Tensor, step: int) -> bool:
        """Note whether `step` went bad (a boolean tensor); True when that is known now."""
        if self.eager:
            return bool(bad)
        self.first = torch.where(bad & (self.first < 0), step, self.first)
        return False

    def first_bad(self, step: int, last: bool) -> Optional[int]:
        """The first bad step kept on the device, read every `every` steps and at the end of the epoch."""
        if self.eager or not (last or step % self.every == 0):
            return None
        first = int(self.first)
        return first if first >= 0 else None


def non_finite_grads(params: List[Tensor]) -> Tensor:
    """True where any gradient holds an inf or NaN, in one fused pass over the gradients.

    This is GradScaler's own check-and-unscale kernel with a scale of 1, which leaves every
    value as it is; on the CPU it costs half of a norm (BENCHMARKS.md), and it runs every step."""
    grads = [p.grad for p in params if p.grad is not None]
    found = torch.zeros(1, device=grads[0].device if grads else None)
    if grads:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones(1, device=found.device))
    return found[0] > 0


class _Run:
    """The state of one training run; `fit` is the whole story, top to bottom."""

    def __init__(self, cfg: TrainConfig, flat: dict, run_dir: Path, reporter: ConsoleReporter, provenance: dict):
        self.cfg, self.flat, self.run_dir, self.reporter = cfg, flat, run_dir, reporter
        self.device = resolve_device(cfg.device.type, cfg.device.index)
        kept_freed_memory = keep_freed_memory()  # else a conv net's CPU step faults thousands of pages in again (host.py)
        load = host_load()  # before this run's threads add to it
        # Enough to rerun this elsewhere: code version, libraries, hardware. (str(torch.__version__): checkpoints
        # keep a copy, and torch.load(weights_only=True) refuses its str subclass.)
        self.provenance = {
            "deepexp": __version__,
            "git_commit": git_commit(),
            "git_dirty": git_dirty(),
            "torch": str(torch.__version__),
            "python": platform.python_version(),
            "host": platform.node(),
            "device": str(self.device),
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            "malloc_keeps_freed_memory": kept_freed_memory,
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            **(load.as_dict() if load else {}),
            **provenance,
        }
        busy = oversubscription_warning(load, torch.get_num_threads()) if self.device.type == "cpu" else None
        if busy:
            reporter.warn(busy)
        self.accel = accelerator(self.device, cfg.amp, cfg.compile, cfg.tf32)
        where = self.provenance["gpu"] or self.device.type
        for option, applied in (("amp", self.accel.amp_dtype is not None), ("compile", self.accel.compile), ("tf32", self.accel.tf32)):
            if getattr(cfg, option) and not applied:
                why = compile_unavailable(self.device) if option == "compile" and self.device.type == "cuda" else None
                reporter.warn(f"{option}=true has no effect on {where}; running without it" + (f" ({why})" if why else ""))
        # The numerics as they ran, not as asked for: amp=true is bfloat16 or float16 depending on the GPU, and
        # tf32=true is float32 below compute capability 8.0.
        self.provenance.update(
            amp_dtype=str(self.accel.amp_dtype).removeprefix("torch.") if self.accel.amp_dtype else None,
            tf32=self.accel.tf32,
            compiled=self.accel.compile,
        )
        # NHWC helps on both devices (oneDNN's CPU kernels: 1.2-1.5x per step, scripts/bench_channels_last.py);
        # it only changes the layout of 4-d tensors, so an MLP is untouched.
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def autocast(self):
        dtype = self.accel.amp_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # -- setup --

    def _setup(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.data = run_splits(cfg).to(self.device)
        torch.manual_seed(cfg.seed)  # the same initial weights whatever the data loading consumed
        self.model = build_model(cfg, self.data)
        self.init_scheme = init_weights(self.model, cfg.init.name, cfg.act.name)
        self.model.to(self.device, memory_format=self.memory_format)
        self.forward = self.model
        if self.accel.compile:
            # Each run compiles its own model afresh. Dynamo keeps what it compiled for earlier runs of this process,
            # and once it holds 8 versions of one forward (torch._dynamo.config.recompile_limit: resnet20, resnet32, ...
            # share ResNet.forward) it silently runs that forward uncompiled. The reset clears everything dynamo
            # compiled in the process, so it happens only where an earlier run of this process compiled.
            global _COMPILED_BEFORE
            if _COMPILED_BEFORE:
                torch._dynamo.reset()
            _COMPILED_BEFORE = True
            self.forward = torch.compile(self.model)
        self.optimizer = build_optimizer(self.model, cfg)
        n_train = len(self.data.y_train)
        self.batch_size = min(cfg.batch_size, n_train)  # recorded as data.batch_size_used
        if self.batch_size < cfg.batch_size:
            self.reporter.warn(
                f"batch_size={cfg.batch_size} is more than the {n_train} training images; "
                f"training in batches of {self.batch_size}, one step per epoch"
            )
        self.steps_per_epoch = n_train // self.batch_size  # the incomplete last batch is dropped
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, cfg.epochs, cfg.sched))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.accel.grad_scaler)
        self.params_list = list(self.model.parameters())
        self.params = sum(p.numel() for p in self.params_list)
        probe = min(cfg.monitor.probe_size, len(self.data.y_val))
        self.probe_x = normalize(self.data.x_val[:probe], self.data.mean, self.data.std).contiguous(memory_format=self.memory_format)
        self.probe_y = self.data.y_val[:probe]

    def _restore(self) -> None:
        """Continue from the newest good checkpoint, if the run directory has one."""
        self.epoch, self.step, self.history, self.seconds, self.skipped = 0, 0, [], 0.0, 0
        self.init_layers: Optional[dict] = None
        # Where the epochs came from: a resumed run's earlier epochs ran in other processes, maybe elsewhere.
        self.resumed_after: Optional[int] = None
        self.earlier_attempts: List[dict] = []
        found = load_latest_checkpoint(self.run_dir, self.reporter.warn)
        if found is None:
            return
        state, path = found
        check_resumable(state.get("config", {}), self.flat, self.run_dir)
        self._load_parts(state, path)
        set_rng_state(state["rng"], self.device)
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]
        self.skipped = state.get("skipped", 0)
        self.history, self.init_layers = state["history"], state["init_layers"]
        self.resumed_after, self.earlier_attempts = self.epoch, state.get("provenance", [])
        self.reporter.info(f"resuming {self.run_dir} after epoch {self.epoch} ({path.name})")

    def _load_parts(self, state: dict, path: Path) -> None:
        """Load model, optimizer, schedule and GradScaler state, naming the part that does not fit.

        An empty GradScaler state was written by a disabled scaler (a CPU, bfloat16 or float32 run, all
        resumable on a float16 GPU): the float16 run then starts its loss scale afresh, as GradScaler
        does, instead of GradScaler.load_state_dict refusing an empty dict."""
        parts = (
            ("model", self.model, f"model {self.cfg.model.name!r}"),
            ("optimizer", self.optimizer, f"the {self.cfg.optim.name} optimizer's state"),
            ("scheduler", self.scheduler, "the learning-rate schedule's state"),
            ("scaler", self.scaler, "the GradScaler's state (amp with float16)"),
        )
        for key, part, what in parts:
            saved = state.get(key)
            if key == "scaler" and saved == {}:
                continue
            if not isinstance(saved, dict):
                raise CheckpointError(f"{path} holds no {key} state; it cannot resume this run")
            try:
                part.load_state_dict(saved)
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                raise CheckpointError(f"{path} does not fit {what}: {type(exc).__name__}: {first_line(exc)}") from None
        match_param_layouts(self.optimizer)  # channels_last may differ from the checkpoint's (RESUMABLE_CHANGES)

    def _checkpoint(self) -> None:
        save_checkpoint(
            self.run_dir,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(self.device),
                "epoch": self.epoch,
                "step": self.step,
                "seconds": self.seconds,
                "skipped": self.skipped,
                "history": self.history,
                "init_layers": self.init_layers,
                "config": self.flat,
                "provenance": [*self.earlier_attempts, self._provenance(with_earlier=False)],
            },
        )

    def _provenance(self, with_earlier: bool = True) -> dict:
        """This process's provenance; for a resumed run, after which epoch it took over, and the provenance
        of the processes that trained the epochs before (each with its own `resumed_after_epoch`)."""
        own = {**self.provenance, "resumed_after_epoch": self.resumed_after}
        return {**own, "earlier_attempts": self.earlier_attempts} if with_earlier else own

    def _metrics(self, status: str, **extra: Any) -> dict:
        best = max((h["val_acc"] for h in self.history), default=None)
        return {
            "status": status,
            "config": self.flat,
            "params": self.params,
            "epochs_done": self.epoch,
            "history": self.history,
            "test": None,
            "diverged_at_step": None,
            "seconds": round(self.seconds, 3),
            "best_val_acc": best,
            "init": self.init_scheme,
            "skipped_batches": self.skipped,
            "layers": {"weights": self.monitor.weight_names, "activations": self.monitor.act_names} if self.monitor else None,
            "init_layers": self.init_layers,
            "data": {
                "source": self.data.source,
                **self.data.sizes(),
                "num_classes": self.data.num_classes,
                "in_channels": self.data.in_channels,
                "image_shape": list(self.data.image_shape),
                # the sizes that ran, where the configured ones exceed the data (batch_size, monitor.probe_size)
                "batch_size_used": self.batch_size,
                "probe_size_used": len(self.probe_y),
            },
            "provenance": self._provenance(),
            **extra,
        }

    # -- the loop --

    def fit(self) -> RunResult:
        from torch.utils.tensorboard import SummaryWriter

        self._setup()
        self._restore()
        cfg, reporter = self.cfg, self.reporter
        for line in self.data.warnings:  # a subset missing a class, imbalanced classes
            reporter.warn(line)
        if self.epoch == 0:
            reporter.info(
                f"{cfg.model.name} ({self.params:,} parameters, act={cfg.act.name}, init={self.init_scheme}) "
                f"on {cfg.dataset.name}: {self.data.sizes()} images ({self.data.source}), device {self.device}"
            )
        with ExitStack() as stack:
            # purge_step drops events logged after the checkpoint by an interrupted attempt: those of steps from
            # purge_step on. The checkpointed epoch logged its own numbers at its last step, self.step, which stay.
            self.writer = stack.enter_context(SummaryWriter(str(self.run_dir), purge_step=self.step + 1 if self.step else None))
            self.monitor = (
                LayerMonitor(self.model, cfg.act.name, self.writer, cfg.monitor.every_n_steps, cfg.monitor.hist_every_n_steps)
                if cfg.monitor.enabled
                else None
            )
            if self.monitor:
                stack.callback(self.monitor.remove)
                if self.epoch == 0:  # layer statistics of the untrained network
                    self.init_layers = self.monitor.probe(self.model, self.probe_x, self.probe_y).as_dict()
                self.writer.add_custom_scalars(custom_layout())
            reporter.start(cfg.epochs, self.steps_per_epoch, self.epoch)
            stack.callback(reporter.close)
            write_metrics(self.run_dir, self._metrics("running"))
            while self.epoch < cfg.epochs:
                epoch = self._train_epoch()
                self.seconds += epoch.seconds  # a diverged run's last, partial epoch trained too
                if epoch.diverged_at is not None:
                    return self._diverged(epoch.diverged_at)
                self._end_epoch(epoch)
            return self._finish()

    def _train_epoch(self) -> EpochStats:
        """One pass over the training images, one `_step` per batch; its statistics, or the step of a
        non-finite loss or gradient that ends the run (EpochStats.diverged_at)."""
        cfg, data = self.cfg, self.data
        self.model.train()
        start = time.perf_counter()
        # The data order and augmentation of an epoch depend only on (seed, epoch): resumable.
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(data.y_train), generator=generator).to(self.device)
        # Sums of the applied updates, kept on the device: the host reads them for the progress bar only.
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        clipped = torch.zeros((), device=self.device, dtype=torch.long)
        watch = NonFiniteWatch(self.device, eager=self.device.type == "cpu" or cfg.on_nan == "skip_batch", every=cfg.monitor.every_n_steps)
        seen, images, rates, skipped, next_report = 0, 0, [], 0, start

        def stats(diverged_at: Optional[int] = None) -> EpochStats:
            """The epoch so far. A finished epoch's sums are read before the clock: the read waits for the device."""
            done = EpochStats(0.0, images, diverged_at, updates=len(rates), skipped=skipped)
            if diverged_at is None:
                done.loss, done.acc = loss_sum.item() / seen, correct.item() / seen
                done.lr = math.fsum(rates) / len(rates)
                done.clipped = int(clipped) if cfg.grad_clip is not None else None
            done.seconds = time.perf_counter() - start
            return done

        for i in range(self.steps_per_epoch):
            self.step += 1
            last = i == self.steps_per_epoch - 1
            xb, yb = self._batch(order[i * self.batch_size : (i + 1) * self.batch_size], generator)
            images += len(yb)
            outcome = self._step(xb, yb, last, watch)
            if outcome.status is StepStatus.DIVERGED:
                return stats(outcome.diverged_at)
            if outcome.status is StepStatus.SKIPPED:
                skipped += 1
                self._count_skipped(outcome.why)
                continue
            loss_sum.add_(outcome.loss, alpha=len(yb))
            correct.add_(outcome.correct)
            rates.append(outcome.lr)
            if outcome.clipped is not None:
                clipped.add_(outcome.clipped)
            seen += len(yb)
            now = time.perf_counter()
            if last or now >= next_report:
                next_report, elapsed = now + PROGRESS_EVERY_S, now - start
                self.reporter.step(
                    self.epoch + 1,
                    self.epoch * self.steps_per_epoch + i + 1,
                    loss_sum.item() / seen,
                    correct.item() / seen,
                    images / max(elapsed, 1e-9),
                )
        first_bad = watch.first_bad(self.step, last=True)  # on the GPU: a bad gradient in the epoch's last step
        if first_bad is not None:
            return stats(first_bad)
        if seen == 0:  # every batch of the epoch was skipped: nothing is being learned
            return stats(self.step)
        return stats()

    def _batch(self, idx: Tensor, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """The training images `idx` (int64 indices on the device), augmented with `generator` where the dataset
        is, normalised and in the run's memory format (N, C, H, W) float; and their int64 labels (N,)."""
        data = self.data
        xb, yb = take(data.x_train, idx), take(data.y_train, idx)
        if data.augment:
            xb = random_crop_flip(xb, generator)
        return normalize(xb, data.mean, data.std).contiguous(memory_format=self.memory_format), yb

    def _step(self, xb: Tensor, yb: Tensor, last: bool, watch: NonFiniteWatch) -> StepOutcome:
        """Training step `self.step` on one batch: forward, backward, clip, update; what it did.

        The logged numbers are those of the update itself: the gradient norms as backward made them
        (unscaled, before clipping), with grad_clip the global norm before and after clipping, and the
        rate the update used. A non-finite loss or gradient never reaches the weights: the step is
        skipped (on_nan=skip_batch) or the run diverges (`_non_finite`)."""
        cfg, monitor = self.cfg, self.monitor
        log = monitor is not None and monitor.before_forward(self.step, last)
        # forward; a logged step runs the uncompiled module, so that the monitor's forward hooks see it: a
        # compiled module runs whichever hooks it was compiled with and notices none added later (torch.compile
        # skips its module-hook guards by default, torch._dynamo.config.skip_nnmodule_hook_guards)
        with self.autocast():
            logits = (self.model if log else self.forward)(xb)
            loss = F.cross_entropy(logits.float(), yb)
        bad = self._non_finite(watch, ~torch.isfinite(loss.detach()), "loss")
        if bad is not None:
            return bad
        first_bad = watch.first_bad(self.step, last)  # on the GPU: a bad step noted on the device, read now and then
        if first_bad is not None:
            return StepOutcome(StepStatus.DIVERGED, why="loss or gradient", diverged_at=first_bad)
        # backward; the gradients measured as backward made them, in true (unscaled) units
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip is not None or (log and self.scaler.is_enabled()):
            self.scaler.unscale_(self.optimizer)
        if monitor:
            monitor.after_backward()
        # clip; clip_grad_norm_ returns the global norm before clipping
        norm = nn.utils.clip_grad_norm_(self.params_list, cfg.grad_clip) if cfg.grad_clip is not None else None
        if not self.scaler.is_enabled():  # (fp16's GradScaler skips steps with inf gradients itself)
            # Checked before the update, so that a bad gradient never reaches the weights.
            bad = self._non_finite(watch, ~torch.isfinite(norm) if norm is not None else non_finite_grads(self.params_list), "gradient")
            if bad is not None:
                return bad
        # clip_grad_norm_ scales by grad_clip / (norm + 1e-6) where that is below 1
        clipped = torch.isfinite(norm) & (norm + 1e-6 > cfg.grad_clip) if norm is not None else None
        lr = self.optimizer.param_groups[0]["lr"]
        scalars: Dict[str, Any] = {"lr/step": lr}
        if log and norm is not None:
            after = nn.utils.get_total_norm([p.grad for p in self.params_list if p.grad is not None])
            scalars.update({"grad_clip/norm_before": norm, "grad_clip/norm_after": after})
        # update, with the rate the schedule gives this step; then the schedule moves on
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # log
        if monitor:
            monitor.after_step(self.step, scalars)
        return StepOutcome(StepStatus.UPDATED, loss=loss.detach(), correct=(logits.argmax(1) == yb).sum(), lr=lr, clipped=clipped)

    def _non_finite(self, watch: NonFiniteWatch, bad: Tensor, why: str) -> Optional[StepOutcome]:
        """Note whether this step's `why` ("loss", "gradient") is non-finite (`bad`, a boolean tensor); when that is
        known now, the step's outcome: on_nan=skip_batch drops its update but keeps the schedule on its step
        count; otherwise the run diverges at this step."""
        if not watch.bad_now(bad, self.step):
            return None
        if self.cfg.on_nan != "skip_batch":
            return StepOutcome(StepStatus.DIVERGED, why=why, diverged_at=self.step)
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        return StepOutcome(StepStatus.SKIPPED, why=why)

    def _count_skipped(self, why: str) -> None:
        """Count a batch on_nan=skip_batch dropped, and say so (the first three, then every 100th)."""
        self.skipped += 1
        if self.skipped <= 3 or self.skipped % 100 == 0:
            self.reporter.warn(f"non-finite {why} at step {self.step}; batch skipped ({self.skipped} so far)")

    def _end_epoch(self, epoch: EpochStats) -> None:
        cfg, writer = self.cfg, self.writer
        val_loss, val_acc = evaluate(self.model, self.data.x_val, self.data.y_val, self.data, cfg.eval_batch_size, self.autocast, self.memory_format)
        self.epoch += 1
        row = {
            "epoch": self.epoch,
            "train_loss": epoch.loss,
            "train_acc": epoch.acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": round(epoch.seconds, 3),
            "images_per_s": round(epoch.images / max(epoch.seconds, 1e-9), 1),
            "lr": epoch.lr,
        }
        if cfg.on_nan == "skip_batch":
            row["skipped_batches"] = epoch.skipped
        if epoch.clipped is not None:
            row.update(clipped_steps=epoch.clipped, clipped_fraction=epoch.clipped / epoch.updates)
        if self.monitor:
            stats = self.monitor.probe(self.model, self.probe_x, self.probe_y)
            row.update(grad_norm_first=stats.grad_norm[0], grad_norm_last=stats.grad_norm[-1], layers=stats.as_dict())
            self.monitor.log_probe(stats, self.step)
            if cfg.monitor.figure:
                fig = grad_depth_figure(
                    self.monitor.weight_names, stats.grad_norm, f"{cfg.model.name} / {cfg.act.name}, epoch {self.epoch} (probe set)"
                )
                writer.add_figure("grad_norm_vs_depth", fig, self.step, close=True)
        write_scalars(
            writer,
            [
                (tag, row[key])
                for tag, key in (
                    ("loss/train", "train_loss"),
                    ("loss/val", "val_loss"),
                    ("acc/train", "train_acc"),
                    ("acc/val", "val_acc"),
                    ("lr", "lr"),
                    ("throughput/images_per_s", "images_per_s"),
                    ("grad_clip/clipped_fraction", "clipped_fraction"),
                )
                if key in row
            ],
            self.step,
        )
        self.history.append(row)
        self._checkpoint()
        write_metrics(self.run_dir, self._metrics("running"))
        self.reporter.epoch_end(row)

    def _finish(self) -> RunResult:
        test = None
        if self.cfg.eval_test:
            test_loss, test_acc = evaluate(
                self.model, self.data.x_test, self.data.y_test, self.data, self.cfg.eval_batch_size, self.autocast, self.memory_format
            )
            write_scalars(self.writer, [("loss/test", test_loss), ("acc/test", test_acc)], self.step)
            test = {"loss": test_loss, "acc": test_acc}
        metrics = self._metrics("completed", test=test)
        self._hparams(metrics)
        write_metrics(self.run_dir, metrics)
        return RunResult(metrics, EXIT_OK)

    def _diverged(self, step: int) -> RunResult:
        self.reporter.warn(
            f"non-finite loss or gradient at step {step} (epoch {self.epoch + 1}); run stopped as diverged"
            + ("" if self.cfg.on_nan == "skip_batch" else " (on_nan=skip_batch skips such batches instead)")
        )
        metrics = self._metrics("diverged", diverged_at_step=step)
        self._hparams(metrics)
        write_metrics(self.run_dir, metrics)
        return RunResult(metrics, EXIT_DIVERGED)

    def _hparams(self, metrics: dict) -> None:
        last = self.history[-1] if self.history else {}
        results = {
            "hparam/test_acc": (metrics.get("test") or {}).get("acc"),
            "hparam/best_val_acc": metrics.get("best_val_acc"),
            "hparam/final_train_loss": last.get("train_loss"),
            "hparam/diverged": float(metrics["status"] == "diverged"),
        }
        write_hparams(self.writer, self.flat, {k: v for k, v in results.items() if v is not None and math.isfinite(v)}, self.step)


def custom_layout() -> dict:
    """TensorBoard's Custom Scalars tab: each per-layer statistic of a run in one chart (monitor.LAYER_STATS)."""
    return {
        "layers": layer_charts(),
        "training": {
            "loss": ["Multiline", ["^loss/"]],
            "accuracy": ["Multiline", ["^acc/"]],
            "gradient norm before / after clipping": ["Multiline", ["^grad_clip/norm_"]],
        },
    }


def write_hparams(writer, hparams: Dict[str, Any], results: Dict[str, float], step: int) -> None:
    """HParams-tab record in the run's own event file (add_hparams would make a sub-run)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
    file_writer = writer._get_file_writer()
    for summary in hparams_summary(clean, results):
        file_writer.add_summary(summary)
    write_scalars(writer, results.items(), step)
