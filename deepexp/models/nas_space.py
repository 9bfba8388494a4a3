"""Project 4's search space: chains of conv / depthwise-separable / residual layers.

An architecture is a small JSON (or YAML) spec:

    {"layers": [{"type": "conv", "channels": 32, "stride": 1},
                {"type": "dws", "channels": 64, "stride": 2},
                {"type": "residual", "channels": 64, "stride": 1}, ...]}

5 to 15 layers; channels in {32, 64, 128, 256}; stride 2 (downsampling) on at most
three layers; every layer is conv -> BatchNorm -> act (`residual` is two 3x3 convs
with an identity or 1x1-projection shortcut). A 3x3 stem conv to the first layer's
width comes first, global average pooling and a linear head last. `deepexp train
model=nas model.arch=PATH` trains any spec; `param_count` predicts the parameters
without building the network.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Tuple

from torch import Tensor, nn

from ..errors import ConfigError
from .activations import act_layer
from .layers import GlobalAvgPool
from .efficient import conv_norm_act, depthwise_separable_block
from .registry import register_model

LAYER_TYPES = ("conv", "dws", "residual")
CHANNELS = (32, 64, 128, 256)
MIN_LAYERS, MAX_LAYERS, MAX_DOWNSAMPLES = 5, 15, 3
Spec = Dict[str, Any]


def check_spec(spec: Any, where: str = "arch") -> Spec:
    """The spec itself if it is valid; otherwise a one-line ConfigError saying what is wrong."""
    layers = spec.get("layers") if isinstance(spec, dict) else None
    if not isinstance(layers, list):
        raise ConfigError(f"{where}: a NAS spec is a mapping with a 'layers' list")
    if not MIN_LAYERS <= len(layers) <= MAX_LAYERS:
        raise ConfigError(f"{where}: {len(layers)} layers; the search space has {MIN_LAYERS} to {MAX_LAYERS}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or set(layer) - {"type", "channels", "stride"} or "type" not in layer or "channels" not in layer:
            raise ConfigError(f"{where}: layer {i} must have exactly type, channels and optionally stride, got {layer!r}")
        if layer["type"] not in LAYER_TYPES:
            raise ConfigError(f"{where}: layer {i} has unknown type {layer['type']!r}; choose one of: {', '.join(LAYER_TYPES)}")
        if layer["channels"] not in CHANNELS:
            raise ConfigError(f"{where}: layer {i} has channels {layer['channels']!r}; choose one of: {', '.join(map(str, CHANNELS))}")
        if layer.get("stride", 1) not in (1, 2):
            raise ConfigError(f"{where}: layer {i} has stride {layer['stride']!r}; choose 1 or 2")
    if sum(layer.get("stride", 1) == 2 for layer in layers) > MAX_DOWNSAMPLES:
        raise ConfigError(f"{where}: more than {MAX_DOWNSAMPLES} layers with stride 2")
    return {"layers": [{"type": layer["type"], "channels": layer["channels"], "stride": layer.get("stride", 1)} for layer in layers]}


def load_spec(path: str | Path) -> Spec:
    """The checked spec in the JSON or YAML file `path`, told apart by content whatever the file is named.

    Raises ConfigError (one line) for a file that cannot be read, is neither JSON nor YAML, or is no valid spec."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"model.arch={path}: cannot read the spec ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        spec = json.loads(text)
    except ValueError:
        import yaml  # JSON first, as the search writes it; YAML (a superset) for specs written by hand

        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"model.arch={path}: neither JSON nor YAML ({str(exc).splitlines()[0]})") from None
    return check_spec(spec, f"model.arch={path}")


def spec_key(spec: Spec) -> str:
    """A short readable name, e.g. `c32-d64s-r64-...` (c/d/r: conv/dws/residual, s: stride 2)."""
    return "-".join(f"{layer['type'][0]}{layer['channels']}{'s' if layer['stride'] == 2 else ''}" for layer in spec["layers"])


# --- the network -------------------------------------------------------------------------------


class ResidualLayer(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut (identity, or a 1x1 conv-BN where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, act, bn: bool):
        super().__init__()
        self.body = nn.Sequential(conv_norm_act(c_in, c_out, 3, act, bn, stride=stride), conv_norm_act(c_out, c_out, 3, None, bn))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else conv_norm_act(c_in, c_out, 1, None, bn, stride=stride)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def make_layer(kind: str, c_in: int, c_out: int, stride: int, act, bn: bool) -> nn.Module:
    if kind == "conv":
        return conv_norm_act(c_in, c_out, 3, act, bn, stride=stride)
    if kind == "dws":
        return depthwise_separable_block(c_in, c_out, act, bn, stride)
    return ResidualLayer(c_in, c_out, stride, act, bn)


class NASNet(nn.Module):
    def __init__(self, spec: Spec, in_channels: int, num_classes: int, act, batch_norm: bool):
        super().__init__()
        layers, c_in = spec["layers"], spec["layers"][0]["channels"]
        self.stem = conv_norm_act(in_channels, c_in, 3, act, batch_norm)
        blocks = []
        for layer in layers:
            blocks.append(make_layer(layer["type"], c_in, layer["channels"], layer["stride"], act, batch_norm))
            c_in = layer["channels"]
        self.features = nn.Sequential(*blocks)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(self.stem(x))))


@register_model("nas")
def nas(*, in_channels: int, image_shape: Tuple[int, int], num_classes: int, act: str, arch: str | Spec, norm: str = "batch") -> NASNet:
    spec = check_spec(arch) if isinstance(arch, dict) else load_spec(arch)
    return NASNet(spec, in_channels, num_classes, act_layer(act), batch_norm=norm == "batch")


def param_count(spec: Spec, in_channels: int, num_classes: int, batch_norm: bool = True) -> int:
    """Parameters of NASNet(spec) by formula (the tests check it against the built network)."""
    bn = 2 if batch_norm else 0  # BatchNorm's weight and bias per channel; convs have a bias only without it

    def conv(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
        return k * k * (c_in // groups) * c_out + (bn * c_out if batch_norm else c_out)

    c_in = spec["layers"][0]["channels"]
    total = conv(in_channels, c_in, 3)
    for layer in spec["layers"]:
        c, s = layer["channels"], layer["stride"]
        if layer["type"] == "conv":
            total += conv(c_in, c, 3)
        elif layer["type"] == "dws":
            total += conv(c_in, c_in, 3, groups=c_in) + conv(c_in, c, 1)
        else:
            total += conv(c_in, c, 3) + conv(c, c, 3) + (conv(c_in, c, 1) if s != 1 or c_in != c else 0)
        c_in = c
    return total + c_in * num_classes + num_classes


def mac_count(spec: Spec, input_shape: Tuple[int, int, int], num_classes: int) -> int:
    """Multiply-accumulates per image of NASNet(spec) on inputs of `input_shape` = (C, H, W), by formula
    (convolutions and the head, as torch.utils.flop_counter counts them); instant, so candidates over a
    budget are skipped unbuilt.

    A k x k convolution (padding k // 2, stride s) on an H x W map gives H' x W' outputs, with
    H' = (H - 1) // s + 1 (likewise W'), each costing k * k * (c_in / groups) * c_out MACs.
    """
    in_channels, h, w = input_shape

    def out(n: int, stride: int) -> int:
        return (n - 1) // stride + 1  # 3x3 with padding 1, or 1x1 without

    def conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> int:
        return out(h, stride) * out(w, stride) * k * k * (c_in // groups) * c_out

    c_in = spec["layers"][0]["channels"]
    total = conv(in_channels, c_in, 3)
    for layer in spec["layers"]:
        c, s = layer["channels"], layer["stride"]
        if layer["type"] == "conv":
            total += conv(c_in, c, 3, s)
        elif layer["type"] == "dws":
            total += conv(c_in, c_in, 3, s, groups=c_in)
            total += out(h, s) * out(w, s) * c_in * c  # the pointwise 1x1, at the strided resolution
        else:
            total += conv(c_in, c, 3, s) + (conv(c_in, c, 1, s) if s != 1 or c_in != c else 0)
            total += out(h, s) * out(w, s) * 9 * c * c  # the second 3x3, at the strided resolution
        h, w = out(h, s), out(w, s)
        c_in = c
    return total + c_in * num_classes


# --- sampling and mutation ---------------------------------------------------------------------


def random_spec(rng: random.Random) -> Spec:
    depth = rng.randint(MIN_LAYERS, MAX_LAYERS)
    down = set(rng.sample(range(depth), rng.randint(0, MAX_DOWNSAMPLES)))
    return {"layers": [{"type": rng.choice(LAYER_TYPES), "channels": rng.choice(CHANNELS), "stride": 2 if i in down else 1} for i in range(depth)]}


def mutate(spec: Spec, rng: random.Random) -> Spec:
    """One random edit that keeps the spec valid: change a layer's type, width or stride, add or remove a layer."""
    layers: List[dict] = [dict(layer) for layer in spec["layers"]]
    moves = ["type", "channels", "stride"] + (["add"] if len(layers) < MAX_LAYERS else []) + (["remove"] if len(layers) > MIN_LAYERS else [])
    move = rng.choice(moves)
    i = rng.randrange(len(layers))
    if move == "type":
        layers[i]["type"] = rng.choice([t for t in LAYER_TYPES if t != layers[i]["type"]])
    elif move == "channels":
        layers[i]["channels"] = rng.choice([c for c in CHANNELS if c != layers[i]["channels"]])
    elif move == "stride":
        downs = sum(layer["stride"] == 2 for layer in layers)
        if layers[i]["stride"] == 2 or downs < MAX_DOWNSAMPLES:
            layers[i]["stride"] = 3 - layers[i]["stride"]
        else:  # at the limit: move a downsampling step instead of adding one
            j = rng.choice([k for k, layer in enumerate(layers) if layer["stride"] == 2])
            layers[j]["stride"], layers[i]["stride"] = 1, 2
    elif move == "add":
        layers.insert(i, {"type": rng.choice(LAYER_TYPES), "channels": rng.choice(CHANNELS), "stride": 1})
    else:
        layers.pop(i)
    return check_spec({"layers": layers})
