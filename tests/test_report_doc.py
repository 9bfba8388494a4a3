"""The report skeleton (deepexp/report_doc.py): one Report rendered as report.md and report.ipynb, the
notebook valid, in the markdown's order, and executable from the report's folder."""

import io
import re

import nbformat
import pytest
from rich.console import Console

from conftest import needs_mnist, run_cli
from deepexp.report_doc import Figure, Report, Section, figure_code, notebook_loader


def hand_built(load: str = "x = 1") -> Report:
    return Report(
        "Which is best?",
        ["Data: 10 images.", "Model: an MLP."],
        "| a | b |\n| --- | --- |\n| 1 | 2 |",
        ["**Best: relu**.", "No run diverged."],
        [Figure("loss", "loss_curves.png", figure_code("plot(1)")), Figure("acc", "test_accuracy.png", figure_code("plot(2)"))],
        [Section("Diagnosis per activation", ["**relu**: healthy."], level=3), Section("Ablations", text="| t |")],
        limitations=["Two seeds."],
        references=["He et al. 2015."],
        closing="Every run's own numbers: `summary.csv`.",
        load=load,
    )


def test_the_markdown_puts_every_section_in_order_with_the_figures_under_the_results():
    assert hand_built().markdown() == (
        "# Which is best?\n\n## Setup\n- Data: 10 images.\n- Model: an MLP.\n\n## Results\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n"
        "![loss](plots/loss_curves.png)\n![acc](plots/test_accuracy.png)\n\n## Findings\n- **Best: relu**.\n- No run diverged.\n\n"
        "### Diagnosis per activation\n- **relu**: healthy.\n\n## Ablations\n| t |\n\n## Limitations\n- Two seeds.\n\n"
        "## References\n- He et al. 2015.\n\nEvery run's own numbers: `summary.csv`.\n"
    )


def test_the_notebook_validates_and_has_one_markdown_cell_per_section_in_the_reports_order(tmp_path):
    report = hand_built()
    report.write(tmp_path, Console(file=io.StringIO()), "title", ["a"], [["1"]])
    nb = nbformat.read(tmp_path / "report.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    markdown = (tmp_path / "report.md").read_text()
    assert markdown == report.markdown()
    headings = re.findall(r"^#+ .*$", markdown, flags=re.M)
    cells = [c for c in nb.cells if c.cell_type == "markdown"]
    assert [c.source.splitlines()[0] for c in cells[: len(headings)]] == headings
    assert cells[-1].source == "Every run's own numbers: `summary.csv`."
    # the loading cell after the setup, then one code cell per figure right after the results
    kinds = [(c.cell_type, c.source.splitlines()[0]) for c in nb.cells]
    assert kinds[1:6] == [
        ("markdown", "## Setup"),
        ("code", "x = 1"),
        ("markdown", "## Results"),
        ("code", "fig = plot(1)"),
        ("code", "fig = plot(2)"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.ipynb", "report.md"]  # no temporary file left


def test_the_loading_cell_reads_relative_run_folders_from_where_the_runs_were_named():
    cell = notebook_loader("deepexp.commands.report", base="/data/x", subtitle="s, 1 epochs", extra="by = []")
    assert "from deepexp.commands import report" in cell
    assert 'summary = report_doc.read_table("summary.csv")' in cell and "runs = report_doc.load_runs(summary, base='/data/x')" in cell
    assert "subtitle = 's, 1 epochs'" in cell and cell.splitlines()[-2:] == ["by = []", "summary"]


def test_load_runs_resolves_relative_run_folders_against_the_notebooks_folder_and_keeps_the_csvs_name(tmp_path):
    import json

    import pandas as pd

    from deepexp.report_doc import load_runs, records

    (tmp_path / "runs" / "a").mkdir(parents=True)
    metrics = {"status": "completed", "history": [], "config": {"seed": 0}}
    (tmp_path / "runs" / "a" / "metrics.json").write_text(json.dumps(metrics))
    table = pd.DataFrame({"run_dir": ["runs/a"], "test_acc": [float("nan")]})
    runs = load_runs(table, folder=tmp_path)
    assert [r["run_dir"] for r in runs] == ["runs/a"] and runs[0]["status"] == "completed"
    assert records(table) == [{"run_dir": "runs/a", "test_acc": None}]  # an empty cell is None, as the study held it
    with pytest.raises(FileNotFoundError, match="runs/b/metrics.json: no such file"):
        load_runs(pd.DataFrame({"run_dir": ["runs/b"]}), folder=tmp_path)


@needs_mnist
def test_the_report_notebook_runs_from_its_folder_and_redraws_every_figure(tmp_path):
    from nbclient import NotebookClient

    for seed in (0, 1):
        out = run_cli(["train", "debug=fast", "subset=300", f"seed={seed}", f"hydra.run.dir=runs/r{seed}"], tmp_path)
        assert out.returncode == 0, out.stderr
    out = run_cli(["report", "path=runs", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)  # run folders named relative to tmp_path
    assert out.returncode == 0, out.stderr
    moved = tmp_path / "handed in"  # the runs and the report moved together, as a student hands them in
    moved.mkdir()
    for name in ("runs", "report"):
        (tmp_path / name).rename(moved / name)
    folder = moved / "report"
    nb = nbformat.read(folder / "report.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    figures = [c for c in code if c.source.startswith("fig = ")]
    assert [c.source.splitlines()[0] for c in figures] == [
        "fig = report.learning_curves_figure(runs, by, metric, subtitle)",
        "fig = report.metric_figure(runs, by, metric, subtitle)",
    ]
    assert all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in figures)
    assert "runs/r0" in code[0].outputs[0]["data"]["text/plain"]  # the loading cell shows summary.csv, its run folders as named
