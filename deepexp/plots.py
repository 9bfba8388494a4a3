"""Matplotlib figures shared by the reports: curves with mean ± std bands, bars with error bars,
Pareto scatters with their points named, log axes written as plain numbers.

Every figure is saved as PNG with labelled axes and a title that says which data,
how many epochs and how many seeds it shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np


def literal(text: str) -> str:
    """`text` as a figure should show it, for any label or title made from user values: each `$` escaped
    as `\\$`, so that a value such as `/data/$a^$/a.npz` is shown as written rather than parsed as
    mathtext (matplotlib reads the text between two unescaped dollar signs as maths; its "Writing
    mathematical expressions" guide gives `\\$` for a literal one)."""
    return str(text).replace("$", r"\$")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LOG_FLOOR = 1e-30  # a zero on a log axis (a gradient that vanished entirely) is drawn here


def band_limits(series: List[Sequence[float]], log: bool = False):
    """(centre, low, high) arrays of shape (points,) for `series` of shape (runs, points): the mean and
    mean ± 1 sample std (ddof=1; no spread for one run). With `log`, all three are taken in log10
    space and drawn back as 10**(mean ± std), with values floored at LOG_FLOOR: the geometric mean
    and a band of a constant factor either side, which is what a log axis shows evenly. On a log
    axis a linear mean ± std would be pulled up by the largest run and its lower edge would go
    below zero wherever the runs spread by more than their mean."""
    arr = np.asarray(series, dtype=float)
    if log:
        arr = np.log10(np.maximum(arr, LOG_FLOOR))
    mean = arr.mean(0)
    std = arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
    limits = mean, mean - std, mean + std
    return tuple(10**v for v in limits) if log else limits


def band(ax, x: Sequence[int], series: List[Sequence[float]], label: str, log: bool = False) -> None:
    """Mean line with a ±1 std band over the runs in `series` (shape (runs, points), one row per seed).
    `x` counts something (epochs, layers, trials), so its ticks are whole numbers. `log=True`: a log
    y axis, with the mean and std taken over log10 of the values (`band_limits`)."""
    centre, low, high = band_limits(series, log)
    (line,) = ax.plot(x, centre, marker="o", markersize=3, label=literal(label))
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    if log:
        ax.set_yscale("log")
    integer_ticks(ax.xaxis)


def integer_ticks(axis) -> None:
    """Ticks only at whole numbers on `axis` (ax.xaxis or ax.yaxis): no "epoch 1.25" or "layer 2.5"."""
    from matplotlib import ticker

    axis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))


def legend(ax, **kwargs) -> None:
    """`ax.legend(**kwargs)` where `ax` has labelled artists; none (every group without a curve, say) leaves
    the axes without a legend instead of matplotlib's warning that it found nothing to put in one."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def tight_layout(fig) -> None:
    """`fig.tight_layout()`, quietly: where long labels leave no room for margins that fit them all,
    matplotlib keeps the layout it has and warns; the figure is still complete, so no warning is printed."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        fig.tight_layout()


def save(fig, path: Path) -> str:
    """Lay `fig` out (`tight_layout`), write it to `path` as PNG (atomically: a temporary name, then a
    rename), close it; returns the file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tight_layout(fig)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    _plt().close(fig)
    return path.name


def panels(n: int, width: float = 5.5, height: float = 4.0):
    plt = _plt()
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def bars(ax, labels: Sequence[str], means: Sequence[float], stds: Sequence[float], ylabel: str, colors: Optional[Dict[str, str]] = None) -> None:
    x = np.arange(len(labels))
    ax.bar(x, means, yerr=stds, capsize=4, color=[(colors or {}).get(lbl, "C0") for lbl in labels])
    ax.set_xticks(x, [literal(lbl) for lbl in labels], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)


def pareto_scatter(
    ax,
    xs: Sequence[float],
    ys: Sequence[float],
    yerr: Sequence[float],
    sizes: Sequence[float],
    front: Sequence[int],
    marker: str = "o",
    color: str = "C0",
    legend: str = "",
) -> None:
    """Points with error bars, marker area proportional to `sizes`, and the Pareto front
    (indices `front`, sorted by x) drawn as a dashed step line."""
    area = 600 * np.asarray(sizes, dtype=float) / max(max(sizes), 1)
    ax.errorbar(xs, ys, yerr=yerr, fmt="none", ecolor="grey", alpha=0.6, capsize=3)
    ax.scatter(xs, ys, s=np.maximum(area, 25), marker=marker, color=color, alpha=0.55, edgecolors="black", label=literal(legend))
    if len(front) > 1:
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", linestyle="--", color=color, alpha=0.8)


def label_points(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> None:
    """Name each point, then move the names apart (adjustText) so that none covers another name
    or a marker; a thin line joins a moved name to its point. Call it once everything else is on
    `ax`: the placement depends on the final axis limits and markers."""
    from adjustText import adjust_text, get_bboxes
    from matplotlib.collections import PathCollection

    tight_layout(ax.figure)  # as `save` will: names are placed in the axes' final size
    markers = [box for c in ax.collections if isinstance(c, PathCollection) for box in get_bboxes(c, ax=ax)]
    texts = [ax.text(x, y, literal(label), fontsize=7) for x, y, label in zip(xs, ys, labels)]
    # A fixed number of iterations, not adjustText's default time limit: the same figure on any machine.
    adjust_text(texts, objects=markers or None, ax=ax, iter_lim=150, expand=(1.3, 1.6), arrowprops=dict(arrowstyle="-", color="grey", lw=0.5))


def log_axis(ax, which: str) -> None:
    """Log scale on axis `which` ("x" or "y") with ticks written as plain numbers (0.2, 0.5, 20).
    These axes span one or two decades, where matplotlib labels minor ticks as 2×10^-1 and
    the labels run into each other."""
    from matplotlib import ticker

    class Plain(ticker.LogFormatter):
        # LogFormatter decides which ticks get a label (all of them on a short axis, a few on a
        # longer one); the label itself is the number as Python writes it.
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis = ax.xaxis if which == "x" else ax.yaxis
    getattr(ax, f"set_{which}scale")("log")
    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def first_and_last_epoch(series_at, last: int, xlabel: str, ylabel: str, title: str, subtitle: str, log: bool = True):
    """Two panels of a per-layer statistic against depth, after epoch 1 and after epoch `last`: one band
    (mean ± std over seeds; on a log axis, of the log10 values: band_limits) per label.

    `series_at(index)` returns {label: seeds x layers values} for history row `index` (0-based epoch);
    `title` holds the placeholder "{when}" where "after epoch N" goes (replaced as text, so braces elsewhere in
    it, such as a variant's name, stay as they are).
    Returns the Figure."""
    fig, axes = panels(2)
    for ax, index, when in ((axes[0], 0, "after epoch 1"), (axes[1], last - 1, f"after epoch {last}")):
        for label, series in series_at(index).items():
            band(ax, list(range(1, len(series[0]) + 1)), series, label, log=log)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title.replace('{when}', when)}\n{subtitle}")
        ax.grid(alpha=0.3, which="both")
    legend(axes[1], fontsize=8)
    return fig
