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
from deepexp.train import EXIT_DIVERGED, lr_factor, seed_everything, train
from deepexp.config import SchedConfig
from conftest import QUICK, compose_train, needs_mnist


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
    assert (tmp_path / "checkpoints" / "last.pt").exists() and (tmp_path / "checkpoints" / "prev.pt").exists()


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
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    overrides = QUICK + ["epochs=2", "model.depth=2"]
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
    for i, extra in enumerate((["optim=adam", "lr=1e-3", "sched=cosine", "sched.warmup_epochs=1"],
                               ["optim=adamw", "lr=1e-3", "weight_decay=0.01", "sched=step", "sched.step_size=1"],
                               ["optim=sgd", "grad_clip=1.0", "model=cnn", "model.width=4"])):
        cfg = compose_train(["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "epochs=2",
                             "batch_size=64", "monitor.figure=false", *extra])
        assert train(cfg, tmp_path / str(i)).metrics["status"] == "completed"


def test_fast_paths_give_the_plain_results(tmp_path):
    """Monitoring off trains exactly as monitoring with histograms at every step does (the monitor only
    reads), and large evaluation batches give the loss and accuracy of small ones."""
    base = ["dataset=synthetic", "dataset.train_size=512", "dataset.test_size=100", "epochs=2", "batch_size=64",
            "model.depth=3", "model.width=32", "monitor.figure=false"]
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
    assert [{k: v for k, v in h.items() if k not in timing} for h in skipped["history"]] == \
        [{k: v for k, v in h.items() if k not in timing} for h in full["history"]]  # the same training and validation


def test_amp_and_compile_fall_back_with_a_warning_on_cpu(tmp_path, capsys):
    cfg = compose_train(["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=32", "epochs=1",
                         "batch_size=64", "amp=true", "compile=true", "monitor.figure=false"])
    assert train(cfg, tmp_path).exit_code == 0
    err = capsys.readouterr().err
    assert "amp=true has no effect on cpu" in err and "compile=true has no effect on cpu" in err


def test_cudnn_autotuning_is_on_unless_the_run_is_deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # all three restored after the test
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *args, **kwargs: None)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0, deterministic=False)
    assert torch.backends.cudnn.benchmark
    seed_everything(0, deterministic=True)
    assert not torch.backends.cudnn.benchmark


glibc_linux = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_tuned_malloc(),
                                 reason="glibc's malloc settings only (and not where the environment sets its own)")


@glibc_linux
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again(tmp_path):
    """Each step frees its activations; with glibc's defaults the next step page-faults hundreds of pages back in
    (bench_page_faults.py). After the trainer's setting, a step faults none."""
    cfg = compose_train(["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=32", "epochs=1",
                         "batch_size=64", "model.depth=2", "monitor.figure=false"])
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
    base = ["dataset=synthetic", "dataset.image_shape=[16,16]", "dataset.channels=3", "dataset.train_size=96", "dataset.test_size=32",
            "epochs=1", "batch_size=32", f"model={model}", "monitor.figure=false"]
    fast = train(compose_train(base + ["channels_last=true"]), tmp_path / "nhwc").metrics
    plain = train(compose_train(base + ["channels_last=false"]), tmp_path / "nchw").metrics
    for key in ("train_loss", "val_loss"):
        assert fast["history"][0][key] == pytest.approx(plain["history"][0][key], rel=2e-3), key
    assert fast["test"]["loss"] == pytest.approx(plain["test"]["loss"], rel=2e-3)


def test_lr_schedule_is_a_pure_function_of_the_step():
    cosine = SchedConfig(name="cosine", warmup_epochs=1, min_lr_factor=0.1)
    assert lr_factor(0, 10, 5, cosine) == pytest.approx(0.1)
    assert lr_factor(9, 10, 5, cosine) == pytest.approx(1.0)
    assert lr_factor(10, 10, 5, cosine) == pytest.approx(1.0)
    assert lr_factor(49, 10, 5, cosine) == pytest.approx(0.1, abs=0.01)
    step = SchedConfig(name="step", step_size=2, gamma=0.5)
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
def test_on_nan_skip_batch_with_every_batch_bad_is_still_divergence(tmp_path, poisoned_config):
    result = train(poisoned_config(nan_loss=range(1, 1000), extra=["on_nan=skip_batch"]), tmp_path)
    assert result.exit_code == EXIT_DIVERGED and read_metrics(tmp_path)["status"] == "diverged"


def test_a_run_saved_before_an_option_existed_resumes_unless_the_option_is_set_otherwise(tmp_path):
    from deepexp.train import check_resumable

    old = {"model": "mlp", "lr": 0.05}  # written by a deepexp without on_nan
    check_resumable(old, {**old, "on_nan": "stop"}, tmp_path)
    with pytest.raises(CheckpointError, match="on_nan"):
        check_resumable(old, {**old, "on_nan": "skip_batch"}, tmp_path)
