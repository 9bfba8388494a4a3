"""The shared figure helpers: point labels that stay readable, axes that read as plain numbers."""

from itertools import combinations

import matplotlib
import pytest

matplotlib.use("Agg")

from deepexp import plots  # noqa: E402


def test_labels_of_points_that_nearly_coincide_are_moved_apart_and_stay_inside_the_axes():
    # The efficient study's worst case: one model's FP32 and INT8 points almost on top of
    # each other, next to another model's, so labels written beside each point overlap.
    fig, (ax,) = plots.panels(1, width=7.5, height=5.0)
    xs, ys = [0.50, 0.51, 0.53, 0.55, 2.0, 2.1], [0.28, 0.28, 0.275, 0.28, 0.15, 0.15]
    names = ["squeeze_cnn", "squeeze_cnn", "inception_cnn", "inception_cnn", "mobilenet_v2", "mobilenet_v2"]
    ax.scatter(xs[::2], ys[::2], s=300, marker="s")
    ax.scatter(xs[1::2], ys[1::2], s=300, marker="^")
    plots.log_axis(ax, "x")
    plots.label_points(ax, xs, ys, names)

    renderer = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text() in names]
    assert sorted(t.get_text() for t in texts) == sorted(names)
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert not any(a.overlaps(b) for a, b in combinations(boxes, 2))
    frame = ax.get_window_extent(renderer)
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)
    matplotlib.pyplot.close(fig)


def test_a_log_axis_over_a_decade_or_two_labels_its_ticks_as_plain_numbers():
    fig, (ax,) = plots.panels(1)
    ax.plot([0.2, 7.0], [1, 2])
    plots.log_axis(ax, "x")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text()]
    assert {"1", "0.2"} <= set(labels)  # a major tick and a labelled minor one
    assert all(float(label) > 0 for label in labels)  # no 10^k or 2×10^-1 mathtext
    matplotlib.pyplot.close(fig)


def test_curves_over_epochs_have_ticks_only_at_whole_epochs():
    fig, (ax,) = plots.panels(1)
    plots.band(ax, [1, 2, 3], [[2.3, 1.1, 0.6], [2.2, 1.0, 0.5]], "relu")
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # no "epoch 1.25"
    matplotlib.pyplot.close(fig)


def test_a_band_on_a_log_axis_is_the_mean_and_std_of_log10_values():
    """Runs 10 and 1000: the band centres on 100 and spans a factor 10**std(log10) either side, instead of
    a linear mean of 505 whose lower edge (mean - std < 0) falls off the axis."""
    fig, (ax,) = plots.panels(1)
    plots.band(ax, [1, 2], [[10.0, 1e-3], [1000.0, 1e-1]], "plain", log=True)
    spread = 10 ** (2**0.5)  # the sample std of log10 values [1, 3] and of [-3, -1] is sqrt(2)
    assert list(ax.lines[0].get_ydata()) == pytest.approx([100.0, 1e-2])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(1e-2 / spread) and max(band) == pytest.approx(100.0 * spread)
    assert ax.get_yscale() == "log"
    matplotlib.pyplot.close(fig)
