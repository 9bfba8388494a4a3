"""The SLURM launcher for real: a private single-node cluster (scripts/local_slurm.py) runs a two-job sweep.

Skipped, with the reason, where SLURM cannot be started (not installed, not root); `.ci/run`
installs Debian's slurm-wlm and munge so that CI runs it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_mnist, run_cli

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local_slurm.py"


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    try:  # the script bounds each of its own waits; this only guards against a bug in it
        started = subprocess.run([sys.executable, str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        subprocess.run([sys.executable, str(SCRIPT), "stop", str(folder)], timeout=120)
        pytest.skip("the local SLURM cluster did not start within 180 s")
    if started.returncode != 0:
        pytest.skip(started.stderr.strip() or "the local SLURM cluster did not start")
    yield started.stdout.strip().split("=", 1)[1]
    subprocess.run([sys.executable, str(SCRIPT), "stop", str(folder)], timeout=120)


@pytest.mark.slow
@needs_mnist
def test_slurm_launcher_runs_each_job_of_a_sweep_as_a_slurm_job(slurm_conf, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_conf)  # sbatch (called by submitit) finds the local cluster
    sweep = tmp_path / "sweep"
    out = run_cli(
        [
            "train",
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1",
            "device.threads=1",
            "act=relu,tanh",
            "epochs=1",
            "subset=600",
            "model.depth=2",
            "monitor.figure=false",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert sorted(m["config"]["act"] for m in metrics) == ["relu", "tanh"]
    assert all(m["status"] == "completed" for m in metrics)
    job_ids = {m["provenance"]["slurm_job_id"] for m in metrics}
    assert None not in job_ids and len(job_ids) == 2  # each run was its own SLURM job
    assert (sweep / ".submitit").is_dir()
