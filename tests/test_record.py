"""Nothing is written in a run or study folder before its lock: a refused process leaves it as it was."""
import fcntl
import json
import os

import pytest
import yaml

from conftest import run_cli

TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=16", "model.depth=1", "model.width=8", "epochs=1",
        "monitor.figure=false"]

# Synthetic data and a report over a folder with a run: the commands pass the checks made before any folder
# (data on disk, a report folder with runs) wherever the tests run, and meet the lock.
COMMANDS = [["train", *TINY], *([study, "preset=quick", "dataset=synthetic"] for study in ("activations", "residual", "efficient", "nas")),
            ["report", "path=earlier"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_process_refused_by_the_lock_leaves_the_folder_byte_for_byte_as_it_was(tmp_path, command):
    (tmp_path / "earlier" / "run-0").mkdir(parents=True)
    (tmp_path / "earlier" / "run-0" / "metrics.json").write_text("{}")
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
