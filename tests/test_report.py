"""`deepexp report` on runs whose settings are lists, dicts, nulls or nested values."""
import json
import statistics

from conftest import read_csv, run_cli

TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=16", "model.depth=1", "model.width=8", "epochs=1",
        "monitor.figure=false"]


def test_a_sweep_over_a_list_valued_setting_groups_into_one_group_per_list(tmp_path):
    sweep, report = tmp_path / "sweep", tmp_path / "report"
    out = run_cli(["train", "-m", "optim=adam", "optim.betas=[0.9,0.999],[0.5,0.9]", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}"],
                  tmp_path)
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


def run_dir(root, name, config, acc):
    folder = root / name
    folder.mkdir(parents=True)
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": acc, "val_loss": 1.0, "val_acc": acc}]
    (folder / "metrics.json").write_text(json.dumps({
        "status": "completed", "config": {"dataset": "synthetic", "lr": 0.1, **config}, "params": 10, "epochs_done": 1,
        "history": history, "test": {"acc": acc, "loss": 1.0}, "best_val_acc": acc, "seconds": 1.0}))


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
        ("", a["custom"], a["optim.betas"]), ("", a["custom"], a["optim.betas"]), ("1.0", b["custom"], b["optim.betas"])]
