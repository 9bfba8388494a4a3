"""What the reports say about runs is what the runs recorded: clipping, hosts, devices, and settings whose
values are lists, dicts, nulls or nested values."""

import json
import statistics

from rich.console import Console

from conftest import TINY, finished_run, read_csv, run_cli


def metrics(run_dir: str, seed: int, history: list, provenance: dict) -> dict:
    return {
        "status": "completed",
        "config": {"model": "mlp", "seed": seed, "grad_clip": 1.0},
        "params": 10,
        "epochs_done": len(history),
        "history": history,
        "test": {"acc": 0.5, "loss": 1.0},
        "seconds": 1.0,
        "best_val_acc": 0.5,
        "provenance": provenance,
    }


def epoch(clipped_steps: int, steps: int = 10) -> dict:
    return {
        "epoch": 1,
        "train_loss": 1.0,
        "train_acc": 0.5,
        "val_loss": 1.0,
        "val_acc": 0.5,
        "seconds": 0.5,
        "images_per_s": 100.0,
        "lr": 0.1,
        "clipped_steps": clipped_steps,
        "clipped_fraction": clipped_steps / steps,
    }


def test_report_summarises_the_fraction_of_updates_each_run_clipped(tmp_path):
    for name, seed, clipped in (("a", 0, [10, 4]), ("b", 1, [2, 0])):
        (tmp_path / "runs" / name).mkdir(parents=True)
        m = metrics(name, seed, [epoch(c) for c in clipped], {"host": "node1"})
        (tmp_path / "runs" / name / "metrics.json").write_text(json.dumps(m))
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["seed"]: r for r in read_csv(tmp_path / "report" / "summary.csv")}
    assert float(rows["0"]["clipped_fraction"]) == 0.7 and float(rows["1"]["clipped_fraction"]) == 0.1
    assert "clipped_fraction" not in (tmp_path / "report" / "summary.md").read_text().split("\n\n")[1]  # a metric, not a factor


def test_provenance_values_lists_every_run_and_every_earlier_process_of_a_resumed_run():
    from deepexp.experiments.runner import provenance_values

    runs = [
        {"provenance": {"host": "node2", "device": "cuda", "earlier_attempts": [{"host": "node1", "device": "cuda"}]}},
        {"provenance": {"host": "node1", "device": "cuda"}},
        {"provenance": {}},
        {},
    ]
    assert provenance_values(runs, "host") == "node2, node1"
    assert provenance_values(runs, "device") == "cuda"
    assert provenance_values(runs, "gpu") == "?"


def test_the_activation_study_reports_the_hosts_its_runs_trained_on_not_the_one_writing_the_report(tmp_path):
    """A sweep trained on a cluster and reported on a laptop names the cluster's nodes."""
    from deepexp.config import compose_config, compose_train, validate
    from deepexp.experiments.activations import plan, write_study
    from deepexp.progress import QuietReporter
    from deepexp.train import train

    study = validate(
        compose_config(
            "activations",
            [
                "preset=quick",
                "acts=[relu]",
                "seeds=2",
                "epochs=2",
                "stability_epochs=2",
                "depth=2",
                "width=8",
                "dataset=synthetic",
                "dataset.train_size=128",
                "dataset.test_size=32",
                "subset=null",
            ],
        )
    )
    results = []
    for spec, host in zip(plan(study), ("node7", "node9")):
        m = train(compose_train(spec.overrides), tmp_path / "runs" / spec.name, QuietReporter()).metrics
        m["provenance"]["host"] = host
        results.append((spec, m))
    write_study(study, results, tmp_path, Console(file=open(tmp_path / "console.txt", "w")), wall_seconds=1.0)
    setup = (tmp_path / "report.md").read_text().split("## Results")[0]
    assert "host node7, node9." in setup


def test_a_sweep_over_a_list_valued_setting_groups_into_one_group_per_list(tmp_path):
    sweep, report = tmp_path / "sweep", tmp_path / "report"
    out = run_cli(["train", "-m", "optim=adam", "optim.betas=[0.9,0.999],[0.5,0.9]", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode == 0, out.stderr
    out = run_cli(["report", f"path={sweep}", f"hydra.run.dir={report}"], tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    table = (report / "summary.md").read_text()
    for betas, shown in (([0.9, 0.999], "[0.9,0.999]"), ([0.5, 0.9], "[0.5,0.9]")):
        accs = [m["test"]["acc"] for m in metrics if m["config"]["optim.betas"] == betas]
        assert len(accs) == 2
        assert f"| {shown} | 2 | 0,1 | {statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f} |" in table
    rows = read_csv(report / "summary.csv")
    assert sorted(json.loads(r["optim.betas"]) for r in rows) == [[0.5, 0.9], [0.5, 0.9], [0.9, 0.999], [0.9, 0.999]]


def run_dir(root, name, config, acc, loss=1.0):
    finished_run(root / name, {"dataset": "synthetic", "lr": 0.1, **config}, acc, loss)


def test_dicts_nulls_and_nested_values_group_print_and_round_trip_through_summary_csv(tmp_path):
    a = {"grad_clip": None, "custom": {"widths": [8, 16], "name": "a b|c"}, "optim.betas": [0.9, 0.999]}
    b = {"grad_clip": 1.0, "custom": {"name": "a b|c", "widths": [8]}, "optim.betas": [0.5, 0.9]}
    b_reordered = {**b, "custom": dict(reversed(b["custom"].items()))}  # the same settings, keys in another order
    for i, (config, acc) in enumerate([(a, 0.5), (a, 0.7), (b, 0.2), (b, 0.3), (b_reordered, 0.4)]):
        run_dir(tmp_path / "runs", f"r{i}", {**config, "seed": i}, acc)
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "Grouped by ['grad_clip', 'custom', 'optim.betas']" in table  # (dict key order is no difference)
    assert "| null | {widths:[8,16],name:'a b\\|c'} | [0.9,0.999] | 2 | 0,1 | 0.6000 ± 0.1414 |" in table
    assert "| 1.0 | {name:'a b\\|c',widths:[8]} | [0.5,0.9] | 3 | 2,3,4 | 0.3000 ± 0.1000 |" in table
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Highest mean test_acc: grad_clip=null, custom={widths:[8,16],name:'a b|c'}, optim.betas=[0.9,0.999] with 0.6000" in report
    rows = read_csv(tmp_path / "report" / "summary.csv")
    assert [(r["grad_clip"], json.loads(r["custom"]), json.loads(r["optim.betas"])) for r in rows[:3]] == [
        ("", a["custom"], a["optim.betas"]),
        ("", a["custom"], a["optim.betas"]),
        ("1.0", b["custom"], b["optim.betas"]),
    ]


def test_terminal_tables_fold_long_values_instead_of_cutting_them():
    """A group label or path wider than an 80-column terminal is wrapped inside its cell, every character kept."""
    import io

    from deepexp.results import print_table

    console = Console(file=io.StringIO(), width=80)
    value = "dataset.path=/data/" + "x" * 90 + "/mini.npz"
    print_table(console, "test", ["group", "test_acc (mean ± std)"], [[value, "0.9000 ± 0.0100"]])
    text = console.file.getvalue()
    assert "…" not in text and text.count("x") == 90 and "mini.npz" in text.replace("│", "").replace(" ", "").replace("\n", "")


def test_a_group_by_key_no_run_has_is_refused_before_hydra_makes_or_rewrites_a_folder(tmp_path):
    for i in range(2):
        run_dir(tmp_path / "runs", f"r{i}", {"act": "relu", "seed": i}, 0.9)
    report = tmp_path / "report"
    assert run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={report}"], tmp_path).returncode == 0
    record = {p.name: p.read_bytes() for p in (report / ".hydra").iterdir()}
    for folder in ([f"hydra.run.dir={report}"], []):
        out = run_cli(["report", f"path={tmp_path / 'runs'}", "group_by=[nokey]", *folder], tmp_path)
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [
            "deepexp: group_by=[nokey]: no run has these config keys; choose from seed only"
        ], out.stderr
    assert {p.name: p.read_bytes() for p in (report / ".hydra").iterdir()} == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]  # no outputs/report/DATE/TIME


def test_the_runs_and_seeds_columns_count_the_runs_the_statistics_are_over_and_the_others_are_named(tmp_path):
    runs = tmp_path / "runs"
    for i, acc in enumerate([0.90, 0.92, 0.5]):
        run_dir(runs, f"relu{i}", {"act": "relu", "seed": i}, acc)
    for i, acc in enumerate([0.80, 0.82, 0.5]):
        run_dir(runs, f"tanh{i}", {"act": "tanh", "seed": i}, acc)
    nan, running = json.loads((runs / "relu2" / "metrics.json").read_text()), json.loads((runs / "tanh2" / "metrics.json").read_text())
    nan["test"]["acc"] = None  # (NaN is stored as null)
    running["status"] = "running"
    del running["test"]
    (runs / "relu2" / "metrics.json").write_text(json.dumps(nan))
    (runs / "tanh2" / "metrics.json").write_text(json.dumps(running))
    out = run_cli(["report", f"path={runs}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    for text in ((tmp_path / "report" / name).read_text() for name in ("summary.md", "report.md")):
        assert "| relu | 2 | 0,1 | 0.9100 ± 0.0141 | 0.1271 | 0 |" in text
        assert "| tanh | 2 | 0,1 | 0.8100 ± 0.0141 | 0.1271 | 0 |" in text
        assert (
            f"Left out of the runs, seeds and statistics above (2 without a finite test_acc): `{runs / 'relu2'}` (status completed, "
            f"test_acc NaN or not recorded); `{runs / 'tanh2'}` (status running, test_acc NaN or not recorded)."
        ) in text


def test_seeds_that_all_give_the_same_value_are_reported_without_a_p_value(tmp_path):
    for i in range(3):
        run_dir(tmp_path / "runs", f"relu{i}", {"act": "relu", "seed": i}, 0.90)
        run_dir(tmp_path / "runs", f"tanh{i}", {"act": "tanh", "seed": i}, 0.80)
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    findings = (tmp_path / "report" / "report.md").read_text().split("## Findings")[1]
    assert (
        "- Against the runner-up, act=tanh (0.8000 ± 0.0000): difference +0.1000; no test with 3 runs: every run gave the "
        "identical value on each side (zero variance leaves Welch's test undefined; the seed may not be varying anything)."
    ) in findings
    assert "significant" not in findings and "p = " not in findings


def test_equal_best_means_are_reported_as_a_tie(tmp_path):
    for i in range(3):
        for act, acc in (("relu", 0.90), ("gelu", 0.90), ("tanh", 0.80)):
            run_dir(tmp_path / "runs", f"{act}{i}", {"act": act, "seed": i}, acc)
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "- Highest mean test_acc: a tie between act=gelu and act=relu, each 0.9000 (act=gelu: 0.9000 ± 0.0000, 3 runs; "
        "act=relu: 0.9000 ± 0.0000, 3 runs)."
    ) in (tmp_path / "report" / "report.md").read_text()


def test_a_loss_metric_ranks_the_lowest_mean_first(tmp_path):
    for i in range(3):
        for lr, loss in ((0.01, 0.30 + i / 100), (1.0, 0.90 + i / 100)):
            run_dir(tmp_path / "runs", f"lr{lr}-{i}", {"lr": lr, "seed": i}, 0.5, loss=loss)
    out = run_cli(["report", f"path={tmp_path / 'runs'}", "metric=test_loss", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "- Lowest mean test_loss: lr=0.01 with 0.3100 ± 0.0100 (3 runs)." in report, report
    assert "Against the runner-up, lr=1.0 (0.9100 ± 0.0100)" in report


def test_runs_that_differ_only_in_how_they_executed_form_one_group_and_runs_that_differ_in_lr_two(tmp_path):
    """monitor.every_n_steps says what a run logged (rundir.EXECUTION_KEYS, the keys a run may also resume with other
    values of), not what it computed: it is not a factor of the comparison."""
    sweep, report = tmp_path / "sweep", tmp_path / "report"
    out = run_cli(["train", "-m", "lr=0.1,0.05", "monitor.every_n_steps=1,2", "seed=0", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode == 0, out.stderr
    out = run_cli(["report", f"path={sweep}", f"hydra.run.dir={report}"], tmp_path)
    assert out.returncode == 0, out.stderr
    table = (report / "summary.md").read_text()
    assert "Grouped by ['lr']" in table
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    from deepexp.results import Stat

    for lr in (0.1, 0.05):
        accs = [m["test"]["acc"] for m in metrics if m["config"]["lr"] == lr]
        assert len(accs) == 2  # two runs of seed 0: one replicate (one_per_seed), its value the mean of the two
        assert f"| {lr} | 1 | 0 | {Stat([statistics.fmean(accs)]).fmt(4)} |" in table


def test_runs_that_repeat_a_seed_of_their_group_count_once_so_two_seeds_are_never_significant(tmp_path):
    """Three runs per seed that differ only in device.threads are one replicate each: two seeds per side stay
    indicative only (counted as six runs, the report called the gap significant, Welch p ~ 1e-5)."""
    runs = tmp_path / "runs"
    for act, accs in (("relu", (0.90, 0.92)), ("tanh", (0.80, 0.83))):
        for seed, acc in enumerate(accs):
            for threads in (1, 2, 3):
                run_dir(runs, f"{act}-s{seed}-t{threads}", {"act": act, "seed": seed, "device.threads": threads}, acc)
    out = run_cli(["report", f"path={runs}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| relu | 2 | 0,1 | 0.9100 ± 0.0141 |" in report and "| tanh | 2 | 0,1 | 0.8150 ± 0.0212 |" in report
    assert "Against the runner-up, act=tanh (0.8150 ± 0.0212): indicative only with 2 runs (difference +0.0950" in report
    assert (
        f"Runs that repeat a seed of their group (they differ only in settings that cannot change a result, such as device.* or "
        f"monitor.*): each seed counts once, with the mean of its runs' test_acc: `{runs / 'relu-s0-t1'}` with "
        f"`{runs / 'relu-s0-t2'}`, `{runs / 'relu-s0-t3'}`;"
    ) in report


def test_no_key_that_only_says_how_a_run_executed_is_a_factor_of_the_report():
    from deepexp.commands.report import varying_keys

    base = {
        "lr": 0.1,
        "seed": 0,
        "device.type": "cpu",
        "device.threads": 1,
        "device.index": None,
        "monitor.every_n_steps": 1,
        "eval_batch_size": 256,
        "eval_test": True,
        "channels_last": False,
        "compile": False,
        "resume": False,
        "data.root": None,
    }
    changed = {
        "seed": 1,
        "device.type": "cuda",
        "device.threads": 2,
        "device.index": 0,
        "monitor.every_n_steps": 5,
        "eval_batch_size": 512,
        "eval_test": False,
        "channels_last": True,
        "compile": True,
        "resume": True,
        "data.root": "/d",
    }
    assert varying_keys([base, {**base, **changed}]) == []
    assert varying_keys([base, {**base, **changed, "lr": 0.05, "amp": True}]) == ["lr", "amp"]


def test_a_chosen_group_by_pools_runs_of_other_settings_without_merging_them_as_repeats_of_a_seed():
    """group_by=[act] over lr 0.1 and 0.05: seed 0 at each lr is two experiments, not one replicate; runs that
    differ only in device.threads are still one."""
    from deepexp.commands.report import ranked_groups

    rows = [
        {"run_dir": f"r{i}", "act": "relu", "lr": lr, "seed": 0, "device.threads": threads, "status": "completed", "test_acc": acc}
        for i, (lr, threads, acc) in enumerate([(0.1, 1, 0.90), (0.05, 1, 0.80), (0.05, 2, 0.82)])
    ]
    (relu,) = ranked_groups(rows, ["act"], "test_acc")
    assert [r["run_dir"] for r in relu.rows] == ["r0", "r1"]
    assert relu.rows[1]["test_acc"] == 0.81 and relu.rows[1]["repeats"] == ["r2"]
