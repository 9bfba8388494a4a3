"""Project 4: the search space, its counters, the proxies, `deepexp nas` on real data and its resumption."""
from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conftest import needs_cifar, needs_fashion_mnist, read_csv, run_cli
from deepexp.config import compose_config, validate
from deepexp.errors import ConfigError
from deepexp.experiments import nas
from deepexp.measure import count_macs, count_params
from deepexp.models import create_model, is_activation
from deepexp.models.nas_space import MAX_DOWNSAMPLES, check_spec, mac_count, mutate, param_count, random_spec, spec_key
from deepexp.zero_cost import PROXIES, naswot, score_all

KILL_AT = Path(__file__).with_name("kill_at.py")


@pytest.mark.parametrize("seed", range(8))
def test_every_sampled_spec_builds_runs_and_has_the_predicted_parameters_and_macs(seed):
    spec = random_spec(random.Random(seed))
    assert check_spec(spec) == spec
    # Small images keep 15-layer 256-channel specs cheap; 13 tests odd sizes, 11 x 18 non-square ones.
    for channels, h, w in ((3, 16, 16), (1, 13, 13), (2, 11, 18)):
        model = create_model("nas", in_channels=channels, image_shape=(h, w), num_classes=10, act="relu", arch=spec)
        assert model(torch.rand(1, channels, h, w)).shape == (1, 10)
        assert count_params(model) == param_count(spec, channels, 10)
        assert count_macs(model, (channels, h, w)) == mac_count(spec, (channels, h, w), 10)


def test_mutation_keeps_every_spec_valid_and_changes_it():
    rng, spec = random.Random(0), random_spec(random.Random(1))
    for _ in range(2000):
        child = mutate(spec, rng)
        assert check_spec(child) == child and child != spec
        assert 5 <= len(child["layers"]) <= 15 and sum(layer["stride"] == 2 for layer in child["layers"]) <= MAX_DOWNSAMPLES
        spec = child


@pytest.mark.parametrize("bad, message", [
    ({"layers": [{"type": "attention", "channels": 32}] * 6}, "unknown type 'attention'"),
    ({"layers": [{"type": "conv", "channels": 48}] * 6}, "channels 48"),
    ({"layers": [{"type": "conv", "channels": 32}] * 3}, "3 layers"),
    ({"layers": [{"type": "conv", "channels": 32, "stride": 2}] * 6}, "more than 3 layers with stride 2"),
    ({"blocks": []}, "a 'layers' list"),
])
def test_invalid_specs_are_one_line_errors(bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_spec(bad)


def test_invalid_spec_file_through_the_cli_is_exit_2_and_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"layers": [{"type": "conv", "channels": 1024}] * 6}))
    out = run_cli(["train", "model=nas", f"arch={path}", "dataset=synthetic", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 2 and "channels 1024" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


SMALL_SPEC = {"layers": [{"type": "conv", "channels": 32, "stride": 1}] * 5}
SMALL_SPEC_YAML = "layers:\n" + "  - {type: conv, channels: 32, stride: 1}\n" * 5


@pytest.mark.parametrize("name, text", [("spec.json", json.dumps(SMALL_SPEC)), ("spec.yaml", json.dumps(SMALL_SPEC)),
                                        ("spec.json", SMALL_SPEC_YAML), ("spec.txt", SMALL_SPEC_YAML), ("spec", json.dumps(SMALL_SPEC))],
                         ids=["json as .json", "json as .yaml", "yaml as .json", "yaml as .txt", "json, no suffix"])
def test_spec_files_are_read_by_content_not_by_name(tmp_path, name, text):
    from deepexp.models.nas_space import load_spec

    (tmp_path / name).write_text(text)
    assert load_spec(tmp_path / name) == SMALL_SPEC


def test_a_spec_that_is_neither_json_nor_yaml_is_one_line(tmp_path):
    from deepexp.models.nas_space import load_spec

    (tmp_path / "spec.json").write_text("layers: [unclosed\n")
    with pytest.raises(ConfigError, match=r"spec.json: neither JSON nor YAML \(") as err:
        load_spec(tmp_path / "spec.json")
    assert "\n" not in str(err.value)


def test_a_yaml_spec_named_json_trains_through_the_cli(tmp_path):
    (tmp_path / "spec.json").write_text(SMALL_SPEC_YAML)
    out = run_cli(["train", "model=nas", f"arch={tmp_path / 'spec.json'}", "dataset=synthetic", "dataset.train_size=40",
                   "dataset.test_size=10", "dataset.image_shape=[8,8]", "epochs=1", "batch_size=12", "monitor.figure=false",
                   f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"


def test_zero_cost_proxies_are_finite_and_leave_the_model_untouched():
    torch.manual_seed(0)
    model = create_model("nas", in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", arch=random_spec(random.Random(3)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = score_all(model.eval(), torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    assert set(scores) == set(PROXIES) and all(torch.isfinite(torch.tensor(v)) for v in scores.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_naswot_sums_per_layer_the_kernel_of_the_paper():
    # Mellor et al.'s kernel on the concatenated binary codes of every activation, c c^T + (1 - c)(1 - c)^T,
    # against naswot's per-layer float32 products: the same integers, so the same log-determinant exactly.
    torch.manual_seed(0)
    model = create_model("nas", in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", arch=random_spec(random.Random(3)))
    x = torch.randn(16, 3, 32, 32)
    codes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: codes.append((out.flatten(1) > 0).double()))
             for m in model.modules() if is_activation(m)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    c = torch.cat(codes, dim=1)
    assert naswot(model, x) == float(torch.linalg.slogdet(c @ c.T + (1 - c) @ (1 - c).T).logabsdet)


# --- the search loop, with a stand-in for training ---------------------------------------------


class Killed(Exception):
    """Stands for SIGKILL in the middle of an evaluation: the trial stays RUNNING in the storage."""


class FakeEvaluation:
    """Search.measure and Search.evaluate without training: a score that is a fixed function of the spec, and a
    record of every evaluation started (spec key, run name, the progress counter's "k/trials")."""

    def __init__(self, monkeypatch, kill_at=None, seconds=0.0):
        self.calls, self.kill_at, self.seconds, self.now = [], kill_at, seconds, 1_000_000.0
        monkeypatch.setattr(nas.Search, "measure", lambda search, spec, latency=False: self.measure(spec))
        monkeypatch.setattr(nas.Search, "evaluate", lambda search, spec, name, counter: self.evaluate(spec, name, counter))

    @staticmethod
    def score(spec) -> float:
        return zlib.crc32(spec_key(spec).encode()) % 1000 / 1000

    def measure(self, spec):
        params = sum(layer["channels"] for layer in spec["layers"])
        return {"params": params, "macs": params, "latency_ms": 1.0, **{p: self.score(spec) + i for i, p in enumerate(PROXIES)}}

    def evaluate(self, spec, name, counter):
        self.calls.append((spec_key(spec), name, counter.split()[-1]))
        self.now += self.seconds  # the search's clock (Search.clock) moves on by the evaluation's duration
        if len(self.calls) == self.kill_at:
            raise Killed
        return self.score(spec), {"status": "completed", "seconds": self.seconds}

    def clock(self) -> float:
        return self.now


def session(tmp_path, fake, *overrides):
    """One `deepexp nas retrain=false` invocation's search on the storage in tmp_path, as nas_command runs it."""
    study = validate(compose_config("nas", ["nas/preset=quick", "dataset=synthetic", "search_seeds=1", "population=2",
                                            "sample_size=1", "max_macs=null", *overrides]))
    search = nas.Search(study, tmp_path, f"sqlite:///{tmp_path / 'search.db'}", Console(file=io.StringIO()))
    search.clock = fake.clock
    for strategy, seed in search.searches():
        search.finish_abandoned(strategy, seed)
    for strategy, seed in search.searches():
        search.run(strategy, seed)
    return search


def load_trials(tmp_path, name):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'search.db'}").get_trials()


@pytest.mark.parametrize("strategy", ["random", "evolution", "nsga2", "zero_cost"])
def test_a_search_killed_mid_evaluation_and_rerun_trains_each_spec_once_and_evaluates_trials_specs(tmp_path, monkeypatch, strategy):
    fake = FakeEvaluation(monkeypatch, kill_at=3)
    with pytest.raises(Killed):
        session(tmp_path, fake, f"strategies=[{strategy}]", "trials=6")
    search = session(tmp_path, fake, f"strategies=[{strategy}]", "trials=6")
    names = {}
    for key, name, _ in fake.calls:
        names.setdefault(key, set()).add(name)
    # Six distinct specs, each in one run directory (the killed one resumed in its own); the numbering goes on.
    assert len(names) == 6 and all(len(n) == 1 for n in names.values()), fake.calls
    assert [counter for *_, counter in fake.calls] == ["1/6", "2/6", "3/6", "3/6", "4/6", "5/6", "6/6"]
    rows = search.all_trials()
    assert sorted(r["spec_key"] for r in rows) == sorted(names) and [r["evaluation"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert not [t for t in load_trials(tmp_path, f"{strategy}-s0") if t.state.name == "RUNNING"]


def test_a_proposal_the_search_already_evaluated_is_told_that_score_and_costs_no_evaluation(tmp_path, monkeypatch):
    a, b, c = (random_spec(random.Random(i)) for i in range(3))
    proposals = iter([a, b, a, c])
    monkeypatch.setattr(nas, "random_spec", lambda rng: next(proposals))
    fake = FakeEvaluation(monkeypatch)
    search = session(tmp_path, fake, "strategies=[random]", "trials=3")
    assert fake.calls == [(spec_key(a), "random-s0/t000", "1/3"), (spec_key(b), "random-s0/t001", "2/3"),
                          (spec_key(c), "random-s0/t003", "3/3")]
    trials = load_trials(tmp_path, "random-s0")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert trials[2].user_attrs["reused_from"] == 0 and trials[2].values == trials[0].values == [FakeEvaluation.score(a)]
    assert "evaluation" not in trials[2].user_attrs
    assert [r["spec_key"] for r in search.all_trials()] == [spec_key(a), spec_key(b), spec_key(c)]


def test_max_minutes_is_one_budget_for_every_session_of_a_search(tmp_path, monkeypatch):
    fake = FakeEvaluation(monkeypatch, seconds=60)
    search = ["strategies=[random]", "trials=10"]
    session(tmp_path, fake, *search, "max_minutes=2.5")
    assert len(fake.calls) == 3  # evaluations start at 0, 60 and 120 s of the search's time; at 180 s its 150 s are spent
    fake.now += 86_400
    session(tmp_path, fake, *search, "max_minutes=2.5")  # the same command a day later: nothing left to spend
    assert len(fake.calls) == 3
    session(tmp_path, fake, *search, "max_minutes=4")  # the day between the sessions is not search time: 60 s left
    assert len(fake.calls) == 4


def another_worker(tmp_path, name, decide):
    """A trial of another live worker on this machine (signed with this process's parent, which is alive), and a
    thread that, once this process has asked its own first trial, lets that worker decide with `decide(study, trial)`."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    trial = optuna.create_study(storage=storage, study_name=name, direction="maximize").ask()
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getppid()})

    def work():
        study = optuna.load_study(study_name=name, storage=storage)
        while len(study.get_trials(deepcopy=False)) < 2:
            time.sleep(0.05)
        decide(study, trial)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return trial, thread


def test_evaluations_are_numbered_once_each_in_trial_order_when_another_worker_is_proposing(tmp_path, monkeypatch):
    import optuna

    # The other worker's proposal (trial 0) turns out over max_macs once this one has asked trial 1: this
    # worker's two trials are the search's first and second evaluations, and say so.
    _, thread = another_worker(tmp_path, "random-s0", lambda study, trial: study.tell(trial.number, state=optuna.trial.TrialState.PRUNED))
    fake = FakeEvaluation(monkeypatch)
    session(tmp_path, fake, "strategies=[random]", "trials=2")
    thread.join(timeout=60)
    assert [counter for *_, counter in fake.calls] == ["1/2", "2/2"]
    assert [t.user_attrs.get("evaluation") for t in load_trials(tmp_path, "random-s0")] == [None, 1, 2]


def test_a_spec_another_worker_is_still_evaluating_is_not_trained_again_but_waits_for_its_score(tmp_path, monkeypatch):
    a, b = (random_spec(random.Random(i)) for i in range(2))

    def evaluate_a(study, trial):  # the other worker evaluates a; this one proposes a too, meanwhile
        trial.set_user_attr("spec", a)
        trial.set_user_attr("evaluation", 1)
        while "reused_from" not in study.get_trials(deepcopy=False)[1].user_attrs:
            time.sleep(0.05)
        study.tell(trial.number, 0.25)

    _, thread = another_worker(tmp_path, "random-s0", evaluate_a)
    proposals = iter([a, b])
    monkeypatch.setattr(nas, "random_spec", lambda rng: next(proposals))
    fake = FakeEvaluation(monkeypatch)
    session(tmp_path, fake, "strategies=[random]", "trials=2")
    thread.join(timeout=60)
    assert fake.calls == [(spec_key(b), "random-s0/t002", "2/2")]
    trials = load_trials(tmp_path, "random-s0")
    assert trials[1].user_attrs["reused_from"] == 0 and trials[1].values == [0.25]


def session_within(seconds, *args):
    """session(*args) that must end within `seconds` (a search waiting on a dead worker would never end)."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(session(*args)), daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert outcome, f"the search did not end within {seconds} s"


def trial_of_another_machine(tmp_path, name, **attrs):
    """A RUNNING trial signed by a worker on another machine, which no process here can check."""
    import optuna

    trial = optuna.create_study(storage=f"sqlite:///{tmp_path / 'search.db'}", study_name=name, direction="maximize").ask()
    for key, value in {"worker": {"host": "another-machine", "pid": 1}, **attrs}.items():
        trial.set_user_attr(key, value)


def test_a_proposal_another_machine_left_undecided_stalls_the_search_no_longer_than_decide_seconds(tmp_path, monkeypatch):
    trial_of_another_machine(tmp_path, "random-s0")  # asked there, never decided: that worker stopped
    monkeypatch.setattr(nas, "DECIDE_SECONDS", 0, raising=False)
    fake = FakeEvaluation(monkeypatch)
    session_within(60, tmp_path, fake, "strategies=[random]", "trials=2")
    assert [counter for *_, counter in fake.calls] == ["1/2", "2/2"]


def test_a_spec_another_machine_is_evaluating_is_not_trained_here_and_not_waited_for(tmp_path, monkeypatch):
    a, b = (random_spec(random.Random(i)) for i in range(2))
    trial_of_another_machine(tmp_path, "random-s0", spec=a, evaluation=1)
    proposals = iter([a, b])
    monkeypatch.setattr(nas, "random_spec", lambda rng: next(proposals))
    fake = FakeEvaluation(monkeypatch)
    session_within(60, tmp_path, fake, "strategies=[random]", "trials=2")
    assert fake.calls == [(spec_key(b), "random-s0/t002", "2/2")]
    trial = load_trials(tmp_path, "random-s0")[1]
    assert trial.state.name == "FAIL" and trial.user_attrs["reused_from"] == 0 and "evaluation" not in trial.user_attrs


TINY = ["dataset=cifar10", "trials=2", "search_seeds=1", "population=2", "sample_size=1", "proxy_epochs=1", "proxy_subset=300",
        "max_macs=40000000", "zero_cost_pool=3", "top_k=1", "final_epochs=1", "final_seeds=1", "final_subset=300", "baselines=[dws_cnn]"]


@pytest.mark.slow
@needs_cifar
def test_tiny_search_with_every_strategy_on_two_workers_writes_every_file_and_a_top_spec_retrains(tmp_path):
    import optuna

    out = tmp_path / "exp"
    strategies = ["random", "evolution", "nsga2", "zero_cost"]
    search = ["nas", "preset=quick", f"strategies=[{','.join(strategies)}]", *TINY]
    # Two workers search; the retraining is left to a second invocation on the same storage (below).
    result = run_cli([*search, "n_workers=2", "retrain=false", f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"nas study: 4 strategies x 1 search seed(s) x 2 evaluations in {out}"
    for name in ("evaluated.csv", "summary.csv", "summary.md", "report.md", "search.db", "plots/pareto_params.png",
                 "plots/pareto_latency_ms.png", "plots/best_so_far.png"):
        assert (out / name).is_file(), name
    assert not (out / "runs" / "final").exists() and "retrain=false" in (out / "summary.md").read_text()
    rows = read_csv(out / "evaluated.csv")
    assert sorted(r["strategy"] for r in rows) == sorted(strategies * 2)  # the first `trials` of each search
    for r in rows:  # every evaluated architecture with its cost, proxies and accuracy
        assert int(r["macs"]) <= 40_000_000 and int(r["params"]) > 0 and float(r["latency_ms"]) > 0
        assert all(r[p] != "" for p in PROXIES) and 0 <= float(r["val_acc"]) <= 1
    report = (out / "report.md").read_text()
    assert "Zero-cost proxies" in report and "Evolution against random" in report
    assert "wall-clock time on cpu (" in report and {r["device"] for r in rows} == {"cpu"}  # where the candidates trained

    # The two workers shared one SQLite file and the budget: both evaluated, nothing was left running, each
    # search trained exactly `trials` distinct architectures, and printed each evaluation once with its own number.
    storage = f"sqlite:///{out / 'search.db'}"
    pids = set()
    for strategy in strategies:
        trials = optuna.load_study(study_name=f"{strategy}-s0", storage=storage).get_trials()
        evaluated = [t for t in trials if "evaluation" in t.user_attrs]
        assert sorted(t.user_attrs["evaluation"] for t in evaluated) == [1, 2] and {t.state.name for t in evaluated} == {"COMPLETE"}
        assert not [t for t in trials if t.state.name == "RUNNING"]
        pids |= {t.user_attrs["worker"]["pid"] for t in evaluated}
        runs = list((out / "runs" / f"{strategy}-s0").iterdir())
        assert len(runs) == 2 and len({json.loads((r / "metrics.json").read_text())["provenance"]["labels"]["spec"] for r in runs}) == 2
        assert sorted(re.findall(rf"^\[{strategy}-s0 (\d+)/2\]", result.stdout, re.MULTILINE)) == ["1", "2"]
    assert len(pids) == 2

    # Another invocation on the same storage finds every search complete, evaluates nothing again,
    # and retrains the top architecture next to the hand-designed baseline.
    again = tmp_path / "again"
    result = run_cli([*search, f"storage={storage}", f"hydra.run.dir={again}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["spec_key"] for r in read_csv(again / "evaluated.csv")] == [r["spec_key"] for r in rows]
    assert [p.name for p in (again / "runs").iterdir()] == ["final"]  # no search trial was trained again
    final = read_csv(again / "summary.csv")
    assert sorted(r["model"] for r in final) == ["dws_cnn", "top1"] and {r["status"] for r in final} == {"completed"}
    assert "Searched against hand-designed" in (again / "report.md").read_text()

    top = next((again / "top5").glob("1-*.json"))
    retrain = run_cli(["train", "model=nas", f"arch={top}", "dataset=cifar10", "epochs=1", "subset=300",
                       f"hydra.run.dir={tmp_path / 'retrain'}"], tmp_path)
    assert retrain.returncode == 0, retrain.stderr
    assert json.loads((tmp_path / "retrain" / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.slow
@needs_cifar
def test_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    import optuna

    out = tmp_path / "exp"
    args = [sys.executable, "-m", "deepexp", "nas", "preset=quick", "strategies=[random]", *TINY, "proxy_epochs=2", "n_workers=1",
            "retrain=false", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = f"sqlite:///{out / 'search.db'}"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill after the second trial's first epoch (its checkpoint is on disk)
        time.sleep(0.2)
        runs = sorted((out / "runs" / "random-s0").glob("t*/metrics.json"))
        if len(runs) == 2 and json.loads(runs[-1].read_text() or "{}").get("status") == "running":
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {t.number: t.user_attrs["spec"] for t in optuna.load_study(study_name="random-s0", storage=storage).get_trials()
             if t.state.name == "COMPLETE"}
    assert len(first) == 1
    result = run_cli(args[3:], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming trial" in result.stdout
    done = [t for t in optuna.load_study(study_name="random-s0", storage=storage).get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 2 and all(done_t.user_attrs["spec"] == first[done_t.number] for done_t in done if done_t.number in first)
    assert not [t for t in optuna.load_study(study_name="random-s0", storage=storage).get_trials() if t.state.name == "RUNNING"]



@pytest.mark.slow
@needs_cifar
def test_nsga2_search_killed_after_two_evaluations_and_rerun_trains_no_architecture_twice(tmp_path):
    out = tmp_path / "exp"
    args = ["nas", "preset=quick", "dataset=cifar10", "strategies=[nsga2]", "search_seeds=1", "trials=5", "proxy_epochs=1",
            "proxy_subset=200", "n_workers=1", "retrain=false", f"hydra.run.dir={out}"]
    # SIGKILL at the third validation pass: two evaluations done, the third being trained.
    killed = subprocess.run([sys.executable, str(KILL_AT), "evaluate", "3", *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list((out / "runs" / "nsga2-s0").iterdir())) == 3
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming trial" in result.stdout
    trained = Counter(json.loads((run / "metrics.json").read_text())["provenance"]["labels"]["spec"]
                      for run in (out / "runs" / "nsga2-s0").iterdir())
    assert len(trained) == 5 and set(trained.values()) == {1}, trained  # five architectures, each trained once
    assert sorted(r["spec_key"] for r in read_csv(out / "evaluated.csv")) == sorted(trained)
    counters = re.findall(r"^\[nsga2-s0 (\d+)/5\]", result.stdout, re.MULTILINE)
    assert counters == ["3", "4", "5"]  # the resumed third evaluation, then the fourth and fifth


@pytest.mark.slow
@needs_fashion_mnist
def test_the_quick_preset_retrains_models_well_above_chance_and_calls_itself_a_first_look(tmp_path):
    """The quick preset's data (Fashion-MNIST), shrunk for the suite: one random search of two candidates, the best
    and dws_cnn retrained once, 2 epochs on 1,000 images (28 updates; the whole quick preset retrains with 126). Chance
    is 0.10, with a standard error of 0.003 on the 10,000 test images: above 0.3 the networks have learned."""
    out = tmp_path / "exp"
    result = run_cli(["nas", "preset=quick", "strategies=[random]", "search_seeds=1", "trials=2", "proxy_epochs=1",
                      "proxy_subset=500", "top_k=1", "final_seeds=1", "final_epochs=2", "final_subset=1000", "n_workers=1",
                      f"hydra.run.dir={out}"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "summary.csv")
    assert {r["kind"] for r in rows} == {"searched", "hand-designed"}
    assert max(float(r["test_acc"]) for r in rows) > 0.3, rows
    report = (out / "report.md").read_text()
    assert "fashion_mnist" in report and "Quick results are a first look" in report.split("## Limitations")[1]
