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
