"""`deepexp residual` on real CIFAR-10 images: files, costs, and the gradient-flow finding."""

import csv

import pytest

from conftest import needs_cifar, needs_fashion_mnist, run_cli

pytestmark = pytest.mark.xdist_group("residual_study")  # one xdist worker, so the module's study runs once


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("residual")
    # One worker: two would each pay a process start-up (torch alone is seconds) for runs of two steps;
    # tests/test_activations.py checks n_workers=2.
    out = run_cli(
        [
            "residual",
            "preset=quick",
            "dataset=cifar10",
            "depths=[20]",
            "seeds=2",
            "epochs=1",
            "subset=300",
            "ablations=[norm,shortcut]",
            "n_workers=1",
            f"hydra.run.dir={root / 'exp'}",
        ],
        root,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return root / "exp"


@pytest.mark.slow
@needs_cifar
def test_quick_comparison_writes_every_file(study):
    for name in ("summary.csv", "summary.md", "report.md"):
        assert (study / name).stat().st_size > 0
    for plot in ("training_error", "grad_norm_vs_depth", "grad_norm_vs_depth_norm_none", "grad_heatmap"):
        assert (study / "plots" / f"{plot}.png").stat().st_size > 10_000, plot
    report = (study / "report.md").read_text()
    for section in ("## Setup", "## Results", "## Findings", "## Limitations", "## References"):
        assert section in report
    assert "far shorter than He et al." in report and "under-trained" in report  # says plainly that one epoch shows little


@pytest.mark.slow
@needs_cifar
def test_costs_are_counted_per_network(study):
    rows = list(csv.DictReader(open(study / "summary.csv")))
    cost = {(r["network"], r["variant"]): (int(r["params"]), int(r["macs"])) for r in rows}
    assert cost[("resnet20", "main")][0] == cost[("plain20", "main")][0] == 269_722  # option A adds no parameters
    assert 40e6 < cost[("resnet20", "main")][1] < 42e6  # ~41M MACs per 32x32 image
    assert cost[("resnet20", "shortcut=C")][0] > cost[("resnet20", "shortcut=B")][0] > cost[("resnet20", "main")][0]


@pytest.mark.slow
@needs_cifar
def test_shortcuts_keep_first_layer_gradients_alive_without_batch_norm(study):
    rows = [r for r in csv.DictReader(open(study / "summary.csv")) if r["variant"] == "norm=none"]
    grad = {net: [float(r["grad_first_layer_epoch1"]) for r in rows if r["network"] == net] for net in ("plain20", "resnet20")}
    assert min(grad["resnet20"]) > 100 * max(grad["plain20"]), grad


@pytest.mark.slow
@needs_fashion_mnist
def test_the_quick_preset_trains_its_networks_well_above_chance_and_calls_itself_a_first_look(tmp_path):
    """The quick preset's data and batch (Fashion-MNIST, batch 64), shrunk for the suite: one seed, depth 20, 2 epochs
    on 1,000 images (28 updates; the whole quick preset has 168). Chance is 0.10, with a standard error of 0.003 on the
    10,000 test images: above 0.3 the networks have learned."""
    out = run_cli(
        ["residual", "preset=quick", "depths=[20]", "seeds=1", "subset=1000", "epochs=2", "n_workers=1", f"hydra.run.dir={tmp_path / 'exp'}"],
        tmp_path,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "exp" / "summary.csv")))
    assert {r["network"] for r in rows} == {"plain20", "resnet20"}
    assert max(float(r["test_acc"]) for r in rows) > 0.3, rows
    report = (tmp_path / "exp" / "report.md").read_text()
    assert "fashion_mnist" in report and "Quick results are a first look" in report.split("## Limitations")[1]


def test_bad_residual_input_is_one_line(tmp_path):
    out = run_cli(["residual", "depths=[21]", f"hydra.run.dir={tmp_path / 'x'}"], tmp_path)
    assert out.returncode == 2 and "depth 21 has no CIFAR ResNet" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_model_cost_is_counted_at_the_runs_own_image_shape():
    """The rebuilt network is measured at the (H, W) its run trained on; runs recorded before (H, W) hold a square side."""
    from deepexp.experiments.residual import model_cost
    from deepexp.measure import count_macs
    from deepexp.models import create_model

    config = {"model": "resnet20", "act": "relu", "model.norm": "batch", "model.shortcut": "A"}
    wide = model_cost({"config": config, "data": {"in_channels": 3, "image_shape": [20, 36], "num_classes": 10}})
    net = create_model("resnet20", in_channels=3, image_shape=(20, 36), num_classes=10, act="relu", shortcut="A")
    assert wide == (269_722, count_macs(net, (3, 20, 36)))
    square = model_cost({"config": config, "data": {"in_channels": 3, "image_size": 32, "num_classes": 10}})
    assert square[0] == 269_722 and 40e6 < square[1] < 42e6 and square[1] != wide[1]


@pytest.mark.parametrize("epochs", [1, 3])
def test_gradient_flow_sentence_names_epoch_1_and_the_last_only_when_they_differ(epochs):
    from deepexp.config import compose_config, validate
    from deepexp.experiments.residual import MAIN, findings
    from deepexp.results import Group

    study = validate(compose_config("residual", ["depths=[20]", f"epochs={epochs}", "ablations=[]", "densenet=false"]))

    def runs(network, grad_epoch1, grad_final):
        rows = [
            {
                "network": network,
                "variant": MAIN,
                "seed": seed,
                "params": 1,
                "macs": 1,
                "final_train_loss": 0.5,
                "final_train_error": 0.2,
                "test_acc": 0.8 + seed / 100,
                "grad_first_layer_epoch1": grad_epoch1,
                "grad_first_layer_final": grad_final,
                "grad_log10_first_over_last_final": -1.0,
            }
            for seed in range(2)
        ]
        return Group({"variant": MAIN, "network": network}, rows)

    # one epoch: the epoch-1 and final gradients are the same measurement
    groups = {
        (MAIN, "plain20"): runs("plain20", 0.01, 0.01 if epochs == 1 else 0.02),
        (MAIN, "resnet20"): runs("resnet20", 0.05, 0.05 if epochs == 1 else 0.02),
    }
    line = next(line for line in findings(study, groups, chance=2.3) if line.startswith("**Gradient flow"))
    said = "5.00x the plain net's after its one epoch;" if epochs == 1 else "5.00x the plain net's after epoch 1 and 1.00x after the last epoch;"
    assert said in line


def test_the_gradient_heat_map_averages_seeds_in_log_space():
    """Seeds with gradient norms 10 and 1000 give a cell of log10 = 2 (the geometric mean), not log10(505)."""
    from deepexp.experiments import residual

    history = lambda norm: [{"epoch": 1, "train_acc": 0.5, "val_acc": 0.5, "layers": {"grad_norm": [norm, norm]}}]
    cells = (("plain20", 0, 10.0), ("plain20", 1, 1000.0), ("resnet20", 0, 1.0))
    runs = [{"status": "completed", "history": history(norm)} for _, _, norm in cells]
    rows = [{"variant": "main", "network": net, "seed": seed} for net, seed, _ in cells]
    figures = {"grad_heatmap": residual.grad_heatmap_figure(runs, rows, "test")}
    plain = figures["grad_heatmap"].axes[0].images[0].get_array()
    assert [float(v) for v in plain.ravel()] == pytest.approx([2.0, 2.0])
