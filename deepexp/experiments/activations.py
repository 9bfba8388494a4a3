"""`deepexp activations`: which activation trains a deep MLP best, and why.

Trains a deep MLP with every activation of the study for several seeds through
the ordinary trainer (one run directory each), then turns the runs' metrics.json
files into summary tables, plots and a report whose every sentence is computed
from the runs: convergence speed, how fast the loss still falls and how much it
scatters around that trend, accuracy (Welch comparisons, Holm-adjusted over every
pair of activations), the lecture's theory against the measurements, and a
per-activation diagnosis (vanishing gradients, saturation, dying units, a run at
chance level with healthy gradients, or healthy).
"""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig
from rich.console import Console

from .. import plots
from ..config import ActivationsConfig
from ..report_doc import Figure, Report, Section, figure_code, notebook_loader
from ..results import MIN_SEEDS, Comparison, Group, chance_loss, compare, comparison_method, describe, group, holm, markdown_table, spearman
from ..results import chance_accuracy_bound, group_stalled, held_out, write_csv, write_text
from .runner import RunSpec, base_overrides, check_study, hardware_line, overrides_phrase, preset_note, provenance_values, recorded_values
from .runner import run_study, train_overrides, training_description

MAIN = "main"
VANISHING_LOG10 = -3.0  # first-layer gradient 1000x below the last layer's
SATURATED_PCT = 20.0
DYING_PCT = 10.0
SIGMOID_MAX_SLOPE = 0.25  # sigma'(x) = sigma(x) (1 - sigma(x)) <= 1/4, at x = 0


def activations_command(cfg: DictConfig) -> int:
    return run_study(cfg, "activations", plan, write_study)


def check_command(study: ActivationsConfig, exp_dir: Optional[Path]) -> None:
    """What `deepexp activations` refuses, checked before anything is written (runner.check_study)."""
    check_study(study, plan, exp_dir)


# --- the runs --------------------------------------------------------------------------


# The study options behind the train keys it sets under another name (overrides=[...] may not set them).
OWN_KEYS = {
    "act": "acts=[...]",
    "seed": "seeds=N",
    "model": "depth=, width= and norm=",
    "model.depth": "depth=...",
    "model.width": "width=...",
    "model.norm": "norm=...",
}
# What the study reads from every run at the trainer's setting (overrides=[...] may not change it either).
NEEDS = {
    "eval_test": "the tables and the report compare every run's test accuracy",
    "monitor.enabled": "the diagnosis and the figures read every run's per-layer gradients and dead units",
}


def plan(study: ActivationsConfig) -> List[RunSpec]:
    """The main sweep (act x seed) and one extra sweep per ablation, each changing one thing."""
    base = base_overrides(study, {"model": "mlp", "model.depth": study.depth, "model.width": study.width, "model.norm": study.norm})
    variants: List[Tuple[str, Dict[str, Any]]] = [(MAIN, {})]
    if "init" in study.ablations:
        other = "default" if study.init.name != "default" else "auto"
        variants.append((f"init={other}", {"init": other}))
    if "norm" in study.ablations:
        other = "batch" if study.norm == "none" else "none"
        variants.append((f"norm={other}", {"model.norm": other}))
    if "depth" in study.ablations:
        variants += [(f"depth={d}", {"model.depth": d}) for d in study.ablation_depths if d != study.depth]
    specs = []
    for variant, changes in variants:
        for act in study.acts:
            for seed in range(study.seeds):
                values = {**base, **changes, "act": act, "seed": seed}
                overrides = train_overrides(study, values, OWN_KEYS, NEEDS)
                folder = f"{variant.replace('=', '-')}/{act}-s{seed}"
                specs.append(RunSpec(folder, {"variant": variant, "act": act, "seed": seed}, overrides))
    return specs


def run_row(spec: RunSpec, m: dict, study: ActivationsConfig) -> Dict[str, Any]:
    """The numbers of one run that the tables and the report use."""
    history = m["history"]
    reached = next((h["epoch"] for h in history if h["val_acc"] >= study.threshold), None)
    last = history[-1] if history else {}
    first = history[0] if history else {}
    losses = [h["train_loss"] for h in history[-study.stability_epochs :]] if m["status"] == "completed" else []
    slope, spread = loss_trend(losses)
    layers = last.get("layers") or {}

    def log_ratio(h: dict) -> Optional[float]:
        a, b = h.get("grad_norm_first"), h.get("grad_norm_last")
        return math.log10(max(a, 1e-45) / b) if a is not None and b else None

    return {
        **spec.labels,
        "status": m["status"],
        "test_acc": (m.get("test") or {}).get("acc"),
        "best_val_acc": m.get("best_val_acc"),
        "final_train_loss": last.get("train_loss"),
        **held_out(m),
        "epochs_to_threshold": reached,
        "seconds_to_threshold": round(sum(h["seconds"] for h in history[:reached]), 3) if reached else None,
        "loss_slope": slope,
        "loss_detrended_std": spread,
        "grad_log10_ratio_first_epoch": log_ratio(first),
        "grad_log10_ratio_final": log_ratio(last),
        "dead_pct": 100 * statistics.fmean(layers["dead"]) if layers.get("dead") else None,
        "dead_pct_by_layer": [100 * v for v in layers["dead"]] if layers.get("dead") else None,
        "saturation_pct": 100 * statistics.fmean(layers["saturation"]) if layers.get("saturation") else None,
        "diverged_at_step": m.get("diverged_at_step"),
        "seconds": m.get("seconds"),
        "params": m.get("params"),
        "run_dir": str(Path("runs") / spec.name),
    }


def loss_trend(losses: List[float]) -> Tuple[Optional[float], Optional[float]]:
    """(slope, spread) of training losses of consecutive epochs: the least-squares slope in loss units
    (nats) per epoch, how fast the loss still falls, and the standard deviation of the residuals around
    that line, sqrt(sum r^2 / (n - 2)), how much the loss scatters around its trend: the stability.
    The slope needs two epochs, the spread three (a line through two points leaves no residual);
    None where there are too few."""
    if len(losses) < 2:
        return None, None
    epochs = list(range(len(losses)))
    slope, intercept = statistics.linear_regression(epochs, losses)
    if len(losses) < 3:
        return slope, None
    residuals = [y - (intercept + slope * x) for x, y in zip(epochs, losses)]
    return slope, math.sqrt(sum(r * r for r in residuals) / (len(losses) - 2))


# --- findings, each computed from the runs -------------------------------------------------


def at_chance_words(g: Group, chance: float) -> str:
    """Why a group counts as at chance level (results.group_stalled), in the numbers it was tested on: its mean
    final training loss against ln K and, where recorded, its mean final validation accuracy against the
    chance bound; a loss still falling over the last epochs is said, never hidden behind the word "stalled"."""
    loss, acc, slope = g.stat("final_train_loss").mean, g.stat("final_val_acc").mean, g.stat("loss_slope").mean
    images = [r["val_images"] for r in g.rows if r.get("val_images")]
    text = f"the run did not leave chance level: final training loss {loss:.3f} (ln K = {chance:.3f})"
    if acc is not None and images:
        bound = chance_accuracy_bound(round(math.exp(chance)), min(images))
        text += f" and validation accuracy {acc:.3f}, not above the chance bound {bound:.3f}"
    if slope is not None and slope < 0:
        text += f", though the loss was still falling ({slope:.3f} per epoch)"
    return text


def diagnose(g: Group, chance: float) -> Tuple[str, str]:
    """(label, sentence) for one activation, from its runs' gradients, units, losses and validation accuracy
    (at chance level: results.group_stalled, over the means of its runs)."""
    n = len(g.rows)
    diverged = g.count(lambda r: r["status"] == "diverged")
    ratio = g.stat("grad_log10_ratio_final").mean
    loss, acc = g.stat("final_train_loss").mean, g.stat("final_val_acc").mean
    dead, sat = g.stat("dead_pct").mean, g.stat("saturation_pct").mean
    stuck = group_stalled(g, chance)
    found = []
    if diverged:
        found.append(("diverged", f"diverged in {diverged} of {n} runs (non-finite loss)"))
    if ratio is not None and ratio < VANISHING_LOG10:
        if stuck:
            found.append(
                (
                    "vanishing gradient",
                    f"vanishing gradient: first-layer gradients are 10^{ratio:.1f} of the last layer's and {at_chance_words(g, chance)}",
                )
            )
        else:
            found.append(
                (
                    "vanishing gradient",
                    f"vanishing gradient: first-layer gradients are 10^{ratio:.1f} of the last layer's, yet "
                    + (f"the loss fell to {loss:.3f}" if acc is None else f"validation accuracy reached {acc:.3f} (training loss {loss:.3f})")
                    + ": the upper layers learned on nearly frozen lower layers",
                )
            )
    elif stuck and ratio is not None:
        found.append(
            (
                "at chance level, healthy gradients",
                f"{at_chance_words(g, chance)}, while gradients stayed within 10^{ratio:.1f} across depth: a "
                f"learning-rate, capacity or training-budget problem, not a vanishing gradient",
            )
        )
    if sat is not None and sat > SATURATED_PCT:
        found.append(("saturation", f"saturation: {sat:.1f}% of outputs lie within 1% of a bound"))
    if dead is not None and dead > DYING_PCT:
        found.append(("dying units", f"dying units: {dead:.1f}% of units pass no gradient on any probe image"))
    if not found:
        return "healthy", (
            f"healthy: gradients within 10^{ratio:.1f} from first to last layer, {dead or 0:.1f}% dead units, training loss down to {loss:.3f}"
        )
    return ", ".join(label for label, _ in found), "; ".join(text for _, text in found)


def accuracy_comparisons(groups: List[Group]) -> Tuple[List[Group], Dict[str, Comparison]]:
    """Groups by mean test accuracy, best first, and the best one's comparison with each other activation
    (mean(best) - mean(other), results.compare), Holm-adjusted over all k(k-1)/2 pairs of the k
    activations: the best is picked by these same data, so the family is every pair, not only the best's."""
    ranked = sorted(groups, key=lambda g: g.stat("test_acc").mean, reverse=True)
    pairs = list(itertools.combinations(range(len(ranked)), 2))
    tests = holm([compare(ranked[i].stat("test_acc").values, ranked[j].stat("test_acc").values) for i, j in pairs])
    return ranked, {ranked[j].key["act"]: c for (i, j), c in zip(pairs, tests) if i == 0}


def findings(groups: List[Group], chance: float, study: ActivationsConfig) -> List[str]:
    """The report's findings: convergence, the loss's late trend and stability, accuracy and the theory lines."""
    lines = []
    done = [g for g in groups if g.stat("test_acc").n]
    if not done:
        return ["No run completed, so nothing can be ranked."]
    # fastest convergence: every completed seed reached the threshold; fewest epochs. Equal epochs are a tie:
    # wall-clock seconds on a shared machine measure the machine's load as much as the activation.
    reached = [g for g in done if g.stat("epochs_to_threshold").n == g.stat("test_acc").n]
    if reached:
        epochs = lambda g: g.stat("epochs_to_threshold").mean
        fastest = [g for g in reached if math.isclose(epochs(g), min(map(epochs, reached)))]
        others = ", ".join(f"{g.key['act']} {epochs(g):.1f}" for g in sorted(reached, key=epochs) if g not in fastest)
        if len(fastest) == 1:
            top = fastest[0]
            lead = (
                f"**Fastest convergence: {top.key['act']}**, reaching {study.threshold:.0%} validation accuracy after "
                f"{top.stat('epochs_to_threshold').fmt(1)} epochs ({top.stat('seconds_to_threshold').fmt(1)} s of training)"
            )
        else:
            lead = (
                f"**Fastest convergence: a tie between {', '.join(g.key['act'] for g in fastest)}**, each reaching "
                f"{study.threshold:.0%} validation accuracy after {epochs(fastest[0]):.1f} epochs on average (training "
                f"seconds on a shared machine do not break a tie)"
            )
        lines.append(lead + (f"; others (mean epochs): {others}." if others else "."))
        never = [g.key["act"] for g in done if g not in reached]
        if never:
            lines.append(f"Did not reach {study.threshold:.0%} validation accuracy in every seed within {study.epochs} epochs: {', '.join(never)}.")
    else:
        lines.append(f"No activation reached {study.threshold:.0%} validation accuracy in every seed within {study.epochs} epochs.")
    # A loss that never moved is "stable" only in the sense that nothing happened: rank those that learned.
    learned = [g for g in done if not group_stalled(g, chance)]
    steady = [g for g in learned if g.stat("loss_detrended_std").n]
    n = study.stability_epochs
    trend = min(n, study.epochs)
    if steady:
        best = min(steady, key=lambda g: g.stat("loss_detrended_std").mean)
        worst = max(steady, key=lambda g: g.stat("loss_detrended_std").mean)
        measure = f"std of the training loss around its least-squares linear trend over the last {trend} epochs"
        lines.append(
            f"**Most stable: {best.key['act']}** among the activations that learned ({measure} "
            f"{best.stat('loss_detrended_std').fmt(4, sci=True)}; least stable: {worst.key['act']}, "
            f"{worst.stat('loss_detrended_std').fmt(4, sci=True)})."
            if len(steady) > 1
            else f"Stability of {best.key['act']}, the only activation that learned: {measure} {best.stat('loss_detrended_std').fmt(4, sci=True)}."
        )
    elif learned and trend < 3:
        lines.append(
            f"Stability (the training loss's scatter around its trend) needs at least 3 epochs: this study fits the "
            f"trend over the last {trend} (stability_epochs={n}, epochs={study.epochs})."
        )
    falling = [g for g in learned if g.stat("loss_slope").n]
    if falling:
        steep = min(falling, key=lambda g: g.stat("loss_slope").mean)
        flat = max(falling, key=lambda g: g.stat("loss_slope").mean)
        measure = f"least-squares slope over the last {trend} epochs"
        lines.append(
            f"**Training loss still falling fastest: {steep.key['act']}** ({measure} {steep.stat('loss_slope').fmt(4)} "
            f"per epoch; slowest: {flat.key['act']}, {flat.stat('loss_slope').fmt(4)})."
            if len(falling) > 1
            else f"Training loss of {steep.key['act']}, the only activation that learned: {measure} {steep.stat('loss_slope').fmt(4)} per epoch."
        )
    ranked, against_best = accuracy_comparisons(done)
    top = ranked[0]
    sentence = f"**Best test accuracy: {top.key['act']}** ({top.stat('test_acc').fmt(4)})"
    if len(ranked) > 1:
        second = ranked[1]
        sentence += f"; against the runner-up {second.key['act']} ({second.stat('test_acc').fmt(4)}): {describe(against_best[second.key['act']])}"
    lines.append(sentence + ".")
    # the best against each of the others, in the words of every comparison (results.describe), then which of them
    # the data do not show to be less accurate
    lines += [f"{top.key['act']} against {g.key['act']} ({g.stat('test_acc').fmt(4)}): {describe(against_best[g.key['act']])}." for g in ranked[2:]]
    unshown = [g.key["act"] for g in ranked[1:] if not against_best[g.key["act"]].significant]
    if unshown:
        few = min(g.stat("test_acc").n for g in ranked) < MIN_SEEDS
        lines.append(
            f"Not shown to be less accurate than {top.key['act']}: {', '.join(unshown)}"
            + (f" (with fewer than {MIN_SEEDS} seeds per side no comparison can show a difference)." if few else ".")
        )
    diverged = [
        f"{g.key['act']} ({g.count(lambda r: r['status'] == 'diverged')}/{len(g.rows)})"
        for g in groups
        if g.count(lambda r: r["status"] == "diverged")
    ]
    lines.append(f"Diverged runs: {', '.join(diverged)}." if diverged else "No run diverged.")
    return lines + theory(groups, study)


def theory(groups: List[Group], study: ActivationsConfig) -> List[str]:
    """The lecture's reasoning against the measurements, each sentence only where its activation ran
    and the probe measured it: sigmoid's bounded slope against its gradient ratio over the study's depth,
    and ReLU's dead units by layer."""
    lines = []
    by_act = {g.key["act"]: g for g in groups}
    sigmoid = by_act.get("sigmoid")
    if sigmoid and sigmoid.stat("grad_log10_ratio_final").n:
        bound = study.depth * math.log10(SIGMOID_MAX_SLOPE)
        first, final = sigmoid.stat("grad_log10_ratio_first_epoch").mean, sigmoid.stat("grad_log10_ratio_final").mean
        measured = (
            f"10^{final:.1f} after its one epoch"
            if study.epochs == 1 or first is None
            else f"10^{first:.1f} after epoch 1 and 10^{final:.1f} after epoch {study.epochs}"
        )
        lines.append(
            f"**Theory, sigmoid**: its slope σ'(x) = σ(x)(1 − σ(x)) is at most 1/4, so the error signal reaching the first "
            f"of {study.depth} hidden layers has been multiplied by {study.depth} such slopes: at most "
            f"0.25^{study.depth} ≈ 10^{bound:.1f} from the activation alone (the weights and the layers' inputs scale "
            f"the gradient further); measured first-layer gradient against the classifier's: {measured} (mean over seeds)."
        )
    relu = by_act.get("relu")
    layers = [r["dead_pct_by_layer"] for r in relu.rows if r.get("dead_pct_by_layer")] if relu else []
    if layers and len({len(v) for v in layers}) == 1 and len(layers[0]) >= 3:
        dead = [statistics.fmean(v) for v in zip(*layers)]
        if not any(dead):
            lines.append(
                f"**Theory, ReLU**: a unit whose input is negative on every example passes no gradient and cannot "
                f"recover, and dead units become likelier with depth (Lu et al. 2019); here no relu unit is dead in any "
                f"of the {len(dead)} hidden layers."
            )
        else:
            rho = spearman(list(range(1, len(dead) + 1)), dead)
            lines.append(
                f"**Theory, ReLU**: a unit whose input is negative on every example passes no gradient and cannot "
                f"recover, and dead units become likelier with depth (Lu et al. 2019); measured dead units of relu by "
                f"hidden layer (1 = input side, mean over seeds): {', '.join(f'{v:.1f}' for v in dead)}% "
                f"(Spearman rho between layer and dead share {'-' if rho is None else f'{rho:+.2f}'})."
            )
    return lines


def recommendations(groups: List[Group], diagnoses: Dict[str, Tuple[str, str]], chance: float) -> List[str]:
    """The activations to use (the most accurate, and those not shown less accurate that left chance level:
    results.group_stalled), those of them whose diagnosis names a problem, and the others to avoid."""
    done = [g for g in groups if g.stat("test_acc").n]
    if not done:
        return []
    ranked, against_best = accuracy_comparisons(done)
    top = ranked[0]
    unshown = [g.key["act"] for g in ranked[1:] if not against_best[g.key["act"]].significant and not group_stalled(g, chance)]
    healthy = [g.key["act"] for g in ranked if diagnoses[g.key["act"]][0] == "healthy"]
    # an activation is either recommended (the best, or not shown less accurate) or to be avoided, never both:
    # a recommended one with a problem in its diagnosis is recommended with that caution
    recommended = [top.key["act"]] + unshown
    label = lambda act: f"{act} ({diagnoses[act][0]})"
    cautioned = [label(act) for act in recommended if diagnoses[act][0] != "healthy"]
    troubled = [label(g.key["act"]) for g in groups if g.key["act"] not in recommended and diagnoses[g.key["act"]][0] != "healthy"]
    out = [
        f"For this depth and budget, use {top.key['act']}"
        + (f" or any of {', '.join(unshown)} (not shown to be less accurate with these seeds)" if unshown else "")
        + "."
    ]
    if cautioned:
        out.append(f"Of those, check the cause named in the diagnosis before relying on it: {', '.join(cautioned)}.")
    if troubled:
        out.append(f"Avoid, or fix the cause named in the diagnosis first: {', '.join(troubled)}.")
    if healthy:
        out.append(f"Healthy by every measure here: {', '.join(healthy)}.")
    return out


# --- writing it all down ----------------------------------------------------------------------


SUMMARY_COLUMNS = [
    ("test_acc", "test acc", 4, False),
    ("best_val_acc", "best val acc", 4, False),
    ("epochs_to_threshold", "epochs to thr.", 2, False),
    ("seconds_to_threshold", "s to thr.", 2, False),
    ("loss_slope", "loss slope/epoch", 4, False),
    ("loss_detrended_std", "loss std around trend", 4, True),
    ("grad_log10_ratio_final", "log10 grad first/last", 2, False),
    ("dead_pct", "dead %", 2, False),
    ("saturation_pct", "saturation %", 2, False),
]


def summary_rows(groups: List[Group]) -> List[List[str]]:
    table = []
    for g in groups:
        acc = g.stat("test_acc")
        reached = g.stat("epochs_to_threshold").n
        row = [g.key["act"], str(len(g.rows)), acc.fmt(4), f"± {acc.ci95:.4f}" if acc.ci95 is not None else "-"]
        for column, _, digits, sci in SUMMARY_COLUMNS[1:]:
            text = g.stat(column).fmt(digits, sci=sci)
            row.append(f"{text} ({reached}/{len(g.rows)})" if column == "epochs_to_threshold" else text)
        row.append(str(g.count(lambda r: r["status"] == "diverged")))
        table.append(row)
    return table


SUMMARY_HEADER = ["activation", "runs", "test acc (mean ± std)", "95% CI"] + [c[1] for c in SUMMARY_COLUMNS[1:]] + ["diverged"]


def grouped_csv_rows(groups: List[Group]) -> List[Dict[str, Any]]:
    out = []
    for g in groups:
        row: Dict[str, Any] = {**g.key, "runs": len(g.rows), "diverged": g.count(lambda r: r["status"] == "diverged")}
        for column, *_ in SUMMARY_COLUMNS:
            s = g.stat(column)
            row.update({f"{column}_mean": s.mean, f"{column}_std": s.std, f"{column}_ci95": s.ci95, f"{column}_n": s.n})
        out.append(row)
    return out


def main_runs(runs: List[dict], rows: List[Dict[str, Any]]) -> Dict[str, List[dict]]:
    """The main sweep's completed runs with a history, by activation: `runs` (metrics.json contents) and
    `rows` (their summary.csv rows, in the same order) as the study and its notebook hold them."""
    by_act: Dict[str, List[dict]] = {}
    for m, row in zip(runs, rows):
        if row["variant"] == MAIN and m["status"] == "completed" and m["history"]:
            by_act.setdefault(row["act"], []).append(m)
    return by_act


def common_epochs(by_act: Dict[str, List[dict]]) -> int:
    """The epochs every run has (a band needs runs of equal length): `epochs` for runs of this study,
    fewer where a run on disk was cut short."""
    return min(len(m["history"]) for runs in by_act.values() for m in runs)


def loss_figure(runs: List[dict], rows: List[Dict[str, Any]], subtitle: str):
    """Training and validation loss (cross-entropy, nats) against epoch, mean ± std over seeds per
    activation (main sweep); returns the matplotlib Figure."""
    by_act = main_runs(runs, rows)
    last = common_epochs(by_act)
    epochs = list(range(1, last + 1))
    fig, (ax_train, ax_val) = plots.panels(2)
    for act, ms in by_act.items():
        plots.band(ax_train, epochs, [[h["train_loss"] for h in m["history"][:last]] for m in ms], act)
        plots.band(ax_val, epochs, [[h["val_loss"] for h in m["history"][:last]] for m in ms], act)
    for ax, which in ((ax_train, "training"), (ax_val, "validation")):
        ax.set(xlabel="epoch", ylabel=f"{which} loss (cross-entropy)", title=f"{which} loss, mean ± std\n{subtitle}")
        ax.grid(alpha=0.3)
    plots.legend(ax_val, fontsize=8)
    return fig


def per_layer(by_act: Dict[str, List[dict]], stat: str, epoch_index: int, scale: float = 1.0) -> Dict[str, List[List[float]]]:
    """{activation: one list per run of the probe's per-layer `stat` at epoch `epoch_index`, times `scale`}."""
    return {act: [[v * scale for v in m["history"][epoch_index]["layers"][stat]] for m in ms] for act, ms in by_act.items()}


def grad_figure(runs: List[dict], rows: List[Dict[str, Any]], subtitle: str):
    """Gradient L2 norm of each layer's weight against depth (log axis), after the first and the last
    epoch, geometric mean ± std over seeds per activation; returns the Figure."""
    by_act = main_runs(runs, rows)
    last = common_epochs(by_act)
    return plots.first_and_last_epoch(
        lambda index: per_layer(by_act, "grad_norm", index),
        last,
        "layer (1 = input side, last = classifier)",
        "gradient L2 norm of the weight (log)",
        "gradient norm against depth, {when}",
        subtitle,
    )


LAYER_FIGURES = {
    "act_std_vs_depth": ("act_std", "activation std (probe set)", 1.0),
    "dead_units_by_layer": ("dead", "dead units (%)", 100.0),
}  # figure name: (probe statistic, label, scale)


def layer_figure(runs: List[dict], rows: List[Dict[str, Any]], subtitle: str, name: str):
    """One probe statistic by hidden layer after the last epoch, mean ± std over seeds per activation:
    `name` "act_std_vs_depth" (std of the activations on the probe set) or "dead_units_by_layer" (% of
    units passing no gradient); returns the Figure."""
    stat, label, scale = LAYER_FIGURES[name]
    by_act = main_runs(runs, rows)
    last = common_epochs(by_act)
    fig, (ax,) = plots.panels(1, width=7)
    for act, series in per_layer(by_act, stat, last - 1, scale).items():
        plots.band(ax, list(range(1, len(series[0]) + 1)), series, act)
    ax.set(xlabel="hidden layer (1 = input side)", ylabel=label, title=f"{label} by layer, after epoch {last}\n{subtitle}")
    ax.grid(alpha=0.3)
    plots.legend(ax, fontsize=8)
    return fig


def accuracy_figure(runs: List[dict], rows: List[Dict[str, Any]], subtitle: str):
    """Final test accuracy per activation, mean ± sample std over seeds (main sweep); returns the Figure."""
    by_act = main_runs(runs, rows)
    fig, (ax,) = plots.panels(1, width=7)
    accs = {act: [m["test"]["acc"] for m in ms] for act, ms in by_act.items()}
    plots.bars(
        ax,
        list(accs),
        [statistics.fmean(v) for v in accs.values()],
        [statistics.stdev(v) if len(v) > 1 else 0 for v in accs.values()],
        "test accuracy (mean ± std)",
    )
    low = min(min(v) for v in accs.values())
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_title(f"final test accuracy\n{subtitle}")
    return fig


# name in the report: (file under plots/, the call that draws it, on the notebook's names)
FIGURES = {
    "loss": ("loss_curves.png", "activations.loss_figure(runs, rows, subtitle)"),
    "grad": ("grad_norm_vs_depth.png", "activations.grad_figure(runs, rows, subtitle)"),
    **{name: (f"{name}.png", f"activations.layer_figure(runs, rows, subtitle, {name!r})") for name in LAYER_FIGURES},
    "accuracy": ("test_accuracy.png", "activations.accuracy_figure(runs, rows, subtitle)"),
}


def write_plots(runs: List[dict], rows: List[Dict[str, Any]], exp_dir: Path, subtitle: str) -> List[Figure]:
    """The study's figures from the main sweep's completed runs (`runs` and their summary rows `rows`), each
    saved under plots/; none where no run of the main sweep completed."""
    if not main_runs(runs, rows):
        return []
    draw = {
        "loss": lambda: loss_figure(runs, rows, subtitle),
        "grad": lambda: grad_figure(runs, rows, subtitle),
        **{name: (lambda name=name: layer_figure(runs, rows, subtitle, name)) for name in LAYER_FIGURES},
        "accuracy": lambda: accuracy_figure(runs, rows, subtitle),
    }
    return [Figure(name, plots.save(draw[name](), exp_dir / "plots" / file), figure_code(call)) for name, (file, call) in FIGURES.items()]


def ablation_table(rows: List[Dict[str, Any]], acts: List[str]) -> Optional[str]:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    if len(variants) < 2:
        return None
    cells = {(g.key["variant"], g.key["act"]): g.stat("test_acc").fmt(4) for g in group(rows, ["variant", "act"])}
    return markdown_table(["activation"] + variants, [[a] + [cells.get((v, a), "-") for v in variants] for a in acts])


def write_study(study: ActivationsConfig, results: List[Tuple[RunSpec, dict]], exp_dir: Path, console: Console, wall_seconds: float) -> Path:
    rows = [run_row(spec, m, study) for spec, m in results]
    write_csv(exp_dir / "summary.csv", rows)
    main_rows = [r for r in rows if r["variant"] == MAIN]
    groups = group(main_rows, ["act"])
    write_csv(exp_dir / "summary_by_activation.csv", grouped_csv_rows(groups))
    chance = chance_loss(m for _, m in results)
    diagnoses = {g.key["act"]: diagnose(g, chance) for g in groups}

    first = next((m for _, m in results if m.get("data")), {})
    data = first.get("data", {})
    hardware = lambda key: provenance_values((m for _, m in results), key)  # where the runs trained, not this machine
    subtitle = f"{study.dataset.name}, {data.get('train', '?')} train images, {study.epochs} epochs, {study.seeds} seeds"
    figures = write_plots([m for _, m in results], rows, exp_dir, subtitle)
    table = markdown_table(SUMMARY_HEADER, summary_rows(groups))
    write_text(exp_dir / "summary.md", f"# Activation study: {subtitle}\n\nMean ± std over seeds (main sweep).\n\n{table}\n")

    train_seconds = sum(r["seconds"] or 0 for r in rows)
    ablation = ablation_table(rows, study.acts)
    setup = [
        f"Data: {study.dataset.name} ({data.get('source', '?')}): {data.get('train', '?')} training, {data.get('val', '?')} validation "
        f"(seeded split of the training images), {data.get('test', '?')} test images.",
        f"Model: MLP with {study.depth} hidden layers of {study.width} units, norm={study.norm}, "
        f"{first.get('params', 0):,} parameters; init={study.init.name} (auto = He for the ReLU family, LeCun for SELU, Xavier for tanh/sigmoid).",
        f"Training: {study.epochs} epochs, {training_description(m for _, m in results)}{overrides_phrase(study.overrides)}; "
        f"{study.seeds} seeds per activation ({len(rows)} runs in all).",
        f"Hardware: {hardware_line(m for _, m in results)}; torch {hardware('torch')}, host {hardware('host')}. "
        f"Training time summed over runs: {train_seconds:.0f} s; this invocation's wall clock: {wall_seconds:.0f} s (runs already on disk are not retrained).",
        f"Measures: *epochs to threshold* = first epoch with validation accuracy ≥ {study.threshold}; over the last "
        f"{study.stability_epochs} epochs, *loss slope* = least-squares slope of the training loss per epoch (how fast it still "
        f"falls) and *stability* = std of the training loss around that line (needs 3 epochs); gradient ratio, dead units and "
        f"saturation come from the final epoch's probe pass over {recorded_values((m for _, m in results), 'probe_size_used')} fixed "
        f"validation images (see README); 95% CI uses Student's t with n-1 degrees of freedom.",
        comparison_method(),
    ]
    sections = [Section("Diagnosis per activation", [f"**{act}**: {sentence}." for act, (_, sentence) in diagnoses.items()], level=3)]
    if ablation:
        sections.append(Section("Ablations (test accuracy, mean ± std; each column changes one thing from the main sweep)", text=ablation))
    sections.append(Section("Recommendations", recommendations(groups, diagnoses, chance)))
    report = Report(
        f"Which activation trains a {study.depth}-layer MLP best?",
        setup,
        table,
        findings(groups, chance, study),
        figures,
        sections,
        limitations=[
            *preset_note(study.preset),
            f"{study.epochs} epochs and {study.seeds} seeds"
            + (f" on the first {study.subset} training images" if study.subset else "")
            + f" (preset `{study.preset}`): only differences the findings call significant are claims"
            + (f"; with fewer than {MIN_SEEDS} seeds every comparison is indicative only." if study.seeds < MIN_SEEDS else "."),
            "One learning rate and optimizer for every activation: a tuned rate per activation may reorder the ranking.",
            f"{hardware('device')} only; no data augmentation; MNIST-like data saturate near 98%, so run `dataset=fashion_mnist` for a harder test.",
        ],
        references=[
            "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks.",
            "He et al. 2015, Delving deep into rectifiers (He init, PReLU).",
            "Clevert et al. 2016, ELU; Klambauer et al. 2017, Self-normalizing neural networks (SELU).",
            "Hendrycks & Gimpel 2016, GELU; Ramachandran et al. 2017, Searching for activation functions (Swish).",
            "Lu et al. 2019, Dying ReLU and initialization.",
        ],
        load=notebook_loader("deepexp.experiments.activations", subtitle=subtitle),
    )
    return report.write(exp_dir, console, f"activation study: {subtitle}", SUMMARY_HEADER, summary_rows(groups))
