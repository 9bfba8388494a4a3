"""Per-layer training diagnostics: gradient norms, activation statistics, dead units.

What is measured, per layer (`LAYER_STATS`, the one list that logging, the probe,
metrics.json and TensorBoard's custom layout are derived from):
- every weight layer (models.layers.WEIGHT_LAYERS, tagged by its module path, e.g.
  `layers.0`): the L2 norm of its gradient as backward produced it (unscaled, before
  any clipping) and the update-to-weight ratio ||dW|| / ||W|| of the step;
- every activation module (e.g. `layers.1`): mean, std, sparsity (fraction of
  outputs exactly zero), saturation (bounded activations only: fraction within 1%
  of the output range of a bound), and dead units (fraction of units that pass no
  gradient, |f'(x)| < 1e-3, on any image of a fixed probe set).

How: forward hooks on the activation modules and the weights' `.grad` after
backward (not `register_full_backward_hook`, which breaks with in-place ops and
residual additions). Statistics stay on the device, are stacked, and cross to the
host once per log step. Hooks do nothing on steps that are not logged. They are added
on logged steps only, so with `compile=true` the trainer runs those steps through the
uncompiled module: a compiled module does not run hooks added after it was compiled.

Each epoch ends with a probe: one forward and backward pass on the same probe images
(without touching `.grad` or the optimizer), so the per-epoch layer statistics in
metrics.json compare across epochs, activations and runs. Batch norm normalises the
probe batch with its own statistics, as in a training step, and its running averages
are left as they were; dropout is off (`batch_statistics`). Early in training the
running averages lag far behind the weights, and eval-mode gradients would measure
that lag (a plain net's validation loss can be thousands while its training loss is 2).

Tags: each layer's scalars are written as `<statistic>/<NN>.<module path>`, e.g.
`grad_norm/01.layers.0`, NN being the layer's 1-based position from input to output
among the weight layers (grad_norm, update_ratio, weights, grads) or the activation
modules (act_mean, act_std, sparsity, saturation, dead, activations), zero-padded so
that TensorBoard lists them in depth order; the reports' layer axes count the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.activations import ACTIVATIONS, is_activation
from .models.layers import WEIGHT_LAYERS, weight_layers  # noqa: F401  (WEIGHT_LAYERS: importers' name for it here)
from .plots import integer_ticks, panels

DEAD_DERIVATIVE = 1e-3  # a unit whose local slope stays below this on every probe image is dead
FD_EPS = 1e-3  # finite-difference step for the local slope


Bounds = Optional[Tuple[float, float]]


@dataclass(frozen=True)
class LayerStat:
    """One per-layer statistic: where it is measured and under which name it is written."""

    name: str  # the key in metrics.json (a history row's `layers`) and the TensorBoard tag prefix, `<name>/<NN>.<path>`
    layers: str  # "weight": one number per weight layer; "activation": one per activation module
    on_steps: bool  # measured on logged training steps (TensorBoard, every monitor.every_n_steps steps)
    in_probe: bool  # measured by the probe at the start and at each epoch's end (metrics.json and TensorBoard)
    # An activation statistic computed from a module's output: (output y as float32, the activation's output
    # bounds or None) -> 0-d tensor. None: computed by the monitor's own code (gradients, updates, dead units).
    summary: Optional[Callable[[Tensor, Bounds], Tensor]] = None
    bounded_only: bool = False  # defined for bounded activations only: not written, and None in metrics.json, elsewhere


def _saturation(y: Tensor, bounds: Bounds) -> Tensor:
    """Fraction of outputs within 1% of the output range of a bound (0 for an unbounded activation)."""
    if bounds is None:
        return y.new_zeros(())
    low, high = bounds
    margin = 0.01 * (high - low)
    return ((y <= low + margin) | (y >= high - margin)).float().mean()


# Every per-layer statistic, in the order metrics.json and the custom layout list them.
LAYER_STATS = (
    LayerStat("grad_norm", "weight", on_steps=True, in_probe=True),  # ||dLoss/dW||_2 as backward made it
    LayerStat("update_ratio", "weight", on_steps=True, in_probe=False),  # ||W_after - W_before|| / ||W_after||
    LayerStat("act_mean", "activation", True, True, summary=lambda y, bounds: y.mean()),
    LayerStat("act_std", "activation", True, True, summary=lambda y, bounds: y.std()),
    LayerStat("sparsity", "activation", True, True, summary=lambda y, bounds: (y == 0).float().mean()),
    LayerStat("saturation", "activation", True, True, summary=_saturation, bounded_only=True),
    LayerStat("dead", "activation", on_steps=False, in_probe=True),  # no unit slope above DEAD_DERIVATIVE on the probe set
)


def activation_summaries() -> Tuple[LayerStat, ...]:
    """The statistics the forward hooks compute from each activation module's output, in LAYER_STATS order."""
    return tuple(s for s in LAYER_STATS if s.summary is not None)


def layer_charts() -> Dict[str, list]:
    """TensorBoard Custom Scalars charts: each declared per-layer statistic, every layer in one chart."""
    return {s.name: ["Multiline", [f"^{s.name}/"]] for s in LAYER_STATS}


def layer_tags(names: List[str]) -> List[str]:
    """TensorBoard tag suffixes of layers listed from input to output: `NN.<module path>`.

    NN is the layer's 1-based position in `names`, zero-padded to at least two digits (three from
    100 layers on) so that the tags sort in depth order as text, and the same number the reports'
    layer axes show (`layers.0`, ..., `head` of a 12-layer MLP -> `01.layers.0`, ..., `13.head`)."""
    width = max(2, len(str(len(names))))
    return [f"{i:0{width}d}.{name}" for i, name in enumerate(names, start=1)]


@contextmanager
def batch_statistics(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, `model` runs as in a training step but for what must not change it: every
    batch-norm layer normalises with the statistics of the batch it gets (training mode), and its
    running mean, variance and batch counter are put back afterwards; every other module is in eval
    mode, so dropout is off. On exit every module is back in the mode of `model` (the trainer keeps
    them all in one mode).

    `enabled=False`: plain eval mode, batch norm on its running averages (for a batch of one image,
    whose single value per channel has no variance to normalise with)."""
    was_training = model.training
    norms = [m for m in model.modules() if enabled and isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[b.detach().clone() for b in m.buffers(recurse=False)] for m in norms]
    model.eval()
    for m in norms:
        m.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for buffer, value in zip(m.buffers(recurse=False), buffers):
                    buffer.copy_(value)
        model.train(was_training)


@dataclass
class LayerStats:
    """Per-layer numbers from one probe pass, as plain lists (JSON-ready).

    values: each probe statistic of LAYER_STATS by name (`stats.grad_norm` reads `values["grad_norm"]`),
    one number per layer from input to output; None for a bounded-only statistic of an unbounded activation.
    loss: the mean cross-entropy of the probe images."""

    values: Dict[str, Optional[List[float]]]
    loss: float

    def __getattr__(self, name: str) -> Optional[List[float]]:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict:
        """The per-layer statistics by name, as a history row of metrics.json holds them (`layers`)."""
        return dict(self.values)


class LayerMonitor:
    """Collects per-layer statistics from `model` and writes them to a TensorBoard writer."""

    def __init__(self, model: nn.Module, act: str, writer, every_n_steps: int, hist_every_n_steps: int = 0):
        self.writer = writer
        self.every_n_steps = every_n_steps
        self.hist_every_n_steps = hist_every_n_steps
        self.weights: List[Tuple[str, Tensor]] = [(name, m.weight) for name, m in weight_layers(model)]
        self.acts: List[Tuple[str, nn.Module]] = [(name, m) for name, m in model.named_modules() if is_activation(m)]
        self.weight_tags = layer_tags(self.weight_names)  # `01.layers.0`: the suffix of each weight layer's tags
        self.act_tags = layer_tags(self.act_names)
        self.bounds = ACTIVATIONS.get(act).bounds
        self._mode: Optional[str] = None  # None | "step" | "probe"
        self._keep_values = False
        self._stats: Dict[str, Tensor] = {}
        self._values: Dict[str, Tensor] = {}
        self._grads: Dict[str, Tensor] = {}
        self._ever_active: Dict[str, Tensor] = {}
        self._before: Optional[List[Tensor]] = None
        self._handles: List[Any] = []
        self._log = self._hist = False  # whether the current training step is logged (with histograms)
        self._step_grad_norms: Optional[Tensor] = None

    @property
    def weight_names(self) -> List[str]:
        return [name for name, _ in self.weights]

    @property
    def act_names(self) -> List[str]:
        return [name for name, _ in self.acts]

    def remove(self) -> None:
        self._set_mode(None)

    def _set_mode(self, mode: Optional[str]) -> None:
        """Hooks are attached only while there is something to record: a module with a forward
        hook leaves PyTorch's fast call path, which costs every step, logged or not."""
        self._mode = mode
        if mode is not None and not self._handles:
            self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.acts]
        elif mode is None:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    # --- the training step: three named points ------------------------------------------

    def before_forward(self, step: int, last_of_epoch: bool) -> bool:
        """Whether training step `step` is logged. If it is, the hooks record its forward pass (and keep the
        raw outputs on a histogram step); on any other step they are off. Call before the forward pass."""
        self._log = self.due(step, last_of_epoch)
        self._hist = self._log and self.hist_due(step)
        self.capture(self._log, values=self._hist)
        return self._log

    def after_backward(self) -> None:
        """On a logged step: the gradient norms as backward made them, and the weights before the update.
        Call after backward, with the gradients unscaled and not yet clipped."""
        if self._log:
            self._step_grad_norms = self.grad_norms()
            self.snapshot_weights()

    def after_step(self, step: int, scalars: Dict[str, Union[Tensor, float]]) -> None:
        """On a logged step: write its statistics (with `scalars`, more of the step's numbers by tag) and, on a
        histogram step, its histograms. Call after the optimizer step."""
        if self._log:
            self.log_step(step, self._step_grad_norms, self.update_ratios(), scalars)
            if self._hist:
                self.log_histograms(step)
            self._log = self._hist = False
            self._step_grad_norms = None

    # --- the training-step path, part by part -----------------------------------------

    def due(self, step: int, last_of_epoch: bool) -> bool:
        """Log on every n-th step and on the last step of each epoch."""
        return last_of_epoch or step % self.every_n_steps == 0

    def hist_due(self, step: int) -> bool:
        return self.hist_every_n_steps > 0 and step % self.hist_every_n_steps == 0

    def capture(self, on: bool, values: bool = False) -> None:
        """Switch the hooks on for the next forward pass (and keep raw outputs for histograms)."""
        self._set_mode("step" if on else None)
        self._keep_values = values
        self._stats.clear()
        self._values.clear()
        self._grads.clear()

    def grad_norms(self) -> Tensor:
        """L2 norm of each weight's gradient, shape (n_weights,), on the device. Call after backward and
        before anything rescales the gradients (gradient clipping, an AMP scale not yet unscaled): the
        logged norms are to be those backward produced. On a step captured with values (histograms),
        the gradients are kept as they are now, for `log_histograms`."""
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for _, w in self.weights]
        if self._keep_values:
            self._grads = {name: g.detach().clone() for (name, w), g in zip(self.weights, grads) if w.grad is not None}
        return torch.stack(torch._foreach_norm(grads))

    def snapshot_weights(self) -> None:
        """Remember the weights before the optimizer step, for the update-to-weight ratio."""
        self._before = [w.detach().clone() for _, w in self.weights]

    def update_ratios(self) -> Tensor:
        """||W_after - W_before|| / ||W_after|| per layer (call after the optimizer step)."""
        weights = [w.detach() for _, w in self.weights]
        deltas = torch._foreach_sub(weights, self._before)
        self._before = None
        return torch.stack(torch._foreach_norm(deltas)) / torch.stack(torch._foreach_norm(weights)).clamp_min(1e-12)

    def log_step(self, step: int, grad_norms: Tensor, update_ratios: Tensor, extra: Optional[Dict[str, Union[Tensor, float]]] = None) -> None:
        """Write one step's statistics, moving them to the host in a single transfer.

        grad_norms, update_ratios: shape (n_weights,); extra: more scalars of the step by tag (the trainer's
        learning rate and global gradient norms), each a float or a 0-d tensor on the device."""
        summaries = activation_summaries()
        acts = torch.stack([self._stats[name] for name in self.act_names]) if self._stats else grad_norms.new_zeros(0, len(summaries))
        extra = extra or {}
        tensors = {tag: v for tag, v in extra.items() if isinstance(v, Tensor)}
        host = (
            torch.cat([grad_norms.float(), update_ratios.float(), acts.flatten().float(), *(v.detach().float().reshape(1) for v in tensors.values())])
            .cpu()
            .tolist()
        )
        n, k = len(self.weights), len(summaries)
        from_device = dict(zip(tensors, host[len(host) - len(tensors) :]))
        by_layer = {"grad_norm": host[:n], "update_ratio": host[n : 2 * n]}
        by_layer.update((s.name, host[2 * n + j : 2 * n + k * len(self.acts) : k]) for j, s in enumerate(summaries))
        scalars = [(tag, from_device.get(tag, value)) for tag, value in extra.items()]
        for stat in LAYER_STATS:
            if stat.on_steps and self._defined(stat):
                scalars += [(f"{stat.name}/{tag}", value) for tag, value in zip(self._tags(stat), by_layer[stat.name])]
        write_scalars(self.writer, scalars, step)
        self._set_mode(None)

    def log_histograms(self, step: int) -> None:
        """Histograms of the step: weights after its update, gradients as `grad_norms` saw them
        (before clipping), activations of its forward pass."""
        weight_tags, act_tags = dict(zip(self.weight_names, self.weight_tags)), dict(zip(self.act_names, self.act_tags))
        for name, w in self.weights:
            self.writer.add_histogram(f"weights/{weight_tags[name]}", w.detach().float().cpu(), step)
        for name, grad in self._grads.items():
            self.writer.add_histogram(f"grads/{weight_tags[name]}", grad.float().cpu(), step)
        for name, values in self._values.items():
            self.writer.add_histogram(f"activations/{act_tags[name]}", values.float().cpu(), step)
        self._values.clear()
        self._grads.clear()

    # --- the per-epoch probe ---------------------------------------------------------

    def probe(self, model: nn.Module, x: Tensor, y: Tensor) -> LayerStats:
        """The layer statistics of one forward and backward pass of `model` on fixed images.

        Args:
            x: normalised images (N, C, H, W) (or what the model takes), on the model's device.
            y: int64 labels (N,).
        Returns the per-layer numbers (LayerStats): gradient L2 norms of the weights of the mean
        cross-entropy over the N images, activation statistics, dead-unit fractions and the loss.

        Batch norm uses the batch's statistics, as the training steps do, and keeps its running
        averages; dropout is off (`batch_statistics`). The gradients go to a list, not to `.grad`,
        and the optimizer is not touched, so training goes on exactly as without the probe."""
        self._set_mode("probe")
        self._keep_values = False
        self._stats.clear()
        self._ever_active.clear()
        try:
            with batch_statistics(model, enabled=len(x) > 1), torch.enable_grad():
                loss = F.cross_entropy(model(x).float(), y)
                grads = torch.autograd.grad(loss, [w for _, w in self.weights], allow_unused=True)
        finally:
            self._set_mode(None)
        grads = [g if g is not None else torch.zeros_like(w) for g, (_, w) in zip(grads, self.weights)]
        summaries = activation_summaries()
        norms = torch.stack(torch._foreach_norm(grads)).float()
        acts = torch.stack([self._stats[name] for name in self.act_names]).float() if self.acts else norms.new_zeros(0, len(summaries))
        dead = torch.stack([1.0 - self._ever_active[name].float().mean() for name in self.act_names]) if self.acts else norms.new_zeros(0)
        host_acts = acts.cpu().tolist()
        by_layer = {"grad_norm": norms.cpu().tolist(), "dead": dead.cpu().tolist()}
        by_layer.update((s.name, [row[j] for row in host_acts]) for j, s in enumerate(summaries))
        values = {s.name: by_layer[s.name] if self._defined(s) else None for s in LAYER_STATS if s.in_probe}
        return LayerStats(values, loss=float(loss.detach()))

    def log_probe(self, stats: LayerStats, step: int) -> None:
        """Write the probe's statistics that the training steps do not log (dead units) at `step`."""
        write_scalars(
            self.writer,
            [
                (f"{s.name}/{tag}", value)
                for s in LAYER_STATS
                if s.in_probe and not s.on_steps and self._defined(s)
                for tag, value in zip(self._tags(s), stats.values[s.name])
            ],
            step,
        )

    def _defined(self, stat: LayerStat) -> bool:
        """Whether `stat` applies to this model's activation (a bounded-only one to a bounded activation)."""
        return not stat.bounded_only or self.bounds is not None

    def _tags(self, stat: LayerStat) -> List[str]:
        """The tag suffixes of the layers `stat` measures (`01.layers.0`, ...)."""
        return self.weight_tags if stat.layers == "weight" else self.act_tags

    # --- the hook ----------------------------------------------------------------------

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: Tuple[Tensor, ...], output: Tensor) -> None:
            mode = self._mode
            if mode is None:
                return
            y = output.detach()
            self._stats[name] = self._summarise(y)
            if self._keep_values:
                self._values[name] = y
            if mode == "probe":
                self._mode = None  # calling the module below must not re-enter this hook
                try:
                    self._ever_active[name] = self._units_alive(module, inputs[0].detach(), y)
                finally:
                    self._mode = mode

        return record

    def _summarise(self, y: Tensor) -> Tensor:
        """The activation summaries of LAYER_STATS of one module's output, shape (n_summaries,), on the device."""
        y = y.float()
        return torch.stack([s.summary(y, self.bounds) for s in activation_summaries()])

    @staticmethod
    @torch.no_grad()
    def _units_alive(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Per unit (dim 1): does the local slope exceed DEAD_DERIVATIVE for any input?

        A one-sided difference that reuses the output `y` the forward pass already made. The
        largest change per unit is one float reduction over the other dimensions: comparing
        every element and reducing the booleans took 2-3x as long on a conv net's activations.
        """
        change = (module(x.float() + FD_EPS) - y.float()).abs()
        largest = change.amax(dim=[d for d in range(change.dim()) if d != 1])
        return largest > DEAD_DERIVATIVE * FD_EPS


def write_scalars(writer, scalars: Iterable[Tuple[str, float]], step: int) -> None:
    """Write scalars of one step as a single TensorBoard event.

    The values are what `writer.add_scalar` writes, one `simple_value` per tag, and TensorBoard
    reads them the same way. But `add_scalar` makes an event per value, at 20-70 us of Python
    each, and a logged step of the 12-layer MLP writes 62: one event took that step's transfer
    and write from 2.1-3.1 ms to 0.8-1.0 ms (scripts/bench_step_parts.py, BENCHMARKS.md section 1).
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars]
    if values:
        writer._get_file_writer().add_summary(Summary(value=values), step)


def grad_depth_figure(names: List[str], norms: List[float], title: str):
    """A matplotlib figure of gradient norm against depth (log scale)."""
    fig, (ax,) = panels(1, width=6, height=3.5)
    ax.semilogy(range(1, len(norms) + 1), [max(v, 1e-30) for v in norms], marker="o")
    integer_ticks(ax.xaxis)
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("gradient L2 norm of the weight")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    # Fixed margins that fit these labels: tight_layout would draw the figure once more to measure
    # them, a third of the figure's cost, which the trainer pays every epoch (BENCHMARKS.md, section 1).
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=0.9)
    return fig
