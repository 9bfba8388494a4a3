"""From run directories to tables and comparisons: load metrics.json files, group over seeds,
mean ± std, and the one way every report tests and words a difference.

Shared by every experiment command and `deepexp report`: a study builds one row
of numbers per run, then `group` turns rows that differ only by seed into mean,
std and a 95% confidence interval (Student's t, n - 1 degrees of freedom).
`compare` (Welch), `holm` (multiple comparisons) and `describe` (the sentence)
state how two groups differ.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .config import hydra_value
from .errors import ConfigError
from .rundir import MetricsError, atomic_write, read_metrics


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

    def scored(self, column: str) -> List[Dict[str, Any]]:
        """The rows with a finite value of `column`: the runs `stat(column)` is computed from (a run still
        running, stopped before its test, or with a NaN result, which metrics.json stores as null, has none)."""
        return [r for r in self.rows if r.get(column) is not None and math.isfinite(float(r[column]))]

    def stat(self, column: str) -> Stat:
        return Stat([float(r[column]) for r in self.scored(column)])

    def count(self, predicate: Callable[[Dict[str, Any]], bool]) -> int:
        return sum(1 for r in self.rows if predicate(r))


def leaders(groups: Sequence[Group], column: str, lowest: bool = False) -> List[Group]:
    """The groups (those with `column`) whose mean `column` equals the best one's (math.isclose: the
    same number up to float rounding), in their given order: a tie has several, and no order among them
    is a finding. `lowest`: the best is the smallest mean (a loss, epochs to a threshold)."""
    scored = [g for g in groups if g.stat(column).n]
    if not scored:
        return []
    best = (min if lowest else max)(g.stat(column).mean for g in scored)
    return [g for g in scored if math.isclose(g.stat(column).mean, best)]


def find_runs(root: Path) -> List[Path]:
    """Every run directory (a folder with a metrics.json) below `root`, sorted."""
    return sorted(p.parent for p in Path(root).glob("**/metrics.json"))


def load_runs(run_dirs: Iterable[Path]) -> Tuple[List[dict], List[MetricsError]]:
    """Each run's metrics.json (rundir.read_metrics) with its folder under "run_dir", and, apart, why each
    unreadable one could not be read (a copy cut short, a file of another shape): a report shows the runs it
    can read and names the others instead of failing or silently dropping them."""
    runs: List[dict] = []
    unreadable: List[MetricsError] = []
    for run_dir in run_dirs:
        try:
            metrics = read_metrics(run_dir)
        except MetricsError as exc:
            unreadable.append(exc)
            continue
        if metrics is not None:  # (removed since it was found)
            runs.append({**metrics, "run_dir": str(run_dir)})
    return runs, unreadable


AS_RUN = (("amp", "amp_dtype"), ("compile", "compiled"), ("tf32", "tf32"))  # config key, provenance key of what ran


def run_config(metrics: dict) -> Dict[str, Any]:
    """A run's flat config with the settings that take effect only where the hardware has them as they
    ran, from its provenance (AS_RUN): amp=true on a CPU trained in float32 and shows as amp=false,
    compile=true on a CPU ran eager. Runs that did not record them keep the configured value."""
    config = dict(metrics.get("config") or {})
    ran = metrics.get("provenance") or {}
    for key, recorded in AS_RUN:
        if key in config and recorded in ran:
            config[key] = ran[recorded] is not None if key == "amp" else bool(ran[recorded])
    return config


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
STALLED_FRACTION = 0.9  # a final training loss above 90% of chance level ln(K): the loss never fell far from a uniform guess
CHANCE_MARGIN_SE = 3.0  # held-out accuracy within 3 binomial standard errors above 1/K: not shown to beat guessing


def chance_loss(runs: Iterable[dict]) -> float:
    """Cross-entropy of a uniform guess, ln(K), with K from the first run that recorded its class count
    (10 where none did)."""
    return math.log(next((m["data"]["num_classes"] for m in runs if (m.get("data") or {}).get("num_classes")), 10))


def chance_accuracy_bound(num_classes: int, n: int) -> float:
    """The highest held-out accuracy still within reach of guessing among `num_classes` (K) classes on `n` images:
    1/K + CHANCE_MARGIN_SE * sqrt((1/K)(1 - 1/K) / n).

    A guesser's number of correct answers is Binomial(n, 1/K); by the normal approximation to the binomial
    (de Moivre-Laplace) its accuracy has mean 1/K and standard error sqrt((1/K)(1 - 1/K) / n), so a guesser
    exceeds this bound with probability about 0.13% (one-sided, 3 standard errors).

    Raises ValueError for K < 2 or n < 1."""
    if num_classes < 2 or n < 1:
        raise ValueError(f"chance accuracy needs at least 2 classes and 1 image, got {num_classes} and {n}")
    p = 1 / num_classes
    return p + CHANCE_MARGIN_SE * math.sqrt(p * (1 - p) / n)


def stalled(loss: Optional[float], chance: float, acc: Optional[float] = None, n: Optional[int] = None) -> bool:
    """Whether a run never left chance level: its final training loss (nats, the mean over its last epoch)
    is above STALLED_FRACTION of `chance` = ln K (chance_loss) AND, where a held-out accuracy was recorded,
    that accuracy `acc` (a fraction, on `n` validation images) is not above chance_accuracy_bound(K, n).

    A high mean training loss alone is no proof: after one short epoch the mean still carries the first
    batches' losses although the model has learned. Without `acc` or `n` the loss rule alone decides.
    None (no epoch finished) is not stalled. K is recovered as round(exp(chance))."""
    if loss is None or loss <= STALLED_FRACTION * chance:
        return False
    if acc is None or not n:
        return True
    return acc <= chance_accuracy_bound(round(math.exp(chance)), n)


def held_out(metrics: dict) -> Dict[str, Any]:
    """A run's held-out evidence for `stalled`, as row columns: `final_val_acc` (the last epoch's validation
    accuracy, a fraction) and `val_images` (the number of validation images, metrics.json data.val); None
    where the run recorded none."""
    history = metrics.get("history") or []
    return {"final_val_acc": history[-1].get("val_acc") if history else None, "val_images": (metrics.get("data") or {}).get("val")}


def run_stalled(row: Dict[str, Any], chance: float) -> bool:
    """`stalled` for one run's row: its final_train_loss, final_val_acc and val_images (see held_out)."""
    return stalled(row.get("final_train_loss"), chance, row.get("final_val_acc"), row.get("val_images"))


def group_stalled(g: Group, chance: float) -> bool:
    """`stalled` for a group's means over its runs: mean final training loss and mean final validation accuracy,
    the margin taken for one run's validation images (the fewest among them): the mean over s seeds has a
    smaller standard error, so this margin is the conservative one."""
    images = [r["val_images"] for r in g.rows if r.get("val_images")]
    return stalled(g.stat("final_train_loss").mean, chance, g.stat("final_val_acc").mean, min(images) if images else None)


def stalled_rule(chance: float) -> str:
    """The words for the test `stalled` makes, with its numbers."""
    k = round(math.exp(chance))
    return (
        f"final training loss above {STALLED_FRACTION:.0%} of ln K = {chance:.3f}, and final validation accuracy within "
        f"{CHANCE_MARGIN_SE:g} binomial standard errors above 1/K = {1 / k:.3f}, where one was recorded"
    )


def stalled_evidence(row: Dict[str, Any]) -> str:
    """A stalled run's numbers: its final training loss and, where recorded, its final validation accuracy."""
    acc = row.get("final_val_acc")
    return f"loss {row['final_train_loss']:.3f}" + (f", validation accuracy {acc:.3f}" if acc is not None else "")


MIN_SEEDS = 3  # fewer values on a side: a comparison is indicative only, never "significant"
LARGE_EFFECT = 0.8  # Cohen's (1988) "large" standardised difference, the yardstick of "little power"


@dataclass(frozen=True)
class Comparison:
    """Welch's comparison of two samples a and b (one value per seed): the difference of means
    mean(a) - mean(b), its confidence interval and p-value, raw and Holm-adjusted.

    `p_holm` is `p` adjusted over a family of `family` tests (see `holm`); a lone comparison is a
    family of one (`p_holm == p`). `p`, the interval and `df` are None when a side has fewer than two
    values, or when every value on each side is the same (`no_spread`: Welch's t is 0/0, undefined);
    `difference` is None when a side has none.
    """

    n_a: int
    n_b: int
    difference: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    df: Optional[float]  # Welch-Satterthwaite degrees of freedom (None: no test, or no spread on either side)
    p: Optional[float]
    pooled_std: Optional[float]  # sqrt((s_a^2 + s_b^2) / 2), the scale of "little power"
    alpha: float = ALPHA
    p_holm: Optional[float] = None
    family: int = 1

    @property
    def n(self) -> int:
        """The smaller side: what a claim about the comparison rests on."""
        return min(self.n_a, self.n_b)

    @property
    def testable(self) -> bool:
        return self.p is not None

    @property
    def no_spread(self) -> bool:
        """At least two values per side and all values of each side equal: the difference is exact, but
        Welch's test is undefined, and the seeds (or runs) changed nothing in the result."""
        return self.n >= 2 and self.pooled_std == 0

    @property
    def adjusted(self) -> Optional[float]:
        return self.p if self.p_holm is None else self.p_holm

    @property
    def significant(self) -> bool:
        """Adjusted p below alpha with at least MIN_SEEDS values on each side."""
        return self.testable and self.n >= MIN_SEEDS and self.adjusted < self.alpha

    @property
    def indicative(self) -> bool:
        """Adjusted p below alpha, but with fewer than MIN_SEEDS values on a side: not a claim."""
        return self.testable and self.n < MIN_SEEDS and self.adjusted < self.alpha

    @property
    def little_power(self) -> bool:
        """Not significant although the difference is at least LARGE_EFFECT pooled standard deviations
        (Cohen's d >= 0.8, a "large" effect; Cohen 1988): the data show a gap that matters at this
        seed-to-seed spread, and only the number of seeds keeps the test from confirming it. A
        non-significant difference smaller than that is not called underpowered: its interval says
        how large a difference the data still allow."""
        return self.testable and self.adjusted >= self.alpha and self.difference != 0 and abs(self.difference) >= LARGE_EFFECT * self.pooled_std


def compare(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> Comparison:
    """Welch's two-sample comparison of mean(a) - mean(b) (Welch 1947): the difference, its
    (1 - alpha) confidence interval and the two-sided p-value of Welch's t-test.

    Args:
        a, b: one value per run (any unit; the difference is in the same unit).
        alpha: significance level; the interval is the (1 - alpha) one.

    Returns:
        A `Comparison` (a family of one; `holm` adjusts several). The interval is
        d ± t_{1-alpha/2, nu} * sqrt(s_a^2/n_a + s_b^2/n_b) with the Welch-Satterthwaite degrees of
        freedom nu = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))
        (Satterthwaite 1946; NIST/SEMATECH e-Handbook of Statistical Methods, 1.3.5.3), computed by
        scipy.stats.ttest_ind(equal_var=False). With no spread on either side (every value of a equal,
        every value of b equal) the standard error is 0 and Welch's t is undefined: the Comparison has the
        difference and no test (`no_spread`; p, interval and df None).
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    d = statistics.fmean(a) - statistics.fmean(b) if a and b else None
    if len(a) < 2 or len(b) < 2:
        return Comparison(len(a), len(b), d, None, None, None, None, None, alpha, None)
    sa, sb = statistics.stdev(a), statistics.stdev(b)
    pooled = math.sqrt((sa**2 + sb**2) / 2)
    if sa == 0 and sb == 0:
        return Comparison(len(a), len(b), d, None, None, None, None, 0.0, alpha, None)
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # near-identical values warn of precision loss; the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        result = ttest_ind(a, b, equal_var=False)
        interval = result.confidence_interval(1 - alpha)
    return Comparison(len(a), len(b), d, float(interval.low), float(interval.high), float(result.df), float(result.pvalue), pooled, alpha, None)


def holm_adjust(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values (Holm 1979, A simple sequentially rejective multiple test
    procedure, Scand. J. Statist. 6:65-70): with the m p-values sorted, p_(1) <= ... <= p_(m), the
    adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted value is
    below alpha keeps the family-wise error rate at alpha for any dependence between the tests."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def holm(comparisons: Sequence[Comparison]) -> List[Comparison]:
    """The comparisons of one family with Holm-adjusted p-values (`holm_adjust`), in the same order;
    the family is the testable ones, untestable comparisons come back unchanged."""
    testable = [i for i, c in enumerate(comparisons) if c.testable]
    adjusted = dict(zip(testable, holm_adjust([comparisons[i].p for i in testable])))
    return [replace(c, p_holm=adjusted[i], family=len(testable)) if i in adjusted else c for i, c in enumerate(comparisons)]


def counted(n: int, unit: str) -> str:
    """`n` with its unit, plural where n != 1: counted(1, "seed") == "1 seed", counted(3, "search") == "3 searches"."""
    return f"{n} {unit}" if n == 1 else f"{n} {unit}{'es' if unit.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


def describe(c: Comparison, unit: str = "seed", digits: int = 4) -> str:
    """How every report words a comparison (the difference is mean(a) - mean(b)):

    - significant (adjusted p < alpha, at least MIN_SEEDS per side):
      "significant with 3 seeds (difference +0.0123, 95% CI [+0.0050, +0.0196], Welch p = 0.004)";
    - adjusted p < alpha with fewer per side: "indicative only with 2 seeds (...)", never "significant";
    - otherwise "not significant with 3 seeds (...)", followed by "; the test has little power" where
      `Comparison.little_power` holds;
    - fewer than two values on a side: the difference and "not testable";
    - every value of each side equal (`Comparison.no_spread`): the difference, no test, and that the
      seeds gave identical results.

    With a family of several tests the p-value part reads "Welch p = 0.012, Holm-adjusted over 8 tests
    p = 0.096", the adjusted value decides, and the interval is marked as the test's own (unadjusted).
    `unit` names what one value is (seed, run, search); `digits` the decimals of the difference and the
    interval.
    """
    sides = counted(c.n_a, unit) if c.n_a == c.n_b else f"{c.n_a} and {counted(c.n_b, unit)}"
    if c.difference is None:
        return f"not testable with {sides}"
    difference = f"difference {c.difference:+.{digits}f}"
    if c.no_spread:
        return (
            f"{difference}; no test with {sides}: every {unit} gave the identical value on each side (zero variance "
            f"leaves Welch's test undefined; the seed may not be varying anything)"
        )
    if not c.testable:
        return f"{difference}; not testable with {sides} (a test needs at least two per side)"
    interval = f"{1 - c.alpha:.0%} CI" + (" (unadjusted)" if c.family > 1 else "")
    numbers = f"{difference}, {interval} [{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}], Welch p = {c.p:.2g}" + (
        f", Holm-adjusted over {c.family} tests p = {c.p_holm:.2g}" if c.family > 1 else ""
    )
    if c.significant:
        return f"significant with {sides} ({numbers})"
    if c.indicative:
        return f"indicative only with {sides} ({numbers}; fewer than {MIN_SEEDS} per side cannot establish significance)"
    return f"not significant with {sides} ({numbers})" + ("; the test has little power" if c.little_power else "")


def comparison_method(unit: str = "seed") -> str:
    """The report sentence that says how `describe` decides, for a report's setup."""
    return (
        f"Comparisons: the difference of means with its {1 - ALPHA:.0%} confidence interval and Welch's t-test "
        f"(unequal variances, Welch-Satterthwaite degrees of freedom); where the findings make several tests, "
        f"their p-values are Holm-adjusted over all of them (Holm 1979) and each sentence names how many. Significant: "
        f"adjusted p < {ALPHA} with at least {counted(MIN_SEEDS, unit)} per side; with fewer a comparison is indicative only. "
        f"Little power: not significant although the difference is at least {LARGE_EFFECT} pooled standard deviations "
        f"(Cohen's large effect)."
    )


def spearman(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Spearman's rho, or None with fewer than three points or a constant column (no correlation defined)."""
    if len(xs) < 3:
        return None
    from scipy.stats import spearmanr

    with warnings.catch_warnings():  # a constant column warns and gives nan: None below
        warnings.simplefilter("ignore")
        rho = spearmanr(xs, ys).statistic
    return None if rho != rho else float(rho)


def print_table(console, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """The summary table in the terminal (rich), first column left-aligned."""
    from rich.table import Table

    view = Table(title=title)
    for i, column in enumerate(header):  # folded where the terminal is too narrow: never cut off with "…"
        view.add_column(column, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        view.add_row(*[str(c) for c in row])
    console.print(view)


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
