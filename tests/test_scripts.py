"""The scripts under scripts/ run from an installed deepexp, without the test suite or its tools."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# Imports every script as a module (each runs its work only under `__main__`) in a fresh interpreter in
# which pytest cannot be imported and the tests folder is not on the path: what a machine with only
# `pip install -e .` (no dev extras) and the repository has.
IMPORT_ALL = """
import importlib, sys
for name in ("pytest", "_pytest", "conftest"):
    sys.modules[name] = None  # `import pytest` now raises ImportError
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("tests")]
sys.path.insert(0, sys.argv[1])
failed = []
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed.append(f"{name}: {exc}")
print("\\n".join(failed))
"""


def test_every_script_imports_without_pytest_or_the_tests_folder(tmp_path):
    names = sorted(p.stem for p in SCRIPTS.glob("*.py"))
    assert "bench_gpu" in names and "bench_trainer" in names
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(SCRIPTS), *names], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stdout


GPU_CHECKS = [
    "environment",
    "deterministic",
    "kill_resume",
    "fp16_resume",
    "layout_resume",
    "diverge",
    "smoke_resnet18",
    "smoke_mobilenet_v2",
    "smoke_bottleneck_cnn",
    "bench_resnet18",
    "bench_resnet20",
]


def gpu_check(args, cwd):
    return subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu_runs_every_check_to_a_verdict(tmp_path):
    """scripts/gpu_check.py --device cpu: every check of the GPU run, tiny, through the same code (about 30 s
    on two idle cores, about 660 s on two cores shared with other jobs; the default budget is only a ceiling)."""
    out = gpu_check(["--device", "cpu", "--out", str(tmp_path / "out")], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == GPU_CHECKS and report["finished"]
    assert {name: c["verdict"] for name, c in checks.items()} == {name: "pass" for name in GPU_CHECKS}
    n = {name: c["numbers"] for name, c in checks.items()}
    assert n["deterministic"]["digests"][0] == n["deterministic"]["digests"][1] and n["deterministic"]["flags_restored"]
    assert n["kill_resume"]["exit"] == -9 and n["kill_resume"]["resumed_after_epoch"] == 1
    assert n["kill_resume"]["same_weights"] and n["kill_resume"]["same_numbers"]
    assert n["fp16_resume"]["status"] == "completed" and n["fp16_resume"]["scale"] == 2.0**16
    assert n["layout_resume"]["layouts_agree"] and n["diverge"]["exit"] == 3 and n["diverge"]["diverged_at_step"] >= 1
    for model in ("resnet18", "mobilenet_v2", "bottleneck_cnn"):
        runs = n[f"smoke_{model}"]
        assert len(runs) == 4 and all(r["status"] == "completed" for r in runs.values())
        assert runs["compiled, sgd, amp"]["tags"] == runs["eager, sgd, fp32"]["tags"]
        assert runs["eager, sgd, fp32"]["tags"]["act_mean"] > 0
    for model in ("resnet18", "resnet20"):
        assert len(n[f"bench_{model}"]) == 6 and all(r["images_per_s"] > 0 for r in n[f"bench_{model}"].values())
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert all(f"| {name} | pass |" in table for name in GPU_CHECKS) and table in out.stdout


def test_gpu_check_skips_what_the_budget_does_not_fit_and_refuses_a_missing_gpu_in_one_line(tmp_path):
    out = gpu_check(["--device", "cpu", "--budget", "0.001", "--out", str(tmp_path)], tmp_path)
    assert out.returncode == 4, out.stderr  # nothing failed, but nothing was proven either
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(c["name"], c["verdict"]) for c in report["checks"]] == [(name, "skipped") for name in GPU_CHECKS]
    if not torch.cuda.is_available():
        out = gpu_check(["--out", str(tmp_path / "gpu")], tmp_path)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in out.stderr
        assert not (tmp_path / "gpu").exists()


@pytest.fixture
def gpu_check_module(monkeypatch):
    """scripts/gpu_check.py imported in this process (its CUBLAS_WORKSPACE_CONFIG default undone afterwards)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import gpu_check

    return gpu_check


class Killed(Exception):
    """The in-process stand-in for the kill worker's SIGKILL."""


def test_gpu_check_fp16_resume_passes_on_a_gpu_where_amp_picks_float16(tmp_path, monkeypatch, gpu_check_module):
    """On a T4 or V100 amp=true autocasts to float16, so a killed amp=true run would checkpoint a running
    GradScaler: the kill worker must write its checkpoint without autocast. The GPU's pick is faked here
    (every amp=true run: float16), and the worker subprocess runs in this process, killed by an exception."""
    import dataclasses
    import os
    import signal

    import deepexp.train

    gc, real_accelerator, real_run = gpu_check_module, deepexp.train.accelerator, subprocess.run

    def t4(device, amp, compile, tf32=False):
        return dataclasses.replace(real_accelerator(device, amp, compile, tf32), amp_dtype=torch.float16 if amp else None)

    def kill(pid, sig):
        raise Killed

    def run(args, **kwargs):
        if args[1:3] != [str(gc.SCRIPT), "--kill-worker"]:
            return real_run(args, **kwargs)
        real_kill, os.kill = os.kill, kill
        try:
            gc.kill_worker(int(args[3]), args[4], args[5], args[6:])
        except Killed:
            return subprocess.CompletedProcess(args, -signal.SIGKILL, "", "")
        finally:
            os.kill = real_kill
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(deepexp.train, "accelerator", t4)
    monkeypatch.setattr(subprocess, "run", run)
    ctx = gc.Context("cpu", gc.SCALES["cpu"], quick=True, work=tmp_path)
    outcome = gc.check_fp16_resume(ctx, budget=120)
    assert outcome.passed, outcome.summary
    assert outcome.numbers["written_amp_dtype"] is None and outcome.numbers["status"] == "completed"
    assert outcome.numbers["scale"] == 2.0**16


@pytest.mark.parametrize(
    "args, says",
    [
        (["--only", "nosuch"], "--only: no check named 'nosuch'; the checks are environment, "),
        (["--budget", "-5"], "--budget must be a positive number of seconds, got -5"),
        (["--budget", "0"], "--budget must be a positive number of seconds, got 0"),
        (["--out", "/proc/nope"], "cannot write to --out /proc/nope"),
        (["--out", "FILE"], "is a file, not a folder"),
    ],
)
def test_gpu_check_refuses_bad_arguments_in_one_line_before_it_runs_anything(tmp_path, args, says):
    (tmp_path / "FILE").write_text("kept")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    out = gpu_check(["--device", "cpu", *args], tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"] and (tmp_path / "FILE").read_text() == "kept"


def test_gpu_check_budgets_fit_the_default_budget_and_hold_the_benchmarks_time(monkeypatch, tmp_path, gpu_check_module):
    """Every check whose own budget is spent in full (a fake clock): the benchmarks still get theirs, every
    check runs, and the exit status says all passed."""
    import types

    gc, clock, limits = gpu_check_module, [0.0], {}
    for name, scale in gc.SCALES.items():
        assert sum(gc.BUDGETS.values()) * scale.check_budget <= scale.budget, name

    def check(name):
        def run(limit):
            limits[name] = limit
            clock[0] += limit  # used all of it
            return gc.Outcome(True, "ok", {})

        return run

    monkeypatch.setattr(gc, "plan", lambda ctx: [(name, check(name)) for name in gc.BUDGETS])
    monkeypatch.setattr(gc, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    assert gc.main(["--device", "cpu", "--out", str(tmp_path)]) == 0
    own = {name: budget * gc.SCALES["cpu"].check_budget for name, budget in gc.BUDGETS.items()}
    assert limits == own
    # a smaller budget: the checks before the benchmarks run out of it, the benchmarks keep theirs
    clock[0], limits = 0.0, {}
    assert gc.main(["--device", "cpu", "--out", str(tmp_path), "--budget", "1000"]) == 4
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts["bench_resnet18"] == verdicts["bench_resnet20"] == "pass" and "skipped" in verdicts.values()
    assert limits["bench_resnet18"] == own["bench_resnet18"] and limits["bench_resnet20"] == own["bench_resnet20"]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--rounds", "0"], "bench_gpu.py: --rounds must be at least 1, got 0"),
        (["--batch-size", "0"], "bench_gpu.py: --batch-size must be at least 1, got 0"),
        (["--train-size", "2"], "bench_gpu.py: synthetic: classes "),  # the trainer's own ConfigError, as one line
    ],
)
def test_bench_gpu_refuses_bad_arguments_in_one_line(tmp_path, args, says):
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_gpu.py"), "--device", "cpu", "--models", "resnet20", *args],
        cwd=SCRIPTS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in out.stderr.strip().splitlines() if not line.startswith("warning: load average")]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith(says), out.stderr


def test_gpu_check_smoke_fails_on_cuda_where_compile_or_amp_did_not_apply(gpu_check_module):
    """A compiled run that fell back to eager, or an amp run in float32, proves nothing on a GPU; on the CPU
    dry run they do not apply, and the check says it proves the mechanics only."""
    tags = {"act_mean": 3, "grad_norm": 4}

    def run(compiled, amp_dtype):
        return {"status": "completed", "train_loss": 2.3, "wall_s": 1.0, "tags": tags, "compiled": compiled, "amp_dtype": amp_dtype}

    applied = {"eager, sgd, fp32": run(False, None), "eager, adam, amp": run(False, "bfloat16"), "compiled, sgd, amp": run(True, "bfloat16")}
    fallen_back = {**applied, "compiled, sgd, amp": run(False, "bfloat16"), "eager, adam, amp": run(False, None)}
    outcome = gpu_check_module.smoke_outcome("cuda", applied)
    assert outcome.passed and "compile and amp applied" in outcome.summary
    outcome = gpu_check_module.smoke_outcome("cuda", fallen_back)
    assert not outcome.passed and "did NOT apply in eager, adam, amp; compiled, sgd, amp" in outcome.summary
    outcome = gpu_check_module.smoke_outcome("cpu", fallen_back)
    assert outcome.passed and "the mechanics only" in outcome.summary
