"""The study runner: which device each worker trains on, how many workers a GPU gets."""

from __future__ import annotations

import io
import os

import pytest
import torch
from rich.console import Console

from conftest import compose_train, run_cli
from deepexp import parallel
from deepexp.config import compose_config
from deepexp.errors import ConfigError
from deepexp.experiments import runner
from deepexp.experiments.runner import RunSpec
from deepexp.train import resolve_device


@pytest.fixture
def gpus(monkeypatch):
    """`gpus(n)`: torch sees n CUDA GPUs (0: none); torch.cuda.set_device calls are recorded in the returned list."""
    chosen = []

    def see(n: int) -> list:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
        return chosen

    return see


def test_worker_i_trains_on_gpu_i_mod_count_and_an_index_the_user_names_is_kept(gpus):
    gpus(3)
    assert [parallel.worker_device("cuda", None, i) for i in range(5)] == [0, 1, 2, 0, 1]
    assert [parallel.worker_device("auto", None, i) for i in range(2)] == [0, 1]
    assert [parallel.worker_device("cuda", 2, i) for i in range(3)] == [2, 2, 2]
    assert parallel.worker_device("cpu", None, 1) is None
    gpus(0)  # device=auto on a machine without a GPU trains on the CPU
    assert parallel.worker_device("auto", None, 1) is None


def test_a_pool_worker_puts_its_run_on_its_gpu_through_a_device_index_override(gpus, monkeypatch, tmp_path):
    chosen, trained = gpus(2), []
    monkeypatch.setattr(runner, "run_one", lambda spec, cfg, *args: trained.append((spec, cfg)) or {})
    for slot in range(3):
        monkeypatch.setattr(parallel, "_SLOT", slot)
        overrides = ["device=cuda", "epochs=1"]
        runner.run_in_worker(RunSpec(f"r{slot}", {}, overrides), compose_train(overrides), tmp_path, "residual", "1/3")
    assert [cfg.device.index for _, cfg in trained] == [0, 1, 0] and chosen == [0, 1, 0]
    assert [spec.overrides[-1] for spec, _ in trained] == ["device.index=0", "device.index=1", "device.index=0"]
    assert compose_train(trained[1][0].overrides).device.index == 1  # an override Hydra composes as the trainer reads it
    assert resolve_device("cuda", 1) == torch.device("cuda", 1)


def test_a_deterministic_study_worker_fixes_cublas_before_it_starts_cuda(monkeypatch, tmp_path):
    """cuBLAS sizes its workspace from CUBLAS_WORKSPACE_CONFIG at its first matrix product; a worker's
    set_device starts CUDA, which must not keep the variable from being set (nor warn)."""
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: bool(seen))  # set_device starts CUDA
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: seen.append((index, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))))
    monkeypatch.setattr(runner, "run_one", lambda spec, cfg, *args: {})
    for deterministic, expected in ((False, None), (True, ":4096:8")):
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # restored (absent) after the test
        seen.clear()
        overrides = ["device=cuda", "epochs=1", f"deterministic={deterministic}"]
        runner.run_in_worker(RunSpec("r", {}, overrides), compose_train(overrides), tmp_path, "residual", "1/1")
        assert seen == [(0, expected)], deterministic


def test_one_gpu_runs_a_study_one_run_at_a_time_unless_n_workers_is_given(gpus, monkeypatch, tmp_path):
    gpus(1)
    monkeypatch.setattr(runner, "run_one", lambda spec, *args: {"ran": spec.name})
    pools = []
    monkeypatch.setattr(runner, "map_in_processes", lambda fn, jobs, n, threads: pools.append(n) or [{} for _ in jobs])
    specs = [RunSpec(f"r{i}", {}, ["device=cuda", "epochs=1"]) for i in range(3)]
    out = io.StringIO()
    results = runner.run_all(specs, tmp_path, Console(file=out, width=300), "activations", 2, n_workers_given=False)
    assert [m["ran"] for _, m in results] == ["r0", "r1", "r2"] and not pools  # in this process, one after another
    assert out.getvalue().count("one GPU: its runs train one at a time, not 2 sharing it") == 1
    runner.run_all(specs, tmp_path, Console(file=io.StringIO()), "activations", 2, n_workers_given=True)
    assert pools == [2]
    gpus(2)  # two GPUs: a worker each
    assert parallel.worker_plan("cuda", None, 2, given=False) == (2, None)
    assert parallel.worker_plan("cuda", 1, 2, given=False)[0] == 1  # device.index: one GPU again
    gpus(0)
    assert parallel.worker_plan("auto", None, 2, given=False) == (2, None)  # CPU workers split the cores


def test_n_workers_counts_as_given_only_when_the_command_line_sets_it():
    from hydra.core.hydra_config import HydraConfig

    try:
        for overrides, given in ((["n_workers=2"], True), (["seeds=1"], False)):
            cfg = compose_config("activations", overrides)
            HydraConfig.instance().set_config(compose_hydra("activations", overrides))
            assert runner.on_command_line("n_workers") is given, overrides
            assert cfg.n_workers == 2
    finally:
        HydraConfig.instance().cfg = None


def compose_hydra(name, overrides):
    """The config with its `hydra` node, as a running Hydra app holds it."""
    from hydra import compose, initialize_config_dir

    from deepexp.config import CONFIG_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


def test_a_gpu_index_beyond_the_gpus_or_on_the_cpu_is_one_line(gpus, tmp_path):
    gpus(2)
    with pytest.raises(ConfigError, match=r"device.index=2 but 2 CUDA GPU\(s\) are visible \(0 to 1\)"):
        resolve_device("cuda", 2)
    out = run_cli(["train", "device=cpu", "device.index=0", "dataset=synthetic", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "deepexp: device.index=0 names a CUDA GPU; device=cpu has none"
    assert not (tmp_path / "run").exists()


def slot_and_pid() -> tuple:
    """(worker slot, process id) of the pool process running this job."""
    return parallel.worker_slot(), os.getpid()


def test_each_pool_process_holds_a_worker_slot_of_its_own():
    pairs = parallel.map_in_processes(slot_and_pid, [()] * 6, 2, 1)
    slots = {}
    for slot, pid in pairs:
        slots.setdefault(pid, set()).add(slot)
    assert all(len(s) == 1 for s in slots.values())  # a process keeps its slot for every job it runs
    held = [next(iter(s)) for s in slots.values()]
    assert sorted(held) == sorted(set(held)) and set(held) <= {0, 1}  # no slot held by two processes


# --- where the runs trained, as the reports say it ---------------------------------------------------


H200 = {"host": "gpu-node", "device": "cuda:0", "gpu": "NVIDIA H200", "threads": 8, "amp_dtype": "bfloat16", "tf32": False}


def test_the_hardware_line_names_devices_gpus_precision_and_threads_of_every_process():
    on_h200 = {"provenance": H200, "config": {"amp": True}}
    second_gpu = {"provenance": {**H200, "device": "cuda:1", "earlier_attempts": [{"device": "cpu", "threads": 2, "amp_dtype": None}]}}
    tf32 = {"provenance": {"device": "cuda:0", "gpu": "NVIDIA A100", "threads": 4, "amp_dtype": None, "tf32": True}}
    fp16 = {"provenance": {"device": "cuda:0", "gpu": "Tesla T4", "threads": 4, "amp_dtype": "float16", "tf32": False}}
    unrecorded = {"provenance": {"device": "cuda", "gpu": "Tesla T4", "threads": 4}, "config": {"amp": True}}
    assert runner.hardware_line([on_h200]) == "cuda:0 (NVIDIA H200), amp bf16, 8 CPU threads"
    assert (
        runner.hardware_line([on_h200, second_gpu])
        == "cuda:0, cuda:1 (NVIDIA H200), amp bf16, 8 CPU threads (2 runs); cpu, fp32, 2 CPU threads (1 run)"
    )
    assert (
        runner.hardware_line([tf32, fp16]) == "cuda:0 (NVIDIA A100), TF32, 4 CPU threads (1 run); cuda:0 (Tesla T4), amp fp16, 4 CPU threads (1 run)"
    )
    assert runner.hardware_line([unrecorded]) == "cuda (Tesla T4), amp (dtype and TF32 use not recorded), 4 CPU threads"
    assert runner.hardware_line([{"provenance": {"device": "cpu", "threads": 1}, "config": {"amp": True}}]) == "cpu, fp32, 1 CPU thread"
    high = {"provenance": {"device": "cuda:0", "threads": 2, "matmul_precision": "high"}}  # torch.set_float32_matmul_precision
    assert runner.hardware_line([high]) == "cuda:0, TF32, 2 CPU threads"
    assert runner.hardware_line([{}]) == "device not recorded" and runner.hardware_line([]) == "no runs"
    assert runner.hardware_line([runner.hardware_record({**second_gpu, "history": [1] * 100})]) == runner.hardware_line([second_gpu])


TINY_DATA = [
    "dataset=synthetic",
    "dataset.num_classes=3",
    "dataset.channels=3",
    "dataset.image_shape=[8,8]",
    "dataset.train_size=48",
    "dataset.test_size=16",
    "subset=null",
    "seeds=1",
]


@pytest.mark.parametrize(
    "name, small",
    [
        ("activations", ["acts=[relu]", "depth=2", "width=8", "epochs=2", "stability_epochs=2"]),
        ("residual", ["depths=[20]", "ablations=[]", "epochs=1", "overrides=['monitor.hist_every_n_steps=0','monitor.probe_size=8']"]),
    ],
)
def test_activation_and_residual_reports_say_where_and_in_which_precision_their_runs_trained(tmp_path, name, small):
    """Runs trained elsewhere (here: recorded as an H200 with bf16 autocast) are described as they ran, not as this machine is."""
    import importlib

    from deepexp.config import validate
    from deepexp.progress import QuietReporter
    from deepexp.train import train

    module = importlib.import_module(f"deepexp.experiments.{name}")
    study = validate(compose_config(name, ["preset=quick", *TINY_DATA, *small]))
    results = []
    for spec in module.plan(study):
        m = train(compose_train(spec.overrides), tmp_path / "runs" / spec.name, QuietReporter()).metrics
        m["provenance"].update(H200)
        results.append((spec, m))
    module.write_study(study, results, tmp_path, Console(file=io.StringIO()), wall_seconds=1.0)
    report = (tmp_path / "report.md").read_text()
    assert "- Hardware: cuda:0 (NVIDIA H200), amp bf16, 8 CPU threads; torch " in report.split("## Results")[0]
    assert "CPU only" not in report


def test_deepexp_report_groups_runs_across_gpus_and_says_where_they_trained(tmp_path):
    import json

    for i, index in enumerate((0, 1, 0, 1)):
        folder = tmp_path / "runs" / f"r{i}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(
            json.dumps(
                {
                    "status": "completed",
                    "config": {"lr": 0.1 if i < 2 else 0.2, "seed": i % 2, "device": "cuda", "device.index": index},
                    "params": 10,
                    "epochs_done": 1,
                    "history": [],
                    "test": {"acc": 0.5, "loss": 1.0},
                    "best_val_acc": 0.5,
                    "seconds": 1.0,
                    "provenance": {**H200, "device": f"cuda:{index}"},
                }
            )
        )
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Grouped by ['lr']" in report  # the GPU a run happened to get is no factor
    assert "- Hardware: cuda:0, cuda:1 (NVIDIA H200), amp bf16, 8 CPU threads." in report


# --- how the runs trained, as the reports' Setup says it ---------------------------------------------------


SGD_COSINE = {
    "config": {
        "optim": "sgd",
        "optim.momentum": 0.9,
        "optim.nesterov": False,
        "sched": "cosine",
        "sched.warmup_epochs": 0.0,
        "sched.min_lr_factor": 0.0,
        "lr": 0.1,
        "batch_size": 64,
        "weight_decay": 0.0001,
        "grad_clip": None,
    },
    "data": {"batch_size_used": 64, "probe_size_used": 256},
}


def run_with(config=None, data=None) -> dict:
    """SGD_COSINE with some recorded config keys and data entries changed."""
    return {"config": {**SGD_COSINE["config"], **(config or {})}, "data": {**SGD_COSINE["data"], **(data or {})}}


def test_the_training_description_says_what_the_runs_recorded():
    assert runner.training_description([SGD_COSINE] * 3) == "batch 64, SGD momentum 0.9, lr 0.1 with a cosine schedule, weight decay 0.0001"
    adam = run_with({"optim": "adam", "optim.betas": [0.9, 0.999], "sched": "none", "weight_decay": 0.0, "lr": 0.001})
    assert runner.training_description([adam]) == "batch 64, Adam betas (0.9, 0.999), lr 0.001"
    step = run_with({"sched": "step", "sched.step_size": 30, "sched.gamma": 0.1, "sched.warmup_epochs": 1.0, "grad_clip": 1.0})
    assert runner.training_description([step]) == (
        "batch 64, SGD momentum 0.9, lr 0.1 with a step schedule (× 0.1 every 30 epochs) after a 1-epoch linear warm-up, "
        "weight decay 0.0001, gradient clipping at norm 1.0"
    )
    nesterov = run_with({"optim.nesterov": True, "sched": "none", "sched.warmup_epochs": 2.0, "sched.min_lr_factor": 0.0})
    assert runner.training_description([nesterov]).startswith("batch 64, SGD momentum 0.9 (Nesterov), lr 0.1 with a 2-epoch linear warm-up,")
    floor = run_with({"sched.min_lr_factor": 0.1, "optim.momentum": 0.0, "label_smoothing": 0.1})
    assert runner.training_description([floor]) == (
        "batch 64, SGD without momentum, lr 0.1 with a cosine schedule down to 0.1 × lr, weight decay 0.0001, label smoothing 0.1"
    )


def test_the_batch_is_the_one_used_and_names_a_larger_configured_one():
    capped = run_with(data={"batch_size_used": 43})
    assert runner.training_description([capped]).startswith("batch 43 (batch_size 64 capped at the training set), SGD")
    unrecorded = {"config": SGD_COSINE["config"]}  # a run that recorded no data section: its configured batch
    assert runner.training_description([unrecorded]).startswith("batch 64, SGD")


def test_what_differs_between_runs_is_listed_with_its_count_of_runs():
    no_norm = run_with({"lr": 0.01, "weight_decay": 0.0, "sched.warmup_epochs": 1.0})
    assert runner.training_description([SGD_COSINE, SGD_COSINE, no_norm]) == (
        "batch 64, SGD momentum 0.9 (varies between runs: lr 0.1 in 2 runs, lr 0.01 in 1; cosine schedule in 2 runs, "
        "cosine schedule after a 1-epoch linear warm-up in 1; weight decay 0.0001 in 2 runs, no weight decay in 1)"
    )
    adam = run_with({"optim": "adam", "optim.betas": [0.9, 0.999], "grad_clip": 0.5})
    assert runner.training_description([adam, SGD_COSINE]) == (
        "batch 64, lr 0.1 with a cosine schedule, weight decay 0.0001 (varies between runs: Adam betas (0.9, 0.999) in 1 run, "
        "SGD momentum 0.9 in 1; gradient clipping at norm 0.5 in 1 run, no gradient clipping in 1)"
    )
    assert runner.training_description([{}, {"config": {}}]) == "training settings not recorded"


def test_the_overrides_phrase_and_the_recorded_values_a_setup_quotes():
    assert runner.overrides_phrase([]) == ""
    assert runner.overrides_phrase(["optim=adam", "grad_clip=1.0"]) == "; every run with overrides=['optim=adam', 'grad_clip=1.0']"
    assert runner.recorded_values([SGD_COSINE, run_with(data={"probe_size_used": 50})], "probe_size_used") == "256 or 50 (varies between runs)"
    assert runner.recorded_values([run_with(data={"probe_size_used": 50})] * 2, "probe_size_used") == "50"
    assert runner.recorded_values([{}], "probe_size_used") == "?"


def test_the_nas_setup_reads_each_search_evaluation_once_and_skips_what_is_gone(tmp_path):
    from deepexp.experiments.nas import search_runs
    from deepexp.rundir import write_json

    write_json(tmp_path / "runs" / "random-s0" / "t000" / "metrics.json", {**run_with({"lr": 0.05}), "status": "completed", "history": []})
    (tmp_path / "runs" / "random-s0" / "t002").mkdir()
    (tmp_path / "runs" / "random-s0" / "t002" / "metrics.json").write_text('{"status": "comp')  # a copy cut short
    trials = [{"run_dir": f"runs/random-s0/t00{i}"} for i in (0, 0, 1, 2)] + [{}]  # t000 twice (a reused score), t001 gone
    runs = search_runs(tmp_path, trials)
    assert [m["config"]["lr"] for m in runs] == [0.05]
