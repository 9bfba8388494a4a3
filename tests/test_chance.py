"""A run is "at chance level" only if its loss stayed near ln K AND its held-out accuracy did not beat 1/K:
results.stalled and every study, the report's findings and the activations diagnosis that use it."""

import json
import math

import pytest

from conftest import mnist_available, run_cli
from deepexp.results import Group, chance_accuracy_bound, group_stalled, run_stalled, stalled

LN10 = math.log(10)
BOUND_300 = 0.1 + 3 * math.sqrt(0.1 * 0.9 / 300)  # 0.15196: guessing among 10 classes, 300 validation images


def test_the_chance_bound_is_one_over_k_plus_three_binomial_standard_errors():
    assert chance_accuracy_bound(10, 300) == pytest.approx(BOUND_300)
    assert chance_accuracy_bound(2, 100) == pytest.approx(0.5 + 3 * 0.05)
    with pytest.raises(ValueError):
        chance_accuracy_bound(1, 100)


@pytest.mark.parametrize(
    "loss, acc, n, expected",
    [
        (3.627, 0.45, 300, False),  # one short epoch: the epoch's mean loss is high, yet it learned
        (2.313, 0.107, 300, True),  # a sigmoid-like run: loss at ln K and accuracy at 1/K
        (2.313, BOUND_300 - 1e-9, 300, True),  # just inside the margin
        (2.313, BOUND_300 + 1e-3, 300, False),  # just above it
        (2.313, None, None, True),  # no accuracy recorded: the loss rule alone
        (2.313, 0.45, None, True),  # no validation size recorded: the loss rule alone
        (1.0, 0.107, 300, False),  # the loss left chance level
        (None, 0.1, 300, False),  # no epoch finished
    ],
)
def test_stalled_needs_a_high_loss_and_an_accuracy_within_the_chance_bound(loss, acc, n, expected):
    assert stalled(loss, LN10, acc, n) is expected
    assert run_stalled({"final_train_loss": loss, "final_val_acc": acc, "val_images": n}, LN10) is expected


def act_group(act, loss, acc, ratio, slope, dead=0.0):
    rows = [
        {
            "act": act,
            "status": "completed",
            "test_acc": acc,
            "final_train_loss": loss,
            "final_val_acc": acc,
            "val_images": 300,
            "loss_slope": slope,
            "grad_log10_ratio_final": ratio,
            "dead_pct": dead,
            "saturation_pct": 0.0,
        }
        for _ in range(2)
    ]
    return Group({"act": act}, rows)


def test_a_learned_run_with_a_high_mean_loss_is_diagnosed_by_what_it_learned():
    from deepexp.experiments.activations import diagnose

    learned = act_group("relu", 3.627, 0.45, -0.5, -2.33)
    assert not group_stalled(learned, LN10)
    assert diagnose(learned, LN10) == (
        "healthy",
        "healthy: gradients within 10^-0.5 from first to last layer, 0.0% dead units, training loss down to 3.627",
    )
    frozen = act_group("tanh", 3.627, 0.45, -4.0, -2.33)
    assert diagnose(frozen, LN10) == (
        "vanishing gradient",
        "vanishing gradient: first-layer gradients are 10^-4.0 of the last layer's, yet validation accuracy reached 0.450 "
        "(training loss 3.627): the upper layers learned on nearly frozen lower layers",
    )


def test_a_run_at_chance_says_its_accuracy_and_a_loss_still_falling():
    from deepexp.experiments.activations import diagnose

    sigmoid = act_group("sigmoid", 2.313, 0.107, -6.0, -0.01)
    assert group_stalled(sigmoid, LN10)
    assert diagnose(sigmoid, LN10) == (
        "vanishing gradient",
        "vanishing gradient: first-layer gradients are 10^-6.0 of the last layer's and the run did not leave chance level: "
        f"final training loss 2.313 (ln K = 2.303) and validation accuracy 0.107, not above the chance bound {BOUND_300:.3f}, "
        "though the loss was still falling (-0.010 per epoch)",
    )
    flat = act_group("elu", 2.313, 0.107, -1.0, 0.002)
    label, sentence = diagnose(flat, LN10)
    assert label == "at chance level, healthy gradients"
    assert "still falling" not in sentence and "stayed at" not in sentence


def test_an_activation_is_recommended_or_avoided_never_both():
    from deepexp.experiments.activations import diagnose, recommendations

    groups = [
        act_group("relu", 0.5, 0.90, -0.5, -0.1, dead=35.0),  # best, with dying units
        act_group("tanh", 0.5, 0.89, -4.0, -0.1),  # not shown less accurate (2 seeds), vanishing gradient
        act_group("sigmoid", 2.31, 0.10, -6.0, 0.0),  # far behind, at chance
    ]
    for g, accs in zip(groups, ([0.90, 0.91, 0.92], [0.86, 0.89, 0.92], [0.10, 0.11, 0.10])):
        g.rows = [dict(g.rows[0], test_acc=acc) for acc in accs]  # three seeds: sigmoid's gap is significant
    diagnoses = {g.key["act"]: diagnose(g, LN10) for g in groups}
    assert recommendations(groups, diagnoses, LN10) == [
        "For this depth and budget, use relu or any of tanh (not shown to be less accurate with these seeds).",
        "Of those, check the cause named in the diagnosis before relying on it: relu (dying units), tanh (vanishing gradient).",
        "Avoid, or fix the cause named in the diagnosis first: sigmoid (vanishing gradient).",
    ]
    # with two seeds nothing is shown less accurate, but a run at chance level is still not recommended
    two = [Group(g.key, g.rows[:2]) for g in groups]
    assert recommendations(two, diagnoses, LN10)[0] == (
        "For this depth and budget, use relu or any of tanh (not shown to be less accurate with these seeds)."
    )


def test_the_studies_leave_out_only_runs_that_did_not_beat_chance():
    from deepexp.commands.report import findings as report_findings
    from deepexp.experiments.residual import findings as residual_findings
    from test_findings import residual_study

    def row(network, seed, loss, acc):
        return {
            "network": network,
            "variant": "main",
            "seed": seed,
            "lr": 0.1,
            "status": "completed",
            "test_acc": acc,
            "final_train_error": 1 - acc,
            "final_train_loss": loss,
            "final_val_acc": acc,
            "val_images": 300,
            "grad_first_layer_epoch1": None,
            "run_dir": f"runs/{network}-s{seed}",
        }

    # every run's loss is above 90% of ln K; only resnet56 seed 1 stayed within the chance bound
    rows = {net: [row(net, 0, 3.6, 0.45 + i / 10), row(net, 1, 3.5, 0.46 + i / 10)] for i, net in enumerate(["plain20", "resnet20"])}
    rows["resnet56"] = [row("resnet56", 0, 3.6, 0.40), row("resnet56", 1, 2.31, 0.11)]
    lines = report_findings([Group({"lr": 0.1}, [r for net in rows.values() for r in net])], "test_acc", LN10)
    assert lines[0].endswith("counted in their groups: runs/resnet56-s1: loss 2.310, validation accuracy 0.110.")
    lines = residual_findings(residual_study(2), {("main", net): Group({"variant": "main", "network": net}, r) for net, r in rows.items()}, LN10)
    assert lines[0].startswith("**Left out of the training-error and accuracy comparisons below: runs that never left chance level** (")
    assert "): resnet56 (main) seed 1: loss 2.310, validation accuracy 0.110. At this budget" in lines[0]


@pytest.mark.skipif(not mnist_available(), reason="MNIST not in the data roots (DEEPEXP_DATA)")
def test_a_short_sweep_that_learned_is_not_reported_at_chance(tmp_path):
    """One short epoch on 300 MNIST images: the epoch's mean training loss stays high, yet every run beats 1/K."""
    sweep, report = tmp_path / "sweep", tmp_path / "report"
    args = ["train", "-m", "act=relu,tanh", "seed=0,1", "debug=fast", "subset=300", "model.depth=2", f"hydra.sweep.dir={sweep}"]
    out = run_cli(args, tmp_path)
    assert out.returncode == 0, out.stderr
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(runs) == 4
    n = runs[0]["data"]["val"]
    assert all(m["history"][-1]["val_acc"] > chance_accuracy_bound(10, n) for m in runs)  # what the data say
    out = run_cli(["report", f"path={sweep}", f"hydra.run.dir={report}"], tmp_path)
    assert out.returncode == 0, out.stderr
    text = (report / "report.md").read_text()
    assert "never left chance level" not in text
