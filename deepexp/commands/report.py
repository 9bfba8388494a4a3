"""`deepexp report path=DIR`: any pile of run directories turned into one comparison.

Finds every run (a folder with a metrics.json) below `path` (a multirun sweep,
experiment folders, runs copied from a cluster), groups runs that differ only by
seed (or by `group_by=[...]`), and writes `summary.csv` (one row per run),
`summary.md` (mean ± std per group), learning curves with bands, final-metric
bars with error bars, and a `report.md`, into this command's own output folder.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig

from .. import plots
from ..config import ReportConfig, hydra_override, validate
from ..errors import ConfigError
from ..experiments.runner import experiment_dir, hardware_line, study_console
from ..progress import plain_console
from ..rundir import EXECUTION_KEYS, RUN_METRICS, MetricsError, with_new_options
from ..report_doc import Figure, Report, figure_code, notebook_loader
from ..results import Group, chance_loss, compare, comparison_method, describe, find_runs, group, holm, leaders, load_runs, markdown_table
from ..results import run_config, show_value, run_stalled, stalled_evidence, stalled_rule, value_key, write_csv, write_text

# Config keys that never define a group, matched as prefixes like EXECUTION_KEYS: those change where or how a
# run executed, not what it computed; and the seed, whose runs are the replicates a group averages over.
NOT_A_FACTOR = EXECUTION_KEYS + ("seed",)
NOT_FACTOR_NAMES = ", ".join(k + "*" if k.endswith(".") else k for k in EXECUTION_KEYS)  # data.*, device.*, ...


def run_row(metrics: dict) -> Dict[str, Any]:
    """One flat row per run: its config keys (amp, compile, tf32 as they ran: results.run_config), its status and
    its final numbers; `clipped_fraction` is the
    mean over epochs of the fraction of updates whose gradient norm grad_clip cut (None without clipping)."""
    history = metrics.get("history") or []
    last, test = (history[-1] if history else {}), (metrics.get("test") or {})
    # (the epochs of a run take the same number of steps, but for batches skipped by on_nan=skip_batch)
    clipped = [h["clipped_fraction"] for h in history if "clipped_fraction" in h]
    return {
        **run_config(metrics),
        "status": metrics.get("status"),
        "test_acc": test.get("acc"),
        "test_loss": test.get("loss"),
        "best_val_acc": metrics.get("best_val_acc"),
        "final_val_acc": last.get("val_acc"),
        "val_images": (metrics.get("data") or {}).get("val"),
        "final_val_loss": last.get("val_loss"),
        "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
        "seconds": metrics.get("seconds"),
        "params": metrics.get("params"),
        "epochs_done": metrics.get("epochs_done"),
        "clipped_fraction": sum(clipped) / len(clipped) if clipped else None,
        "run_dir": metrics["run_dir"],
    }


def varying_keys(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Config keys whose value differs between runs (the factors of the comparison), NOT_A_FACTOR excluded."""
    config_keys = [
        k
        for k in dict.fromkeys(itertools.chain.from_iterable(rows))
        if k not in RUN_METRICS and k not in ("status", "val_images", "run_dir") and not k.startswith(NOT_A_FACTOR)
    ]
    return [k for k in config_keys if len({value_key(r.get(k)) for r in rows}) > 1]


def label(g: Group) -> str:
    """The group's config values as overrides (`optim=adam, optim.betas=[0.5,0.9]`), or "all runs"."""
    return ", ".join(f"{k}={show_value(v)}" for k, v in g.key.items()) or "all runs"


def runs_below(path: str, out: Optional[Path] = None) -> Tuple[List[dict], List[MetricsError]]:
    """The runs (metrics.json contents, each with its `run_dir`) below the folder `path`, leaving out
    those in this report's own folder `out`, at least one; and, apart, why each unreadable metrics.json
    could not be read (results.load_runs).

    Raises:
        ConfigError: `path` is not a folder, or no run lies below it. The CLI calls this before Hydra
            makes the report's folder, so that a mistyped path leaves nothing behind.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"{hydra_override('path', path)}: no such folder; give the folder that holds the run directories "
            f"(a sweep's: outputs/train/multirun/DATE/TIME; a study's: outputs/<study>/DATE/TIME)"
        )
    inside = lambda p: out is not None and (out in p.parents or p == out)
    runs, unreadable = load_runs(p for p in find_runs(root) if not inside(p))
    if not runs:
        found = (
            f"; the {len(unreadable)} metrics.json below it cannot be read, first {unreadable[0].path}: {unreadable[0].reason}" if unreadable else ""
        )
        raise ConfigError(f"{hydra_override('path', path)}: no run directories (folders with a readable metrics.json) below it{found}")
    return runs, unreadable


def grouping(study: ReportConfig, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The config keys the report groups `rows` (run_row) by: `group_by`, or every key that varies.

    Raises:
        ConfigError: a `group_by` key that no run has.
    """
    by = list(study.group_by) if study.group_by is not None else varying_keys(rows)
    unknown = [k for k in by if all(k not in r for r in rows)]
    if unknown:
        raise ConfigError(
            f"{hydra_override('group_by', unknown)}: no run has these config keys; choose from {', '.join(varying_keys(rows)) or 'seed only'}"
        )
    return by


def check_command(study: ReportConfig, out: Optional[Path]) -> None:
    """What `deepexp report` refuses before anything is written, beyond its validated config `study`: a
    `path` without runs (runs_below) and a `group_by` key no run below it has (grouping); `out` is the
    report's own folder (None: not known yet), whose runs are left out. Raises ConfigError."""
    runs, _ = runs_below(study.path, out)
    grouping(study, with_new_options([run_row(m) for m in runs]))


def ranked_groups(rows: List[Dict[str, Any]], by: List[str], metric: str) -> List[Group]:
    """`rows` (run_row) grouped by `by`, one row per seed in each group (one_per_seed), best mean `metric`
    first (lower_is_better), groups without it last."""
    factors = varying_keys(rows)  # runs that differ in one of these are different experiments, whatever `by` pools
    groups = [Group(g.key, one_per_seed(g.rows, metric, factors)) for g in group(rows, by)]
    sign = 1 if lower_is_better(metric) else -1  # best first: the lowest loss, the highest accuracy
    groups.sort(key=lambda g: sign * g.stat(metric).mean if g.stat(metric).n else float("inf"))
    return groups


def report_command(cfg: DictConfig) -> int:
    study: ReportConfig = validate(cfg)
    root = Path(study.path).expanduser()
    out, console = experiment_dir(), study_console()
    runs, unreadable = runs_below(study.path, out)
    warnings = plain_console(stderr=True)
    for problem in unreadable:
        warnings.print(f"warning: skipped {problem.path}: {problem.reason}", soft_wrap=True)
    rows = with_new_options([run_row(m) for m in runs])  # runs written before an option existed ran at its default
    by = grouping(study, rows)
    metric = study.metric
    groups = ranked_groups(rows, by, metric)
    write_csv(out / "summary.csv", rows)
    # runs and seeds: those the statistics are computed from; the others are named under the table
    header = [*(by or ["group"]), "runs", "seeds", f"{metric} (mean ± std)", "95% CI ±", "diverged"]
    table_rows = [
        [
            *(map(show_value, g.key.values()) if by else ["all runs"]),
            len(g.scored(metric)),
            ",".join(str(r.get("seed")) for r in g.scored(metric)) or "-",
            g.stat(metric).fmt(4),
            f"{g.stat(metric).ci95:.4f}" if g.stat(metric).ci95 is not None else "-",
            g.count(lambda r: r["status"] == "diverged"),
        ]
        for g in groups
    ]
    table = markdown_table(header, table_rows) + repeated_seeds(groups, metric) + left_out(groups, metric)
    epochs = sorted({r["epochs_done"] for r in rows if r["epochs_done"] is not None})
    datasets = sorted({str(r.get("dataset")) for r in rows})
    subtitle = f"{', '.join(datasets)}, {'/'.join(map(str, epochs))} epochs, {len(rows)} runs in {len(groups)} groups"
    write_text(
        out / "summary.md",
        f"# Runs below {root}: {subtitle}\n\nGrouped by {by or 'nothing'}; {metric}: mean ± std over the runs of each group.\n\n{table}\n",
    )
    figures = write_plots(runs, by, metric, out, subtitle)
    setup = [
        f"Runs: {len(rows)} run directories below `{root}` ({sum(r['status'] == 'completed' for r in rows)} completed, "
        f"{sum(r['status'] == 'diverged' for r in rows)} diverged, {sum(r['status'] not in ('completed', 'diverged') for r in rows)} "
        f"other); datasets {', '.join(datasets)}; epochs {epochs}."
        + (
            f" Skipped {len(unreadable)} unreadable metrics.json: " + "; ".join(f"`{p.path}` ({p.reason})" for p in unreadable) + "."
            if unreadable
            else ""
        ),
        f"Grouped by {by or 'nothing (every run in one group)'} ({'chosen' if study.group_by is not None else 'every config key that varies, except the seed and the keys that only say how a run executed: ' + NOT_FACTOR_NAMES}); "
        f"each group's statistics are over its runs (mean, sample std, Student-t 95% CI).",
        comparison_method("run"),
        f"Hardware: {hardware_line(runs)}.",
    ]
    # the run folders as summary.csv names them: relative ones are relative to where this command ran
    # relative to the report's folder, so that the tree moves as a whole (os.path.relpath)
    load = notebook_loader(
        "deepexp.commands.report", base=Path(os.path.relpath(Path.cwd(), out)), subtitle=subtitle, extra=f"by, metric = {by!r}, {metric!r}"
    )
    report = Report(
        "Report", setup, table, findings(groups, metric, chance_loss(runs)), figures, closing="Every run's own numbers: `summary.csv`.", load=load
    )
    report.write(out, console, f"{metric} by {', '.join(by) or 'run'}: {subtitle}", header, table_rows)
    return 0


def one_per_seed(rows: List[Dict[str, Any]], metric: str, factors: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """A group's rows with one row per seed and setting of `factors` (the keys that vary between the runs,
    varying_keys). Runs that share both differ only in keys that cannot change a result (NOT_A_FACTOR:
    device, monitor, ...), so they are one replicate, not several: counted as many, their seed would shrink
    the standard deviation and make a difference "significant" that more seeds never tested. The first of
    them (in the given order) stands for all, with the mean of their finite `metric` values and the others'
    folders under "repeats". Rows without a seed are kept as they are; runs a chosen `group_by` pools over
    other factors (lr 0.1 and 0.05 of seed 0) stay apart."""
    by_seed: Dict[Any, List[Dict[str, Any]]] = {}
    order: List[Any] = []
    for i, r in enumerate(rows):
        key = ("seed", r["seed"], *(value_key(r.get(k)) for k in factors)) if r.get("seed") is not None else ("row", i)
        if key not in by_seed:
            order.append(key)
        by_seed.setdefault(key, []).append(r)
    out = []
    for key in order:
        first, *others = by_seed[key]
        if not others:
            out.append(first)
            continue
        values = [float(r[metric]) for r in (first, *others) if r.get(metric) is not None and math.isfinite(float(r[metric]))]
        out.append({**first, **({metric: sum(values) / len(values)} if values else {}), "repeats": [r["run_dir"] for r in others]})
    return out


def repeated_seeds(groups: List[Group], metric: str) -> str:
    """The line under the table that names the runs that repeat a seed of their group (one_per_seed), or ""."""
    repeats = [(r["run_dir"], r["repeats"]) for g in groups for r in g.rows if r.get("repeats")]
    if not repeats:
        return ""
    return (
        f"\n\nRuns that repeat a seed of their group (they differ only in settings that cannot change a result, such as "
        f"device.* or monitor.*): each seed counts once, with the mean of its runs' {metric}: "
        + "; ".join(f"`{first}` with {', '.join(f'`{d}`' for d in others)}" for first, others in repeats)
        + "."
    )


def left_out(groups: List[Group], metric: str) -> str:
    """The line under the table that names each run without a finite `metric` and why (its status: still
    running, stopped before its test, or a NaN result), or "" where every run has one."""
    missing = [r for g in groups for r in g.rows if r not in g.scored(metric)]
    if not missing:
        return ""
    return (
        f"\n\nLeft out of the runs, seeds and statistics above ({len(missing)} without a finite {metric}): "
        + "; ".join(
            f"`{r['run_dir']}` (status {r.get('status')}, {metric} {'NaN or not recorded' if r.get(metric) is None else r[metric]})" for r in missing
        )
        + "."
    )


def lower_is_better(metric: str) -> bool:
    """Whether a smaller `metric` is the better one: the losses (test_loss, final_val_loss, ...)."""
    return "loss" in metric


def findings(groups: List[Group], metric: str, chance: float) -> List[str]:
    """The best group (groups come sorted by mean `metric`, best first: lower_is_better) against the runner-up, its Welch
    test Holm-adjusted over every pair of groups (the best is picked by these same data), and diverged
    runs. Runs whose final training loss never left chance level (`chance` = ln K, results.stalled) are
    named first; they stay in their groups, whose setting may be what stalled them."""
    lines = []
    stuck = [f"{r['run_dir']}: {stalled_evidence(r)}" for g in groups for r in g.rows if run_stalled(r, chance)]
    if stuck:
        lines.append(f"Runs that never left chance level ({stalled_rule(chance)}), counted in their groups: {'; '.join(stuck)}.")
    scored = [g for g in groups if g.stat(metric).n]
    if not scored:
        return lines + [f"No run has {metric}."]
    if len(scored) == 1:  # nothing to rank or compare
        g = scored[0]
        return lines + [f"Mean {metric} of {label(g)}: {g.stat(metric).fmt(4)} ({g.stat(metric).n} runs); one group, so nothing to compare."]
    best, tied = scored[0], leaders(scored, metric, lowest=lower_is_better(metric))
    extreme = "Lowest" if lower_is_better(metric) else "Highest"
    if len(tied) > 1:
        lines.append(
            f"{extreme} mean {metric}: a tie between {' and '.join(label(g) for g in tied)}, each "
            f"{best.stat(metric).mean:.4f} ({'; '.join(f'{label(g)}: {g.stat(metric).fmt(4)}, {g.stat(metric).n} runs' for g in tied)})."
        )
    else:
        lines.append(f"{extreme} mean {metric}: {label(best)} with {best.stat(metric).fmt(4)} ({best.stat(metric).n} runs).")
    if len(scored) > 1:
        second = scored[1]
        pairs = list(itertools.combinations(range(len(scored)), 2))
        tests = holm([compare(scored[i].stat(metric).values, scored[j].stat(metric).values) for i, j in pairs])
        lines.append(f"Against the runner-up, {label(second)} ({second.stat(metric).fmt(4)}): {describe(tests[pairs.index((0, 1))], 'run')}.")
    diverged = [
        f"{label(g)} ({g.count(lambda r: r['status'] == 'diverged')}/{len(g.rows)})" for g in groups if g.count(lambda r: r["status"] == "diverged")
    ]
    if diverged:
        lines.append(f"Diverged runs: {'; '.join(diverged)}.")
    return lines


def group_rows(runs: List[dict]) -> List[Dict[str, Any]]:
    """The runs' rows (run_row) as the report groups them: options added since a run was written at their default."""
    return with_new_options([run_row(m) for m in runs])


def learning_curves_figure(runs: List[dict], by: List[str], metric: str, subtitle: str):
    """Training loss and validation accuracy against epoch, mean ± std over the runs of each group (`by`,
    ordered by `metric` as the table is); `runs` are metrics.json contents with their "run_dir". Returns the
    matplotlib Figure."""
    groups = ranked_groups(group_rows(runs), by, metric)
    histories = {m["run_dir"]: m.get("history") or [] for m in runs}
    fig, axes = plots.panels(2)
    for g in groups:
        curves = [histories[r["run_dir"]] for r in g.rows if histories[r["run_dir"]]]
        length = min((len(c) for c in curves), default=0)  # a band needs runs of equal length
        if not length:
            continue
        epochs = list(range(1, length + 1))
        plots.band(axes[0], epochs, [[h["train_loss"] for h in c[:length]] for c in curves], label(g))
        plots.band(axes[1], epochs, [[h["val_acc"] for h in c[:length]] for c in curves], label(g))
    for ax, ylabel in zip(axes, ("training loss", "validation accuracy")):
        ax.set(xlabel="epoch", ylabel=ylabel, title=plots.literal(f"{ylabel} (mean ± std over runs)\n{subtitle}"))
        ax.grid(alpha=0.3)
    if len(groups) <= 12:
        plots.legend(axes[1], fontsize=7)
    return fig


def metric_figure(runs: List[dict], by: List[str], metric: str, subtitle: str):
    """Bars of each group's mean `metric` ± sample std over its runs (groups with the metric, best first);
    None where no run has it. Returns the matplotlib Figure."""
    scored = [g for g in ranked_groups(group_rows(runs), by, metric) if g.stat(metric).n]
    if not scored:
        return None
    fig, (ax,) = plots.panels(1, width=max(5.5, 0.6 * len(scored) + 2))
    plots.bars(ax, [label(g) for g in scored], [g.stat(metric).mean for g in scored], [g.stat(metric).std for g in scored], f"{metric} (mean ± std)")
    ax.set_title(plots.literal(f"{metric} by group\n{subtitle}"), fontsize=9)
    return fig


def write_plots(runs: List[dict], by: List[str], metric: str, out: Path, subtitle: str) -> List[Figure]:
    """The learning curves and the bars of `metric`, saved under out/plots/."""
    figures = [
        Figure(
            "learning_curves",
            plots.save(learning_curves_figure(runs, by, metric, subtitle), out / "plots" / "learning_curves.png"),
            figure_code("report.learning_curves_figure(runs, by, metric, subtitle)"),
        )
    ]
    fig = metric_figure(runs, by, metric, subtitle)
    if fig is not None:
        figures.append(
            Figure(metric, plots.save(fig, out / "plots" / f"{metric}.png"), figure_code("report.metric_figure(runs, by, metric, subtitle)"))
        )
    return figures
