"""Latency measurement: enough timed blocks for a spread, and the caller's model left as it was."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from deepexp.deploy import Deployable, OnnxExporter, parity, session
from deepexp.measure import MIN_BLOCKS, Latency, count_macs, spread_problems, time_call, torch_latency


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
