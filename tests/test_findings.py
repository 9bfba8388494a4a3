"""How the reports state comparisons, tested on hand-built groups and rows (no training): the Welch
difference with its interval, Holm's correction, fewer than three seeds, runs at chance level, the
measures' names, and the theory sentences, each checked to the number."""

import io
import json
import math
import re
import statistics
import tokenize
from pathlib import Path

import pytest
from scipy.stats import t as student_t
from scipy.stats import ttest_ind

from conftest import run_cli
from deepexp.config import compose_config, validate
from deepexp.results import Group


def welch_interval(a, b, level=0.95):
    """The Welch-Satterthwaite interval of mean(a) - mean(b), written out (NIST e-Handbook 1.3.5.3)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = student_t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    d = statistics.fmean(a) - statistics.fmean(b)
    return d - half, d + half


def holm_by_hand(pvalues):
    """Holm (1979) step-down, the definition: sort, multiply by m, m-1, ..., carry the maximum."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        out[i] = running
    return [out[i] for i in range(len(pvalues))]


# --- activations ---------------------------------------------------------------------------------


def activations_study(*overrides):
    return validate(compose_config("activations", ["acts=[relu,tanh]", *overrides]))


def act_group(act, accs, epochs=(2,), seconds=(3.0,), **columns):
    rows = [
        {
            "act": act,
            "status": "completed",
            "test_acc": acc,
            "final_train_loss": 0.3,
            "epochs_to_threshold": epochs[i % len(epochs)],
            "seconds_to_threshold": seconds[i % len(seconds)],
            **{k: (v[i] if isinstance(v, list) else v) for k, v in columns.items()},
        }
        for i, acc in enumerate(accs)
    ]
    return Group({"act": act}, rows)


def test_a_large_gap_that_is_not_significant_is_reported_with_its_interval_not_as_within_the_spread():
    from deepexp.experiments.activations import findings

    relu, tanh = [0.97, 0.96, 0.98], [0.90, 0.96, 0.93]
    lines = findings([act_group("relu", relu), act_group("tanh", tanh)], 2.303, activations_study())
    low, high = welch_interval(relu, tanh)
    p = ttest_ind(relu, tanh, equal_var=False).pvalue
    assert 0.05 < p < 0.2  # the gap is 1.8 pooled standard deviations, yet three seeds cannot confirm it
    best = next(line for line in lines if line.startswith("**Best test accuracy"))
    assert best == (
        f"**Best test accuracy: relu** (0.9700 ± 0.0100); against the runner-up tanh (0.9300 ± 0.0300): "
        f"not significant with 3 seeds (difference +0.0400, 95% CI [{low:+.4f}, {high:+.4f}], Welch p = {p:.2g}); "
        f"the test has little power."
    )
    # the runner-up's comparison is said once, in the sentence above; then which activations are not shown less accurate
    assert "Not shown to be less accurate than relu: tanh." in lines
    assert sum("Welch p" in line for line in lines) == 1
    assert not [line for line in lines if re.search("within|indistinguishable", line)]


def test_a_small_gap_that_is_not_significant_is_not_blamed_on_power():
    from deepexp.results import compare, describe

    said = describe(compare([0.950, 0.952, 0.948, 0.951], [0.949, 0.953, 0.947, 0.950]))
    assert said.startswith("not significant with 4 seeds (difference +0.0005, 95% CI [")
    assert "little power" not in said  # 0.3 pooled standard deviations: the interval, not the sample size, is the news


def test_the_best_of_nine_is_tested_against_the_runner_up_with_holms_correction_over_all_36_pairs():
    from deepexp.experiments.activations import findings

    accs = {
        "relu": [0.951, 0.953, 0.952],
        "gelu": [0.945, 0.949, 0.944],
        **{
            act: [0.60 + i / 100, 0.62 + i / 100, 0.61 + i / 100]
            for i, act in enumerate(["tanh", "elu", "selu", "swish", "prelu", "leaky_relu", "sigmoid"])
        },
    }
    groups = [act_group(act, values) for act, values in accs.items()]
    lines = findings(groups, 2.303, activations_study(f"acts=[{','.join(accs)}]"))
    names = list(accs)
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    raw = [ttest_ind(accs[names[i]], accs[names[j]], equal_var=False).pvalue for i, j in pairs]
    p, adjusted = raw[0], holm_by_hand(raw)[0]  # (relu, gelu): the best against the runner-up
    assert p < 0.05 <= adjusted  # significant alone, not once the other 35 tests are counted
    best = next(line for line in lines if line.startswith("**Best test accuracy"))
    assert f"Welch p = {p:.2g}, Holm-adjusted over 36 tests p = {adjusted:.2g})" in best
    assert "against the runner-up gelu (0.9460 ± 0.0026): not significant with 3 seeds" in best
    assert "95% CI (unadjusted) [" in best
    # each of the other seven against the best, in the one wording of every comparison (results.describe): all significant
    others = [line for line in lines if line.startswith("relu against ")]
    assert [line.split(" (")[0] for line in others] == [
        f"relu against {act}" for act in ["sigmoid", "leaky_relu", "prelu", "swish", "selu", "elu", "tanh"]
    ]
    assert all(": significant with 3 seeds (difference +" in line and "Holm-adjusted over 36 tests p = " in line for line in others)
    assert "Not shown to be less accurate than relu: gelu." in lines


def test_two_seeds_make_a_comparison_indicative_only_never_significant():
    from deepexp.experiments.activations import findings, recommendations

    groups = [act_group("relu", [0.950, 0.951]), act_group("tanh", [0.900, 0.902])]
    lines = findings(groups, 2.303, activations_study("seeds=2"))
    best = next(line for line in lines if line.startswith("**Best test accuracy"))
    p = ttest_ind([0.950, 0.951], [0.900, 0.902], equal_var=False).pvalue
    assert p < 0.05
    assert "tanh (0.9010 ± 0.0014): indicative only with 2 seeds (difference +0.0495, 95% CI [" in best
    assert f"Welch p = {p:.2g}; fewer than 3 per side cannot establish significance)." in best
    assert "significant with" not in best.replace("not significant with", "")
    # the other activations' gaps in the one wording of every comparison: indicative, never a claim
    assert ("Not shown to be less accurate than relu: tanh (with fewer than 3 seeds per side no comparison can show a difference).") in lines
    diagnoses = {"relu": ("healthy", ""), "tanh": ("healthy", "")}
    assert recommendations(groups, diagnoses, math.log(10))[0] == (
        "For this depth and budget, use relu or any of tanh (not shown to be less accurate with these seeds)."
    )


def test_equal_epochs_to_threshold_are_a_tie_whatever_the_wall_clock_says():
    from deepexp.experiments.activations import findings

    groups = [
        act_group("relu", [0.95] * 3, epochs=(2,), seconds=(9.0,)),
        act_group("tanh", [0.94] * 3, epochs=(2,), seconds=(4.0,)),
        act_group("elu", [0.93] * 3, epochs=(3,), seconds=(2.0,)),
    ]
    lines = findings(groups, 2.303, activations_study("acts=[relu,tanh,elu]"))
    assert lines[0] == (
        "**Fastest convergence: a tie between relu, tanh**, each reaching 90% validation accuracy after 2.0 epochs "
        "on average (training seconds on a shared machine do not break a tie); others (mean epochs): elu 3.0."
    )


def history(losses, epochs_to_reach=1):
    return [
        {"epoch": i + 1, "train_loss": loss, "train_acc": 0.9, "val_loss": loss, "val_acc": 0.95 if i + 1 >= epochs_to_reach else 0.5, "seconds": 1.0}
        for i, loss in enumerate(losses)
    ]


def test_stability_is_the_spread_around_the_trend_and_the_slope_says_how_fast_the_loss_still_falls():
    from deepexp.experiments.activations import findings, run_row
    from deepexp.experiments.runner import RunSpec
    from deepexp.results import group

    study = activations_study("stability_epochs=4")
    falling = [2.5, 2.0, 1.5, 1.0, 0.5]  # a straight fall: no scatter at all, 0.5 nats less per epoch
    wobbling = [0.52, 0.50, 0.53, 0.50, 0.53]  # nearly flat, but scattered
    rows = []
    for act, losses in (("relu", falling), ("tanh", wobbling)):
        for seed in range(2):
            m = {"status": "completed", "history": history(losses), "test": {"acc": 0.9}}
            rows.append(run_row(RunSpec(f"main/{act}-s{seed}", {"variant": "main", "act": act, "seed": seed}, []), m, study))
    relu, tanh = rows[0], rows[2]
    assert relu["loss_slope"] == -0.5 and relu["loss_detrended_std"] == 0.0
    # last four epochs 0.50, 0.53, 0.50, 0.53: slope 0.006 per epoch; residuals -0.006, +0.018, -0.018, +0.006, 2 degrees of freedom
    assert tanh["loss_slope"] == pytest.approx(0.006)
    assert tanh["loss_detrended_std"] == pytest.approx(math.sqrt((2 * 0.006**2 + 2 * 0.018**2) / 2))
    lines = findings(group(rows, ["act"]), 2.303, study)
    assert next(line for line in lines if line.startswith("**Most stable")).startswith(
        "**Most stable: relu** among the activations that learned (std of the training loss around its least-squares linear "
        "trend over the last 4 epochs 0.00e+00 ± 0.00e+00; least stable: tanh, 1.90e-02 ± 0.00e+00)."
    )
    assert (
        "**Training loss still falling fastest: relu** (least-squares slope over the last 4 epochs -0.5000 ± 0.0000 per epoch; "
        "slowest: tanh, 0.0060 ± 0.0000)." in lines
    )
    two = activations_study("stability_epochs=2")
    short = run_row(
        RunSpec("main/relu-s0", {"variant": "main", "act": "relu", "seed": 0}, []),
        {"status": "completed", "history": history(falling), "test": {"acc": 0.9}},
        two,
    )
    assert short["loss_slope"] == -0.5 and short["loss_detrended_std"] is None  # a line through two points leaves no residual


def test_the_sigmoid_bound_is_computed_for_the_studys_own_depth_and_set_against_the_measured_ratio():
    from deepexp.experiments.activations import findings

    sigmoid = act_group("sigmoid", [0.11] * 3, grad_log10_ratio_first_epoch=[-6.5, -6.6, -6.7], grad_log10_ratio_final=-6.9)
    relu = act_group("relu", [0.95] * 3, grad_log10_ratio_first_epoch=-0.2, grad_log10_ratio_final=-0.3)
    lines = findings([relu, sigmoid], 2.303, activations_study("acts=[relu,sigmoid]", "depth=12", "epochs=10"))
    assert (
        "**Theory, sigmoid**: its slope σ'(x) = σ(x)(1 − σ(x)) is at most 1/4, so the error signal reaching the first of 12 "
        "hidden layers has been multiplied by 12 such slopes: at most 0.25^12 ≈ 10^-7.2 from the activation alone (the weights "
        "and the layers' inputs scale the gradient further); measured first-layer gradient against the classifier's: "
        "10^-6.6 after epoch 1 and 10^-6.9 after epoch 10 (mean over seeds)."
    ) in lines
    shallow = findings([relu, sigmoid], 2.303, activations_study("acts=[relu,sigmoid]", "depth=5", "epochs=10"))
    assert any("at most 0.25^5 ≈ 10^-3.0 " in line for line in shallow)
    without = findings([relu], 2.303, activations_study("acts=[relu]"))
    assert not [line for line in without if "Theory, sigmoid" in line]  # only where sigmoid ran


def test_relu_dead_units_are_reported_layer_by_layer_with_their_trend():
    from deepexp.experiments.activations import findings

    relu = act_group("relu", [0.95] * 2, dead_pct_by_layer=[[0.0, 1.0, 3.0, 8.0], [0.0, 3.0, 5.0, 10.0]])
    lines = findings([relu], 2.303, activations_study("acts=[relu]", "depth=4"))
    assert lines[-1] == (
        "**Theory, ReLU**: a unit whose input is negative on every example passes no gradient and cannot recover, "
        "and dead units become likelier with depth (Lu et al. 2019); measured dead units of relu by hidden layer "
        "(1 = input side, mean over seeds): 0.0, 2.0, 4.0, 9.0% (Spearman rho between layer and dead share +1.00)."
    )


# --- residual ------------------------------------------------------------------------------------


def residual_study(seeds):
    return validate(compose_config("residual", ["depths=[20,56]", "epochs=3", "ablations=[]", "densenet=false", f"seeds={seeds}"]))


def net_group(network, errors, losses, accs):
    rows = [
        {
            "network": network,
            "variant": "main",
            "seed": seed,
            "params": 1,
            "macs": 1,
            "final_train_loss": loss,
            "final_train_error": error,
            "test_acc": acc,
            "grad_first_layer_epoch1": None,
        }
        for seed, (error, loss, acc) in enumerate(zip(errors, losses, accs))
    ]
    return Group({"variant": "main", "network": network}, rows)


def test_runs_at_chance_are_named_first_and_left_out_of_the_depth_comparison():
    """The quick preset's case: resnet56 never left chance level; its 'worse' headline came from those runs."""
    from deepexp.experiments.residual import findings

    groups = {
        ("main", "plain20"): net_group("plain20", [0.40, 0.42], [1.10, 1.15], [0.55, 0.56]),
        ("main", "plain56"): net_group("plain56", [0.50, 0.53], [1.40, 1.45], [0.48, 0.47]),
        ("main", "resnet20"): net_group("resnet20", [0.35, 0.36], [1.00, 1.02], [0.60, 0.61]),
        ("main", "resnet56"): net_group("resnet56", [0.88, 0.89], [2.29, 2.295], [0.11, 0.10]),
    }
    lines = findings(residual_study(2), groups, chance=math.log(10))
    assert lines[0].startswith(
        "**Left out of the training-error and accuracy comparisons below: runs that never left chance level** "
        "(final training loss above 90% of ln K = 2.303, and final validation accuracy within 3 binomial standard errors above 1/K = 0.100, where one was recorded): "
        "resnet56 (main) seed 0: loss 2.290; resnet56 (main) seed 1: loss 2.295."
    )
    assert "**resnet56 against resnet20**: not compared, every run of one of them stayed at chance level." in lines
    assert not [line for line in lines if "Deeper ResNet" in line]
    degradation = next(line for line in lines if line.startswith("**Degradation"))
    p = ttest_ind([0.50, 0.53], [0.40, 0.42], equal_var=False).pvalue
    assert p < 0.05  # below alpha, but on two seeds: no headline claim
    assert degradation.startswith(
        "**Degradation (not shown)**: plain56 ends with training error 0.5150 ± 0.0212 against plain20's "
        "0.4100 ± 0.0141: indicative only with 2 seeds (difference +0.1050, 95% CI (unadjusted) ["
    )
    # the tests left: plain's training error and test accuracy, and residual against plain at depth 20
    assert "Holm-adjusted over 3 tests" in degradation


def test_three_seeds_and_a_holm_adjusted_p_below_alpha_make_the_headline():
    from deepexp.experiments.residual import findings

    groups = {
        ("main", "plain20"): net_group("plain20", [0.40, 0.41, 0.42], [1.1] * 3, [0.55, 0.56, 0.57]),
        ("main", "plain56"): net_group("plain56", [0.60, 0.61, 0.62], [1.4] * 3, [0.45, 0.46, 0.47]),
        ("main", "resnet20"): net_group("resnet20", [0.35, 0.36, 0.37], [1.0] * 3, [0.60, 0.61, 0.62]),
        ("main", "resnet56"): net_group("resnet56", [0.30, 0.31, 0.32], [0.9] * 3, [0.63, 0.64, 0.65]),
    }
    lines = findings(residual_study(3), groups, chance=math.log(10))
    assert lines[0].startswith(
        "**Degradation (observed)**: plain56 ends with training error 0.6100 ± 0.0100 against plain20's "
        "0.4100 ± 0.0100: significant with 3 seeds (difference +0.2000, 95% CI (unadjusted) ["
    )
    assert lines[1].startswith(
        "**Deeper ResNet better**: resnet56 ends with training error 0.3100 ± 0.0100 against resnet20's 0.3600 ± 0.0100: significant with 3 seeds"
    )
    assert "Holm-adjusted over 6 tests p = " in lines[0]  # two depth tests per family, residual against plain at 20 and 56
    assert [line.split(":")[0] for line in lines[2:]] == ["Test accuracy at depth 20", "Test accuracy at depth 56"]


# --- efficient -----------------------------------------------------------------------------------


def efficient_cost(params, macs, ms, shape=None):
    from deepexp.experiments.efficient import ORT_FP32, ORT_INT8, PYTORCH

    return {
        "settings": {"threads": 2},
        "params": params,
        "macs": macs,
        **({"input": shape} if shape else {}),
        "size_bytes": {rt: 4 * params for rt in (PYTORCH, ORT_FP32, ORT_INT8)},
        "latency": {
            rt: {"1": {"median_ms": ms, "iqr_ms": 0.1, "images_per_s": 1000 / ms, "blocks": 10, "threads": 2}} for rt in (PYTORCH, ORT_FP32, ORT_INT8)
        },
    }


def efficient_seeds(accs):
    return [
        {"seed": i, "test_acc": acc, "onnx_fp32_acc": acc, "onnx_int8_acc": acc, "int8_agreement": 1.0, "parity_max_abs": 1e-6}
        for i, acc in enumerate(accs)
    ]


def test_the_efficient_drop_of_0129_on_two_seeds_is_not_significant_with_little_power_and_its_interval():
    from deepexp.experiments.efficient import Measured, findings, summary_rows

    study = validate(compose_config("efficient", ["models=[baseline_cnn,dws_cnn]", "latency_batches=[1]", "seeds=2"]))
    half = 1 / math.sqrt(2)  # two values mean ± s/sqrt(2) have sample std s
    baseline, dws = [0.700 - 0.0035 * half, 0.700 + 0.0035 * half], [0.571 - 0.027 * half, 0.571 + 0.027 * half]
    measured = [
        Measured("baseline_cnn", efficient_cost(1000, 4_000_000, 8.0), efficient_seeds(baseline)),
        Measured("dws_cnn", efficient_cost(500, 1_000_000, 2.0), efficient_seeds(dws)),
    ]
    lines = findings(study, summary_rows(study, measured), measured, None)
    low, high = welch_interval(baseline, dws)
    p = ttest_ind(baseline, dws, equal_var=False).pvalue
    assert round(p, 2) == 0.09 and (round(low, 4), round(high, 4)) == (-0.0976, 0.3556)
    line = next(line for line in lines if line.startswith("**dws_cnn**"))
    assert line.endswith(
        "; test accuracy 0.5710 ± 0.0270; the drop against the baseline (baseline minus this): not significant "
        "with 2 seeds (difference +0.1290, 95% CI [-0.0976, +0.3556], Welch p = 0.089); the test has little power."
    )
    assert "within" not in line


def test_efficient_runs_at_chance_are_named_first_and_left_out_of_the_drop():
    from deepexp.experiments.efficient import Measured, findings, summary_rows

    study = validate(compose_config("efficient", ["models=[baseline_cnn,dws_cnn,squeeze_cnn]", "latency_batches=[1]", "seeds=3"]))
    measured = [
        Measured("baseline_cnn", efficient_cost(1000, 4_000_000, 8.0), efficient_seeds([0.70, 0.71, 0.72])),
        Measured("dws_cnn", efficient_cost(500, 1_000_000, 2.0), efficient_seeds([0.10, 0.60, 0.62])),
        Measured("squeeze_cnn", efficient_cost(400, 900_000, 2.0), efficient_seeds([0.10, 0.10, 0.11])),
    ]
    losses = {
        ("baseline_cnn", 0): 0.8,
        ("baseline_cnn", 1): 0.8,
        ("baseline_cnn", 2): 0.8,
        ("dws_cnn", 0): 2.30,
        ("dws_cnn", 1): 1.1,
        ("dws_cnn", 2): 1.0,
        ("squeeze_cnn", 0): 2.30,
        ("squeeze_cnn", 1): 2.29,
        ("squeeze_cnn", 2): 2.30,
    }
    runs = {key: {"final_train_loss": loss} for key, loss in losses.items()}  # no validation accuracy: the loss rule
    lines = findings(study, summary_rows(study, measured), measured, None, runs, math.log(10))
    assert lines[0] == (
        "**Left out of the accuracy comparisons below: runs that never left chance level** (final training loss above 90% of ln K = 2.303, and final validation accuracy within 3 binomial standard errors above 1/K = 0.100, where one was recorded): "
        "dws_cnn seed 0: loss 2.300; squeeze_cnn seed 0: loss 2.300; squeeze_cnn seed 1: loss 2.290; squeeze_cnn seed 2: loss 2.300."
    )
    dws = next(line for line in lines if line.startswith("**dws_cnn**"))
    p = ttest_ind([0.70, 0.71, 0.72], [0.60, 0.62], equal_var=False).pvalue  # a family of one: squeeze_cnn has no run left
    low, high = welch_interval([0.70, 0.71, 0.72], [0.60, 0.62])
    assert dws.endswith(
        f"; test accuracy 0.4400 ± 0.2946; the drop against the baseline (baseline minus this, runs at chance level "
        f"left out): indicative only with 3 and 2 seeds (difference +0.1000, 95% CI [{low:+.4f}, {high:+.4f}], "
        f"Welch p = {p:.2g}; fewer than 3 per side cannot establish significance)."
    )
    squeeze = next(line for line in lines if line.startswith("**squeeze_cnn**"))
    assert squeeze.endswith("; not compared with the baseline: every run of one of them stayed at chance level.")


def test_the_depthwise_separable_ratio_from_the_models_own_layers_predicts_their_measured_macs():
    from deepexp.experiments.efficient import Measured, findings, summary_rows
    from deepexp.measure import count_macs
    from deepexp.models import create_model

    study = validate(compose_config("efficient", ["models=[baseline_cnn,dws_cnn,bottleneck_cnn]", "latency_batches=[1]", "train_models=false"]))
    shape = [3, 32, 32]
    macs = {
        name: count_macs(create_model(name, in_channels=3, image_shape=(32, 32), num_classes=10, act="relu"), tuple(shape)) for name in study.models
    }
    measured = [Measured(name, efficient_cost(1000, macs[name], 2.0, shape)) for name in study.models]
    lines = findings(study, summary_rows(study, measured), measured, None)
    theory = [line for line in lines if line.startswith("**Depthwise-separable cost")]
    # baseline_cnn: a stem conv 3 -> 64, then 3x3 convs 64->64 (32 px), 64->128, 128->128 (16 px), 128->256, 256->256 (8 px).
    replaced = [32 * 32 * 9 * 64 * 64, 16 * 16 * 9 * 64 * 128, 16 * 16 * 9 * 128 * 128, 8 * 8 * 9 * 128 * 256, 8 * 8 * 9 * 256 * 256]
    widths = [64, 128, 128, 256, 256]
    predicted = macs["baseline_cnn"] - sum(replaced) + sum(m * (1 / n + 1 / 9) for m, n in zip(replaced, widths))
    assert abs(predicted - macs["dws_cnn"]) < 1  # the formula is exact for these layers
    assert theory == [
        "**Depthwise-separable cost, theory against measurement**: made depthwise-separable, a k×k convolution with N output "
        "channels costs 1/N + 1/k² of the original (Howard et al. 2017). dws_cnn is baseline_cnn with 5 of its convolutions made "
        f"separable (k = 3, N = 64-256): 0.115-0.127 of each, which predicts {predicted / 1e6:.2f}M MACs "
        f"({predicted / macs['baseline_cnn']:.3f}x baseline_cnn's measured {macs['baseline_cnn'] / 1e6:.2f}M, the layers it keeps "
        f"included); measured: {macs['dws_cnn'] / 1e6:.2f}M ({macs['dws_cnn'] / macs['baseline_cnn']:.3f}x)."
    ]  # none for bottleneck_cnn


# --- nas ------------------------------------------------------------------------------------------


def test_nas_compares_each_hand_designed_network_with_a_searched_one_of_no_more_parameters_without_runs_at_chance():
    from deepexp.experiments.nas import findings

    study = validate(compose_config("nas", ["trials=2", "search_seeds=2", "top_k=2"]))
    trials = [
        {
            "strategy": strategy,
            "search_seed": seed,
            "trial": i,
            "val_acc": 0.40 + i / 10 + seed / 100 + (strategy == "evolution") / 50,
            "params": 1000 * (i + 1),
            "macs": 10_000 * (i + 1),
            "synflow": i,
            "naswot": i,
            "grad_norm": i,
            "snip": i,
            "spec_key": f"{strategy}-{seed}-{i}",
            "spec": {"layers": [{"type": "conv", "channels": 16, "stride": 1}, {"type": "conv", "channels": 32, "stride": 2}]},
        }
        for strategy in ("random", "evolution")
        for seed in range(2)
        for i in range(2)
    ]

    def runs(model, kind, accs, losses, params):
        return Group(
            {"model": model, "kind": kind},
            [
                {"model": model, "kind": kind, "seed": seed, "test_acc": acc, "params": params, "final_train_loss": loss}
                for seed, (acc, loss) in enumerate(zip(accs, losses))
            ],
        )

    groups = [
        runs("top1", "searched", [0.70, 0.71, 0.72], [0.9] * 3, 6000),
        runs("top2", "searched", [0.65, 0.66, 0.67], [1.0] * 3, 4000),
        runs("dws_cnn", "hand-designed", [0.10, 0.60, 0.62], [2.30, 1.1, 1.0], 5000),
    ]
    lines = findings(study, trials, groups, math.log(10))
    assert lines[0] == (
        "**Left out of the comparison of searched and hand-designed networks: retrained runs that never left chance "
        "level** (final training loss above 90% of ln K = 2.303, and final validation accuracy within 3 binomial standard errors above 1/K = 0.100, where one was recorded): dws_cnn seed 0: loss 2.300."
    )
    # one family: evolution against random, and the hand-designed network against the best searched one no larger (top2, not top1)
    evolution, random = [0.52, 0.53], [0.50, 0.51]
    raw = [ttest_ind(evolution, random, equal_var=False).pvalue, ttest_ind([0.65, 0.66, 0.67], [0.60, 0.62], equal_var=False).pvalue]
    adjusted = holm_by_hand(raw)
    assert lines[1].startswith("**Evolution against random at 2 evaluations**: best proxy accuracy 0.5250 ± 0.0071 against 0.5050 ± 0.0071: ")
    assert "with 2 searches (difference +0.0200, 95% CI (unadjusted) [" in lines[1]
    assert f"Holm-adjusted over 2 tests p = {adjusted[0]:.2g}" in lines[1]
    searched = next(line for line in lines if line.startswith("**Searched against dws_cnn"))
    assert searched.startswith(
        "**Searched against dws_cnn at no more parameters**, the same training budget: top2 (4,000 parameters, "
        "0.80x) 0.6600 ± 0.0100 against dws_cnn (5,000) 0.6100 ± 0.0141: "
    )
    assert "with 3 and 2 seeds (difference +0.0500, " in searched
    assert f"Welch p = {raw[1]:.2g}, Holm-adjusted over 2 tests p = {adjusted[1]:.2g}" in searched
    assert "significant with" not in searched.replace("not significant with", "")  # two seeds on a side: never "significant"


# --- deepexp report, and every report string -------------------------------------------------------


def test_report_tests_the_best_group_against_the_runner_up_with_holm_over_every_pair(tmp_path):
    accs = {0.1: [0.80, 0.81, 0.82], 0.2: [0.78, 0.79, 0.80], 0.3: [0.50, 0.51, 0.52]}
    for lr, values in accs.items():
        for seed, acc in enumerate(values):
            folder = tmp_path / "runs" / f"lr{lr}-s{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(
                json.dumps(
                    {
                        "status": "completed",
                        "config": {"dataset": "synthetic", "lr": lr, "seed": seed},
                        "params": 10,
                        "epochs_done": 1,
                        "history": [{"epoch": 1, "train_loss": 1.0, "train_acc": acc, "val_loss": 1.0, "val_acc": acc}],
                        "test": {"acc": acc, "loss": 1.0},
                        "best_val_acc": acc,
                        "seconds": 1.0,
                    }
                )
            )
    out = run_cli(["report", f"path={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'report'}"], tmp_path)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    groups = list(accs.values())
    raw = [ttest_ind(groups[i], groups[j], equal_var=False).pvalue for i, j in ((0, 1), (0, 2), (1, 2))]
    low, high = welch_interval(groups[0], groups[1])
    assert (
        f"- Against the runner-up, lr=0.2 (0.7900 ± 0.0100): not significant with 3 runs (difference +0.0200, 95% CI (unadjusted) "
        f"[{low:+.4f}, {high:+.4f}], Welch p = {raw[0]:.2g}, Holm-adjusted over 3 tests p = {holm_by_hand(raw)[0]:.2g}); "
        f"the test has little power."
    ) in report
    assert "Holm-adjusted over all of them (Holm 1979)" in report and "within" not in report


def test_holm_adjustment_matches_the_published_values():
    """R's p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") gives 0.03 0.06 0.06 0.02."""
    from deepexp.results import holm_adjust

    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_no_report_string_mentions_the_process_that_built_the_code():
    package = Path(__file__).resolve().parents[1] / "deepexp"
    found = []
    for path in sorted(package.rglob("*.py")):
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if token.type == tokenize.STRING and re.search(r"\bissues?\b|\bticket\b|in the brief", token.string, re.IGNORECASE):
                found.append(f"{path.name}:{token.start[0]}")
    assert found == []


# --- each study's findings, diagnosis and limitations on hand-built groups ------------------------


def probe_group(act, loss, ratio, dead=0.0, saturation=0.0, statuses=("completed", "completed")):
    """Runs of one activation with the probe's numbers: final training loss (nats), log10 of the first-layer
    gradient over the last layer's, dead units and saturation (%)."""
    return Group(
        {"act": act},
        [
            {
                "act": act,
                "status": s,
                "test_acc": 0.9,
                "final_train_loss": loss,
                "grad_log10_ratio_final": ratio,
                "dead_pct": dead,
                "saturation_pct": saturation,
            }
            for s in statuses
        ],
    )


@pytest.mark.parametrize(
    "group, label, sentence",
    [
        (
            probe_group("sigmoid", 2.25, -4.0),
            "vanishing gradient",
            "vanishing gradient: first-layer gradients are 10^-4.0 of the last layer's and the run did not leave chance level: final training "
            "loss 2.250 (ln K = 2.303)",
        ),
        (
            probe_group("tanh", 0.30, -4.0),
            "vanishing gradient",
            "vanishing gradient: first-layer gradients are 10^-4.0 of the last layer's, yet the loss fell to 0.300: the upper layers learned "
            "on nearly frozen lower layers",
        ),
        (
            probe_group("elu", 2.25, -1.0),
            "at chance level, healthy gradients",
            "the run did not leave chance level: final training loss 2.250 (ln K = 2.303), while gradients stayed within 10^-1.0 across "
            "depth: a learning-rate, capacity or training-budget problem, not a vanishing gradient",
        ),
        (
            probe_group("relu", 0.20, -0.5, dead=35.0, statuses=("completed", "diverged")),
            "diverged, dying units",
            "diverged in 1 of 2 runs (non-finite loss); dying units: 35.0% of units pass no gradient on any probe image",
        ),
        (probe_group("sigmoid", 0.40, -2.0, saturation=25.0), "saturation", "saturation: 25.0% of outputs lie within 1% of a bound"),
        (
            probe_group("gelu", 0.20, -0.5, dead=2.0),
            "healthy",
            "healthy: gradients within 10^-0.5 from first to last layer, 2.0% dead units, training loss down to 0.200",
        ),
    ],
)
def test_the_diagnosis_names_each_cause_from_the_probes_numbers(group, label, sentence):
    from deepexp.experiments.activations import diagnose

    assert diagnose(group, 2.303) == (label, sentence)


def test_recommendations_name_the_best_the_untested_others_and_each_trouble_from_the_diagnosis():
    from deepexp.experiments.activations import recommendations

    groups = [act_group("relu", [0.97, 0.97, 0.98]), act_group("tanh", [0.70, 0.71, 0.70]), act_group("gelu", [0.96, 0.97, 0.97])]
    diagnoses = {"relu": ("healthy", ""), "tanh": ("saturation", ""), "gelu": ("healthy", "")}
    assert recommendations(groups, diagnoses, math.log(10)) == [
        "For this depth and budget, use relu or any of gelu (not shown to be less accurate with these seeds).",
        "Avoid, or fix the cause named in the diagnosis first: tanh (saturation).",
        "Healthy by every measure here: relu, gelu.",
    ]
    assert recommendations([act_group("relu", [])], {"relu": ("healthy", "")}, math.log(10)) == []  # nothing finished: nothing to recommend


def test_activation_findings_with_no_finished_run_say_so_and_rank_nothing():
    from deepexp.experiments.activations import findings

    assert findings([act_group("relu", [])], 2.303, activations_study()) == ["No run completed, so nothing can be ranked."]


def test_residual_limitations_name_the_short_budget_and_too_few_seeds():
    from deepexp.experiments.residual import limitations

    study = validate(compose_config("residual", ["depths=[20]", "epochs=2", "seeds=2"]))
    assert limitations(study, {"train": 1000}) == [
        "These runs (2 epochs on 1000 training images) are far shorter than He et al.'s (64k iterations on 45k images): degradation "
        "needs full training to appear, deep nets of both kinds are still under-trained this early; only differences the findings "
        "call significant are claims.",
        "2 seed(s) per network: every comparison is indicative only (fewer than 3 per side), and the tests have little power.",
        "A cosine learning-rate schedule instead of the paper's steps at 32k and 48k iterations.",
    ]
    full = validate(compose_config("residual", ["depths=[20]", "epochs=40", "seeds=3"]))
    assert limitations(full, {"train": 45000}) == ["A cosine learning-rate schedule instead of the paper's steps at 32k and 48k iterations."]


def report_group(lr, accs, losses=None, statuses=None):
    rows = [
        {
            "lr": lr,
            "seed": i,
            "status": (statuses or {}).get(i, "completed"),
            "test_acc": acc,
            "run_dir": f"runs/lr{lr}-s{i}",
            "final_train_loss": (losses or [0.3] * len(accs))[i],
        }
        for i, acc in enumerate(accs)
    ]
    return Group({"lr": lr}, rows)


def test_report_findings_call_three_runs_a_side_significant_and_count_diverged_runs():
    from deepexp.commands.report import findings

    best, second = [0.90, 0.91, 0.92], [0.70, 0.71, 0.72]
    lines = findings([report_group(0.1, best), report_group(0.2, second, statuses={2: "diverged"})], "test_acc", 2.303)
    low, high = welch_interval(best, second)
    p = ttest_ind(best, second, equal_var=False).pvalue
    assert lines == [
        "Highest mean test_acc: lr=0.1 with 0.9100 ± 0.0100 (3 runs).",
        f"Against the runner-up, lr=0.2 (0.7100 ± 0.0100): significant with 3 runs (difference +0.2000, 95% CI "
        f"[{low:+.4f}, {high:+.4f}], Welch p = {p:.2g}).",
        "Diverged runs: lr=0.2 (1/3).",
    ]


def test_report_findings_with_two_runs_a_side_are_indicative_only_and_name_runs_at_chance_first():
    from deepexp.commands.report import findings

    lines = findings([report_group(0.1, [0.90, 0.91]), report_group(0.2, [0.10, 0.11], losses=[2.30, 2.29])], "test_acc", 2.303)
    assert lines[0] == (
        "Runs that never left chance level (final training loss above 90% of ln K = 2.303, and final validation accuracy within 3 binomial standard errors above 1/K = 0.100, where one was recorded), counted in their groups: "
        "runs/lr0.2-s0: loss 2.300; runs/lr0.2-s1: loss 2.290."
    )
    assert lines[2].startswith("Against the runner-up, lr=0.2 (0.1050 ± 0.0071): indicative only with 2 runs (difference +0.8000")
    assert lines[2].endswith("fewer than 3 per side cannot establish significance).")
    assert findings([report_group(0.1, [None])], "test_acc", 2.303) == ["No run has test_acc."]


def test_deepexp_report_with_one_group_gives_its_mean_and_says_there_is_nothing_to_compare():
    from deepexp.commands.report import findings
    from deepexp.results import Group

    rows = [{"run_dir": f"r{i}", "seed": i, "status": "completed", "test_acc": acc, "final_train_loss": 0.3} for i, acc in enumerate([0.9, 0.92])]
    assert findings([Group({}, rows)], "test_acc", 2.303) == [
        "Mean test_acc of all runs: 0.9100 ± 0.0141 (2 runs); one group, so nothing to compare."
    ]
