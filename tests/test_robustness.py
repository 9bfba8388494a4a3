"""Odd inputs deepexp must survive with the right numbers and one clear line: user text with markup or
maths characters, malformed files, and settings the run used rather than the ones it was given."""

import json
from pathlib import Path

from conftest import TINY, finished_run, run_cli
from deepexp.config import hydra_override
from deepexp.results import show_value


def fake_run(folder: Path, config: dict, acc: float = 0.5) -> Path:
    """A finished run's metrics.json as the trainer writes it, with the given config keys."""
    return finished_run(folder, {"dataset": "npz", "seed": 0, **config}, acc)


def test_a_run_directory_with_brackets_is_printed_as_given_and_the_run_exits_0(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # rich's width: the table's cells on one line each
    run_dir = tmp_path / "t[/x]y [q]"
    out = run_cli(["train", *TINY, hydra_override("hydra.run.dir", str(run_dir))], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert f"run directory: {run_dir}\n" in out.stdout  # printed on its own line, `[q]` and `[/x]` kept


def test_report_keeps_brackets_in_config_values_apart_and_prints_them_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    paths = ["/data/[v1]/a.npz", "/data/[v2]/a.npz", "/data/[/old]/a.npz"]
    for i, path in enumerate(paths):
        fake_run(tmp_path / "runs" / f"r{i}", {"dataset.path": path}, acc=0.1 * (i + 1))
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "report" / "report.md").exists()
    for path in paths:
        assert f"│ {show_value(path)} " in out.stdout  # one table row per group, each path whole


def test_plot_labels_with_dollar_signs_are_shown_as_written_not_as_maths():
    from deepexp import plots

    fig, (ax,) = plots.panels(1)
    plots.band(ax, [1, 2], [[1.0, 0.5]], "dataset.path=/data/$a^$/a.npz")
    plots.bars(ax, ["b_$x$"], [0.5], [0.1], "acc")
    legend = ax.legend()
    shown = [t._preprocess_math(t.get_text()) for t in [*legend.get_texts(), *ax.get_xticklabels()]]
    assert shown == [("dataset.path=/data/$a^$/a.npz", False), ("b_$x$", False)]


def test_report_over_config_values_with_dollar_signs_writes_its_plots_and_report(tmp_path):
    for i, path in enumerate(["/data/$a^$/a.npz", "/data/b_$x$/a.npz"]):
        fake_run(tmp_path / "runs" / f"r{i}", {"dataset.path": path}, acc=0.1 * (i + 1))
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "report" / "plots").iterdir()) == ["learning_curves.png", "test_acc.png"]
    assert "![test_acc](plots/test_acc.png)" in (tmp_path / "report" / "report.md").read_text()


GOOD = {
    "status": "completed",
    "config": {"dataset": "npz", "seed": 0},
    "params": 10,
    "epochs_done": 1,
    "seconds": 1.0,
    "history": [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5}],
    "test": {"acc": 0.5, "loss": 1.0},
    "best_val_acc": 0.5,
}
MALFORMED = {  # the file's text -> the reason deepexp gives
    "config_null": (json.dumps({**GOOD, "config": None}), "config is null, not an object"),
    "config_list": (json.dumps({**GOOD, "config": [1]}), "config is a list, not an object"),
    "json_list": ("[1]", "holds a list, not an object"),
    "history_dict": (json.dumps({**GOOD, "history": {"a": 1}}), "history is an object, not a list of epochs"),
    "no_val_acc": (
        json.dumps({**GOOD, "history": [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0}]}),
        "history[0] has no val_acc",
    ),
    "loss_string": (
        json.dumps({**GOOD, "history": [{**GOOD["history"][0], "train_loss": "1.0"}]}),
        "history[0].train_loss is a string, not a number",
    ),
    "epochs_string": (json.dumps({**GOOD, "epochs_done": "1"}), "epochs_done is a string, not a whole number"),
    "test_acc_list": (json.dumps({**GOOD, "test": {"acc": [0.5], "loss": 1.0}}), "test.acc is a list, not a number"),
    "truncated": (json.dumps(GOOD)[:40], "not valid JSON"),
}


def test_report_skips_each_unreadable_metrics_json_with_one_warning_and_counts_it_in_the_setup(tmp_path):
    fake_run(tmp_path / "runs" / "good", {})
    for name, (text, _) in MALFORMED.items():
        (tmp_path / "runs" / name).mkdir()
        (tmp_path / "runs" / name / "metrics.json").write_text(text)
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    warnings = out.stderr.splitlines()
    assert len(warnings) == len(MALFORMED)
    for (name, (_, reason)), line in zip(sorted(MALFORMED.items()), warnings):
        assert line.startswith(f"warning: skipped {tmp_path / 'runs' / name / 'metrics.json'}: {reason}")
    setup = (tmp_path / "report" / "report.md").read_text().split("## Results")[0]
    assert f"- Runs: 1 run directories below `{tmp_path / 'runs'}`" in setup
    assert f"Skipped {len(MALFORMED)} unreadable metrics.json: `{tmp_path / 'runs' / 'config_list' / 'metrics.json'}` (config is a list" in setup


def test_train_refuses_a_run_directory_whose_metrics_json_it_cannot_read_and_leaves_the_file(tmp_path):
    for name in ("json_list", "config_null"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text(MALFORMED[name][0])
        out = run_cli(["train", *TINY, f"hydra.run.dir={run_dir}"], tmp_path)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith(f"deepexp: {run_dir / 'metrics.json'}: {MALFORMED[name][1]}; not a metrics.json deepexp can read")
        assert (run_dir / "metrics.json").read_text() == MALFORMED[name][0]
    run_dir = tmp_path / "outputs" / "train" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("[1]")
    out = run_cli(["train", *TINY, "resume=true"], tmp_path)
    assert (
        out.returncode == 2
        and out.stderr
        == f"deepexp: {Path('outputs/train/old/metrics.json')}: holds a list, not an object; "
        "not a metrics.json deepexp can read (move it away, or choose another run directory)\n"
    )


def test_a_run_records_the_batch_probe_and_precision_it_used_and_resumes_under_a_request_that_changes_nothing(tmp_path):
    from conftest import read_csv

    run = tmp_path / "run"  # 58 training and 6 validation images: less than batch_size=128 and monitor.probe_size=256
    out = run_cli(["train", *TINY, "amp=true", "compile=true", "device=cpu", f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "warning: batch_size=128 is more than the 58 training images; training in batches of 58, one step per epoch" in out.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert (m["data"]["batch_size_used"], m["data"]["probe_size_used"]) == (58, 6)
    assert m["config"]["amp"] is True and m["provenance"]["amp_dtype"] is None  # asked for, and what ran
    out = run_cli(["train", *TINY, "amp=false", "compile=false", "device=cpu", f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 0 and "already completed; nothing to do" in out.stdout, out.stderr
    out = run_cli(["report", f"path={run}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    (row,) = read_csv(tmp_path / "report" / "summary.csv")
    assert (row["amp"], row["compile"]) == ("False", "False")


def test_options_added_since_a_run_was_written_default_to_their_current_defaults_and_old_runs_resume():
    from deepexp.config import compose_train
    from deepexp.rundir import NEW_OPTION_DEFAULTS
    from deepexp.train import check_resumable, flat_config

    # A run records only its own groups' keys (its dataset's, optimizer's, schedule's): each key's default is
    # read from a config of the group that has it. dataset.path is None for every dataset but npz (no file).
    defaults = {}
    for groups in ([], ["dataset=synthetic"], ["optim=adam"], ["sched=step"], ["sched=cosine"]):
        defaults.update(flat_config(compose_train(groups)))
    assert {k: defaults.get(k) for k in NEW_OPTION_DEFAULTS} == NEW_OPTION_DEFAULTS
    current = flat_config(compose_train([]))
    old = {k: v for k, v in current.items() if k not in NEW_OPTION_DEFAULTS}
    check_resumable(old, current, Path("old-run"))  # no refusal: the old run ran as the defaults say


def test_report_groups_a_run_written_before_an_option_existed_with_an_identical_newer_run(tmp_path):
    from deepexp.rundir import NEW_OPTION_DEFAULTS

    fake_run(tmp_path / "runs" / "old", {"model": "mlp", "seed": 0}, acc=0.5)
    fake_run(tmp_path / "runs" / "new", {"model": "mlp", "seed": 1, **NEW_OPTION_DEFAULTS}, acc=0.7)
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "2 runs in 1 groups" in summary and "| all runs | 2 | 1,0 | 0.6000 ± 0.1414 |" in summary


def test_report_figures_of_runs_without_curves_or_with_long_labels_raise_no_matplotlib_warning(tmp_path):
    import warnings

    from deepexp.commands.report import write_plots

    # no epoch finished: no curve, no legend entry
    runs = [
        {"run_dir": f"r{i}", "config": {"dataset.path": "/data/" + "x" * 300 + str(i), "seed": 0}, "test": {"acc": 0.5}, "history": []}
        for i in range(2)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "No artists with labels found", "Tight layout not applied" were printed
        files = write_plots(runs, ["dataset.path"], "test_acc", tmp_path, "npz")
    assert [(f.name, f.file) for f in files] == [("learning_curves", "learning_curves.png"), ("test_acc", "test_acc.png")]


def test_the_efficient_reports_budget_caveat_names_the_dataset_it_trained_on():
    from deepexp.config import compose_config, validate
    from deepexp.experiments.efficient import limitations

    study = validate(compose_config("efficient", ["dataset=mnist", "epochs=2"]))
    assert limitations(study, {"train": 1000}, {})[0].startswith(
        "2 epochs on 1000 training images: far from converged mnist training, so the accuracies"
    )
