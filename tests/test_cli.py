"""The real `deepexp` command, as a user types it: help, sweeps, crash safety, bad input."""

import csv
import json
import os
import statistics
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, needs_mnist, run_cli
from deepexp.models import list_models

FAST = ["epochs=1", "subset=600", "model.depth=2", "monitor.figure=false"]


def test_help_lists_commands_and_config_groups(tmp_path):
    top = run_cli(["--help"], tmp_path)
    assert top.returncode == 0 and "train" in top.stdout
    sub = run_cli(["train", "--help"], tmp_path)
    assert sub.returncode == 0
    for line in (
        "act: elu, gelu, leaky_relu, prelu, relu, selu, sigmoid, swish, tanh",
        "dataset: cifar10, fashion_mnist, mnist, npz, synthetic",
        "device: auto, cpu, cuda",
        "init: auto, default, kaiming, lecun, xavier",
        "optim: adam, adamw, sgd",
        "sched: cosine, none, step",
    ):
        assert line in sub.stdout
    assert f"model: {', '.join(list_models())}" in sub.stdout


BAD_INPUT = [
    (["bogus"], "unknown command 'bogus'"),
    (["train", "model=foo"], f"unknown model 'foo'; choose one of: {', '.join(list_models())}"),
    (["train", "act=softplus"], "unknown act 'softplus'"),
    (["train", "epochz=3"], "unknown key 'epochz'"),
    (["train", "model.deph=3"], "unknown key 'model.deph'"),
    (["train", "batch_size=abc"], "could not be converted to Integer"),
    (["train", "epochs=0"], "epochs must be at least 1"),
    (["train", "lr=-1"], "lr must be positive"),
    (["train", "batch_size=0"], "batch_size must be at least 1"),
    (["train", "val_fraction=1.5"], "val_fraction must be in (0, 1)"),
    (["train", "model.depth=0"], "model.depth must be at least 1"),
    (["train", "-m", "act=relu,nope"], "unknown act 'nope'"),
    (["train", "device=cuda"], "no CUDA GPU is visible"),
    (["train", "dataset=npz", "dataset.path=/no/such/file.npz"], "not found"),
    (
        ["train", "data.root=EMPTY", "data.download=false"],
        "mnist: idx files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (plain or .gz) not found",
    ),
    (["train", "dataset=npz", "dataset.path=BADNPZ"], "missing arrays"),
    (["nas", "strategies=[grid]"], "strategies='grid' is not valid"),
    # a repeated value in a study's list would count one configuration's runs twice
    (["activations", "acts=[relu,relu]"], "acts names relu twice; give each value once (more runs of one: seeds=N)"),
    (["residual", "depths=[20,20]"], "depths names 20 twice"),
    (["efficient", "models=[dws_cnn,baseline_cnn,dws_cnn]"], "models names dws_cnn twice"),
    (["nas", "baselines=[dws_cnn,dws_cnn]"], "baselines names dws_cnn twice"),
    (["nas", "strategies=[random,random]"], "strategies names random twice"),
    (["report"], "path is required: add path=..."),
    (["report", "path=EMPTY"], "no such folder"),
    (["report", "path=.", "metric=accuracy"], "metric='accuracy' is not valid"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    if "device=cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is visible here")
    if any("BADNPZ" in a for a in args):  # Keras-style arrays with x_test and y_test missing
        import numpy as np

        np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, np.int64))
    args = [a.replace("EMPTY", str(tmp_path / "empty")).replace("BADNPZ", str(tmp_path / "bad.npz")) for a in args]
    out = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepexp: "), out.stderr
    assert message in lines[0]
    assert "Traceback" not in out.stderr + out.stdout


NOTHING_ON_DISK = [  # refused before Hydra makes any folder: no outputs/, no data/, no run folder
    (["report", "path=nowhere"], "path=nowhere: no such folder"),
    (["report", "path=empty"], "path=empty: no run directories"),
    (
        ["train", "data.root=nodata", "data.download=false"],
        "mnist: idx files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (plain or .gz) not found in nodata/MNIST/raw",
    ),
    (["train", "dataset=npz", "dataset.path=none.npz"], "npz: none.npz not found"),
    (
        ["residual", "overrides=['data.root=nodata','data.download=false']"],  # a study, whose runs' data root is an extra override
        "cifar10: cifar-10-batches-py (or cifar10-subset.npz) not found in nodata",
    ),
]


@pytest.mark.parametrize("args, message", NOTHING_ON_DISK, ids=[" ".join(a[:2]) for a, _ in NOTHING_ON_DISK])
def test_a_missing_folder_or_dataset_is_refused_before_any_folder_is_made(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    out = run_cli(args, tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no outputs/<command>/DATE/TIME, no data/


def test_data_the_trainer_would_refuse_is_refused_before_any_folder_is_made(tmp_path):
    import numpy as np

    (tmp_path / "data").mkdir()
    np.savez(
        tmp_path / "data" / "bad.npz",
        x_train=np.zeros((20, 8, 8), np.uint8),
        y_train=np.full(20, 2),
        x_test=np.zeros((5, 8, 8), np.uint8),
        y_test=np.zeros(5, int),
    )  # classes 0 and 1 have no training images
    out = run_cli(["train", "dataset=npz", "dataset.path=data/bad.npz", "model=mlp", "debug=fast"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("deepexp: npz: classes 0, 1 of 0..2 have no training images"), out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no outputs/train/DATE/TIME


@pytest.fixture(scope="module")
def finished_npz_run(tmp_path_factory):
    """A two-epoch run on a small npz file, in a run folder with a long path; (run folder, CLI output)."""
    import numpy as np

    tmp = tmp_path_factory.mktemp("finished")
    rng = np.random.default_rng(0)
    np.savez(
        tmp / "tiny.npz",
        x_train=rng.integers(0, 255, (200, 8, 8), dtype=np.uint8),
        y_train=np.arange(200) % 4,
        x_test=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
        y_test=np.arange(40) % 4,
    )
    run = tmp / "a-folder-name-long-enough" / "that-the-whole-path-is-wider-than-80-columns" / "run-0001"
    out = run_cli(
        [
            "train",
            "dataset=npz",
            f"dataset.path={tmp / 'tiny.npz'}",
            "epochs=2",
            "batch_size=32",
            "model.depth=1",
            "model.width=8",
            "monitor.figure=false",
            f"hydra.run.dir={run}",
        ],
        tmp,
    )
    assert out.returncode == 0, out.stderr
    return run, out


def test_a_finished_run_keeps_only_its_last_checkpoint_and_no_lock_file(finished_npz_run):
    run, _ = finished_npz_run
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]  # prev.pt only while in progress
    assert not (run / ".lock").exists()


def test_the_run_folder_is_printed_whole_on_one_line_in_an_80_column_pipe(finished_npz_run):
    run, out = finished_npz_run
    assert len(str(run)) > 80 and f"run directory: {run}\n" in out.stdout and "…" not in out.stdout


def test_a_run_records_only_the_keys_of_its_own_dataset_optimizer_and_schedule(finished_npz_run):
    """The synthetic dataset's keys (train_size, image_shape, ...), Adam's betas and the step and cosine schedules'
    keys are not in an npz / sgd / no-schedule run's config or HParams."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = finished_npz_run
    config = json.loads((run / "metrics.json").read_text())["config"]
    assert sorted(k for k in config if k.startswith("dataset")) == ["dataset", "dataset.augment", "dataset.num_classes", "dataset.path"]
    assert sorted(k for k in config if k.startswith(("optim", "sched"))) == [
        "optim",
        "optim.momentum",
        "optim.nesterov",
        "sched",
        "sched.warmup_epochs",
    ]
    events = EventAccumulator(str(run))
    events.Reload()
    hparams = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"dataset.path" in hparams and b"optim.momentum" in hparams
    assert not any(
        key in hparams
        for key in (
            b"dataset.train_size",
            b"dataset.test_size",
            b"dataset.image_shape",
            b"dataset.channels",
            b"optim.betas",
            b"sched.step_size",
            b"sched.gamma",
            b"sched.min_lr_factor",
        )
    )


def test_a_lock_file_removed_by_its_leaving_holder_is_not_locked_twice(tmp_path, monkeypatch):
    """The holder removes .lock as it leaves. A process that opened the file just before that, and gets
    the flock on it just after, must not count as holding the folder: a third process would lock the
    new .lock at the same time. It notices the file is gone and locks the new one instead."""
    import fcntl

    from deepexp import rundir
    from deepexp.errors import RunLockedError

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; from deepexp.rundir import RunLock\nwith RunLock({str(tmp_path)!r}):\n    print('held', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    real_flock, calls = fcntl.flock, []

    def holder_leaves_first(fd, op):  # our open() is done; the holder now removes .lock and exits
        if not calls:
            holder.communicate("\n", timeout=60)
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr(rundir.fcntl, "flock", holder_leaves_first)
    with rundir.RunLock(tmp_path):
        monkeypatch.setattr(rundir.fcntl, "flock", real_flock)
        assert holder.returncode == 0 and len(calls) >= 2  # the removed file, then the new one
        third = subprocess.run(
            [sys.executable, "-c", f"from deepexp.rundir import RunLock\nwith RunLock({str(tmp_path)!r}): pass"], capture_output=True, text=True
        )
        assert third.returncode != 0 and RunLockedError.__name__ in third.stderr  # one holder at a time
    assert not (tmp_path / ".lock").exists()


@pytest.mark.slow
@needs_mnist
def test_bad_input_leaves_an_earlier_run_untouched(tmp_path):
    run = tmp_path / "run"
    assert run_cli(["train", *FAST, f"hydra.run.dir={run}"], tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    for args in (["lr=-1"], ["model=foo"], ["model.depth=3"], ["model=cnn"]):  # the last two: a changed config / another model
        out = run_cli(["train", *FAST, *args, f"hydra.run.dir={run}"], tmp_path)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.slow
@needs_mnist
def test_multirun_gives_each_job_its_own_folder_and_report_summarises_it(tmp_path):
    out = run_cli(["train", "-m", "act=relu,gelu", "seed=0,1", *FAST, "subset=300", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    runs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(runs) == 4
    configs = [json.loads(p.read_text())["config"] for p in runs]
    assert sorted((c["act"], c["seed"]) for c in configs) == [("gelu", 0), ("gelu", 1), ("relu", 0), ("relu", 1)]
    assert all(json.loads(p.read_text())["status"] == "completed" for p in runs)
    assert all(list(p.parent.glob("events.out.tfevents.*")) for p in runs)

    # `deepexp report` on that sweep: grouped by act (the only factor besides the seed), numbers from metrics.json.
    report = run_cli(["report", f"path={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert report.returncode == 0, report.stderr
    assert "test_acc by act" in report.stdout
    with open(tmp_path / "report" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    table = (tmp_path / "report" / "summary.md").read_text()
    for act in ("relu", "gelu"):
        accs = [json.loads(p.read_text())["test"]["acc"] for p, c in zip(runs, configs) if c["act"] == act]
        assert sorted(float(r["test_acc"]) for r in rows if r["act"] == act) == sorted(accs)
        assert f"| {act} | 2 | " in table and f"{statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}" in table
    for name in ("report.md", "plots/learning_curves.png", "plots/test_acc.png"):
        assert (tmp_path / "report" / name).is_file()


@pytest.mark.slow
@needs_mnist
def test_joblib_launcher_runs_jobs_in_parallel_processes_with_their_own_threads(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(
        [
            "train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "device.threads=1",
            "act=relu,tanh",
            *FAST,
            "subset=300",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert sorted(m["config"]["act"] for m in metrics) == ["relu", "tanh"]
    assert all(m["status"] == "completed" and m["provenance"]["threads"] == 1 for m in metrics)
    assert len({m["provenance"]["pid"] for m in metrics}) == 2  # two worker processes


@pytest.mark.parametrize("launcher, key", [("joblib", "n_jobs: -1"), ("submitit_slurm", "partition: debug")])
def test_launchers_compose(tmp_path, launcher, key):
    extra = ["hydra.launcher.partition=debug"] if "slurm" in launcher else []
    out = run_cli(["train", f"hydra/launcher={launcher}", *extra, "--cfg", "hydra"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert key in out.stdout


KILL_AT = Path(__file__).with_name("kill_at.py")

# One run killed again and again, each time at another point, each restart resuming what the last
# one left: (point, Nth time that process reaches it, what it leaves behind).
KILL_CHAIN = [
    ("batch", 10, "epoch 1 half trained, no checkpoint yet"),
    ("evaluate", 2, "epoch 1 checkpointed, killed validating epoch 2"),
    ("checkpoint_written", 1, "epoch 2's checkpoint complete in its temp file, not renamed"),
    ("checkpoint_rotated", 1, "epoch 1's checkpoint moved to prev.pt, epoch 2's not yet last.pt"),
    ("metrics_written", 2, "epoch 2 checkpointed, its metrics.json not yet renamed"),
    ("evaluate", 2, "all epochs done, killed evaluating the test set"),
]


@pytest.mark.slow
@needs_mnist
def test_sigkill_at_every_point_then_rerun_gives_exactly_the_uninterrupted_result(tmp_path):
    args = ["train", "epochs=3", "subset=4000", "model.depth=6", "monitor.every_n_steps=5", "monitor.figure=false", "deterministic=true"]
    reference = tmp_path / "reference"
    assert run_cli([*args, f"hydra.run.dir={reference}"], tmp_path).returncode == 0

    run = tmp_path / "killed"
    for point, nth, leaves in KILL_CHAIN:
        killed = subprocess.run(
            [sys.executable, str(KILL_AT), point, str(nth), *args, f"hydra.run.dir={run}"], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert killed.returncode == -signal.SIGKILL, f"{point} {nth} ({leaves}) was never reached: {killed.stderr}"
        if point == "checkpoint_rotated":
            assert (run / "checkpoints" / "prev.pt").exists() and not (run / "checkpoints" / "last.pt").exists()
    out = run_cli([*args, f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 0, out.stderr
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    strip = lambda h: {k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
    assert [strip(h) for h in b["history"]] == [strip(h) for h in a["history"]]
    assert b["test"] == a["test"] and b["status"] == "completed"
    import torch

    wa = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@needs_mnist
def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    args = ["train", "epochs=30", "subset=4000", "monitor.figure=false", f"hydra.run.dir={run}"]
    first = subprocess.Popen([sys.executable, "-m", "deepexp", *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (run / "metrics.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = run_cli(args, tmp_path)
        assert second.returncode == 2 and "in use by another deepexp process" in second.stderr
    finally:
        first.kill()
        first.wait()
    # the killed process leaves no stuck lock behind
    import fcntl

    with open(run / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held


@pytest.mark.slow
@needs_mnist
def test_diverged_run_exits_3_with_status_in_metrics(tmp_path):
    run = tmp_path / "run"
    out = run_cli(["train", *FAST, "lr=1e6", f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 3
    assert json.loads((run / "metrics.json").read_text())["status"] == "diverged"


@pytest.mark.slow
@needs_mnist
def test_resume_true_continues_the_newest_interrupted_run(tmp_path):
    run = tmp_path / "outputs" / "train" / "2026-01-01" / "00-00-00"
    args = ["train", "epochs=2", "subset=600", "model.depth=2", "monitor.figure=false"]
    assert run_cli([*args, "epochs=1", f"hydra.run.dir={run}"], tmp_path).returncode == 0
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["status"] = "running"  # as if it had been killed
    (run / "metrics.json").write_text(json.dumps(metrics))
    out = run_cli([*args, "epochs=1", "resume=true"], tmp_path)
    assert out.returncode == 0 and f"continuing {run.relative_to(tmp_path)}" in out.stdout


@pytest.mark.slow
@needs_mnist
def test_a_run_whose_every_checkpoint_is_corrupt_is_one_line_and_left_as_it_was(tmp_path):
    run = tmp_path / "run"
    assert run_cli(["train", *FAST, "epochs=2", f"hydra.run.dir={run}"], tmp_path).returncode == 0
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["status"] = "running"  # as if killed before the test evaluation
    (run / "metrics.json").write_text(json.dumps(metrics))
    for name in ("last.pt", "prev.pt"):
        (run / "checkpoints" / name).write_bytes(b"garbage")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    out = run_cli(["train", *FAST, "epochs=2", f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepexp: no usable checkpoint in"), out.stderr
    assert {p: p.read_bytes() for p in before} == before


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs of our own (root only), so that a full or read-only output folder is real."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (and mount permission)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


# Synthetic data and a report over a folder with a run: the commands pass the checks made before any folder
# (data on disk, a report folder with runs) wherever the tests run, and meet the read-only folder.
COMMANDS = [
    ["train", "debug=fast", "dataset=synthetic"],
    *([study, "preset=quick", "dataset=synthetic"] for study in ("activations", "residual", "efficient", "nas")),
    ["report", "path=earlier"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_read_only_output_folder_is_one_line_for_every_command(small_fs, tmp_path, command):
    (tmp_path / "earlier" / "run-0").mkdir(parents=True)
    (tmp_path / "earlier" / "run-0" / "metrics.json").write_text('{"status": "completed", "config": {"seed": 0}, "history": []}')
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    out = run_cli([*command, f"hydra.run.dir={small_fs / 'run'}"], tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Read-only file system" in out.stderr and "hydra.run.dir" in out.stderr


@pytest.mark.slow
@needs_mnist
def test_a_full_disk_is_one_line_keeps_what_was_written_and_the_run_resumes_once_there_is_room(small_fs, tmp_path):
    run = small_fs / "run"
    args = ["train", *FAST, "model.depth=4", f"hydra.run.dir={run}"]  # its checkpoint (~3.7 MB) does not fit in 2 MB
    out = run_cli(args, tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "No space left on device" in out.stderr and "Traceback" not in out.stderr + out.stdout
    assert json.loads((run / "metrics.json").read_text())["status"] == "running"  # intact, not truncated
    assert not list((run / "checkpoints").glob("*"))  # no half-written checkpoint or temp file
    subprocess.run(["mount", "-o", "remount,size=50m", str(small_fs)], check=True)
    out = run_cli(args, tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = run_cli(["train", "debug=fast", f"hydra.run.dir={blocker / 'run'}"], tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "cannot write" in out.stderr and "hydra.run.dir" in out.stderr


def test_resume_true_on_a_folder_without_a_run_is_refused_before_hydra_makes_it(tmp_path):
    run = tmp_path / "nonexist"
    out = run_cli(
        [
            "train",
            *TINY,
            "resume=true",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"deepexp: resume=true: {run} holds no run to continue; leave out resume=true to start a new run there\n"
    assert not run.exists()


def test_resume_true_on_a_finished_run_leaves_its_record_as_it_was(finished_npz_run):
    run, _ = finished_npz_run
    before = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    out = run_cli(["train", "resume=true", f"hydra.run.dir={run}"], run.parent)
    assert out.returncode == 0, out.stderr
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == before
    assert "resume=true" not in (run / ".hydra" / "overrides.yaml").read_text()
