"""`deepexp residual`: why skip connections let deep networks train, measured.

Trains the CIFAR plain and residual networks of He et al. (2016) at each depth
(and optionally DenseNet-BC and the shortcut / batch-norm ablations) through the
ordinary trainer, then writes the comparison: parameters, MACs, training error,
test accuracy, seconds per epoch, the training-error curves of He et al. Fig. 6,
gradient norm against depth, a depth-by-epoch gradient heat map per network,
and a report whose every statement is computed from the runs.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from omegaconf import DictConfig

from .. import plots
from ..config import ResidualConfig, to_plain
from ..measure import count_macs, count_params
from ..models import create_model
from ..report_doc import Figure, Report, figure_code, notebook_loader
from ..results import MIN_SEEDS, Comparison, Group, chance_loss, compare, comparison_method, describe, group, holm, markdown_table, held_out
from ..results import run_stalled, stalled_evidence, stalled_rule, write_csv, write_text
from .runner import RunSpec, base_overrides, check_extra, check_study, hardware_line, parse_pairs, preset_note, overrides_phrase
from .runner import provenance_values, run_study, train_overrides, training_description

MAIN = "main"


def residual_command(cfg: DictConfig) -> int:
    return run_study(cfg, "residual", plan, write_study)


def check_command(study: ResidualConfig, exp_dir: Optional[Path]) -> None:
    """What `deepexp residual` refuses, checked before anything is written (runner.check_study)."""
    check_study(study, plan, exp_dir)


# --- the runs ------------------------------------------------------------------------------


# The study options behind the train keys it sets under another name (overrides=[...] may not set them).
OWN_KEYS = {"seed": "seeds=N", "model": "depths=[...] and densenet=true", "model.norm": "norm=...", "model.shortcut": "shortcut=..."}
# What the study reads from every run at the trainer's setting (overrides=[...] may not change it either).
NEEDS = {
    "eval_test": "the tables and the report compare every run's test accuracy",
    "monitor.enabled": "the gradient figures and the report read every run's per-layer gradients",
}
# What the norm=none sweep may change besides batch norm: its training recipe. Everything else it shares with
# the main sweep (the same networks, data, epochs and seeds), which the report compares it with.
NO_NORM_RECIPE = ("lr", "weight_decay", "batch_size", "sched")


def plan(study: ResidualConfig) -> List[RunSpec]:
    """plainN and resnetN at every depth; optional DenseNet, shortcut and no-batch-norm sweeps."""
    base = base_overrides(study, {"weight_decay": study.weight_decay, "sched": "cosine"})

    fixed = [k for k in base if k not in NO_NORM_RECIPE] + ["model", "model.norm", "model.shortcut", "seed"]
    check_extra(study, fixed, study.no_norm_overrides, "no_norm_overrides", OWN_KEYS, NEEDS)
    networks: List[Tuple[str, str, Dict[str, Any]]] = []  # (variant, model, changes)
    for depth in study.depths:
        networks += [(MAIN, f"plain{depth}", {}), (MAIN, f"resnet{depth}", {})]
    if study.densenet:
        networks.append((MAIN, "densenet", {}))
    if "shortcut" in study.ablations:
        networks += [(f"shortcut={s}", f"resnet{study.depths[0]}", {"model.shortcut": s}) for s in "ABC" if s != study.shortcut]
    if "norm" in study.ablations:
        other = "none" if study.norm == "batch" else "batch"
        for depth in study.depths:
            changes = {"model.norm": other, **(parse_pairs(study.no_norm_overrides, "no_norm_overrides") if other == "none" else {})}
            networks += [(f"norm={other}", f"plain{depth}", changes), (f"norm={other}", f"resnet{depth}", changes)]
    specs = []
    for variant, model, changes in networks:
        options = {"model.norm": study.norm, **({"model.shortcut": study.shortcut} if model != "densenet" else {})}
        for seed in range(study.seeds):
            values = {**base, "model": model, **options, **changes, "seed": seed}
            folder = f"{variant.replace('=', '-')}/{model}-s{seed}"
            labels = {"variant": variant, "network": model, "family": family(model), "depth": depth_of(model), "seed": seed}
            specs.append(RunSpec(folder, labels, train_overrides(study, values, OWN_KEYS, NEEDS)))
    return specs


def family(model: str) -> str:
    return "densenet" if model == "densenet" else "plain" if model.startswith("plain") else "resnet"


def depth_of(model: str) -> int:
    return 100 if model == "densenet" else int(model.removeprefix("plain").removeprefix("resnet"))


def model_cost(metrics: dict) -> Tuple[int, int]:
    """(parameters, MACs per image) of a run's network, rebuilt from its config."""
    c, d = metrics["config"], metrics["data"]
    options = {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("model.")}
    # Runs written before the image shape was recorded as [H, W] hold the side of their square images.
    h, w = d["image_shape"] if "image_shape" in d else (d["image_size"], d["image_size"])
    model = create_model(c["model"], in_channels=d["in_channels"], image_shape=(h, w), num_classes=d["num_classes"], act=c["act"], **options)
    return count_params(model), count_macs(model, (d["in_channels"], h, w))


def run_row(spec: RunSpec, m: dict, costs: Dict[str, Tuple[int, int]]) -> Dict[str, Any]:
    history = m["history"]
    last, first = (history[-1], history[0]) if history else ({}, {})
    params, macs = costs[spec.name]
    return {
        **spec.labels,
        "status": m["status"],
        "params": params,
        "macs": macs,
        "final_train_loss": last.get("train_loss"),
        **held_out(m),
        "final_train_error": 1 - last["train_acc"] if history else None,
        "test_acc": (m.get("test") or {}).get("acc"),
        "seconds_per_epoch": statistics.fmean(h["seconds"] for h in history) if history else None,
        "seconds": m.get("seconds"),
        "grad_first_layer_epoch1": first.get("grad_norm_first"),
        "grad_first_layer_final": last.get("grad_norm_first"),
        "grad_log10_first_over_last_final": math.log10(last["grad_norm_first"] / last["grad_norm_last"])
        if history and last.get("grad_norm_last")
        else None,
        "run_dir": str(Path("runs") / spec.name),
    }


# --- findings ---------------------------------------------------------------------------------


def difference(a: Group, b: Group, column: str) -> Optional[Comparison]:
    """Welch comparison of mean(b) - mean(a) for one column (b: the deeper, residual or changed network),
    or None when a side has no value of it."""
    if not (a and b and a.stat(column).n and b.stat(column).n):
        return None
    return compare(b.stat(column).values, a.stat(column).values)


def findings(study: ResidualConfig, groups: Dict[Tuple[str, str], Group], chance: float) -> List[str]:
    """The report's findings, every comparison worded by results.describe with one Holm adjustment over
    all the tests stated here. Runs that never left chance level (results.stalled) are named first and
    left out of every training-error and accuracy comparison; the gradient measurements keep them."""
    lines = []
    is_stuck = lambda r: run_stalled(r, chance)
    stuck = [f"{r['network']} ({r['variant']}) seed {r['seed']}: {stalled_evidence(r)}" for g in groups.values() for r in g.rows if is_stuck(r)]
    if stuck:
        lines.append(
            f"**Left out of the training-error and accuracy comparisons below: runs that never left chance level** "
            f"({stalled_rule(chance)}): {'; '.join(stuck)}. At this "
            f"budget they say more about the schedule than about the architecture; He et al. warm up their deepest net "
            f"at lr 0.01 for this reason (`\"overrides=['sched.warmup_epochs=1']\"`). The gradient measurements include them."
        )
    learned = {key: Group(g.key, [r for r in g.rows if not is_stuck(r)]) for key, g in groups.items()}
    get = lambda net, variant=MAIN: learned.get((variant, net))
    everything = lambda net, variant=MAIN: groups.get((variant, net))
    shallow, deep = min(study.depths), max(study.depths)
    variants = list(dict.fromkeys(v for v, _ in groups))
    base = get(f"resnet{study.depths[0]}")

    # Every test stated below, then one Holm adjustment over all of them.
    tests: Dict[tuple, Optional[Comparison]] = {}
    if shallow != deep:
        for fam in ("plain", "resnet"):
            for column in ("final_train_error", "test_acc"):
                tests[(fam, column)] = difference(get(f"{fam}{shallow}"), get(f"{fam}{deep}"), column)
    for variant in variants:
        for depth in study.depths:
            tests[("residual", variant, depth)] = difference(get(f"plain{depth}", variant), get(f"resnet{depth}", variant), "test_acc")
    for variant, net in groups:
        if variant.startswith("shortcut="):
            tests[("shortcut", variant, net)] = difference(base, get(net, variant), "test_acc")
    tests["densenet"] = difference(get(f"resnet{deep}"), get("densenet"), "test_acc")
    done = {key: c for key, c in tests.items() if c is not None}
    tests.update(zip(done, holm(list(done.values()))))

    if shallow != deep:
        significant = {}  # family -> the deeper net's training error is significantly higher
        for fam in ("plain", "resnet"):
            err, acc = tests[(fam, "final_train_error")], tests[(fam, "test_acc")]
            a, b = get(f"{fam}{shallow}"), get(f"{fam}{deep}")
            if err is None:
                if everything(f"{fam}{shallow}") and everything(f"{fam}{deep}"):
                    lines.append(f"**{fam}{deep} against {fam}{shallow}**: not compared, every run of one of them stayed at chance level.")
                continue
            significant[fam] = err.significant and err.difference > 0
            compared = (
                f"{fam}{deep} ends with training error {b.stat('final_train_error').fmt(4)} against {fam}{shallow}'s "
                f"{a.stat('final_train_error').fmt(4)}: {describe(err)}" + (f"; test accuracy: {describe(acc)}." if acc else ".")
            )
            if fam == "plain":
                lines.append(f"**Degradation ({'observed' if significant[fam] else 'not shown'})**: {compared}")
            else:
                headline = (
                    "Deeper ResNet worse"
                    if significant[fam]
                    else "Deeper ResNet better"
                    if err.significant
                    else "Deeper ResNet: no significant difference"
                )
                lines.append(f"**{headline}**: {compared}")
        if significant.get("plain") and significant.get("resnet"):
            lines.append(
                f"Both {deep}-layer networks trail their {shallow}-layer versions, so at this budget the gap reflects "
                f"under-training of the deeper nets, not the degradation problem (which He et al. show for plain nets only, "
                f"after full training)."
            )
    for variant in variants:
        for depth in study.depths:
            plain, res = everything(f"plain{depth}", variant), everything(f"resnet{depth}", variant)
            label = "" if variant == MAIN else f" ({variant})"
            if plain and res and plain.stat("grad_first_layer_epoch1").n and res.stat("grad_first_layer_epoch1").n:
                lines.append(gradient_flow(study, plain, res, depth, label))
            acc = tests[("residual", variant, depth)]
            if acc is not None:
                lines.append(
                    f"Test accuracy at depth {depth}{label}: residual {get(f'resnet{depth}', variant).stat('test_acc').fmt(4)} "
                    f"against plain {get(f'plain{depth}', variant).stat('test_acc').fmt(4)}: {describe(acc)}."
                )
    for variant, net in groups:
        acc = tests.get(("shortcut", variant, net))
        if acc is not None:
            g, b = groups[(variant, net)], everything(f"resnet{study.depths[0]}")
            lines.append(
                f"**Shortcut {variant.split('=')[1]}** on {net}: {g.rows[0]['params'] - b.rows[0]['params']:+,} parameters and "
                f"{(g.rows[0]['macs'] - b.rows[0]['macs']) / 1e6:+.2f}M MACs against option {study.shortcut}; "
                f"test accuracy: {describe(acc)}."
            )
    acc = tests["densenet"]
    if acc is not None:
        dense, res = everything("densenet"), everything(f"resnet{deep}")
        lines.append(
            f"**DenseNet-BC-100** ({dense.rows[0]['params']:,} parameters, {dense.rows[0]['macs'] / 1e6:.0f}M MACs) against "
            f"resnet{deep} ({res.rows[0]['params']:,}, {res.rows[0]['macs'] / 1e6:.0f}M MACs): test accuracy: "
            f"{describe(acc)}; {dense.stat('seconds_per_epoch').mean / res.stat('seconds_per_epoch').mean:.1f}x the "
            f"time per epoch."
        )
    return lines


def gradient_flow(study: ResidualConfig, plain: Group, res: Group, depth: int, label: str) -> str:
    """The residual net's first-layer gradient against the plain net's, and each one's first/last-layer ratio."""
    ratios = [
        res.stat(c).mean / plain.stat(c).mean for c in ("grad_first_layer_epoch1", "grad_first_layer_final") if plain.stat(c).mean and res.stat(c).n
    ]
    within = [g.stat("grad_log10_first_over_last_final").mean for g in (plain, res)]
    when = f"after epoch 1 and {ratios[-1]:.2f}x after the last epoch" if study.epochs > 1 else "after its one epoch"
    return (
        f"**Gradient flow at depth {depth}{label}**: the first layer's gradient is {ratios[0]:.2f}x the plain net's "
        f"{when}; first/last-layer gradient ratio 10^{within[0]:.2f} (plain) against 10^{within[1]:.2f} (residual)."
    )


def limitations(study: ResidualConfig, data: dict) -> List[str]:
    out = preset_note(study.preset)
    if study.epochs < 30 or (data.get("train") or 0) < 20000:
        out.append(
            f"These runs ({study.epochs} epochs on {data.get('train', '?')} training images) are far shorter than He et al.'s "
            f"(64k iterations on 45k images): degradation needs full training to appear, deep nets of both kinds are still "
            f"under-trained this early; only differences the findings call significant are claims."
        )
    if study.seeds < MIN_SEEDS:
        out.append(
            f"{study.seeds} seed(s) per network: every comparison is indicative only (fewer than {MIN_SEEDS} per side), "
            f"and the tests have little power."
        )
    out.append("A cosine learning-rate schedule instead of the paper's steps at 32k and 48k iterations.")
    return out


# --- writing -----------------------------------------------------------------------------------


SUMMARY_HEADER = [
    "network",
    "variant",
    "runs",
    "params",
    "MACs",
    "final train loss",
    "final train error",
    "test acc (mean ± std)",
    "s/epoch",
    "diverged",
]


def summary_rows(groups: Dict[Tuple[str, str], Group]) -> List[List[str]]:
    return [
        [
            net,
            variant,
            len(g.rows),
            f"{g.rows[0]['params'] / 1e6:.3f}M",
            f"{g.rows[0]['macs'] / 1e6:.1f}M",
            g.stat("final_train_loss").fmt(4),
            g.stat("final_train_error").fmt(4),
            g.stat("test_acc").fmt(4),
            g.stat("seconds_per_epoch").fmt(1),
            g.count(lambda r: r["status"] == "diverged"),
        ]
        for (variant, net), g in groups.items()
    ]


def completed_runs(runs: List[dict], rows: List[Dict[str, Any]]) -> Dict[Tuple[str, str], List[dict]]:
    """The completed runs with a history by (variant, network): `runs` (metrics.json contents) and `rows`
    (their summary.csv rows, in the same order) as the study and its notebook hold them."""
    out: Dict[Tuple[str, str], List[dict]] = {}
    for m, row in zip(runs, rows):
        if m["status"] == "completed" and m["history"]:
            out.setdefault((row["variant"], row["network"]), []).append(m)
    return out


def common_epochs(by_net: Dict[Tuple[str, str], List[dict]]) -> int:
    """The epochs every run has (a band needs runs of equal length): `epochs` for runs of this study,
    fewer where a run on disk was cut short."""
    return min((len(m["history"]) for ms in by_net.values() for m in ms), default=0)


def training_error_figure(runs: List[dict], rows: List[Dict[str, Any]], study, subtitle: str):
    """Training (dashed) and validation (solid) error, 1 - accuracy, against epoch for the plain and the
    residual networks of the main sweep at every depth of `study.depths`, mean ± std over seeds (He et
    al. 2016, Fig. 1 and 6); None where no network of the main sweep completed. Returns the Figure."""
    by_net = completed_runs(runs, rows)
    last = common_epochs(by_net)
    epochs = list(range(1, last + 1))
    main_depths = [d for d in study.depths if (MAIN, f"plain{d}") in by_net or (MAIN, f"resnet{d}") in by_net]
    if not main_depths:
        return None
    fig, axes = plots.panels(2)
    for ax, fam in zip(axes, ("plain", "resnet")):
        for depth in main_depths:
            for key, style in (("train", "--"), ("val", "-")):
                ms = by_net.get((MAIN, f"{fam}{depth}"), [])
                if ms:
                    plots.band(
                        ax,
                        epochs,
                        [[1 - h[f"{key}_acc"] for h in m["history"][:last]] for m in ms],
                        f"{fam}-{depth} {'train' if key == 'train' else 'val'}",
                    )
                    ax.lines[-1].set_linestyle(style)
        ax.set(xlabel="epoch", ylabel="error (1 - accuracy)", title=f"{fam} networks: training (dashed) and validation error\n{subtitle}")
        ax.grid(alpha=0.3)
        plots.legend(ax, fontsize=8)
    return fig


def grad_figure(runs: List[dict], rows: List[Dict[str, Any]], variant: str, subtitle: str):
    """Gradient L2 norm of every weight layer against depth (log axis) after the first and the last epoch,
    geometric mean ± std over seeds, per network of sweep `variant` (DenseNet left out); None where the
    sweep has none. Returns the Figure."""
    by_net = completed_runs(runs, rows)
    last = common_epochs(by_net)
    nets = [n for v, n in by_net if v == variant and n != "densenet"]
    if not nets:
        return None
    series_at = lambda index: {net: [m["history"][index]["layers"]["grad_norm"] for m in by_net[(variant, net)]] for net in nets}
    return plots.first_and_last_epoch(
        series_at,
        last,
        "weight layer (1 = stem conv, last = classifier)",
        "gradient L2 norm (log)",
        "gradient norm against depth, {when} (" + variant + ")",
        subtitle,
    )


def grad_heatmap_figure(runs: List[dict], rows: List[Dict[str, Any]], subtitle: str):
    """log10 of each weight layer's gradient norm by epoch, one panel per network of the main sweep, on one
    colour scale; the mean over seeds of log10 values (a geometric mean), as the log-axis bands take it
    (plots.band_limits). None where no network of the main sweep completed. Returns the Figure."""
    by_net = completed_runs(runs, rows)
    last = common_epochs(by_net)
    nets = [key for key in by_net if key[0] == MAIN]
    if not nets:
        return None
    fig, axes = plots.panels(len(nets), width=4.0, height=3.6)
    grids = {
        key: np.log10(np.maximum([[h["layers"]["grad_norm"] for h in m["history"][:last]] for m in by_net[key]], plots.LOG_FLOOR)).mean(axis=0)
        for key in nets
    }
    low, high = min(g.min() for g in grids.values()), max(g.max() for g in grids.values())  # one colour scale for all
    for ax, key in zip(axes, nets):
        grid = grids[key]
        image = ax.imshow(
            grid.T, aspect="auto", origin="lower", cmap="viridis", vmin=low, vmax=high, extent=(0.5, grid.shape[0] + 0.5, 0.5, grid.shape[1] + 0.5)
        )
        ax.set(xlabel="epoch", ylabel="weight layer", title=f"{key[1]}: log10 gradient norm")
        plots.integer_ticks(ax.xaxis)
        plots.integer_ticks(ax.yaxis)
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"gradient norm by layer and epoch (geometric mean over seeds), {subtitle}", fontsize=9)
    return fig


def write_plots(study: ResidualConfig, runs: List[dict], rows: List[Dict[str, Any]], exp_dir: Path, subtitle: str) -> List[Figure]:
    """The study's figures (those with runs to draw), saved under plots/."""
    figures = [
        ("training_error", lambda: training_error_figure(runs, rows, study, subtitle), "residual.training_error_figure(runs, rows, study, subtitle)")
    ]
    for variant in dict.fromkeys(v for v, _ in completed_runs(runs, rows)):
        name = "grad_norm_vs_depth" + ("" if variant == MAIN else f"_{variant.replace('=', '_')}")
        figures.append(
            (name, lambda variant=variant: grad_figure(runs, rows, variant, subtitle), f"residual.grad_figure(runs, rows, {variant!r}, subtitle)")
        )
    figures.append(("grad_heatmap", lambda: grad_heatmap_figure(runs, rows, subtitle), "residual.grad_heatmap_figure(runs, rows, subtitle)"))
    out = []
    for name, draw, call in figures:
        fig = draw()
        if fig is not None:
            out.append(Figure(name, plots.save(fig, exp_dir / "plots" / f"{name}.png"), figure_code(call)))
    return out


def write_study(study: ResidualConfig, results: List[Tuple[RunSpec, dict]], exp_dir: Path, console, wall_seconds: float) -> Path:
    costs, cache = {}, {}
    for spec, m in results:  # one model build per distinct network config
        key = tuple(sorted((k, str(v)) for k, v in m["config"].items() if k.startswith(("model", "act", "dataset"))))
        cache.setdefault(key, model_cost(m))
        costs[spec.name] = cache[key]
    rows = [run_row(spec, m, costs) for spec, m in results]
    write_csv(exp_dir / "summary.csv", rows)
    groups = {(g.key["variant"], g.key["network"]): g for g in group(rows, ["variant", "network"])}
    first = next((m for _, m in results if m.get("data")), {})
    data = first.get("data", {})
    hardware = lambda key: provenance_values((m for _, m in results), key)  # every run's, not the first run's
    subtitle = f"{study.dataset.name}, {data.get('train', '?')} train images, {study.epochs} epochs, {study.seeds} seeds"
    table = markdown_table(SUMMARY_HEADER, summary_rows(groups))
    write_text(exp_dir / "summary.md", f"# Plain vs residual: {subtitle}\n\nMean ± std over seeds.\n\n{table}\n")
    figures = write_plots(study, [m for _, m in results], rows, exp_dir, subtitle)
    train_seconds = sum(r["seconds"] or 0 for r in rows)
    setup = [
        f"Data: {study.dataset.name} ({data.get('source', '?')}): {data.get('train', '?')} training, {data.get('val', '?')} validation, "
        f"{data.get('test', '?')} test images; augmentation: {'random crop + flip' if study.dataset.augment else 'none'}.",
        f"Networks: the CIFAR family of He et al. (2016) at depths {study.depths} (6n+2 layers, 16/32/64 channels), each as "
        f"plainN (no shortcuts) and resnetN (shortcut option {study.shortcut}), norm={study.norm}, act={study.act.name}"
        + ("; DenseNet-BC-100 (k=12)" if study.densenet else "")
        + ".",
        f"Training: {study.epochs} epochs, {training_description(m for _, m in results)}{overrides_phrase(study.overrides)}; "
        f"{study.seeds} seeds per network ({len(rows)} runs).",
        f"Hardware: {hardware_line(m for _, m in results)}; torch {hardware('torch')}. Training time "
        f"summed over runs: {train_seconds:.0f} s; this invocation: {wall_seconds:.0f} s (runs on disk are not retrained).",
        "MACs per image from torch.utils.flop_counter (1 MAC = 2 FLOPs). Training error is measured on the augmented "
        "training batches of the last epoch, as in He et al.; gradient norms come from each epoch's probe pass (README).",
        comparison_method(),
    ]
    if "norm" in study.ablations:
        setup.append(
            f"The norm=none sweep also sets {list(study.no_norm_overrides)}: with He init, unnormalised residual "
            f"sums grow about 2x per block and those runs diverge within a few steps."
        )
    chance = chance_loss(m for _, m in results)
    report = Report(
        "Plain against residual networks: do shortcuts make depth trainable?",
        setup,
        table,
        findings(study, groups, chance),
        figures,
        limitations=limitations(study, data),
        references=[
            "He, Zhang, Ren, Sun 2016, Deep residual learning for image recognition (CVPR): plain vs residual, options A/B/C, Fig. 1 and 6.",
            "Huang, Liu, van der Maaten, Weinberger 2017, Densely connected convolutional networks (DenseNet-BC).",
            "Ioffe & Szegedy 2015, Batch normalization.",
        ],
        load=notebook_loader("deepexp.experiments.residual", study=to_plain(study), subtitle=subtitle),
    )
    return report.write(exp_dir, console, f"residual study: {subtitle}", SUMMARY_HEADER, summary_rows(groups))
