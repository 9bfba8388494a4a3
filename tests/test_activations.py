"""`deepexp activations` end to end on real MNIST: files, numbers, resumption."""

import csv
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_mnist, run_cli

ARGS = ["activations", "preset=quick", "acts=[sigmoid,relu,tanh]", "subset=1500", "epochs=2", "seeds=2", "ablations=[init]", "n_workers=2"]


# The tests that read the one quick study below run on one xdist worker, so that it runs once.
SHARES_STUDY = pytest.mark.xdist_group("activations_study")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    out = run_cli([*ARGS, f"hydra.run.dir={root / 'exp'}"], root)
    assert out.returncode == 0, out.stderr
    return root / "exp", out


@pytest.mark.slow
@SHARES_STUDY
@needs_mnist
def test_quick_study_writes_every_file(study):
    exp, out = study
    for name in ("summary.csv", "summary.md", "summary_by_activation.csv", "report.md"):
        assert (exp / name).stat().st_size > 0, name
    for plot in ("loss_curves", "grad_norm_vs_depth", "act_std_vs_depth", "dead_units_by_layer", "test_accuracy"):
        assert (exp / "plots" / f"{plot}.png").stat().st_size > 10_000, plot
    runs = sorted(exp.glob("runs/*/*/metrics.json"))
    assert len(runs) == 3 * 2 * 2  # 3 activations x 2 seeds x (main + init ablation)
    assert all(list(p.parent.glob("events.out.tfevents.*")) for p in runs)  # each run is visible in TensorBoard
    provenance = [json.loads(p.read_text())["provenance"] for p in runs]
    assert {p["threads"] for p in provenance} == {1} and len({p["pid"] for p in provenance}) == 2  # n_workers=2
    assert "activation study" in out.stdout  # the rich summary table


@pytest.mark.slow
@SHARES_STUDY
@needs_mnist
def test_sigmoid_gradient_ratio_is_far_below_relu_with_he_init(study):
    exp, _ = study
    rows = list(csv.DictReader(open(exp / "summary.csv")))
    main = [r for r in rows if r["variant"] == "main"]
    ratio = {act: max(float(r["grad_log10_ratio_final"]) for r in main if r["act"] == act) for act in ("sigmoid", "relu")}
    assert ratio["sigmoid"] < -4 and ratio["relu"] > -1, ratio
    assert {r["variant"] for r in rows} == {"main", "init=default"}


@pytest.mark.slow
@SHARES_STUDY
@needs_mnist
def test_the_quick_study_learns_well_above_chance_and_calls_itself_a_first_look(study):
    exp, _ = study
    rows = list(csv.DictReader(open(exp / "summary_by_activation.csv")))  # the main sweep, mean over seeds
    assert max(float(r["test_acc_mean"]) for r in rows) > 0.5, rows  # chance: 0.10
    limitations = (exp / "report.md").read_text().split("## Limitations")[1]
    assert "Quick results are a first look" in limitations


@pytest.mark.slow
@SHARES_STUDY
@needs_mnist
def test_the_quick_studys_notebook_runs_and_redraws_each_figure_of_its_report(study):
    import nbformat
    from nbclient import NotebookClient

    exp, _ = study
    nb = nbformat.read(exp / "report.ipynb", as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(exp)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    figures = [c for c in code if c.source.startswith("fig = ")]
    assert len(figures) == len(re.findall(r"^!\[", (exp / "report.md").read_text(), re.M)) == 5  # one cell per figure of report.md
    assert all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in figures)
    runs_cell = code[0].outputs[0]["data"]["text/plain"]
    assert "runs/main/relu-s0" in runs_cell  # the loading cell shows summary.csv with its run folders


@pytest.mark.slow
@SHARES_STUDY
@needs_mnist
def test_report_numbers_match_summary_csv(study):
    exp, _ = study
    rows = [r for r in csv.DictReader(open(exp / "summary.csv")) if r["variant"] == "main"]
    report = (exp / "report.md").read_text()
    for act in ("sigmoid", "relu", "tanh"):
        accs = [float(r["test_acc"]) for r in rows if r["act"] == act]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5
        assert re.search(rf"\| {act} \| 2 \| {mean:.4f} ± {std:.4f} \|", report), act
    # every run in the csv is what its metrics.json says
    for r in rows:
        m = json.loads((exp / r["run_dir"] / "metrics.json").read_text())
        assert float(r["test_acc"]) == m["test"]["acc"]
    assert "vanishing gradient" in report.split("### Diagnosis per activation")[1].split("\n")[1]  # sigmoid's line
    for section in ("## Setup", "## Results", "## Findings", "## Ablations", "## Recommendations", "## Limitations", "## References"):
        assert section in report


@pytest.mark.slow
@needs_mnist
def test_a_killed_study_skips_finished_runs_resumes_the_interrupted_one_and_rebuilds_its_report(tmp_path):
    """SIGKILL while the second run writes its first checkpoint; the rerun must not retrain the first
    run, must continue the second from disk, and must write the summary and report from both.
    (activations, residual and efficient share this path: experiments/runner.py.)"""
    exp = tmp_path / "exp"
    args = ["activations", "preset=quick", "acts=[relu,tanh]", "seeds=1", "epochs=2", "subset=600", "n_workers=1", f"hydra.run.dir={exp}"]
    kill_at = Path(__file__).with_name("kill_at.py")
    killed = subprocess.run(
        [sys.executable, str(kill_at), "checkpoint_written", "3", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    runs = sorted(exp.glob("runs/*/*/metrics.json"))
    assert [json.loads(p.read_text())["status"] for p in runs] == ["completed", "running"]
    finished = {p: p.read_bytes() for p in runs[0].parent.rglob("*") if p.is_file() and p.name != ".lock"}
    assert not (exp / "summary.csv").exists()

    out = run_cli(args, tmp_path)
    assert out.returncode == 0, out.stderr
    assert {p: p.read_bytes() for p in finished} == finished  # the finished run was skipped, not retrained
    resumed = json.loads(runs[1].read_text())
    assert resumed["status"] == "completed" and [h["epoch"] for h in resumed["history"]] == [1, 2]
    with open(exp / "summary.csv") as f:
        assert sorted(r["act"] for r in csv.DictReader(f)) == ["relu", "tanh"]
    assert (exp / "report.md").is_file()


def test_bad_study_input_is_one_line(tmp_path):
    for args, message in (
        (["acts=[relu,softplus]"], "acts='softplus' is not valid"),
        (["seeds=0"], "seeds must be at least 1"),
        (["preset=huge"], "unknown activations/preset 'huge'"),
    ):
        out = run_cli(["activations", *args, f"hydra.run.dir={tmp_path / 'x'}"], tmp_path)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.slow
@needs_mnist
def test_a_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    exp = tmp_path / "exp"
    out = run_cli(
        ["activations", "preset=quick", "acts=[elu,tanh]", "seeds=1", "subset=600", "epochs=2", "lr=2.0", "n_workers=1", f"hydra.run.dir={exp}"],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    rows = {r["act"]: r for r in csv.DictReader(open(exp / "summary.csv"))}
    assert rows["elu"]["status"] == "diverged" and int(rows["elu"]["diverged_at_step"]) >= 1
    assert set(rows) == {"elu", "tanh"}  # the sweep went on after the divergence
    report = (exp / "report.md").read_text()
    assert "diverged in 1 of 1 runs" in report and "Diverged runs: elu (1/1)" in report


def test_dataset_init_and_device_groups_reach_every_run(tmp_path):
    """`dataset=`, `init=` and `device=` are the trainer's own groups, fields included."""
    from deepexp.config import compose_config, validate
    from deepexp.experiments.activations import plan

    study = validate(compose_config("activations", ["dataset=npz", "dataset.path=/x.npz", "init=default", "device=auto", "acts=[relu]", "seeds=1"]))
    (spec,) = plan(study)
    assert {"dataset=npz", "dataset.path=/x.npz", "init=default", "device=auto", "act=relu", "seed=0"} <= set(spec.overrides)
    out = run_cli(
        ["activations", "dataset=npz", "dataset.path=/no/such.npz", "acts=[relu]", "seeds=1", "n_workers=1", f"hydra.run.dir={tmp_path / 'x'}"],
        tmp_path,
    )
    assert out.returncode == 2 and "not found" in out.stderr, out.stderr


def test_the_setup_names_the_optimizer_the_batch_and_the_probe_size_the_runs_used_and_the_overrides(tmp_path):
    """overrides=['optim=adam'] trains every run with Adam; the Setup says so (not the SGD of the defaults), lists the
    overrides, and quotes the batch and probe size the trainer used on a 48-image synthetic set, not the configured ones."""
    tiny = ["dataset=synthetic", "dataset.num_classes=3", "dataset.channels=1", "dataset.image_shape=[8,8]", "dataset.train_size=48"]
    small = ["dataset.test_size=16", "subset=null", "seeds=1", "acts=[relu]", "depth=2", "width=8", "epochs=2", "stability_epochs=2"]
    exp = tmp_path / "exp"
    out = run_cli(["activations", "preset=quick", *tiny, *small, "ablations=[]", "overrides=['optim=adam']", f"hydra.run.dir={exp}"], tmp_path)
    assert out.returncode == 0, out.stderr
    (run,) = exp.glob("runs/*/*/metrics.json")
    m = json.loads(run.read_text())
    assert m["config"]["optim"] == "adam" and m["data"]["batch_size_used"] == 43 and m["data"]["probe_size_used"] == 5
    setup = (exp / "report.md").read_text().split("## Results")[0]
    assert (
        "- Training: 2 epochs, batch 43 (batch_size 128 capped at the training set), Adam betas (0.9, 0.999), lr 0.01; "
        "every run with overrides=['optim=adam']; 1 seeds per activation (1 runs in all)." in setup
    )
    assert "SGD" not in setup
    assert "probe pass over 5 fixed validation images" in setup
