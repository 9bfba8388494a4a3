"""The trainer on real data: it learns, resumes exactly, stops on divergence."""

import json
import platform
import resource
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepexp.errors import CheckpointError
from deepexp.host import keep_freed_memory, user_tuned_malloc
from deepexp.rundir import read_metrics
from deepexp.train import EXIT_DIVERGED, lr_factor, train
from deepexp.config import CosineSchedConfig, StepSchedConfig
from conftest import QUICK, compose_train, needs_mnist, run_cli


@needs_mnist
def test_short_mlp_run_on_real_mnist_beats_90_percent(tmp_path):
    cfg = compose_train(["subset=5000", "epochs=3", "model.depth=4", "monitor.every_n_steps=20", "monitor.figure=false"])
    result = train(cfg, tmp_path)
    m = result.metrics
    assert result.exit_code == 0 and m["status"] == "completed"
    assert m["test"]["acc"] > 0.90, m["test"]
    assert m["data"]["test"] == 10000 and m["data"]["train"] + m["data"]["val"] == 5000
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert {"train_loss", "val_acc", "grad_norm_first", "grad_norm_last", "layers"} <= set(m["history"][0])
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == m["test"]
    # a finished run keeps its final checkpoint only, and no lock file
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"] and not (tmp_path / ".lock").exists()


@pytest.mark.slow
@needs_mnist
def test_cnn_trains_on_real_mnist(tmp_path):
    cfg = compose_train(["model=cnn", "model.width=16", "subset=3000", "epochs=3", "monitor.figure=false"])
    assert train(cfg, tmp_path).metrics["test"]["acc"] > 0.85  # measured: 0.89 (2,700 images, 3 epochs)


@needs_mnist
def test_resume_from_a_checkpoint_gives_identical_metrics(tmp_path):
    """Stop after epoch 1 (as a crash would), resume, and compare with an uninterrupted run."""
    overrides = QUICK + ["epochs=3", "model.depth=4", "model.dropout=0.1"]
    full = train(compose_train(overrides), tmp_path / "full").metrics

    cut = tmp_path / "cut"
    partial = train(compose_train(overrides[:-3] + ["epochs=1", "model.depth=4", "model.dropout=0.1"]), cut)
    assert partial.metrics["epochs_done"] == 1
    # Turn the finished one-epoch run into an interrupted three-epoch run: same checkpoint,
    # metrics.json back to "running" (what a crash after epoch 1 leaves behind).
    state = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    state["config"]["epochs"] = 3
    torch.save(state, cut / "checkpoints" / "last.pt")
    (cut / "metrics.json").unlink()
    resumed = train(compose_train(overrides), cut).metrics

    strip = lambda h: {k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
    assert [strip(h) for h in resumed["history"]] == [strip(h) for h in full["history"]]
    assert resumed["test"] == full["test"]


@needs_mnist
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, monkeypatch):
    from deepexp import rundir

    overrides = QUICK + ["epochs=2", "model.depth=2"]
    with monkeypatch.context() as patch:  # as if killed after epoch 2's checkpoint: prev.pt is kept while a run is in progress
        patch.setattr(rundir, "FINISHED", ())
        train(compose_train(overrides), tmp_path)
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"truncated")
    metrics = train(compose_train(overrides), tmp_path).metrics
    assert metrics["status"] == "completed" and metrics["epochs_done"] == 2
    assert "falling back to the previous checkpoint" in capsys.readouterr().err


@needs_mnist
def test_resuming_with_a_changed_config_is_refused(tmp_path):
    train(compose_train(QUICK + ["model.depth=2"]), tmp_path)
    with pytest.raises(CheckpointError, match="another config"):
        train(compose_train(QUICK + ["model.depth=2", "lr=0.01"]), tmp_path)
    # but monitoring and device settings may change
    assert train(compose_train(QUICK + ["model.depth=2", "monitor.every_n_steps=7"]), tmp_path).exit_code == 0


@needs_mnist
def test_non_finite_loss_ends_the_run_as_diverged(tmp_path):
    result = train(compose_train(QUICK + ["lr=1e6", "model.depth=2"]), tmp_path)
    m = read_metrics(tmp_path)
    assert result.exit_code == EXIT_DIVERGED and m["status"] == "diverged"
    assert isinstance(m["diverged_at_step"], int) and m["diverged_at_step"] >= 1
    assert m["test"] is None


def test_synthetic_data_and_every_optimizer_and_schedule_run(tmp_path):
    for i, extra in enumerate(
        (
            ["optim=adam", "lr=1e-3", "sched=cosine", "sched.warmup_epochs=1"],
            ["optim=adamw", "lr=1e-3", "weight_decay=0.01", "sched=step", "sched.step_size=1"],
            ["optim=sgd", "grad_clip=1.0", "model=cnn", "model.width=4"],
        )
    ):
        cfg = compose_train(
            ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "epochs=2", "batch_size=64", "monitor.figure=false", *extra]
        )
        assert train(cfg, tmp_path / str(i)).metrics["status"] == "completed"


def test_fast_paths_give_the_plain_results(tmp_path):
    """Monitoring off trains exactly as monitoring with histograms at every step does (the monitor only
    reads), and large evaluation batches give the loss and accuracy of small ones."""
    base = [
        "dataset=synthetic",
        "dataset.train_size=512",
        "dataset.test_size=100",
        "epochs=2",
        "batch_size=64",
        "model.depth=3",
        "model.width=32",
        "monitor.figure=false",
    ]
    plain = train(compose_train(base + ["monitor.every_n_steps=1", "monitor.hist_every_n_steps=1"]), tmp_path / "on").metrics
    fast = train(compose_train(base + ["monitor.enabled=false"]), tmp_path / "off").metrics
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    assert [[h[k] for k in keys] for h in fast["history"]] == [[h[k] for k in keys] for h in plain["history"]]
    assert fast["test"] == plain["test"]
    small = train(compose_train(base + ["monitor.enabled=false", "eval_batch_size=7"]), tmp_path / "small").metrics
    assert small["test"]["acc"] == fast["test"]["acc"]
    assert small["test"]["loss"] == pytest.approx(fast["test"]["loss"], rel=1e-5)


def test_eval_test_false_skips_only_the_test_set(tmp_path):
    base = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "epochs=1", "model.depth=2", "monitor.figure=false"]
    skipped = train(compose_train(base + ["eval_test=false"]), tmp_path / "skipped").metrics
    full = train(compose_train(base), tmp_path / "full").metrics
    assert skipped["status"] == "completed" and skipped["test"] is None and full["test"]["acc"] is not None
    timing = ("seconds", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in timing} for h in skipped["history"]] == [
        {k: v for k, v in h.items() if k not in timing} for h in full["history"]
    ]  # the same training and validation


def test_amp_and_compile_fall_back_with_a_warning_on_cpu(tmp_path, capsys):
    cfg = compose_train(
        [
            "dataset=synthetic",
            "dataset.train_size=128",
            "dataset.test_size=32",
            "epochs=1",
            "batch_size=64",
            "amp=true",
            "compile=true",
            "monitor.figure=false",
        ]
    )
    assert train(cfg, tmp_path).exit_code == 0
    err = capsys.readouterr().err
    assert "amp=true has no effect on cpu" in err and "compile=true has no effect on cpu" in err


def test_cudnn_autotuning_is_on_unless_the_run_is_deterministic(tmp_path, monkeypatch):
    """Inside each run its own flags; after it, the flags as they were before (a study's next run, the
    tests, and a caller of `train` are not affected)."""
    import deepexp.train

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    real_evaluate, during, threads = deepexp.train.evaluate, [], torch.get_num_threads()

    def evaluate(*args, **kwargs):  # called inside the run, after its first epoch
        during.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.get_num_threads()))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(deepexp.train, "evaluate", evaluate)
    for deterministic in (True, False):
        during.clear()
        cfg = compose_train(
            SYNTHETIC + ["epochs=1", "monitor.enabled=false", f"deterministic={deterministic}", f"device.threads={threads + 1}"]
        )  # device.threads, also the process's
        train(cfg, tmp_path / str(deterministic))
        assert set(during) == {(deterministic, not deterministic, threads + 1)}
        assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == (False, False)
        assert torch.get_num_threads() == threads


def test_cublas_workspace_is_fixed_for_deterministic_runs_even_after_cuda_started():
    from deepexp.train import fix_cublas_workspace

    env = {}
    assert fix_cublas_workspace(True, env, cuda_in_use=False) is None and env == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    env = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}  # the user's own choice stays
    assert fix_cublas_workspace(True, env, cuda_in_use=False) is None and env == {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    env = {}
    assert fix_cublas_workspace(False, env, cuda_in_use=False) is None and env == {}
    # CUDA started (set_device, a model moved to the GPU) creates no cuBLAS handle: set anyway, with a caveat
    # for matrix products the process may have run before
    warning = fix_cublas_workspace(True, env, cuda_in_use=True)
    assert env == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"} and "may not be deterministic" in warning


glibc_linux = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_tuned_malloc(),
    reason="glibc's malloc settings only (and not where the environment sets its own)",
)


@glibc_linux
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again(tmp_path):
    """Each step frees its activations; with glibc's defaults the next step page-faults hundreds of pages back in
    (bench_page_faults.py). After the trainer's setting, a step faults none."""
    cfg = compose_train(
        ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=32", "epochs=1", "batch_size=64", "model.depth=2", "monitor.figure=false"]
    )
    assert train(cfg, tmp_path).metrics["provenance"]["malloc_keeps_freed_memory"] is True
    model = nn.Sequential(nn.Flatten(), *[layer for _ in range(12) for layer in (nn.Linear(256, 256), nn.ReLU())])
    x, y = torch.randn(256, 256), torch.randint(0, 10, (256,))  # 256 KiB activations, above the default mmap threshold

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    faults = []
    for _ in range(23):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # The median step, past 3 warm-up steps: now and then the heap still grows by a few hundred pages.
    assert statistics.median(faults[3:]) < 10, faults  # measured: 0; 130-500 without the setting


def test_a_users_own_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert user_tuned_malloc() and keep_freed_memory.__wrapped__() is False


@pytest.mark.parametrize("model", ["cnn", "resnet20", "densenet", "dws_cnn", "mobilenet_v2", "inception_cnn", "squeeze_cnn"])
def test_channels_last_computes_the_same_function_and_gradients(model):
    """In float64, where rounding cannot hide a layout mistake, NHWC and NCHW agree to 1e-9."""
    from deepexp.models import create_model, init_weights

    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        net = create_model(model, in_channels=3, image_shape=(16, 16), num_classes=10, act="relu")
        init_weights(net, "auto", "relu")
        net = net.double().to(memory_format=fmt).train()
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
        torch.manual_seed(2)  # the same dropout masks
        logits = net(x.contiguous(memory_format=fmt))
        torch.nn.functional.cross_entropy(logits, y).backward()
        results.append((logits.detach(), [p.grad for p in net.parameters()]))
    (a, grads_a), (b, grads_b) = results
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model", ["cnn", "resnet20", "densenet"])
def test_channels_last_trains_like_the_default_layout(tmp_path, model):
    """The same run in either layout: float32 kernels sum in another order, and the gradients of
    BatchNorm in small late feature maps are ill-conditioned (fp32 NCHW itself is 0.8% off fp64
    there), so a few steps later the losses agree to about 1e-3, not to the last digit."""
    base = [
        "dataset=synthetic",
        "dataset.image_shape=[16,16]",
        "dataset.channels=3",
        "dataset.train_size=96",
        "dataset.test_size=32",
        "epochs=1",
        "batch_size=32",
        f"model={model}",
        "monitor.figure=false",
    ]
    fast = train(compose_train(base + ["channels_last=true"]), tmp_path / "nhwc").metrics
    plain = train(compose_train(base + ["channels_last=false"]), tmp_path / "nchw").metrics
    for key in ("train_loss", "val_loss"):
        assert fast["history"][0][key] == pytest.approx(plain["history"][0][key], rel=2e-3), key
    assert fast["test"]["loss"] == pytest.approx(plain["test"]["loss"], rel=2e-3)


def test_lr_schedule_is_a_pure_function_of_the_step():
    cosine = CosineSchedConfig(name="cosine", warmup_epochs=1, min_lr_factor=0.1)
    assert lr_factor(0, 10, 5, cosine) == pytest.approx(0.1)
    assert lr_factor(9, 10, 5, cosine) == pytest.approx(1.0)
    assert lr_factor(10, 10, 5, cosine) == pytest.approx(1.0)
    assert lr_factor(49, 10, 5, cosine) == pytest.approx(0.1, abs=0.01)
    step = StepSchedConfig(name="step", step_size=2, gamma=0.5)
    assert [lr_factor(s, 10, 6, step) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]


# --- non-finite losses and gradients ------------------------------------------------------------


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class _Poisoned(torch.nn.Module):
    """An MLP whose training forward pass number k gives NaN logits (k in `nan_loss`) or a finite
    loss with infinite gradients (k in `inf_grad`): the trouble a real run meets, on cue."""

    nan_loss: tuple = ()
    inf_grad: tuple = ()

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls in self.nan_loss:
                out = out * float("nan")
            if self.calls in self.inf_grad:
                out = _InfGrad.apply(out)
        return out


@pytest.fixture
def poisoned_config(monkeypatch):
    """Makes configs for the poisoned MLP, registered for this test only (so that no other test,
    e.g. one listing the registered models, sees it)."""
    from deepexp.models.registry import MODELS, create_model

    monkeypatch.setitem(MODELS._entries, "poisoned_mlp", lambda **kw: _Poisoned(create_model("mlp", **kw)))

    def make(nan_loss=(), inf_grad=(), extra=()):
        _Poisoned.nan_loss, _Poisoned.inf_grad = tuple(nan_loss), tuple(inf_grad)
        cfg = compose_train(QUICK + ["model.depth=2", *extra])
        cfg.model.name = "poisoned_mlp"
        return cfg

    return make


def test_the_deferred_watch_reports_the_first_bad_step_when_it_reads():
    """The GPU's bookkeeping (no host read per step), exercised on the CPU."""
    from deepexp.train import NonFiniteWatch

    watch = NonFiniteWatch(torch.device("cpu"), eager=False, every=4)
    for step, bad in ((1, False), (2, False), (3, True), (4, False), (5, True)):
        assert not watch.bad_now(torch.tensor(bad), step)
        if step < 4:
            assert watch.first_bad(step, last=False) is None
    assert watch.first_bad(4, last=False) == 3 and watch.first_bad(5, last=True) == 3
    assert NonFiniteWatch(torch.device("cpu"), eager=True, every=4).bad_now(torch.tensor(True), 1)


@needs_mnist
def test_non_finite_gradient_with_a_finite_loss_ends_the_run_before_the_weights_are_spoiled(tmp_path, poisoned_config):
    result = train(poisoned_config(inf_grad=[3]), tmp_path)
    m = read_metrics(tmp_path)
    assert result.exit_code == EXIT_DIVERGED and m["status"] == "diverged" and m["diverged_at_step"] == 3


@needs_mnist
def test_on_nan_skip_batch_drops_only_the_bad_batches_and_finishes(tmp_path, poisoned_config):
    result = train(poisoned_config(nan_loss=[2], inf_grad=[5], extra=["on_nan=skip_batch"]), tmp_path)
    m = read_metrics(tmp_path)
    assert result.exit_code == 0 and m["status"] == "completed" and m["skipped_batches"] == 2
    assert m["test"]["acc"] > 0.7
    weights = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())


@needs_mnist
def test_on_nan_skip_batch_says_whether_the_loss_or_the_gradient_was_not_finite(tmp_path, poisoned_config):
    """Each step's outcome carries why it was skipped; the warning names it."""
    from deepexp.progress import QuietReporter

    warned = []

    class Recorder(QuietReporter):
        def warn(self, message):
            warned.append(message)

    cfg = poisoned_config(nan_loss=[2], inf_grad=[3], extra=["on_nan=skip_batch", "subset=600", "epochs=1", "eval_test=false"])
    result = train(cfg, tmp_path, reporter=Recorder())
    assert result.exit_code == 0 and result.metrics["skipped_batches"] == 2
    assert [line for line in warned if "skipped" in line] == [
        "non-finite loss at step 2; batch skipped (1 so far)",
        "non-finite gradient at step 3; batch skipped (2 so far)",
    ]


@needs_mnist
def test_on_nan_skip_batch_with_every_batch_bad_is_still_divergence(tmp_path, poisoned_config):
    result = train(poisoned_config(nan_loss=range(1, 1000), extra=["on_nan=skip_batch"]), tmp_path)
    assert result.exit_code == EXIT_DIVERGED and read_metrics(tmp_path)["status"] == "diverged"


def test_a_run_saved_before_an_option_existed_resumes_unless_the_option_is_set_otherwise(tmp_path):
    from deepexp.train import check_resumable

    old = {"model": "mlp", "lr": 0.05}  # written by a deepexp without on_nan
    check_resumable(old, {**old, "on_nan": "stop"}, tmp_path)
    with pytest.raises(CheckpointError, match="on_nan"):
        check_resumable(old, {**old, "on_nan": "skip_batch"}, tmp_path)


def test_a_run_that_recorded_every_choices_keys_resumes_and_a_real_change_is_still_refused(tmp_path):
    """Older runs recorded the synthetic dataset's keys (and npz's path), Adam's betas and the step and cosine
    schedules' keys for every run; they are no longer part of an mnist/sgd/none run's config, and their absence is no change."""
    from deepexp.train import check_resumable, flat_config

    now = flat_config(compose_train([]))  # mnist, sgd, no schedule
    others = {
        "dataset.path": None,
        "dataset.channels": 1,
        "dataset.image_shape": [28, 28],
        "dataset.train_size": 2048,
        "dataset.test_size": 512,
        "optim.betas": [0.9, 0.999],
        "sched.step_size": 30,
        "sched.gamma": 0.1,
        "sched.min_lr_factor": 0.0,
    }
    assert not set(others) & set(now) and {"optim.momentum", "sched.warmup_epochs"} <= set(now)
    old = {**now, **others}
    check_resumable(old, now, tmp_path)
    with pytest.raises(CheckpointError, match="lr: 0.05 -> 0.1"):
        check_resumable(old, {**now, "lr": 0.1}, tmp_path)


# --- what a run records is what the run did ----------------------------------------------------

# A one-step epoch: the batch is the whole training split (230 images), so the first step's gradient
# does not depend on the data order, and the test can compute it from the run's first weights alone.
ONE_BATCH = [
    "dataset=synthetic",
    "dataset.train_size=256",
    "dataset.test_size=32",
    "batch_size=4096",
    "model.depth=3",
    "model.width=32",
    "monitor.every_n_steps=1",
    "monitor.figure=false",
]
SYNTHETIC = [
    "dataset=synthetic",
    "dataset.train_size=512",
    "dataset.test_size=32",
    "batch_size=64",
    "model.depth=3",
    "model.width=32",
    "monitor.figure=false",
]


def scalars(run_dir, tag):
    """(step, value) of every event of TensorBoard scalar `tag` in a run directory, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def first_step_gradients(cfg):
    """By hand: the gradient norm of every weight (by its TensorBoard tag suffix, `01.layers.0`), and of all
    parameters together, at the run's first step (its initial weights, its whole training split as the batch)."""
    from deepexp.models import init_weights
    from deepexp.data import normalize
    from deepexp.monitor import WEIGHT_LAYERS, layer_tags
    from deepexp.train import build_model, run_splits

    data = run_splits(cfg)
    torch.manual_seed(cfg.seed)  # the trainer's initial weights
    model = build_model(cfg, data)
    init_weights(model, cfg.init.name, cfg.act.name)
    F.cross_entropy(model(normalize(data.x_train, data.mean, data.std)), data.y_train).backward()
    weights = [(name, m.weight.grad.norm().item()) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    per_weight = dict(zip(layer_tags([name for name, _ in weights]), [norm for _, norm in weights]))
    return per_weight, torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()


def test_gradients_are_logged_as_backward_made_them_not_as_clipped(tmp_path):
    """grad_clip=0.01 scales every step's gradient down to norm 0.01; TensorBoard still shows the
    norms (and histograms) of the gradients backward produced, and the global norm before and after clipping."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ONE_BATCH + ["epochs=1", "grad_clip=0.01", "monitor.hist_every_n_steps=1"]
    out = run_cli(["train", *args, f"hydra.run.dir={tmp_path}"], tmp_path)
    assert out.returncode == 0, out.stderr
    per_weight, total = first_step_gradients(compose_train(args))
    assert total > 1.0  # far above the threshold: this step was clipped
    for name, norm in per_weight.items():
        assert scalars(tmp_path, f"grad_norm/{name}") == [(1, pytest.approx(norm, rel=1e-4))], name
    assert scalars(tmp_path, "grad_clip/norm_before") == [(1, pytest.approx(total, rel=1e-4))]
    assert scalars(tmp_path, "grad_clip/norm_after") == [(1, pytest.approx(0.01, rel=1e-4))]
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    events.Reload()
    for name, norm in per_weight.items():
        (hist,) = events.Histograms(f"grads/{name}")
        assert hist.histogram_value.sum_squares == pytest.approx(norm**2, rel=1e-4), name
    row = json.loads((tmp_path / "metrics.json").read_text())["history"][0]
    assert (row["clipped_steps"], row["clipped_fraction"]) == (1, 1.0)
    assert scalars(tmp_path, "grad_clip/clipped_fraction") == [(1, 1.0)]


def test_the_clipped_fraction_counts_the_steps_whose_norm_exceeded_grad_clip(tmp_path):
    cfg = compose_train(SYNTHETIC + ["epochs=2", "grad_clip=2.5", "monitor.every_n_steps=1"])
    history = train(cfg, tmp_path).metrics["history"]
    norms = scalars(tmp_path, "grad_clip/norm_before")
    assert len(norms) == 2 * 7  # every step logged (460 training images, batches of 64)
    for epoch, row in enumerate(history):
        over = sum(norm > 2.5 for step, norm in norms[7 * epoch : 7 * (epoch + 1)])
        assert row["clipped_steps"] == over and row["clipped_fraction"] == pytest.approx(over / 7)
    assert 0 < sum(row["clipped_steps"] for row in history) < 14  # the threshold sits among this run's norms
    after = dict(scalars(tmp_path, "grad_clip/norm_after"))
    assert all(after[step] == pytest.approx(min(norm, 2.5), rel=1e-4) for step, norm in norms)


def test_gradient_norms_under_a_grad_scaler_are_of_the_unscaled_gradients(tmp_path, monkeypatch):
    """fp16 AMP scales the loss (here by 2**16) before backward; the logged norms are in true units.
    GradScaler runs on the CPU too, so the CUDA-only path is exercised here with the scaler forced on."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: real(device, init_scale=2.0**16, enabled=True))
    cfg = compose_train(ONE_BATCH + ["epochs=1", "grad_clip=0.01"])
    train(cfg, tmp_path)
    per_weight, total = first_step_gradients(cfg)
    for name, norm in per_weight.items():
        assert scalars(tmp_path, f"grad_norm/{name}") == [(1, pytest.approx(norm, rel=1e-4))], name
    assert scalars(tmp_path, "grad_clip/norm_before") == [(1, pytest.approx(total, rel=1e-4))]


def test_each_epoch_records_the_learning_rate_its_updates_used(tmp_path):
    """The step schedule of the example: epoch 1 trains at 0.05, epoch 2 at 0.005 (not the rate the
    scheduler holds after the epoch, 0.005 and 0.0005), in metrics.json and in TensorBoard alike."""
    out = run_cli(
        ["train", *SYNTHETIC, "epochs=2", "sched=step", "sched.step_size=1", "sched.gamma=0.1", "lr=0.05", f"hydra.run.dir={tmp_path}"], tmp_path
    )
    assert out.returncode == 0, out.stderr
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [row["lr"] for row in history] == [pytest.approx(0.05), pytest.approx(0.005)]
    assert [value for step, value in scalars(tmp_path, "lr")] == [pytest.approx(0.05), pytest.approx(0.005)]


def expected_rates(cfg, steps_per_epoch):
    """Per epoch, the mean over its steps of lr x lr_factor (the schedule's pure function)."""
    return [
        statistics.fmean(
            cfg.lr * lr_factor(step, steps_per_epoch, cfg.epochs, cfg.sched) for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        )
        for epoch in range(cfg.epochs)
    ]


def test_warm_up_and_cosine_record_each_epochs_mean_rate_and_a_resumed_run_the_same(tmp_path, monkeypatch):
    """Warm-up and cosine change the rate every step: each epoch records the mean rate of its updates
    (the last epoch of a cosine schedule is not 0), TensorBoard's lr/step the rate of each logged step,
    and a run interrupted after epoch 1 and resumed records what an uninterrupted run does."""
    import deepexp.train

    cfg = compose_train(SYNTHETIC + ["epochs=3", "sched=cosine", "sched.warmup_epochs=1", "monitor.every_n_steps=3"])
    full = train(cfg, tmp_path / "full").metrics
    expected = expected_rates(cfg, steps_per_epoch=7)
    assert [row["lr"] for row in full["history"]] == pytest.approx(expected, rel=1e-12)
    assert full["history"][-1]["lr"] > 0.1 * cfg.lr
    per_step = scalars(tmp_path / "full", "lr/step")
    assert [step for step, _ in per_step] == [3, 6, 7, 9, 12, 14, 15, 18, 21]  # every 3rd step and each epoch's last
    assert [value for _, value in per_step] == [pytest.approx(cfg.lr * lr_factor(step - 1, 7, 3, cfg.sched), rel=1e-6) for step, _ in per_step]

    class Interrupted(Exception):
        pass

    real_evaluate, calls = deepexp.train.evaluate, []

    def evaluate_until_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # validating epoch 2: epoch 1 is checkpointed, epoch 2 is lost
            raise Interrupted
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(deepexp.train, "evaluate", evaluate_until_the_second_epoch)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "cut")
    monkeypatch.setattr(deepexp.train, "evaluate", real_evaluate)
    resumed = train(cfg, tmp_path / "cut").metrics
    assert [row["lr"] for row in resumed["history"]] == [row["lr"] for row in full["history"]]
    # TensorBoard too, epoch 1's numbers included: they were logged at step 7, where the resumed run starts
    for tag in ("lr", "lr/step", "loss/val"):
        assert scalars(tmp_path / "cut", tag) == scalars(tmp_path / "full", tag), tag
    assert resumed["epochs_done"] == 3
    assert resumed["seconds"] == pytest.approx(sum(row["seconds"] for row in resumed["history"]), abs=0.01)
    # and the provenance says which process trained which epochs
    assert full["provenance"]["resumed_after_epoch"] is None and full["provenance"]["earlier_attempts"] == []
    assert resumed["provenance"]["resumed_after_epoch"] == 1
    (earlier,) = resumed["provenance"]["earlier_attempts"]
    assert earlier["resumed_after_epoch"] is None and earlier["host"] == resumed["provenance"]["host"]


def test_provenance_says_whether_the_code_differed_from_its_commit(tmp_path, monkeypatch):
    import deepexp.train

    answers = {("rev-parse", "HEAD"): "abc123", ("status", "--porcelain", "--untracked-files=no"): " M deepexp/train.py"}
    monkeypatch.setattr(deepexp.train, "_git", lambda *args: answers[args])
    m = train(compose_train(SYNTHETIC + ["epochs=1", "monitor.enabled=false"]), tmp_path).metrics
    assert (m["provenance"]["git_commit"], m["provenance"]["git_dirty"]) == ("abc123", True)
    answers[("status", "--porcelain", "--untracked-files=no")] = ""
    assert deepexp.train.git_dirty() is False
    monkeypatch.setattr(deepexp.train, "_git", lambda *args: None)  # not a git checkout
    assert deepexp.train.git_dirty() is None and deepexp.train.git_commit() is None


def test_a_diverged_run_counts_the_training_time_of_its_last_partial_epoch(tmp_path):
    m = train(compose_train(SYNTHETIC + ["epochs=2", "lr=1e6"]), tmp_path).metrics
    assert m["status"] == "diverged" and m["epochs_done"] == 0 and m["diverged_at_step"] == 3
    assert m["seconds"] > 0  # three steps trained before the loss went non-finite


@needs_mnist
def test_an_epoch_with_skipped_batches_counts_them_in_its_throughput_and_its_row(tmp_path, poisoned_config):
    """Skipped batches went through forward and backward: they took time, so the throughput counts their
    images; the loss, accuracy and learning rate are those of the batches whose update was applied."""
    cfg = poisoned_config(nan_loss=[2], inf_grad=[5], extra=["on_nan=skip_batch", "sched=cosine"])
    train(cfg, tmp_path)
    m = read_metrics(tmp_path)
    assert [row["skipped_batches"] for row in m["history"]] == [2, 0] and m["skipped_batches"] == 2
    steps, batch = 14, 128  # 1,800 training images
    applied = [step for step in range(steps) if step not in (1, 4)]  # steps 2 and 5 (0-based 1 and 4) were skipped
    assert m["history"][0]["lr"] == pytest.approx(statistics.fmean(cfg.lr * lr_factor(s, steps, 2, cfg.sched) for s in applied))
    for row in m["history"]:  # seconds are rounded to the millisecond, images/s to 0.1
        low, high = steps * batch / (row["seconds"] + 5e-4), steps * batch / (row["seconds"] - 5e-4)
        assert low - 0.05 <= row["images_per_s"] <= high + 0.05, row  # skipped images left out: 12/14 of this


def test_a_compiled_model_logs_the_activation_statistics_of_every_logged_step(tmp_path, monkeypatch):
    """compile=true on the CPU, through the trainer's own compiled path: torch.compile with its "eager"
    backend compiles in a fraction of a second and computes what the module computes, so the compiled run
    logs every per-layer tag the eager run logs, at the same steps, with the same values."""
    import deepexp.train

    real_compile, compiled_calls = torch.compile, []

    def compile_eager(model):
        compiled = real_compile(model, backend="eager")

        def forward(x):
            compiled_calls.append(1)
            return compiled(x)

        return forward

    monkeypatch.setattr(deepexp.train, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(torch, "compile", compile_eager)
    base = SYNTHETIC + ["epochs=1", "monitor.every_n_steps=3"]  # 7 steps: 3, 6 and the last, 7, are logged
    compiled = train(compose_train(base + ["compile=true"]), tmp_path / "compiled").metrics
    eager = train(compose_train(base), tmp_path / "eager").metrics
    from deepexp.monitor import layer_tags

    acts = compiled["layers"]["activations"]
    assert acts == eager["layers"]["activations"] and len(acts) == 3
    for name in layer_tags(acts):
        for stat in ("act_mean", "act_std", "sparsity"):
            logged = scalars(tmp_path / "compiled", f"{stat}/{name}")
            assert [step for step, _ in logged] == [3, 6, 7], (stat, name)
            assert logged == [(step, pytest.approx(value, rel=1e-5, abs=1e-7)) for step, value in scalars(tmp_path / "eager", f"{stat}/{name}")], (
                stat,
                name,
            )
    assert compiled["history"][0]["train_loss"] == pytest.approx(eager["history"][0]["train_loss"], rel=1e-6)
    assert len(compiled_calls) == 4  # the steps that are not logged went through the compiled module


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_amp_autocasts_to_bfloat16_only_on_gpus_that_compute_it_natively(monkeypatch, capability, expected):
    """A T4 (compute capability 7.5) or V100 (7.0) emulates bfloat16, and torch.cuda.is_bf16_supported() says yes
    there; the run's GPU decides, not the current one (a study worker's run on cuda:1, current GPU cuda:0)."""
    from deepexp.train import accelerator

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # the emulation's yes
    # cuda:1 is the GPU under test; cuda:0, the current GPU, is an H100 (is_bf16_supported asks about that one)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability if torch.device(device).index == 1 else (9, 0))
    cuda = torch.device("cuda", 1)
    accel = accelerator(cuda, amp=True, compile=False)
    assert accel.amp_dtype == expected
    assert accel.grad_scaler == (expected == torch.float16)  # float16 needs loss scaling, bfloat16 does not
    assert accelerator(cuda, amp=False, compile=False).amp_dtype is None
    assert accelerator(torch.device("cpu"), amp=True, compile=False).amp_dtype is None


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16])
def test_provenance_records_the_autocast_dtype_the_run_used_and_float16_gets_a_grad_scaler(tmp_path, monkeypatch, dtype):
    """CPU autocast takes both dtypes, so the trainer's AMP path runs here with the CUDA decision forced."""
    import deepexp.train

    monkeypatch.setattr(deepexp.train, "accelerator", lambda *args: deepexp.train.Accelerator(dtype, False))
    m = train(compose_train(SYNTHETIC + ["epochs=1", "amp=true", "monitor.enabled=false"]), tmp_path).metrics
    assert m["status"] == "completed"
    assert m["provenance"]["amp_dtype"] == {None: None, torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    scaler = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["scaler"]
    assert (scaler != {}) == (dtype == torch.float16)  # a disabled GradScaler's state is empty


# --- resuming on another device ----------------------------------------------------------------


def interrupt_after_epoch_1(overrides, run_dir, epochs=2, edit=None):
    """A finished one-epoch run turned into an interrupted `epochs`-epoch run (what a crash after epoch 1
    leaves behind); `edit(state)` may change the checkpoint first."""
    train(compose_train(overrides + ["epochs=1"]), run_dir)
    path = run_dir / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["epochs"] = epochs
    if edit:
        edit(state)
    torch.save(state, path)
    (run_dir / "metrics.json").unlink()


def force_float16_amp(monkeypatch):
    """The trainer's float16 path (autocast + GradScaler) on the CPU, which takes both."""
    import deepexp.train

    monkeypatch.setattr(deepexp.train, "accelerator", lambda *args: deepexp.train.Accelerator(torch.float16, False))


def test_a_float16_run_resumes_from_a_checkpoint_whose_grad_scaler_was_disabled(tmp_path, monkeypatch):
    """A checkpoint written on the CPU or under bfloat16 holds an empty GradScaler state; resumed on a GPU
    that autocasts to float16, the loss scale starts afresh (2**16, GradScaler's initial scale)."""
    overrides = SYNTHETIC + ["amp=true", "monitor.enabled=false"]
    interrupt_after_epoch_1(overrides, tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["scaler"] == {}
    force_float16_amp(monkeypatch)
    m = train(compose_train(overrides + ["epochs=2"]), tmp_path).metrics
    assert m["status"] == "completed" and m["epochs_done"] == 2 and m["provenance"]["resumed_after_epoch"] == 1
    assert m["provenance"]["amp_dtype"] == "float16"
    scaler = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["scaler"]
    assert scaler["scale"] == 2.0**16 and scaler["_growth_tracker"] == 7  # 7 finite float16 steps since


def test_a_grad_scaler_state_that_does_not_fit_is_refused_naming_the_grad_scaler(tmp_path, monkeypatch):
    overrides = SYNTHETIC + ["amp=true", "monitor.enabled=false"]
    interrupt_after_epoch_1(overrides, tmp_path, edit=lambda state: state.update(scaler={"scale": 1024.0}))
    force_float16_amp(monkeypatch)
    with pytest.raises(CheckpointError) as refused:
        train(compose_train(overrides + ["epochs=2"]), tmp_path)
    message = str(refused.value)
    assert "GradScaler's state" in message and "'growth_factor'" in message and "model 'mlp'" not in message


def test_an_optimizer_state_that_does_not_fit_is_one_line_naming_the_optimizer(tmp_path):
    """Through the CLI: exit 2, one line, and the line blames the optimizer's state, not the model."""
    run = tmp_path / "run"

    def drop_a_parameter(state):
        state["optimizer"]["param_groups"][0]["params"].pop()

    interrupt_after_epoch_1(SYNTHETIC + ["monitor.enabled=false"], run, edit=drop_a_parameter)
    out = run_cli(["train", *SYNTHETIC, "monitor.enabled=false", "epochs=2", f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "does not fit the sgd optimizer's state" in line and "ValueError" in line and "model 'mlp'" not in line


def test_checkpoints_keep_every_cuda_generator_and_restore_as_many_as_the_machine_has(tmp_path, monkeypatch):
    """A resumed GPU run draws the dropout masks an uninterrupted one would: each CUDA generator's state
    (faked here: two devices, 16 bytes each, as Philox's seed and offset) goes into the checkpoint and comes
    back on a machine with the same, fewer or more devices."""
    from deepexp.rundir import load_checkpoint, save_checkpoint
    from deepexp.train import rng_state, set_rng_state

    states = [torch.arange(16, dtype=torch.uint8) + 100 * i for i in range(2)]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    save_checkpoint(tmp_path, {"model": {}, "epoch": 1, "rng": rng_state()})
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["rng"]  # weights_only=True, as a resume loads it
    restored = {}
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.__setitem__(device, state))
    for devices, expected in ((2, [0, 1]), (1, [0]), (4, [0, 1])):
        restored.clear()
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        set_rng_state(saved)
        assert sorted(restored) == expected, devices
        assert all(torch.equal(restored[i], states[i]) for i in expected)
    restored.clear()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # a CPU run: CUDA is left alone
    set_rng_state(saved)
    assert restored == {}
    assert rng_state()["cuda"] == []


def test_the_runs_own_cuda_generator_follows_it_to_a_gpu_with_another_number(tmp_path, monkeypatch):
    """A study's pool may resume a run trained on cuda:1 on cuda:0: its dropout masks must continue from
    cuda:1's generator, not from what cuda:0's happened to hold (fake states, two devices)."""
    from deepexp.rundir import load_checkpoint, save_checkpoint
    from deepexp.train import rng_state, set_rng_state

    states = [torch.arange(16, dtype=torch.uint8) + 100 * i for i in range(2)]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[torch.device(device).index].clone())
    save_checkpoint(tmp_path, {"model": {}, "epoch": 1, "rng": rng_state(torch.device("cuda", 1))})
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["rng"]
    restored = {}

    def set_state(state, device):
        index = device if isinstance(device, int) else torch.device(device).index
        restored[index] = state

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    set_rng_state(saved, torch.device("cuda", 0))
    assert torch.equal(restored[0], states[1]) and torch.equal(restored[1], states[1])  # cuda:0 now runs the run
    restored.clear()
    set_rng_state(saved, torch.device("cuda", 1))  # the same GPU: as saved
    assert torch.equal(restored[0], states[0]) and torch.equal(restored[1], states[1])


def test_resuming_in_another_memory_format_gives_the_optimizer_state_its_parameters_layout(tmp_path):
    """channels_last may change on resume. CUDA's fused Adam and SGD refuse moments whose strides differ from
    their weights' ("params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout");
    the CPU's fused kernels accept them, so the test checks the layouts the resumed run trained with."""
    from deepexp.train import build_model, run_splits

    base = [
        "dataset=synthetic",
        "dataset.channels=3",
        "dataset.image_shape=[8,8]",
        "dataset.train_size=256",
        "dataset.test_size=32",
        "batch_size=64",
        "model=cnn",
        "model.width=4",
        "optim=adam",
        "lr=1e-3",
        "monitor.enabled=false",
    ]
    interrupt_after_epoch_1(base + ["channels_last=false"], tmp_path)
    m = train(compose_train(base + ["channels_last=true", "epochs=2"]), tmp_path).metrics
    assert m["status"] == "completed" and m["epochs_done"] == 2
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    cfg = compose_train(base)
    names = [name for name, _ in build_model(cfg, run_splits(cfg)).named_parameters()]
    convs = [name for name in names if state["model"][name].dim() == 4]
    assert len(convs) == 6 and all(
        state["model"][name].is_contiguous(memory_format=torch.channels_last) and not state["model"][name].is_contiguous() for name in convs
    )
    for index, name in enumerate(names):
        for key in ("exp_avg", "exp_avg_sq"):
            assert state["optimizer"]["state"][index][key].stride() == state["model"][name].stride(), (name, key)


@pytest.mark.parametrize("capability, in_effect", [((7, 0), False), ((8, 0), True), ((9, 0), True)])
def test_tf32_takes_effect_only_on_gpus_with_tf32_tensor_cores(monkeypatch, capability, in_effect):
    from deepexp.train import accelerator

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert accelerator(torch.device("cuda"), amp=False, compile=False, tf32=True).tf32 is in_effect
    assert accelerator(torch.device("cuda"), amp=False, compile=False, tf32=False).tf32 is False
    assert accelerator(torch.device("cpu"), amp=False, compile=False, tf32=True).tf32 is False


@pytest.mark.parametrize(
    "capability, triton, why",
    [
        ((6, 1), True, "compute capability 6.1 is below the 7.0"),  # a P100: inductor raises GPUTooOldForTriton
        ((7, 5), False, "the triton package, which torch.compile needs on CUDA, is not installed"),  # inductor: TritonMissing
        ((7, 0), True, None),
        ((9, 0), True, None),
    ],
)
def test_compile_applies_only_on_gpus_where_torch_compile_can_generate_triton_kernels(monkeypatch, capability, triton, why):
    import importlib.util

    from deepexp.train import accelerator, compile_unavailable

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: (object() if triton else None) if name == "triton" else real_find_spec(name, *a)
    )
    cuda = torch.device("cuda", 0)
    assert accelerator(cuda, amp=False, compile=True).compile is (why is None)
    assert (compile_unavailable(cuda) or "").startswith(why or "")
    assert accelerator(cuda, amp=False, compile=False).compile is False


def test_tf32_is_set_for_the_run_recorded_and_restored_after_it(tmp_path, monkeypatch, capsys):
    """cuBLAS and cuDNN get the run's choice explicitly (PyTorch's own defaults differ: matmuls in float32,
    convolutions in TF32); provenance records what ran (on the CPU: float32, with a warning for tf32=true);
    after the run the flags are as they were."""
    import deepexp.train

    from deepexp.train import tf32_flags

    before = tf32_flags()
    real_evaluate, during = deepexp.train.evaluate, []

    def evaluate(*args, **kwargs):
        during.append(tf32_flags())
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(deepexp.train, "evaluate", evaluate)
    new_api = hasattr(torch.backends.cuda.matmul, "fp32_precision")
    for tf32 in (False, True):
        during.clear()
        m = train(compose_train(SYNTHETIC + ["epochs=1", "monitor.enabled=false", f"tf32={tf32}"]), tmp_path / str(tf32)).metrics
        assert set(during) == {("tf32" if tf32 else "ieee",) * 3 if new_api else (tf32, tf32)}
        assert tf32_flags() == before
        assert m["provenance"]["tf32"] is False and m["config"]["tf32"] is tf32
    assert "tf32=true has no effect on cpu" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(torch.backends, "fp32_precision"), reason="this torch has no fp32_precision settings")
def test_a_process_that_used_the_fp32_precision_settings_can_still_train(tmp_path):
    """After torch.backends.fp32_precision was set, PyTorch refuses to read the legacy allow_tf32 flags; the
    run sets and restores the float32 precision through the newer settings there."""
    from deepexp.train import tf32_flags

    saved = torch.backends.fp32_precision
    torch.backends.fp32_precision = "ieee"
    try:
        before = tf32_flags()
        assert before[0] == "ieee"  # the matmul's setting follows the global one
        m = train(compose_train(SYNTHETIC + ["epochs=1", "monitor.enabled=false", "tf32=true"]), tmp_path).metrics
        assert m["status"] == "completed" and m["config"]["tf32"] is True and tf32_flags() == before
    finally:
        torch.backends.fp32_precision = saved


def test_dynamo_is_reset_only_after_an_earlier_compiled_run_of_the_process(tmp_path, monkeypatch):
    """torch._dynamo.reset() drops everything compiled in the process, a Python caller's own functions too:
    the first compiled run leaves them alone; the next resets, as a study's runs need."""
    import deepexp.train

    real_compile, resets = torch.compile, []
    monkeypatch.setattr(deepexp.train, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(deepexp.train, "_COMPILED_BEFORE", False, raising=False)
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend="eager"))
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    for i in range(2):
        train(compose_train(SYNTHETIC + ["epochs=1", "monitor.enabled=false", "compile=true"]), tmp_path / str(i))
        assert len(resets) == i, i


def test_every_run_of_a_study_is_compiled_however_many_models_of_one_class_came_before(tmp_path, monkeypatch):
    """Dynamo stops compiling a forward it holds `recompile_limit` versions of (8 by default; 2 here), and
    runs it uncompiled with only a log line: a study's ninth ResNet would silently train eager."""
    import deepexp.train

    real_compile = torch.compile
    monkeypatch.setattr(deepexp.train, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend="eager"))
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    graphs = torch._dynamo.utils.counters["stats"]
    for width in (8, 12, 16, 20):  # four MLPs, one class, four shapes
        before = graphs["unique_graphs"]
        cfg = compose_train(SYNTHETIC + ["epochs=1", "monitor.enabled=false", "compile=true", f"model.width={width}"])
        train(cfg, tmp_path / str(width))
        assert graphs["unique_graphs"] > before, width
