"""Hydra's sweep syntax on the deepexp command line: expanded as Hydra's basic sweeper does, checked first."""

import json

import pytest
import yaml

from conftest import TINY, run_cli
from deepexp.cli import sweep_variants


def test_a_glob_sweep_runs_one_job_per_matching_option(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(["train", "-m", "act=glob(s*)", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert sorted(m["config"]["act"] for m in metrics) == ["selu", "sigmoid", "swish"]
    assert {m["status"] for m in metrics} == {"completed"}
    for job, act in enumerate(["selu", "sigmoid", "swish"]):  # each job's .hydra/ record, written under its lock
        recorded = yaml.safe_load((sweep / str(job) / ".hydra" / "overrides.yaml").read_text())
        assert recorded[0] == f"act={act}" and len(recorded) == 1 + len(TINY)


EXPANSIONS = [  # the overrides of the first job, then one variant per further value of each swept key
    (["act=glob(s*)", "seed=range(1,3)"], [["act=selu", "seed=1"], ["act=sigmoid", "seed=1"], ["act=swish", "seed=1"], ["act=selu", "seed=2"]]),
    (["act=glob(*,exclude=[s*,*elu])", "lr=0.1"], [["act=tanh", "lr=0.1"]]),
    (["optim=choice(adam,sgd)", "seed=range(0,4,2)"], [["optim=adam", "seed=0"], ["optim=sgd", "seed=0"], ["optim=adam", "seed=2"]]),
    (["optim.betas=[0.9,0.999],[0.5,0.9]"], [["optim.betas=[0.9,0.999]"], ["optim.betas=[0.5,0.9]"]]),
    (
        ["dataset=npz", "dataset.path='/d=1/a.npz','/b c.npz'"],
        [["dataset=npz", "dataset.path='/d=1/a.npz'"], ["dataset=npz", "dataset.path='/b c.npz'"]],
    ),
    (["seed=0,1", "seed=5"], [["seed=5"]]),  # the last override of a key wins, as in Hydra
    (["~debug", "++seed=3,4"], [["~debug=null", "++seed=3"], ["~debug=null", "++seed=4"]]),
]


@pytest.mark.parametrize("overrides, variants", EXPANSIONS, ids=[" ".join(o) for o, _ in EXPANSIONS])
def test_sweeps_expand_as_hydras_basic_sweeper_does(overrides, variants):
    assert sweep_variants("train", ["-m", *overrides]) == variants


REFUSED = [  # (command line, the one line it gets)
    (["-m", "lr=interval(0.01,0.1)"], "lr=interval(0.01,0.1): Hydra's basic sweeper cannot enumerate an interval sweep"),
    (
        ["-m", "act=glob(zz*)"],
        "act=glob(zz*) gives no value to run; the choices of act: elu, gelu, leaky_relu, prelu, relu, selu, sigmoid, swish, tanh",
    ),
    (["-m", "seed=glob(*)"], "glob(...) picks among the choices of a config group, and seed is not one"),
    (["-m", "seed=range(3,3)"], "seed=range(3,3) gives no value to run"),
    (["-m", "lr=range(0,1,0)"], "lr=range(0,1,0): a range's step must not be zero; e.g. range(0,1,0.25) gives 0, 0.25, 0.5, 0.75"),
    (["-m", "lr=shuffle(range(1,2,0.0))"], "lr=shuffle(range(1,2,0.0)): a range's step must not be zero"),
    (["-m", "lr=range(0,1,1e-9)"], "lr=range(0,1,1e-9): this range has more than 100,000 values; check its step"),
    (["act=relu,gelu"], "act=relu,gelu is a sweep: add -m"),
    (["-m", "act=relu,nope"], "unknown act 'nope'"),
    (["act=relu,nope", "-m"], "unknown act 'nope'"),  # -m after the overrides, as after any other word
    (["~seed"], "seed is required: add seed=..."),
    (["+foo=1"], "unknown key 'foo' (TrainConfig has no such key)"),
    (["+sched.foo=1"], "unknown key 'sched.foo' (SchedConfig has no such key)"),
    (["+lr=0.1"], "+lr=0.1: lr is already in the config; set it without the +: lr=0.1"),
    (["+grad_clip=1.0"], "+grad_clip=1.0: grad_clip is already in the config; set it without the +: grad_clip=1.0"),  # (null)
    (["~grad_clip=3"], "~grad_clip=3: grad_clip is null, not 3"),
    (["~lr", "--cfg", "job"], "lr is required: add lr=..."),  # printing the config checks it as a run would
    (["+act=gelu"], "act already has a choice in the defaults: choose with act=... (no +)"),
    (["~model.depth"], "~model.depth: model.depth is required and cannot be removed; set it instead: model.depth=..."),
    # a group's choice field set directly would rename the choice and keep the old group's node
    (["optim.name=adam", "debug=fast"], "optim.name=adam: choose the group instead: optim=adam"),
    (["sched.name=cosine"], "sched.name=cosine: choose the group instead: sched=cosine"),
    (["model.name=resnet20"], "model.name=resnet20: choose the group instead: model=resnet20"),
    (["-m", "device.type=cpu,auto"], "device.type=cpu,auto: choose the group instead: device=cpu,auto"),
]


@pytest.mark.parametrize("args, message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_sweep_or_key_change_that_cannot_run_is_one_line_and_exit_2(tmp_path, args, message):
    out = run_cli(["train", *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepexp: ") and message in lines[0], out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_removing_a_key_that_may_be_null_sets_it_to_null(tmp_path):
    out = run_cli(["train", "debug=fast", "grad_clip=1.0", "~grad_clip", "~subset", "--cfg", "job"], tmp_path)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert (config["grad_clip"], config["subset"], config["epochs"]) == (None, None, 1)  # debug=fast's subset removed as well


def test_multirun_may_come_after_the_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(["train", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}", "--multirun"], tmp_path)
    assert out.returncode == 0, out.stderr
    runs = {json.loads(p.read_text())["config"]["seed"]: json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")}
    assert runs == {0: "completed", 1: "completed"}
