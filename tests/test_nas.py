"""Project 4: the search space, its counters, the proxies, `deepexp nas` on real data and its resumption."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import needs_cifar, read_csv, run_cli
from deepexp.errors import ConfigError
from deepexp.measure import count_macs, count_params
from deepexp.models import create_model, is_activation
from deepexp.models.nas_space import MAX_DOWNSAMPLES, check_spec, mac_count, mutate, param_count, random_spec
from deepexp.zero_cost import PROXIES, naswot, score_all


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


TINY = ["trials=2", "search_seeds=1", "population=2", "sample_size=1", "proxy_epochs=1", "proxy_subset=300", "max_macs=40000000",
        "zero_cost_pool=3", "top_k=1", "final_epochs=1", "final_seeds=1", "final_subset=300", "baselines=[dws_cnn]"]


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

    # The two workers shared one SQLite file and the budget: both evaluated, nothing was left running,
    # at most one trial too many per search (a race the report leaves out), different random candidates.
    storage = f"sqlite:///{out / 'search.db'}"
    pids = set()
    for strategy in strategies:
        trials = optuna.load_study(study_name=f"{strategy}-s0", storage=storage).get_trials()
        done = [t for t in trials if t.state.name == "COMPLETE"]
        assert 2 <= len(done) <= 3 and not [t for t in trials if t.state.name == "RUNNING"]
        pids |= {t.user_attrs["worker"]["pid"] for t in done}
        if strategy == "random":
            assert len({json.dumps(t.user_attrs["spec"]) for t in done}) == len(done)
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

