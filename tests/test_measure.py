"""Latency measurement and the host's load: enough timed blocks for a spread, the caller's model left as it was,
and the load average read against the cores (the start-of-run warning, the provenance record)."""

from __future__ import annotations

import json
import math
import os
import time

import pytest
import torch
from torch import nn

from deepexp import host
from deepexp.deploy import Deployable, OnnxExporter, parity, session
from deepexp.host import HostLoad, oversubscription_warning
from deepexp.measure import MIN_BLOCKS, Latency, count_macs, spread_problems, time_call, torch_latency

from conftest import run_cli


def test_a_call_slower_than_min_run_time_is_still_timed_in_enough_blocks_for_a_spread():
    lat = time_call(lambda: time.sleep(0.02), batch=1, threads=1, min_run_time=0.01)  # one call outlasts min_run_time
    assert lat.blocks >= MIN_BLOCKS  # was 1 block, with an IQR of 0.00
    assert 20 <= lat.median_ms < 200  # a sleep of 20 ms, plus what a busy machine adds


def test_few_blocks_or_a_wide_interquartile_range_is_not_measured_reliably():
    assert spread_problems(3, 0.05) == ["3 timed blocks (fewer than 5: no spread)"]
    assert spread_problems(1, 0.0) == ["1 timed block (fewer than 5: no spread)"]
    assert spread_problems(10, 0.40) == ["IQR 40% of the median (above 25%)"]
    assert spread_problems(10, 0.10) == []
    assert Latency(batch=1, threads=2, median_ms=224.0, iqr_ms=0.0, blocks=1).problems() == ["1 timed block (fewer than 5: no spread)"]


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def _modes(model: nn.Module):
    return [m.training for m in model.modules()]


def test_counting_and_timing_leave_the_callers_model_in_its_own_modes():
    model = _Net().train()
    model.bn.eval()  # a frozen part inside a training model: model.train(was_training) would not restore it
    before = _modes(model)
    assert count_macs(model, (3, 8, 8)) == 6 * 6 * 4 * 27 + 4 * 2  # conv + head; BatchNorm and the mean are not MACs
    assert _modes(model) == before
    torch_latency(model, (3, 8, 8), batch=2, threads=1, min_run_time=0.01)
    assert _modes(model) == before  # was left in eval mode
    assert count_macs(nn.AvgPool2d(2), (1, 4, 4)) == 0  # a model without parameters


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: a model on another device than the CPU")
def test_a_model_on_the_gpu_stays_there_and_is_checked_where_it_computes(tmp_path):
    torch.manual_seed(0)
    model = _Net().cuda().eval()
    deployable = Deployable(model, torch.rand(3), torch.rand(3) + 0.5)
    assert deployable.input_mean.device.type == "cuda"  # beside the model it normalises for
    assert torch_latency(model, (3, 8, 8), batch=2, threads=1, min_run_time=0.01).median_ms > 0  # a CPU copy is timed
    path = OnnxExporter().export(deployable, torch.rand(2, 3, 8, 8), tmp_path / "m.onnx")
    assert parity(deployable, session(path, threads=1), torch.rand(4, 3, 8, 8)) < 1e-4
    assert count_macs(model, (3, 8, 8)) == 6 * 6 * 4 * 27 + 4 * 2
    assert {p.device.type for p in deployable.parameters()} == {"cuda"}


# --- the host's load -------------------------------------------------------------------------


def test_this_process_share_of_the_load_decays_like_the_kernels_one_minute_average(monkeypatch):
    clock = {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(host.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(host, "_cpu_seconds", lambda: clock["cpu"])
    own = host._OwnLoad()
    clock.update(wall=60.0, cpu=120.0)  # two cores busy for a minute
    assert own.update() == pytest.approx(2 * (1 - math.exp(-1)))
    clock.update(wall=120.0)  # then idle for a minute
    assert own.update() == pytest.approx(2 * (1 - math.exp(-1)) * math.exp(-1))


def test_threads_wait_for_cores_when_other_processes_or_the_affinity_leave_too_few(monkeypatch):
    busy = HostLoad((3.3, 3.0, 2.5), own=0.0, cores=2, cpus=2)
    assert busy.oversubscribed(1) and busy.free_threads() == 1
    assert not HostLoad((2.0, 2.0, 2.0), own=2.0, cores=2, cpus=2).oversubscribed(2)  # the load is this process's own
    assert HostLoad((0.1, 0.1, 0.1), own=0.0, cores=1, cpus=16).oversubscribed(2)  # 2 threads on 1 allowed core
    shared = HostLoad((60.0, 60.0, 60.0), own=0.0, cores=4, cpus=64)  # the others run on the other 60 cores
    assert not shared.oversubscribed(4) and shared.free_threads() == 4
    monkeypatch.setattr(host, "_warned_oversubscribed", False)
    assert oversubscription_warning(busy, threads=1) is None  # one thread: nothing to suggest
    assert oversubscription_warning(busy, threads=2) == (
        "load average 3.30 on 2 cores (other processes: 3.3 threads): 2 threads per step will wait for each other; device.threads=1 is likely faster"
    )
    assert oversubscription_warning(busy, threads=2) is None  # once per process


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_a_run_with_more_threads_than_its_cores_warns_once_at_start_and_records_the_load(tmp_path):
    one_core = {min(os.sched_getaffinity(0))}
    out = run_cli(
        [
            "train",
            "dataset=synthetic",
            "dataset.train_size=128",
            "dataset.test_size=32",
            "epochs=1",
            "batch_size=64",
            "model.depth=2",
            "monitor.figure=false",
            "device.threads=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
        preexec_fn=lambda: os.sched_setaffinity(0, one_core),
    )
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: load average")]
    assert len(warnings) == 1 and warnings[0].endswith("2 threads per step will wait for each other; device.threads=1 is likely faster")
    prov = json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"]
    assert prov["cores"] == 1 and prov["cpus"] == os.cpu_count() and prov["threads"] == 2
    assert len(prov["load_average"]) == 3 and all(x >= 0 for x in prov["load_average"])
