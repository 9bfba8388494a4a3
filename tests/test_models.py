"""Every registered model builds, runs forward and backward, and honours `act=`."""

import pytest
import torch
from torch import nn

from deepexp.config import config_choices
from deepexp.measure import count_macs
from deepexp.models import ACTIVATIONS, create_model, init_weights, is_activation, list_models
from deepexp.models.activations import act_layer

SHAPES = {"mnist": (1, 28), "cifar": (3, 32)}
NAS_EXAMPLE = {
    "layers": [
        {"type": t, "channels": 32, "stride": s} for t, s in (("conv", 1), ("dws", 2), ("residual", 1), ("residual", 2), ("dws", 1), ("conv", 2))
    ]
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_and_activation_has_its_config_file_and_no_other():
    # One name everywhere: registry key, configs/<group>/<name>.yaml and command-line choice. The study
    # configs check names against the files, which needs no torch.
    assert sorted(list_models()) == config_choices("model")
    assert sorted(ACTIVATIONS.names()) == config_choices("act")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_forward_backward_every_model(name, shape):
    channels, size = SHAPES[shape]
    torch.manual_seed(0)
    options = {"arch": NAS_EXAMPLE} if name == "nas" else {}  # the one model without a default architecture
    model = create_model(name, in_channels=channels, image_shape=(size, size), num_classes=10, act="gelu", **options)
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_non_square_images(name):
    """Images need not be square: each model is built for (H, W) and runs, and its MACs are counted, at that shape."""
    c, h, w = 3, 20, 36
    torch.manual_seed(0)
    options = {"arch": NAS_EXAMPLE} if name == "nas" else {}
    model = create_model(name, in_channels=c, image_shape=(h, w), num_classes=7, act="relu", **options)
    out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert count_macs(model, (c, h, w)) > 0
    if name == "mlp":  # the flattened input: C * H * W features, not C * H * H
        assert model.layers[0].in_features == c * h * w


@pytest.mark.parametrize(
    "name",
    [
        "mlp",
        "cnn",
        "resnet18",
        "resnet20",
        "plain20",
        "resnet50",
        "baseline_cnn",
        "dws_cnn",
        "bottleneck_cnn",
        "squeeze_cnn",
        "inception_cnn",
        "mobilenet_v2",
    ],
)
@pytest.mark.parametrize("act", ACTIVATIONS.names())
def test_activation_reaches_every_block(name, act):
    model = create_model(name, in_channels=3, image_shape=(32, 32), num_classes=10, act=act)
    expected = type(act_layer(act)())
    acts = [m for m in model.modules() if is_activation(m)]
    assert acts and all(type(m) is expected for m in acts)


@pytest.mark.parametrize("act", ACTIVATIONS.names())
def test_every_registered_activation_declares_its_layer_class_init_and_bounds_and_they_hold(act):
    """What the registry says of an activation is what its layer does: `module` is the class `make` builds (the
    monitor finds the layers by it), init=auto picks `matched_init`, and `bounds` are declared exactly for the
    saturating activations (outputs within them, reaching both within 1%); the others grow without bound."""
    info = ACTIVATIONS.get(act)
    layer = info.make()
    assert type(layer) is info.module and is_activation(layer)
    assert info.matched_init in ("kaiming", "lecun", "xavier")
    assert (
        init_weights(create_model("mlp", in_channels=1, image_shape=(4, 4), num_classes=2, act=act, depth=1, width=4), "auto", act)
        == info.matched_init
    )
    with torch.no_grad():
        y = layer(torch.linspace(-50.0, 50.0, 1001))
    if info.bounds is not None:
        low, high = info.bounds
        margin = 0.01 * (high - low)
        assert low <= y.min() <= low + margin and high - margin <= y.max() <= high
    else:
        assert y.max() >= 50.0


def test_a_newly_registered_activation_is_recognised_as_one(monkeypatch):
    from deepexp.models.activations import Activation

    monkeypatch.setattr(ACTIVATIONS, "_entries", dict(ACTIVATIONS._entries))  # registered for this test only
    ACTIVATIONS.register("hardswish")(Activation(nn.Hardswish, "kaiming", "relu"))
    assert ACTIVATIONS.get("hardswish").module is nn.Hardswish
    assert is_activation(nn.Hardswish()) and not is_activation(nn.Linear(2, 2)) and not is_activation(nn.Softmax(dim=1))


@pytest.mark.parametrize("name, millions", [("resnet20", 0.27), ("resnet32", 0.46), ("resnet44", 0.66), ("resnet56", 0.85), ("resnet110", 1.7)])
def test_cifar_resnet_parameter_counts_match_he_et_al(name, millions):
    model = create_model(name, in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", shortcut="A")
    assert round(n_params(model) / 1e6, 2 if millions < 1 else 1) == millions


def test_resnet18_cifar_stem_has_11_17m_parameters():
    model = create_model("resnet18", in_channels=3, image_shape=(32, 32), num_classes=10, act="relu")
    assert n_params(model) == 11_173_962


def test_plain_net_equals_resnet_without_shortcuts():
    resnet = create_model("resnet20", in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", shortcut="A")
    plain = create_model("plain20", in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", shortcut="A")
    # Option A shortcuts have no parameters, so the two nets have exactly the same weights.
    assert n_params(resnet) == n_params(plain)
    assert [n for n, _ in resnet.named_parameters()] == [n for n, _ in plain.named_parameters()]


def test_unknown_model_and_option_are_one_line_errors():
    from deepexp.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model 'nope'; choose one of"):
        create_model("nope", in_channels=1, image_shape=(28, 28), num_classes=10)
    with pytest.raises(ConfigError, match="model 'mlp'"):
        create_model("mlp", in_channels=1, image_shape=(28, 28), num_classes=10, shortcut="A")


@pytest.mark.parametrize("act, expected", [("relu", "kaiming"), ("selu", "lecun"), ("tanh", "xavier"), ("sigmoid", "xavier")])
def test_auto_init_is_matched_to_the_activation(act, expected):
    model = create_model("mlp", in_channels=1, image_shape=(28, 28), num_classes=10, act=act, depth=3, width=512)
    assert init_weights(model, "auto", act) == expected
    w = model.layers[2].weight  # the second hidden layer: fan_in 512
    target = {"kaiming": (2 / 512) ** 0.5, "lecun": (1 / 512) ** 0.5, "xavier": torch.nn.init.calculate_gain(act) * (2 / 1024) ** 0.5}[expected]
    assert w.std().item() == pytest.approx(target, rel=0.05)
    assert model.layers[0].bias.abs().sum() == 0


def test_a_selu_mlp_with_dropout_uses_alpha_dropout_and_stays_self_normalising():
    """Klambauer et al. 2017: a deep SELU net (LeCun init) keeps zero mean and unit variance from layer
    to layer in training only with alpha dropout; plain dropout drifts (mean 0.14, std 1.46 at layer 12)."""
    torch.manual_seed(0)
    model = create_model("mlp", in_channels=1, image_shape=(28, 28), num_classes=10, act="selu", depth=12, width=256, dropout=0.2)
    init_weights(model, "auto", "selu")
    drops = [type(m) for m in model.modules() if "Dropout" in type(m).__name__]
    assert drops == [nn.AlphaDropout] * 12
    last = [m for m in model.modules() if isinstance(m, nn.SELU)][-1]
    seen = []
    last.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        model.train()(torch.randn(4096, 1, 28, 28))
    mean, std = seen[0].mean().item(), seen[0].std().item()
    assert abs(mean) < 0.05 and abs(std - 1) < 0.05, (mean, std)  # measured: 0.003, 1.001 (seeds 0-2 within 0.003)
    # every other activation keeps plain dropout
    relu = create_model("mlp", in_channels=1, image_shape=(28, 28), num_classes=10, act="relu", depth=2, width=8, dropout=0.2)
    assert [type(m) for m in relu.modules() if "Dropout" in type(m).__name__] == [nn.Dropout] * 2


RESNET_FAMILY = [n for n in list_models() if n.startswith(("resnet", "plain"))]


@pytest.mark.parametrize("name", RESNET_FAMILY)
@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_resnet_and_plain_net_with_every_shortcut_option(name, shortcut, shape):
    channels, size = SHAPES[shape]
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, image_shape=(size, size), num_classes=10, act="relu", shortcut=shortcut)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    if name.startswith("plain"):  # no shortcuts at all, whatever the option says
        assert not any("shortcut" in n for n, _ in model.named_modules() if n)


# Pooling layers whose CUDA backward has no deterministic kernel (torch.use_deterministic_algorithms' list).
NONDETERMINISTIC_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool3d,
    nn.FractionalMaxPool2d,
    nn.FractionalMaxPool3d,
)


def test_no_model_pools_through_a_layer_without_a_deterministic_cuda_backward():
    for name in list_models():
        options = {"arch": NAS_EXAMPLE} if name == "nas" else {}
        model = create_model(name, in_channels=3, image_shape=(32, 32), num_classes=10, act="relu", **options)
        found = [n for n, m in model.named_modules() if isinstance(m, NONDETERMINISTIC_POOLS)]
        assert found == [], (name, found)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_global_average_pooling_is_adaptive_pooling_to_1x1_bit_for_bit(memory_format):
    """The mean over H and W gives the numbers, and the gradients, of the AdaptiveAvgPool2d(1) it replaced."""
    from deepexp.models.layers import GlobalAvgPool

    torch.manual_seed(0)
    x = torch.randn(8, 24, 7, 5).contiguous(memory_format=memory_format).requires_grad_()
    ours, theirs = GlobalAvgPool()(x), nn.AdaptiveAvgPool2d(1)(x).flatten(1)
    assert ours.shape == (8, 24) and torch.equal(ours, theirs)
    weights = torch.randn(8, 24)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), x)
    assert torch.equal(grad_ours, grad_theirs)


def test_initialisation_the_monitor_and_the_zero_cost_proxies_take_the_same_weight_layers():
    """Dense and convolution kernels of every kind (models.layers.WEIGHT_LAYERS), in all three places; a batch
    norm's per-channel scale is in none of them."""
    from deepexp.models.layers import WEIGHT_LAYERS
    from deepexp.monitor import LayerMonitor
    from deepexp.zero_cost import loss_gradients, snip

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Unflatten(1, (1, 4)), nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 5))
    kernels = [net[0].weight, net[2].weight, net[6].weight]
    assert WEIGHT_LAYERS == (nn.Linear, nn.Conv1d, nn.Conv2d)
    with torch.no_grad():
        for m in (net[0], net[2], net[6]):
            m.bias.fill_(1.0)
    init_weights(net, "kaiming", "relu")
    assert all(net[i].bias.abs().sum() == 0 for i in (0, 2, 6)) and torch.equal(net[3].weight, torch.ones(3))
    assert [name for name, _ in LayerMonitor(net, "relu", writer=None, every_n_steps=1).weights] == ["0", "2", "6"]
    x, y = torch.randn(8, 2, 8), torch.randint(0, 5, (8,))
    grads = loss_gradients(net, x, y)
    assert [w.data_ptr() for w, _ in grads] == [w.data_ptr() for w in kernels]
    assert float(snip(grads)) == pytest.approx(sum(float((w * w.grad).abs().sum()) for w in kernels), rel=1e-6)
