"""Per-layer monitoring measures what the course says it measures, and TensorBoard gets it."""

import pytest
import torch
from torch import nn

from deepexp.models import create_model, init_weights
from deepexp.monitor import LayerMonitor
from deepexp.train import train
from conftest import QUICK, compose_train, needs_mnist


def probe(model, act, x, y):
    return LayerMonitor(model, act, writer=None, every_n_steps=1).probe(model, x, y)


@needs_mnist
def test_sigmoid_gradients_vanish_in_a_12_layer_mlp_while_relu_he_does_not(tmp_path):
    """The classic picture, on real MNIST after one epoch of training (probe-set gradients)."""
    ratios = {}
    for act, init in (("sigmoid", "default"), ("relu", "kaiming")):
        cfg = compose_train([f"act={act}", f"init={init}", "subset=3000", "epochs=1", "monitor.figure=false"])
        metrics = train(cfg, tmp_path / act).metrics
        assert metrics["layers"]["weights"][0] == "layers.0" and len(metrics["layers"]["activations"]) == 12
        last = metrics["history"][-1]
        ratios[act] = last["grad_norm_first"] / last["grad_norm_last"]
    assert ratios["sigmoid"] < 1e-6  # ten orders of magnitude is typical; six is "far below"
    assert ratios["relu"] > 1e-2
    assert ratios["relu"] / ratios["sigmoid"] > 1e5


def test_dead_units_sparsity_and_saturation_are_measured():
    torch.manual_seed(0)
    model = create_model("mlp", in_channels=1, image_shape=(4, 4), num_classes=3, act="relu", depth=2, width=8)
    init_weights(model, "kaiming", "relu")
    with torch.no_grad():
        model.layers[0].bias[:4] = -1e3  # units 0-3 of the first layer can never fire
    x, y = torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,))
    stats = probe(model, "relu", x, y)
    assert stats.dead[0] == pytest.approx(0.5)
    assert stats.sparsity[0] >= 0.5  # the dead half outputs exact zeros
    assert stats.saturation is None  # ReLU is unbounded above: no saturation measure

    sig = create_model("mlp", in_channels=1, image_shape=(4, 4), num_classes=3, act="sigmoid", depth=2, width=8)
    with torch.no_grad():
        sig.layers[0].bias.fill_(50.0)  # every first-layer unit pinned at 1
    stats = probe(sig, "sigmoid", x, y)
    assert stats.saturation[0] == pytest.approx(1.0)
    assert stats.dead[0] == pytest.approx(1.0)  # saturated everywhere = passes no gradient
    assert stats.sparsity[0] == 0.0


def test_dead_channels_of_a_conv_net_are_counted_per_channel():
    torch.manual_seed(0)
    model = create_model("cnn", in_channels=1, image_shape=(28, 28), num_classes=10, act="relu", width=4)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 10:14, 10:14] = 1.0  # the images are blank outside a small square
    with torch.no_grad():  # in eval mode, the first block's BatchNorm adds its bias to the convolution
        model.features[0][0].weight.fill_(1.0)
        model.features[0][1].bias.copy_(torch.tensor([-1e3, -0.5, 1e3, 1e3]))
    # channel 0 never fires; channel 1 fires only on and around the square; channels 2 and 3 always
    model = model.to(memory_format=torch.channels_last)  # as the trainer runs conv nets
    stats = probe(model, "relu", x.contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (16,)))
    assert stats.dead[0] == pytest.approx(0.25)  # a unit is a channel: alive if it fires at any pixel


def test_probe_leaves_grads_and_mode_untouched():
    model = create_model("cnn", in_channels=1, image_shape=(28, 28), num_classes=10, act="relu", width=4)
    model.train()
    probe(model, "relu", torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    assert model.training and all(p.grad is None for p in model.parameters())


def test_probe_normalises_with_batch_statistics_keeps_running_averages_and_turns_dropout_off():
    """Running averages far from the truth (as early in training) change nothing the probe measures,
    the probe changes nothing in them, and dropout does not make two probes differ."""
    import copy

    torch.manual_seed(0)
    model = create_model("mlp", in_channels=1, image_shape=(4, 4), num_classes=3, act="relu", depth=3, width=16, norm="batch", dropout=0.3)
    x, y = torch.randn(32, 1, 4, 4), torch.randint(0, 3, (32,))
    clean = probe(model, "relu", x, y)
    with torch.no_grad():  # running statistics that would put eval-mode outputs off by orders of magnitude
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.fill_(50.0)
                m.running_var.fill_(1e-4)
                m.num_batches_tracked.fill_(7)
    wrong = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    first, second = probe(model, "relu", x, y), probe(model, "relu", x, y)
    # the gradients of a training step on the same batch without dropout
    reference = copy.deepcopy(model).train()
    for m in reference.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    loss = nn.functional.cross_entropy(reference(x), y)
    weights = [m.weight for m in reference.modules() if isinstance(m, nn.Linear)]
    expected = [g.norm().item() for g in torch.autograd.grad(loss, weights)]
    assert first.grad_norm == pytest.approx(expected, rel=1e-5) and first.loss == pytest.approx(loss.item(), rel=1e-6)
    assert first.grad_norm == pytest.approx(clean.grad_norm, rel=1e-5) and first.act_std == pytest.approx(clean.act_std, rel=1e-5)
    assert second.grad_norm == first.grad_norm  # no dropout mask: the same numbers twice
    after = {k: v for k, v in model.state_dict().items() if k in wrong}
    assert all(torch.equal(after[k], wrong[k]) for k in wrong) and model.training


def test_probe_of_a_single_image_uses_the_running_averages():
    """One value per channel has no batch variance: the probe then runs in eval mode instead of failing."""
    model = create_model("mlp", in_channels=1, image_shape=(4, 4), num_classes=3, act="relu", depth=2, width=8, norm="batch")
    stats = probe(model, "relu", torch.randn(1, 1, 4, 4), torch.tensor([1]))
    assert len(stats.grad_norm) == 3 and all(v > 0 for v in stats.grad_norm)


def test_update_ratio_and_grad_norms_match_a_direct_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    monitor = LayerMonitor(model, "relu", writer=None, every_n_steps=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor.capture(True)
    model(torch.randn(16, 5)).pow(2).mean().backward()
    norms = monitor.grad_norms()
    assert torch.allclose(norms, torch.stack([model[0].weight.grad.norm(), model[2].weight.grad.norm()]))
    before = model[0].weight.detach().clone()
    monitor.snapshot_weights()
    opt.step()
    ratio = monitor.update_ratios()[0]
    assert ratio == pytest.approx(((model[0].weight - before).norm() / model[0].weight.norm()).item(), rel=1e-5)


@needs_mnist
def test_tensorboard_event_files_hold_the_per_layer_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_train(QUICK + ["model.depth=3", "act=tanh", "monitor.figure=true", "monitor.hist_every_n_steps=10"])
    history = train(cfg, tmp_path).metrics["history"]
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss/train", "loss/val", "acc/train", "acc/val", "acc/test", "lr", "hparam/test_acc"):
        assert tag in tags, tag
    for layer in ("01.layers.0", "02.layers.2", "03.layers.4", "04.head"):  # numbered as the reports' layer axes
        assert f"grad_norm/{layer}" in tags and f"update_ratio/{layer}" in tags
    for layer in ("01.layers.1", "02.layers.3", "03.layers.5"):
        for stat in ("act_mean", "act_std", "sparsity", "saturation", "dead"):
            assert f"{stat}/{layer}" in tags
    assert "grad_norm_vs_depth" in events.Tags()["images"]
    hparams = events.PluginTagToContent("hparams")  # what TensorBoard's HParams tab reads
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)
    assert b"act" in hparams["_hparams_/session_start_info"] and b"tanh" in hparams["_hparams_/session_start_info"]
    assert "custom_scalars__config__" in events.Tags()["tensors"]  # the Custom Scalars layout
    assert {"weights/01.layers.0", "grads/01.layers.0", "activations/01.layers.1"} <= set(events.Tags()["histograms"])
    steps = [e.step for e in events.Scalars("grad_norm/01.layers.0")]
    assert steps == sorted(steps) and len(steps) >= 2 * 3  # every 5 steps over 2 epochs of 14 steps
    # the values are those of metrics.json (float32 in the event file)
    assert [e.value for e in events.Scalars("loss/val")] == pytest.approx([row["val_loss"] for row in history], rel=1e-6)
    last_probe = history[-1]["layers"]["dead"]
    assert [events.Scalars(f"dead/{layer}")[-1].value for layer in ("01.layers.1", "02.layers.3", "03.layers.5")] == pytest.approx(
        last_probe, abs=1e-7
    )


@pytest.mark.parametrize("model, options", [("mlp", {"depth": 12, "width": 8}), ("resnet110", {"shortcut": "A"})])
def test_layer_tags_sort_in_depth_order_and_count_from_1_as_the_reports_do(model, options):
    """`grad_norm/01.layers.0` ... `grad_norm/13.head`: text order is depth order (not layers.1, layers.11, ...,
    layers.3), and the number is the layer's place on the reports' 1-based layer axis."""
    net = create_model(model, in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", **options)
    monitor = LayerMonitor(net, "relu", writer=None, every_n_steps=1)
    for names, tags in ((monitor.weight_names, monitor.weight_tags), (monitor.act_names, monitor.act_tags)):
        assert sorted(tags) == tags and len(set(tags)) == len(names) >= 12
        assert [int(t.split(".", 1)[0]) for t in tags] == list(range(1, len(names) + 1))
        assert [t.split(".", 1)[1] for t in tags] == names
    if model == "mlp":
        assert monitor.weight_tags[0] == "01.layers.0" and monitor.weight_tags[-1] == "13.head"
    else:  # 110 and more weight layers: three digits
        assert monitor.weight_tags[0].startswith("001.") and len(monitor.weight_tags) > 100


def scalar_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events


@needs_mnist
def test_every_declared_layer_statistic_and_only_those_reach_the_history_the_event_file_and_the_layout(tmp_path, monkeypatch):
    """LAYER_STATS is the one list: a statistic added to it (here the activations' largest output) is computed
    by the hooks, kept by the probe in every history row, logged per layer on the steps and charted in the
    Custom Scalars layout, with no other change."""
    from deepexp import monitor
    from deepexp.train import custom_layout

    added = monitor.LayerStat("act_max", "activation", True, True, summary=lambda y, bounds: y.amax())
    monkeypatch.setattr(monitor, "LAYER_STATS", (*monitor.LAYER_STATS, added))
    declared = [s.name for s in monitor.LAYER_STATS]
    assert declared == ["grad_norm", "update_ratio", "act_mean", "act_std", "sparsity", "saturation", "dead", "act_max"]
    cfg = compose_train(
        [
            "subset=300",
            "epochs=1",
            "model.depth=2",
            "model.width=16",
            "act=tanh",
            "batch_size=64",
            "monitor.every_n_steps=2",
            "monitor.probe_size=32",
            "monitor.figure=false",
            "eval_test=false",
        ]
    )
    metrics = train(cfg, tmp_path).metrics
    in_probe = [s.name for s in monitor.LAYER_STATS if s.in_probe]
    assert [list(row["layers"]) for row in metrics["history"]] == [in_probe] and list(metrics["init_layers"]) == in_probe
    assert all(0 < v <= 1 for v in metrics["history"][0]["layers"]["act_max"])  # tanh's outputs lie below 1
    assert list(custom_layout()["layers"]) == declared
    tags = set(scalar_events(tmp_path).Tags()["scalars"])
    logged = {tag.split("/")[0] for tag in tags if tag.split("/")[-1][:2].isdigit()}
    assert logged == set(declared)
    for layer in ("01.layers.1", "02.layers.3"):  # every activation statistic of every activation module
        assert {f"{s.name}/{layer}" for s in monitor.LAYER_STATS if s.layers == "activation"} <= tags


def test_the_probe_and_the_step_log_compute_a_declared_statistic_as_the_declaration_says(tmp_path, monkeypatch):
    """The value, not only the name: a declared summary's number for each activation module equals the
    summary applied by hand to that module's output; saturation is left out for an unbounded activation."""
    from torch.utils.tensorboard import SummaryWriter

    from deepexp import monitor as monitor_module

    added = monitor_module.LayerStat("act_max", "activation", True, True, summary=lambda y, bounds: y.amax())
    monkeypatch.setattr(monitor_module, "LAYER_STATS", (*monitor_module.LAYER_STATS, added))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.randn(16, 5), torch.randint(0, 2, (16,))
    with torch.no_grad():
        by_hand = [float(model[:2](x).amax()), float(model[:4](x).amax())]
    with SummaryWriter(str(tmp_path)) as writer:
        monitor = LayerMonitor(model, "relu", writer, every_n_steps=1)
        stats = monitor.probe(model, x, y)
        assert list(stats.as_dict()) == ["grad_norm", "act_mean", "act_std", "sparsity", "saturation", "dead", "act_max"]
        assert stats.act_max == pytest.approx(by_hand, rel=1e-6) and stats.saturation is None
        monitor.capture(True)
        nn.functional.cross_entropy(model(x), y).backward()
        norms = monitor.grad_norms()
        monitor.snapshot_weights()
        monitor.log_step(1, norms, monitor.update_ratios())
    events = scalar_events(tmp_path)
    tags = set(events.Tags()["scalars"])
    assert {"act_max/01.1", "act_max/02.3", "sparsity/02.3", "update_ratio/03.4"} <= tags
    assert [events.Scalars(f"act_max/{tag}")[0].value for tag in ("01.1", "02.3")] == pytest.approx(by_hand, rel=1e-6)
    assert not any(tag.startswith("saturation/") for tag in tags)


def test_the_three_named_points_log_only_due_steps_with_the_gradient_norms_before_clipping(tmp_path):
    """before_forward decides the step; after_backward takes the norms before the trainer clips; after_step writes
    them with the trainer's scalars. A step that is not due leaves no hooks and writes nothing."""
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 5), torch.randint(0, 2, (16,))
    norms = {}
    with SummaryWriter(str(tmp_path)) as writer:
        monitor = LayerMonitor(model, "relu", writer, every_n_steps=2)
        for step in (1, 2):
            logged = monitor.before_forward(step, last_of_epoch=False)
            assert logged == (step == 2) and bool(monitor._handles) == logged
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            monitor.after_backward()
            norms[step] = float(model[0].weight.grad.norm())
            nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            opt.step()
            monitor.after_step(step, {"lr/step": 0.1})
            assert not monitor._handles
    events = scalar_events(tmp_path)
    assert [(e.step, e.value) for e in events.Scalars("grad_norm/01.0")] == [(2, pytest.approx(norms[2], rel=1e-6))]
    assert norms[2] > 1e-3 and [e.step for e in events.Scalars("lr/step")] == [2]
