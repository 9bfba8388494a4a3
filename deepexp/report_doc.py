"""One report, two renderings: `Report` holds a study's sections and writes them as `report.md` and as
an executable notebook `report.ipynb` beside it.

Every study and `deepexp report` fill the same skeleton: a title; setup bullets; a results table with
the figures under it; findings; extra sections of their own (a diagnosis, ablations, recommendations,
measurement reliability); limitations; references; a closing line. The markdown is the report as it
reads; the notebook (nbformat 4) has the same sections as markdown cells, a code cell that loads
`summary.csv` and every run's metrics.json with pandas, and one code cell per figure that redraws it by
calling the same figure function the study saved it with, so a student can rerun it and change a plot.
The notebook needs only the study's folder and its run folders: it never trains and writes nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .results import print_table
from .rundir import atomic_write, read_metrics


@dataclass
class Section:
    """A report section after the findings: a heading (`level` 2 is `##`) and either bullets (each
    written as `- line`) or a block of markdown `text` (a table)."""

    heading: str
    bullets: List[str] = field(default_factory=list)
    text: Optional[str] = None
    level: int = 2

    def lines(self) -> List[str]:
        """The section as markdown lines: its heading, then its text or its bullets."""
        return ["#" * self.level + " " + self.heading, *([self.text] if self.text is not None else bullet_lines(self.bullets))]


@dataclass
class Figure:
    """A figure of the report: its name (the markdown image's alt text), the file under `plots/`, and the
    Python code that redraws it in the notebook (a call of the figure function that drew the file, on
    the names the notebook's loading cell defines)."""

    name: str
    file: str
    code: str


@dataclass
class Report:
    """The report of one study: every section in the order it is written (`markdown`).

    `setup`, `findings`, `limitations` and `references` are bullets (written `- line`); `results` is
    markdown (a table, or a sentence where there is none); `sections` come between the findings and the
    limitations; `closing` is a last paragraph. `load` is the notebook's loading code (`notebook_loader`)
    and `figures` the figures, drawn under the results.
    """

    title: str
    setup: List[str]
    results: str
    findings: List[str]
    figures: List[Figure] = field(default_factory=list)
    sections: List[Section] = field(default_factory=list)
    limitations: List[str] = field(default_factory=list)
    references: List[str] = field(default_factory=list)
    closing: Optional[str] = None
    load: str = ""

    def blocks(self) -> List[List[str]]:
        """The report's sections as lists of markdown lines, in order (each a markdown cell of the notebook)."""
        out = [
            [f"# {self.title}"],
            ["## Setup", *bullet_lines(self.setup)],
            ["## Results", self.results],
            ["## Findings", *bullet_lines(self.findings)],
        ]
        out += [s.lines() for s in self.sections]
        if self.limitations:
            out.append(["## Limitations", *bullet_lines(self.limitations)])
        if self.references:
            out.append(["## References", *bullet_lines(self.references)])
        if self.closing is not None:
            out.append([self.closing])
        return out

    def markdown(self) -> str:
        """report.md: the sections separated by blank lines, the figures' images under the results table."""
        blocks = self.blocks()
        lines = [*blocks[0], "", *blocks[1], "", *blocks[2], ""]
        lines += [f"![{f.name}](plots/{f.file})" for f in self.figures]
        for block in blocks[3:]:
            lines += ["", *block]
        return "\n".join(lines + [""])

    def notebook(self):
        """report.ipynb as an nbformat 4 notebook (validated): one markdown cell per section, the loading
        cell after the setup, one code cell per figure after the results."""
        import nbformat
        from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

        blocks = self.blocks()
        cells = [new_markdown_cell("\n".join(blocks[0])), new_markdown_cell("\n".join(blocks[1]))]
        if self.load:
            cells.append(new_code_cell(self.load))
        cells.append(new_markdown_cell("\n".join(blocks[2])))
        cells += [new_code_cell(f.code) for f in self.figures if self.load]
        cells += [new_markdown_cell("\n".join(block)) for block in blocks[3:]]
        nb = new_notebook(
            cells=cells,
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "language_info": {"name": "python"}},
        )
        nbformat.validate(nb)
        return nb

    def write(self, folder: Path, console, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
        """Write `report.md` and `report.ipynb` into `folder` (each atomically) and show the summary table
        (`header`, `rows`) under `title` in the terminal; returns report.md's path."""
        import nbformat

        path = Path(folder) / "report.md"
        markdown, notebook = self.markdown(), nbformat.writes(self.notebook())
        atomic_write(path, lambda f: f.write(markdown), mode="w")
        atomic_write(path.with_suffix(".ipynb"), lambda f: f.write(notebook), mode="w")
        if rows:
            print_table(console, title, header, rows)
        console.print(f"report: {path}", highlight=False, soft_wrap=True)
        return path


def bullet_lines(lines: Sequence[str]) -> List[str]:
    """Each line as a markdown bullet, `- line`."""
    return [f"- {line}" for line in lines]


# --- what the notebook runs ------------------------------------------------------------------


def records(table) -> List[Dict[str, Any]]:
    """The rows of a pandas DataFrame read from a summary CSV as dicts, an empty cell (NaN) as None, as the
    study held them before writing the file (results.csv_value writes None as an empty cell)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in table.to_dict("records")]


def read_table(path: Union[str, Path] = "summary.csv"):
    """A summary CSV as a pandas DataFrame (pandas.read_csv); an empty DataFrame for a file without
    columns (a study with nothing to list, such as a search without retraining)."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def load_runs(table, folder: Union[str, Path] = ".", base: Union[str, Path, None] = None) -> List[dict]:
    """Each run's metrics.json (rundir.read_metrics) with its folder under "run_dir" as the table wrote it,
    one per row of `table` (a DataFrame read from summary.csv), in the table's order; [] for a table
    without a run_dir column. A relative run_dir is taken relative to `base` (default `folder`, the
    notebook's own folder).

    Raises:
        FileNotFoundError: a run folder without a metrics.json (moved, or copied without its runs).
        rundir.MetricsError: a metrics.json that cannot be read.
    """
    if "run_dir" not in table.columns:
        return []
    runs = []
    for run_dir in table["run_dir"]:
        path = Path(run_dir)
        path = path if path.is_absolute() else Path(base if base is not None else folder) / path
        metrics = read_metrics(path)
        if metrics is None:
            raise FileNotFoundError(f"{path / 'metrics.json'}: no such file (the notebook reads the run folders summary.csv names)")
        runs.append({**metrics, "run_dir": run_dir})
    return runs


def notebook_loader(
    module: str, study: Optional[Dict[str, Any]] = None, subtitle: Optional[str] = None, base: Optional[Path] = None, extra: str = ""
) -> str:
    """The notebook's loading cell: pandas reads summary.csv (`summary`, and `rows` as dicts), `runs` holds
    every run's metrics.json in the same order (relative run folders against the notebook's folder, or
    against `base` where the runs were named from elsewhere), `study` the study's configuration (an
    OmegaConf node, attribute access as in the study's code), `subtitle` the figures' common subtitle.
    `module` is the figure functions' module (`deepexp.experiments.activations`); `extra` more lines."""
    lines = [
        "# Load what the report was computed from: nothing is retrained or written.",
        "%matplotlib inline",
        "import pandas as pd",
        *(["from omegaconf import OmegaConf"] if study is not None else []),
        "from deepexp import report_doc",
        f"from {module.rsplit('.', 1)[0]} import {module.rsplit('.', 1)[1]}",
        "",
        'summary = report_doc.read_table("summary.csv")  # pandas.read_csv',
        "rows = report_doc.records(summary)",
        f"runs = report_doc.load_runs(summary{'' if base is None else f', base={str(base)!r}'})",
    ]
    if study is not None:
        lines.append(f"study = OmegaConf.create({json.dumps(study, indent=1, default=str)!r})")
    if subtitle is not None:
        lines.append(f"subtitle = {subtitle!r}")
    return "\n".join(lines + ([extra] if extra else []) + ["summary"])


def figure_code(call: str) -> str:
    """A figure cell: draw with `call` (an expression returning a matplotlib Figure) and show it."""
    return f"fig = {call}\nfig"
