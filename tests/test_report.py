"""What the reports say about runs is what the runs recorded: clipping, hosts, devices."""
import json

from rich.console import Console

from conftest import read_csv, run_cli


def metrics(run_dir: str, seed: int, history: list, provenance: dict) -> dict:
    return {"status": "completed", "config": {"model": "mlp", "seed": seed, "grad_clip": 1.0}, "params": 10, "epochs_done": len(history),
            "history": history, "test": {"acc": 0.5, "loss": 1.0}, "seconds": 1.0, "best_val_acc": 0.5, "provenance": provenance}


def epoch(clipped_steps: int, steps: int = 10) -> dict:
    return {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5, "seconds": 0.5, "images_per_s": 100.0,
            "lr": 0.1, "clipped_steps": clipped_steps, "clipped_fraction": clipped_steps / steps}


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

    runs = [{"provenance": {"host": "node2", "device": "cuda", "earlier_attempts": [{"host": "node1", "device": "cuda"}]}},
            {"provenance": {"host": "node1", "device": "cuda"}}, {"provenance": {}}, {}]
    assert provenance_values(runs, "host") == "node2, node1"
    assert provenance_values(runs, "device") == "cuda"
    assert provenance_values(runs, "gpu") == "?"


def test_the_activation_study_reports_the_hosts_its_runs_trained_on_not_the_one_writing_the_report(tmp_path):
    """A sweep trained on a cluster and reported on a laptop names the cluster's nodes."""
    from deepexp.config import compose_config, validate
    from deepexp.experiments.activations import plan, write_study
    from deepexp.progress import QuietReporter
    from deepexp.train import train

    study = validate(compose_config("activations", ["preset=quick", "acts=[relu]", "seeds=2", "epochs=2", "depth=2", "width=8",
                                                    "dataset=synthetic", "dataset.train_size=128", "dataset.test_size=32",
                                                    "subset=null"]))
    results = []
    for spec, host in zip(plan(study), ("node7", "node9")):
        m = train(validate(compose_config("train", spec.overrides)), tmp_path / "runs" / spec.name, QuietReporter()).metrics
        m["provenance"]["host"] = host
        results.append((spec, m))
    write_study(study, results, tmp_path, Console(file=open(tmp_path / "console.txt", "w")), wall_seconds=1.0)
    setup = (tmp_path / "report.md").read_text().split("## Results")[0]
    assert "host node7, node9." in setup
