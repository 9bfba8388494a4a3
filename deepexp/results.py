"""From run directories to tables: load metrics.json files, group over seeds, mean ± std.

Shared by every experiment command (and meant for `deepexp report`): a study
builds one row of numbers per run, then `group` turns rows that differ only by
seed into mean, std and a 95% confidence interval (Student's t, n - 1 degrees
of freedom).
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from .config import hydra_value
from .errors import ConfigError
from .rundir import atomic_write, read_metrics


@dataclass
class Stat:
    """Mean, standard deviation and 95% CI half-width of one metric over the seeds that have it."""

    values: List[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return statistics.stdev(self.values) if self.n > 1 else (0.0 if self.values else None)

    @property
    def ci95(self) -> Optional[float]:
        if self.n < 2:
            return None
        from scipy.stats import t

        return float(t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n)

    def fmt(self, digits: int = 4, scale: float = 1.0, sci: bool = False) -> str:
        if self.mean is None:
            return "-"
        spec = f".{digits - 2}e" if sci else f".{digits}f"
        text = f"{self.mean * scale:{spec}}"
        return text + (f" ± {self.std * scale:{spec}}" if self.n > 1 else "")


@dataclass
class Group:
    key: Dict[str, Any]
    rows: List[Dict[str, Any]] = field(default_factory=list)

    def stat(self, column: str) -> Stat:
        return Stat([float(r[column]) for r in self.rows if r.get(column) is not None and math.isfinite(float(r[column]))])

    def count(self, predicate: Callable[[Dict[str, Any]], bool]) -> int:
        return sum(1 for r in self.rows if predicate(r))


def find_runs(root: Path) -> List[Path]:
    """Every run directory (a folder with a metrics.json) below `root`, sorted."""
    return sorted(p.parent for p in Path(root).glob("**/metrics.json"))


def load_run(run_dir: Path) -> Optional[dict]:
    metrics = read_metrics(run_dir)
    if metrics is not None:
        metrics["run_dir"] = str(run_dir)
    return metrics


def group(rows: Iterable[Dict[str, Any]], by: Sequence[str]) -> List[Group]:
    """Rows with equal values of `by` (typically everything but the seed), in first-seen order.
    Any config value groups, lists and dicts included (compared by `value_key`)."""
    groups: Dict[tuple, Group] = {}
    for row in rows:
        values = [row.get(k) for k in by]
        groups.setdefault(tuple(value_key(v) for v in values), Group(dict(zip(by, values)))).rows.append(row)
    return list(groups.values())


def value_key(value: Any) -> str:
    """A hashable stand-in for a config value (None, bool, number, str, list, dict, nested): equal
    values, dicts in any key order, give equal keys; 1, 1.0 and True stay apart."""
    return json.dumps(value, sort_keys=True, default=str)


def show_value(value: Any) -> str:
    """A config value as the command line writes it (`[0.9,0.999]`, `null`, `true`, a quoted path
    with spaces), for labels and table cells."""
    try:
        return hydra_value(value)
    except ConfigError:  # a dict key Hydra's grammar cannot write: JSON still says it exactly
        return json.dumps(value, default=str)


def csv_value(value: Any) -> Any:
    """A CSV cell: empty for None, JSON for a list or dict (json.loads reads it back), else the value."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    """One row per dict, the columns in first-seen order; cells by `csv_value`. Written atomically."""
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_value(row.get(k)) for k in columns})
    atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; a `|` or a line break inside a cell is escaped."""
    cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


ALPHA = 0.05  # significance level of every comparison in the reports
STALLED_FRACTION = 0.9  # a final training loss above 90% of chance level ln(K): the run never really learned


def chance_loss(runs: Iterable[dict]) -> float:
    """Cross-entropy of a uniform guess, ln(K), with K from the first run that recorded its data."""
    return math.log(next((m["data"]["num_classes"] for m in runs if m.get("data")), 10))


def stalled(loss: Optional[float], chance: float) -> bool:
    return loss is not None and loss > STALLED_FRACTION * chance


def welch(a: List[float], b: List[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test, or None when a side has fewer than two values."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        return 0.0 if statistics.fmean(a) != statistics.fmean(b) else 1.0
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # near-identical values warn of precision loss; the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Spearman's rho, or None with fewer than three points or a constant column (no correlation defined)."""
    if len(xs) < 3:
        return None
    from scipy.stats import spearmanr

    with warnings.catch_warnings():  # a constant column warns and gives nan: None below
        warnings.simplefilter("ignore")
        rho = spearmanr(xs, ys).statistic
    return None if rho != rho else float(rho)


def verdict(p: Optional[float], spread: str = "the seed-to-seed spread", untestable: str = "cannot be tested with one seed") -> str:
    """How a report states a comparison's Welch p-value (None: fewer than two values on a side)."""
    if p is None:
        return untestable
    return f"significant (Welch p = {p:.3g})" if p < ALPHA else f"within {spread} (Welch p = {p:.3g})"


def print_table(console, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """The summary table in the terminal (rich), first column left-aligned."""
    from rich.table import Table

    view = Table(title=title)
    for i, column in enumerate(header):  # folded where the terminal is too narrow: never cut off with "…"
        view.add_column(column, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        view.add_row(*[str(c) for c in row])
    console.print(view)


def publish_report(exp_dir: Path, lines: List[str], console, title: str, header: Sequence[str],
                   rows: Sequence[Sequence[Any]]) -> Path:
    """Write `report.md` (atomically) and show the summary table in the terminal."""
    path = Path(exp_dir) / "report.md"
    write_text(path, "\n".join(lines))
    if rows:
        print_table(console, title, header, rows)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)
    return path


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> List[int]:
    """Indices of the points no other point beats (lower or equal cost and higher or equal value,
    one of them strictly), sorted by cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -values[i]))
    front: List[int] = []
    for i in order:
        if not front or values[i] > values[front[-1]]:
            front.append(i)
    return front
