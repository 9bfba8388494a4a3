"""Nothing is written in a run or study folder before its lock: a refused process leaves it as it was."""

import fcntl
import json
import os

import pytest
import yaml

from conftest import TINY, run_cli


# Synthetic data and a report over a folder with a run: the commands pass the checks made before any folder
# (data on disk, a report folder with runs) wherever the tests run, and meet the lock.
COMMANDS = [
    ["train", *TINY],
    *([study, "preset=quick", "dataset=synthetic"] for study in ("activations", "residual", "efficient", "nas")),
    ["report", "path=earlier"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_process_refused_by_the_lock_leaves_the_folder_byte_for_byte_as_it_was(tmp_path, command):
    (tmp_path / "earlier" / "run-0").mkdir(parents=True)
    (tmp_path / "earlier" / "run-0" / "metrics.json").write_text('{"status": "completed", "config": {"seed": 0}, "history": []}')
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):  # the record of the process holding the folder
        (folder / ".hydra" / name).write_text(f"# {name} of the first process\n")
    with open(folder / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first process, still running
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        out = run_cli([*command, f"hydra.run.dir={folder}"], tmp_path)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by another deepexp process" in lines[0], out.stderr
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_a_second_sweep_into_a_folder_in_use_leaves_its_multirun_record_as_it_was(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("# the sweep of the first process\n")
    with open(sweep / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
        out = run_cli(["train", "-m", "act=relu,gelu", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{sweep} is in use by another deepexp sweep" in lines[0], out.stderr
        assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before


def test_the_record_is_written_once_the_lock_is_held_where_hydra_output_subdir_says(tmp_path):
    folder = tmp_path / "run"
    out = run_cli(["train", *TINY, "act=gelu", "hydra.output_subdir=rec", f"hydra.run.dir={folder}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (folder / ".hydra").exists()
    record = folder / "rec"
    assert yaml.safe_load((record / "overrides.yaml").read_text()) == [*TINY, "act=gelu"]
    assert yaml.safe_load((record / "config.yaml").read_text())["act"] == {"name": "gelu"}
    hydra = yaml.safe_load((record / "hydra.yaml").read_text())["hydra"]
    assert hydra["output_subdir"] == "rec"  # what the user asked for, in the overrides as the user gave them
    assert hydra["overrides"]["hydra"] == ["hydra.output_subdir=rec", f"hydra.run.dir={folder}", "hydra.mode=RUN"]
    assert json.loads((folder / "metrics.json").read_text())["config"]["act"] == "gelu"


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


STUDY_RUNS = {  # a small study of each kind, and the value a second invocation changes
    "activations": (["acts=[relu]", "seeds=1", "depth=2", "epochs=2", "subset=300", "stability_epochs=2"], "lr", 0.02),
    "residual": (["preset=quick", "depths=[20]", "seeds=1", "epochs=1", "subset=100"], "lr", 0.2),
    "efficient": (["preset=quick", "models=[baseline_cnn]", "seeds=1", "epochs=1", "subset=100"], "epochs", 2),
    "nas": (["preset=quick", "trials=1", "proxy_epochs=1", "proxy_subset=100"], "lr", 0.02),
}


@pytest.mark.parametrize("name", STUDY_RUNS)
def test_a_study_refused_for_a_run_already_in_its_folder_leaves_the_folder_byte_for_byte_as_it_was(tmp_path, name):
    """Every run already in the folder is checked against the config the study would now give it before Hydra
    starts: nothing is written there, the `.hydra/` record included."""
    from deepexp.cli import hydra_args
    from deepexp.config import compose_config, compose_train, hydra_override, validate
    from deepexp.experiments import activations, efficient, nas, residual
    from deepexp.train import flat_config

    args, key, value = STUDY_RUNS[name]
    exp = tmp_path / "exp"
    study = validate(compose_config(name, hydra_args(name, args)))
    if name == "nas":  # a search evaluation, as the search names and configures it
        run = "random-s0/t000"
        overrides = nas.run_overrides(
            study,
            study.proxy_epochs,
            study.proxy_subset,
            0,
            {"model": "nas", "model.arch": str(exp / "specs" / "c16.json"), "eval_test": False},
            compiled=False,
        )
    else:
        spec = {"activations": activations, "residual": residual, "efficient": efficient}[name].plan(study)[0]
        run, overrides = spec.name, spec.overrides
    (exp / "runs" / run).mkdir(parents=True)
    config = flat_config(compose_train(overrides))
    (exp / "runs" / run / "metrics.json").write_text(json.dumps({"status": "completed", "config": config}))
    (exp / ".hydra").mkdir()
    for file in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (exp / ".hydra" / file).write_text(f"# {file} of the finished study\n")
    before = snapshot(exp)
    out = run_cli([name, *args, hydra_override(key, value), f"hydra.run.dir={exp}"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"deepexp: {exp / 'runs' / run} holds a run with another config "
        f"({key}: {config[key]!r} -> {value!r}); choose a new hydra.run.dir to start afresh"
    ]
    assert snapshot(exp) == before and not (exp / ".lock").exists()


def test_a_run_folder_named_by_interpolations_and_escapes_is_recorded_and_a_refused_rerun_leaves_the_record(tmp_path):
    """`${act.name}` is resolved from the job's config, `\\${x}` is a literal `${x}`; a rerun that changes the
    config is refused in the job, under the folder's lock, before the record is written."""
    given = f"hydra.run.dir={tmp_path}/${{act.name}}_${{seed}} \\${{x}}"
    out = run_cli(["train", *TINY, "act=gelu", given], tmp_path)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "gelu_0 ${x}"
    assert json.loads((folder / "metrics.json").read_text())["config"]["act"] == "gelu"
    assert yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) == [*TINY, "act=gelu"]
    assert yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]["overrides"]["hydra"] == [given, "hydra.mode=RUN"]
    before = snapshot(folder)
    out = run_cli(["train", *TINY, "act=gelu", "lr=0.5", given], tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"deepexp: {folder} holds a run with another config (lr: 0.05 -> 0.5); choose a new hydra.run.dir to start afresh"
    ]
    assert snapshot(folder) == before


def test_sweep_jobs_that_share_one_folder_keep_the_first_jobs_record_and_are_told_the_sweep_keys(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(["train", "-m", "act=relu,gelu", *TINY, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=x"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"deepexp: {sweep / 'x'} holds a run with another config (act: 'relu' -> 'gelu'); give every job its own folder "
        f"(a hydra.sweep.subdir that differs between jobs) or choose a new hydra.sweep.dir"
    )
    assert json.loads((sweep / "x" / "metrics.json").read_text())["config"]["act"] == "relu"
    assert yaml.safe_load((sweep / "x" / ".hydra" / "overrides.yaml").read_text())[0] == "act=relu"


def test_a_second_sweep_into_the_default_folder_of_the_same_second_leaves_its_multirun_record_as_it_was(tmp_path):
    """The default sweep folder is named by the second the sweep starts: every folder of the next minute is
    held here, as a first sweep started in that second would hold it."""
    import datetime
    from contextlib import ExitStack

    now = datetime.datetime.now()
    folders = [
        tmp_path / "outputs" / "train" / "multirun" / f"{t:%Y-%m-%d}" / f"{t:%H-%M-%S}"
        for t in (now + datetime.timedelta(seconds=s) for s in range(60))
    ]
    with ExitStack() as stack:
        for folder in folders:
            folder.mkdir(parents=True)
            (folder / "multirun.yaml").write_text("# the sweep of the first process\n")
            lock = stack.enter_context(open(folder / ".lock", "a+"))
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = {folder: snapshot(folder) for folder in folders}
        out = run_cli(["train", "-m", "act=relu,gelu", *TINY], tmp_path)
        assert out.returncode == 2, out.stderr
        (line,) = out.stderr.strip().splitlines()
        assert line.startswith("deepexp: outputs/train/multirun/") and line.endswith(
            " is in use by another deepexp sweep; wait for it or choose another hydra.sweep.dir"
        )
        assert {folder: snapshot(folder) for folder in folders} == before


def test_resume_true_alone_continues_the_newest_unfinished_run_with_its_recorded_overrides(tmp_path):
    from deepexp.config import compose_train
    from deepexp.train import flat_config

    run = tmp_path / "outputs" / "train" / "2026-01-01" / "00-00-00"
    (run / ".hydra").mkdir(parents=True)  # as `deepexp train TINY act=gelu` leaves it when killed before its first checkpoint
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*TINY, "act=gelu"]))
    config = flat_config(compose_train([*TINY, "act=gelu"]))
    (run / "metrics.json").write_text(json.dumps({"status": "running", "config": config}))
    out = run_cli(["train", "resume=true", "act=relu"], tmp_path)  # a change on top: checked like any other
    assert out.returncode == 2 and "(act: 'gelu' -> 'relu')" in out.stderr, out.stderr
    out = run_cli(["train", "resume=true", "device.threads=1"], tmp_path)  # one that may change
    assert out.returncode == 0, out.stderr
    assert f"resume=true: continuing outputs/train/2026-01-01/00-00-00 ({' '.join(TINY)} act=gelu)" in out.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["config"]["act"] == "gelu" and metrics["config"]["device.threads"] == 1
    assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) == [*TINY, "act=gelu", "resume=true", "device.threads=1"]


def test_a_sweep_rerun_into_its_folder_with_another_config_is_refused_before_hydra_rewrites_multirun_yaml(tmp_path):
    sweep = [
        "train",
        "-m",
        "debug=fast",
        "model.depth=2",
        "dataset=synthetic",
        "dataset.train_size=200",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'sw'}",
    ]
    assert run_cli(sweep, tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "sw").rglob("*.yaml")}
    out = run_cli([*sweep, "lr=0.1"], tmp_path)
    assert out.returncode == 2 and "Launching" not in out.stdout, out.stdout
    assert out.stderr.startswith(
        f"deepexp: {tmp_path / 'sw' / '0'} holds a run with another config (lr: 0.05 -> 0.1); give every job its own folder"
    ), out.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "sw").rglob("*.yaml")} == before  # multirun.yaml and each job's record
