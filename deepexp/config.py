"""Typed config schemas: one dataclass per config group, stored in Hydra's ConfigStore.

The YAML files under `configs/` hold the defaults (each with a comment saying why);
these dataclasses hold the types and the allowed ranges. Hydra rejects unknown keys
and wrong types while composing; `validate` turns the composed config into these
objects, whose `__post_init__` rejects impossible values, before any work starts.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Quote, QuotedString
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
NORMS = ("none", "batch")
INITS = ("default", "xavier", "kaiming", "lecun", "auto")
DEVICES = ("cpu", "cuda", "auto")


# The config groups whose node names its own choice, and that field: `optim=adam` gives optim.name=adam.
CHOICE_FIELDS = {"model": "name", "act": "name", "dataset": "name", "optim": "name", "sched": "name", "init": "name", "device": "type"}


def check(ok: bool, message: str) -> None:
    """Raise a one-line ConfigError unless `ok`."""
    if not ok:
        raise ConfigError(message)


def check_unique(key: str, values: Sequence[Any]) -> None:
    """Refuse a study list that names a value twice (`acts=[relu,relu]`): each value is one arm of the study,
    and a repeat would count one configuration's runs twice (or run two processes on one folder).

    Raises:
        ConfigError: naming the list and the first repeated value.
    """
    seen = set()
    for value in values:
        check(value not in seen, f"{key} names {value} twice; give each value once (more runs of one: seeds=N)")
        seen.add(value)


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    check(value in choices, f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def config_choices(group: str) -> List[str]:
    """The choices of a config group, `configs/<group>/*.yaml`: for `model` and `act` the same names as
    the registries (tests/test_models.py), read without importing torch, so that a typo in a study's
    model or activation list is refused in a fraction of a second."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


# --- models: one schema per family; `name` is the registry key -------------------


@dataclass
class MLPConfig:
    name: str = MISSING
    depth: int = MISSING  # number of hidden layers
    width: int = MISSING  # units per hidden layer
    norm: str = MISSING
    dropout: float = MISSING

    def __post_init__(self) -> None:
        check(self.depth >= 1, f"model.depth must be at least 1, got {self.depth}")
        check(self.width >= 1, f"model.width must be at least 1, got {self.width}")
        check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        check_choice("model.norm", self.norm, NORMS)


@dataclass
class CNNConfig:
    name: str = MISSING
    width: int = MISSING  # channels of the first conv; later stages double it
    norm: str = MISSING

    def __post_init__(self) -> None:
        check(self.width >= 1, f"model.width must be at least 1, got {self.width}")
        check_choice("model.norm", self.norm, NORMS)


@dataclass
class ResNetConfig:
    name: str = MISSING
    norm: str = MISSING
    shortcut: str = MISSING  # A: zero-padded identity, B: projection where shape changes, C: always

    def __post_init__(self) -> None:
        check_choice("model.norm", self.norm, NORMS)
        check_choice("model.shortcut", self.shortcut, ("A", "B", "C"))


@dataclass
class DenseNetConfig:
    name: str = MISSING
    norm: str = MISSING

    def __post_init__(self) -> None:
        check_choice("model.norm", self.norm, NORMS)


@dataclass
class EfficientModelConfig:
    name: str = MISSING
    width: float = MISSING  # width multiplier: every layer's channels x width (rounded to multiples of 8)
    norm: str = MISSING

    def __post_init__(self) -> None:
        check(0 < self.width <= 8, f"model.width must be in (0, 8], got {self.width}")
        check_choice("model.norm", self.norm, NORMS)


@dataclass
class NASModelConfig:
    name: str = MISSING
    arch: str = MISSING  # path of a JSON/YAML spec (deepexp/models/nas_space.py)
    norm: str = MISSING

    def __post_init__(self) -> None:
        check_choice("model.norm", self.norm, NORMS)


MODEL_SCHEMAS = {
    "mlp": MLPConfig,
    "cnn": CNNConfig,
    "resnet": ResNetConfig,
    "densenet": DenseNetConfig,
    "efficient": EfficientModelConfig,
    "nas": NASModelConfig,
}


# --- the other groups -------------------------------------------------------------


@dataclass
class ActConfig:
    name: str = MISSING


@dataclass
class DatasetConfig:
    """What every dataset has. A dataset with keys of its own has a schema of its own below (stored as
    `schema_dataset_<name>`, its YAML inherits it), so that a run's config, metrics.json and HParams
    hold only the keys of the dataset it used."""

    name: str = MISSING
    augment: bool = MISSING  # random crop with padding + horizontal flip, on whole batches
    num_classes: Optional[int] = None  # K, labels 0..K-1; null: the largest training label + 1 (synthetic: labels drawn)

    def __post_init__(self) -> None:
        check(self.num_classes is None or self.num_classes >= 2, f"dataset.num_classes must be at least 2, got {self.num_classes}")


@dataclass
class NpzDatasetConfig(DatasetConfig):
    path: Optional[str] = None  # file with x_train, y_train, x_test, y_test


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    channels: int = 1
    image_shape: List[int] = field(default_factory=lambda: [28, 28])  # (H, W) in pixels
    train_size: int = 2048
    test_size: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.channels >= 1, f"dataset.channels must be positive, got {self.channels}")
        check(
            len(self.image_shape) == 2 and all(n >= 1 for n in self.image_shape),
            f"dataset.image_shape must be [H, W] with positive sizes, got {list(self.image_shape)}",
        )
        check(self.num_classes is not None, "dataset=synthetic needs dataset.num_classes=K, the labels to draw")
        check(self.train_size >= 2 and self.test_size >= 1, "dataset.train_size must be >= 2 and test_size >= 1")


DATASET_SCHEMAS = {"npz": NpzDatasetConfig, "synthetic": SyntheticDatasetConfig}


@dataclass
class DataConfig:
    root: Optional[str] = None  # else $DEEPEXP_DATA, else ./data
    download: bool = True  # try torchvision's download when the files are missing


@dataclass
class DeviceConfig:
    type: str = MISSING  # cpu | cuda | auto
    threads: int = MISSING  # CPU threads for torch; 0 keeps torch's default
    index: Optional[int] = None  # which CUDA GPU (cuda:index); null: the current one, or one per study worker

    def __post_init__(self) -> None:
        check_choice("device.type", self.type, DEVICES)
        check(self.threads >= 0, f"device.threads must be >= 0, got {self.threads}")
        check(self.index is None or self.index >= 0, f"device.index must be >= 0, got {self.index}")
        check(self.index is None or self.type != "cpu", f"device.index={self.index} names a CUDA GPU; device=cpu has none")


@dataclass
class OptimConfig:
    """What every optimizer has; each one's own keys are in its own schema below (as for datasets)."""

    name: str = MISSING  # sgd | adam | adamw

    def __post_init__(self) -> None:
        check_choice("optim.name", self.name, ("sgd", "adam", "adamw"))


@dataclass
class SGDConfig(OptimConfig):
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.momentum < 1.0, f"optim.momentum must be in [0, 1), got {self.momentum}")


@dataclass
class AdamConfig(OptimConfig):  # adam and adamw
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "optim.betas must be two numbers in [0, 1)")


@dataclass
class SchedConfig:
    """What every schedule has (`none` has nothing else); step's and cosine's own keys are in their schemas below."""

    name: str = MISSING  # none | step | cosine
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr, then the schedule

    def __post_init__(self) -> None:
        check_choice("sched.name", self.name, ("none", "step", "cosine"))
        check(self.warmup_epochs >= 0, f"sched.warmup_epochs must be >= 0, got {self.warmup_epochs}")


@dataclass
class StepSchedConfig(SchedConfig):
    step_size: int = 30  # epochs between decays
    gamma: float = 0.1  # decay factor

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.step_size >= 1, f"sched.step_size must be >= 1, got {self.step_size}")
        check(0 < self.gamma <= 1, f"sched.gamma must be in (0, 1], got {self.gamma}")


@dataclass
class CosineSchedConfig(SchedConfig):
    min_lr_factor: float = 0.0  # final lr as a fraction of lr


@dataclass
class InitConfig:
    name: str = MISSING  # default | xavier | kaiming | lecun | auto (matched to the activation)

    def __post_init__(self) -> None:
        check_choice("init.name", self.name, INITS)


@dataclass
class MonitorConfig:
    enabled: bool = MISSING  # per-layer statistics at all (off = bare training loop)
    every_n_steps: int = MISSING  # gradient / activation scalars every N training steps
    hist_every_n_steps: int = MISSING  # histograms every N steps; 0 = never
    probe_size: int = MISSING  # validation images used each epoch for dead units and layer stats
    figure: bool = MISSING  # per-epoch matplotlib figure of gradient norm against depth

    def __post_init__(self) -> None:
        check(self.every_n_steps >= 1, f"monitor.every_n_steps must be >= 1, got {self.every_n_steps}")
        check(self.hist_every_n_steps >= 0, f"monitor.hist_every_n_steps must be >= 0, got {self.hist_every_n_steps}")
        check(self.probe_size >= 1, f"monitor.probe_size must be >= 1, got {self.probe_size}")


@dataclass
class TrainConfig:
    model: Any = MISSING
    act: ActConfig = MISSING
    dataset: DatasetConfig = MISSING
    device: DeviceConfig = MISSING
    optim: OptimConfig = MISSING
    sched: SchedConfig = MISSING
    init: InitConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    monitor: MonitorConfig = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    eval_test: bool = MISSING  # false: no test-set evaluation at the end (NAS proxy runs select on validation)
    lr: float = MISSING
    weight_decay: float = MISSING
    seed: int = MISSING
    val_fraction: float = MISSING
    subset: Optional[int] = MISSING
    grad_clip: Optional[float] = MISSING
    on_nan: str = MISSING  # stop: the run ends as diverged (exit 3); skip_batch: drop that batch's update
    amp: bool = MISSING
    tf32: bool = MISSING  # float32 matmuls and convolutions on TF32 tensor cores (CUDA, compute capability 8.0+)
    channels_last: bool = MISSING
    compile: bool = MISSING
    deterministic: bool = MISSING
    resume: bool = MISSING

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        check(self.subset is None or self.subset >= 2, f"subset must be at least 2 images, got {self.subset}")
        check(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be positive, got {self.grad_clip}")
        check_choice("on_nan", self.on_nan, ("stop", "skip_batch"))


@dataclass
class StudyConfig:
    """What every study (activations, residual, efficient, nas) has: the preset, the trainer's `dataset=` and
    `device=` groups, the batch size and learning rate of its runs, the user's extra overrides for every run,
    and how many runs train at once. Each study's schema adds its own keys; `RENAMED` maps a key the study
    once had to the key that took its place (compose_config refuses the old one, naming the new)."""

    RENAMED: ClassVar[Dict[str, str]] = {}

    preset: str = MISSING  # which preset filled the defaults (quick | full)
    dataset: DatasetConfig = MISSING  # the same `dataset=` group as deepexp train
    device: DeviceConfig = MISSING  # the same `device=` group
    batch_size: int = MISSING
    lr: float = MISSING
    overrides: List[str] = MISSING  # extra `deepexp train` overrides for every run (the keys the study sets itself are refused)
    n_workers: int = MISSING  # runs training at once, in separate processes that split the CPU threads

    def __post_init__(self) -> None:
        check(self.n_workers >= 1, f"n_workers must be at least 1, got {self.n_workers}")


@dataclass
class SeededStudyConfig(StudyConfig):
    """A study whose every run trains `epochs` epochs on `subset` training images (null: all), repeated over
    `seeds` seeds: activations, residual and efficient (nas gives its search and its final runs budgets of their own)."""

    seeds: int = MISSING
    epochs: int = MISSING
    subset: Optional[int] = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.seeds >= 1, f"seeds must be at least 1, got {self.seeds}")
        check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")


@dataclass
class ActivationsConfig(SeededStudyConfig):
    """`deepexp activations`: which activation trains a deep MLP best, and why."""

    RENAMED: ClassVar[Dict[str, str]] = {"train": "overrides"}

    init: InitConfig = MISSING  # the same `init=` group
    acts: List[str] = MISSING
    depth: int = MISSING
    width: int = MISSING
    norm: str = MISSING
    threshold: float = MISSING  # validation accuracy that counts as "converged"
    stability_epochs: int = MISSING  # the last N epochs: training-loss slope, and its spread around that trend
    ablations: List[str] = MISSING  # any of: init, norm, depth
    ablation_depths: List[int] = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.acts) >= 1, "acts must name at least one activation")
        for act in self.acts:
            check_choice("acts", act, config_choices("act"))
        check_unique("acts", self.acts)
        check(self.depth >= 1 and self.width >= 1, f"depth and width must be at least 1, got {self.depth}, {self.width}")
        check_choice("norm", self.norm, NORMS)
        check(0 < self.threshold <= 1, f"threshold must be in (0, 1], got {self.threshold}")
        check(self.stability_epochs >= 2, f"stability_epochs must be at least 2, got {self.stability_epochs}")
        check(
            self.stability_epochs <= self.epochs,
            f"stability_epochs={self.stability_epochs} needs at least as many epochs; "
            f"epochs={self.epochs} (the trend is fitted over the last stability_epochs epochs)",
        )
        for ablation in self.ablations:
            check_choice("ablations", ablation, ("init", "norm", "depth"))
        check_unique("ablations", self.ablations)
        check(all(d >= 1 for d in self.ablation_depths), "ablation_depths must be positive")
        check_unique("ablation_depths", self.ablation_depths)


@dataclass
class ResidualConfig(SeededStudyConfig):
    """`deepexp residual`: plain against residual networks of the same depth, and why shortcuts help."""

    RENAMED: ClassVar[Dict[str, str]] = {"train": "overrides"}

    act: ActConfig = MISSING  # the same `act=` group as deepexp train
    depths: List[int] = MISSING  # CIFAR family 6n+2: 20, 32, 44, 56, 110
    weight_decay: float = MISSING
    norm: str = MISSING
    shortcut: str = MISSING
    densenet: bool = MISSING  # add DenseNet-BC-100 (k=12), comparable with ResNet-56
    ablations: List[str] = MISSING  # any of: shortcut, norm
    no_norm_overrides: List[str] = MISSING  # what the norm=none ablation also changes (see configs/residual.yaml)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.depths) >= 1, "depths must name at least one depth")
        for depth in self.depths:
            check(f"resnet{depth}" in config_choices("model"), f"depth {depth} has no CIFAR ResNet; choose from 20, 32, 44, 56, 110")
        check_unique("depths", self.depths)
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check_choice("norm", self.norm, NORMS)
        check_choice("shortcut", self.shortcut, ("A", "B", "C"))
        for ablation in self.ablations:
            check_choice("ablations", ablation, ("shortcut", "norm"))
        check_unique("ablations", self.ablations)


@dataclass
class EfficientConfig(SeededStudyConfig):
    """`deepexp efficient`: a baseline CNN against cheaper designs, measured for deployment."""

    RENAMED: ClassVar[Dict[str, str]] = {"train": "train_models"}

    act: ActConfig = MISSING  # the same `act=` group as deepexp train
    models: List[str] = MISSING  # registered model names; each keeps its configs/model/<name>.yaml options
    baseline: str = MISSING  # the model the others are compared with
    width: Optional[float] = MISSING  # null: each model's own width multiplier
    train_models: bool = MISSING  # false: measure size and speed only (untrained weights, no accuracy)
    weight_decay: float = MISSING
    threads: Optional[int] = MISSING  # intra-op threads for every latency figure; null: all cores
    latency_batches: List[int] = MISSING
    min_run_time: float = MISSING  # seconds of timed calls behind each latency figure
    quantize: bool = MISSING  # INT8 post-training static quantization through ONNX Runtime
    calibration_images: int = MISSING
    parity_tolerance: float = MISSING  # max |logit difference| between PyTorch and the ONNX export
    max_params: int = MISSING  # the project's targets: fewer parameters than this ...
    max_drop: float = MISSING  # ... and an accuracy drop against the baseline below this

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.models) >= 1, "models must name at least one model")
        for name in [*self.models, self.baseline]:
            check_choice("models", name, config_choices("model"))
        check_unique("models", self.models)
        check(self.baseline in self.models, f"baseline {self.baseline!r} must be one of models {list(self.models)}")
        check(self.width is None or 0 < self.width <= 8, f"width must be in (0, 8], got {self.width}")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}")
        check(len(self.latency_batches) >= 1 and all(b >= 1 for b in self.latency_batches), "latency_batches must be positive")
        check_unique("latency_batches", self.latency_batches)
        check(self.min_run_time > 0, f"min_run_time must be positive, got {self.min_run_time}")
        check(self.calibration_images >= 1, f"calibration_images must be at least 1, got {self.calibration_images}")
        check(self.parity_tolerance > 0, f"parity_tolerance must be positive, got {self.parity_tolerance}")


@dataclass
class NASConfig(StudyConfig):
    """`deepexp nas`: search the conv / dws / residual space, then retrain the best with the full budget."""

    act: ActConfig = MISSING  # the same `act=` group as deepexp train
    strategies: List[str] = MISSING  # random | evolution | nsga2 | zero_cost, each searched with the same budget
    search_seeds: int = MISSING
    trials: int = MISSING  # evaluations per search (the budget)
    max_minutes: Optional[float] = MISSING  # wall-clock budget per search; null: trials only
    population: int = MISSING  # aging evolution: the population is the most recent N evaluations ...
    sample_size: int = MISSING  # ... and a parent is the best of N drawn from it
    second_objective: str = MISSING  # nsga2's cost: params | macs | latency
    max_macs: Optional[int] = MISSING  # candidates above this many MACs per image are skipped untrained (not counted)
    zero_cost_pool: int = MISSING  # strategy zero_cost: random candidates scored per trial, the best is trained
    zero_cost_proxy: str = MISSING
    proxy_epochs: int = MISSING  # the short training that rates a candidate (validation accuracy)
    proxy_subset: Optional[int] = MISSING
    weight_decay: float = MISSING
    top_k: int = MISSING
    final_epochs: int = MISSING  # the full budget for the top architectures and the hand-designed baselines
    final_seeds: int = MISSING
    final_subset: Optional[int] = MISSING
    baselines: List[str] = MISSING  # registered models retrained with the same final budget
    storage: Optional[str] = MISSING  # Optuna storage URL; null: sqlite in the experiment folder
    latency_threads: int = MISSING
    retrain: bool = MISSING  # false: search only (an extra worker on a shared storage), no final retraining

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.strategies) >= 1, "strategies must name at least one strategy")
        for strategy in self.strategies:
            check_choice("strategies", strategy, ("random", "evolution", "nsga2", "zero_cost"))
        check_unique("strategies", self.strategies)
        check(self.search_seeds >= 1 and self.trials >= 1, "search_seeds and trials must be at least 1")
        check(self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be positive, got {self.max_minutes}")
        check(1 <= self.sample_size <= self.population, "sample_size must be between 1 and population")
        check_choice("second_objective", self.second_objective, ("params", "macs", "latency"))
        check(self.zero_cost_pool >= 1, "zero_cost_pool must be at least 1")
        check(self.proxy_epochs >= 1 and self.final_epochs >= 1, "proxy_epochs and final_epochs must be at least 1")
        check(self.top_k >= 1 and self.final_seeds >= 1, "top_k and final_seeds must be at least 1")
        for name in self.baselines:
            check_choice("baselines", name, [m for m in config_choices("model") if m != "nas"])
        check_unique("baselines", self.baselines)
        check(self.latency_threads >= 1, "latency_threads must be at least 1")
        from .zero_cost import PROXIES  # last: the proxies' module imports torch

        check_choice("zero_cost_proxy", self.zero_cost_proxy, PROXIES)


@dataclass
class ReportConfig:
    """`deepexp report`: every run directory below `path`, grouped over seeds."""

    path: str = MISSING  # the folder to search (a sweep, experiment folders, copied runs)
    group_by: Optional[List[str]] = MISSING  # config keys; null: every key that varies between runs, except seed and rundir.EXECUTION_KEYS
    metric: str = MISSING

    def __post_init__(self) -> None:
        from .rundir import RUN_METRICS

        check_choice("metric", self.metric, RUN_METRICS)


STUDY_SCHEMAS = {"activations": ActivationsConfig, "residual": ResidualConfig, "efficient": EfficientConfig, "nas": NASConfig}

# The choices of a group whose own keys have their own schema (the group's base schema serves the others).
OPTIM_SCHEMAS = {"sgd": SGDConfig, "adam": AdamConfig, "adamw": AdamConfig}
SCHED_SCHEMAS = {"step": StepSchedConfig, "cosine": CosineSchedConfig}
CHOICE_SCHEMAS = {"dataset": DATASET_SCHEMAS, "optim": OPTIM_SCHEMAS, "sched": SCHED_SCHEMAS}


def register_schemas() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for command, schema in STUDY_SCHEMAS.items():
        cs.store(name=f"{command}_schema", node=schema)
    cs.store(name="report_schema", node=ReportConfig)
    for family, schema in MODEL_SCHEMAS.items():
        # Root-level names, referenced as `/schema_<family>@_here_` from configs/model/*.yaml,
        # so that schemas never show up as model choices.
        cs.store(name=f"schema_{family}", node=schema)
    for group, schemas in CHOICE_SCHEMAS.items():  # likewise `/schema_<group>_<name>@_here_` in configs/<group>/<name>.yaml
        for choice, schema in schemas.items():
            cs.store(name=f"schema_{group}_{choice}", node=schema)


# --- overrides deepexp writes itself ----------------------------------------------------------


def hydra_override(key: str, value: Any) -> str:
    """`key=value` written in Hydra's override grammar so that Hydra reads back exactly `value`.

    Args:
        key: a config key or group (`lr`, `dataset.path`, `model`, `hydra.run.dir`), written as is.
        value: None, bool, int, float, str, or a list / tuple / dict (also a ListConfig / DictConfig) of those.

    Returns:
        The override, e.g. `lr=0.01`, `acts=[relu,gelu]`, `dataset.path='/data/d=1/mini.npz'`.
        A string stays bare where Hydra's parser reads it back unchanged as that string; otherwise it is
        single-quoted with Hydra's own escaping (`QuotedString.with_quotes`), and a literal `${` is
        escaped for OmegaConf (`omegaconf_text`) so that it is not taken for an interpolation (Hydra docs,
        "Override grammar": quoted values; OmegaConf docs, "Escaping interpolations").

    Raises:
        ConfigError: a value of another type, or a dict key that is not an identifier.
    """
    return f"{key}={hydra_value(value)}"


def hydra_overrides(values: Mapping[str, Any]) -> List[str]:
    """`hydra_override` of every (key, value) pair, in order."""
    return [hydra_override(k, v) for k, v in values.items()]


def hydra_value(value: Any) -> str:
    """The part of `hydra_override` after the `=`."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # 0.001, 1e-05, inf, nan: all in Hydra's number syntax
    if isinstance(value, str):
        return value if _reads_back_bare(value) else QuotedString(text=omegaconf_text(value), quote=Quote.single).with_quotes()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            check(isinstance(k, str) and k.isidentifier(), f"cannot write the dict key {k!r} as a Hydra override")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write a {type(value).__name__} ({value!r}) as a Hydra override")


def omegaconf_text(text: str) -> str:
    """The string OmegaConf resolves to exactly `text`: each `${` escaped as `\\${`, and the backslashes just
    before it doubled, since OmegaConf reads `\\\\` there as one backslash (OmegaConf docs, "Escaping
    interpolations": `\\${x}` is `${x}` literally, `\\\\${x}` a backslash and x's value). A backslash
    anywhere else stays as it is."""
    return re.sub(r"(\\*)\$\{", lambda m: 2 * m.group(1) + "\\${", text)


def literal_text(text: str) -> Optional[str]:
    """What OmegaConf reads from `text` when `text` holds no interpolation (`\\${` escapes resolved to `${`),
    or None when it holds one (`${now:...}`, `${act.name}`): then only the running Hydra app knows the value.
    Raises ConfigError for text OmegaConf cannot read."""
    if "${" not in text:
        return text
    from omegaconf import grammar_parser
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    try:
        tree = grammar_parser.parse(text)
    except GrammarParseError as exc:
        raise ConfigError(f"{text!r}: {first_line(exc)}") from None
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationContext):
            return None
        nodes += list(node.getChildren()) if hasattr(node, "getChildren") else []
    return OmegaConf.create({"text": text}).text


@functools.lru_cache(maxsize=4096)
def _reads_back_bare(text: str) -> bool:
    """Whether Hydra parses `key=<text>` as exactly the string `text` (not a number, bool, null,
    list, sweep or interpolation, and nothing stripped or escaped)."""
    if "$" in text or "\\" in text or any(c.isspace() for c in text):  # whitespace would read back, but quoted is clearer
        return False
    from hydra.errors import HydraException

    # Alone, as a list element and as a dict value: `key=` is an empty string but `key=[]` an empty list.
    for line, expected in ((f"key={text}", text), (f"key=[{text}]", [text]), (f"key={{k:{text}}}", {"k": text})):
        try:
            parsed = override_parser().parse_override(line)
        except HydraException:
            return False
        if parsed.is_sweep_override() or parsed.value() != expected or not _all_str(parsed.value()):
            return False
    return True


def _all_str(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    return all(isinstance(v, str) for v in items)


@functools.lru_cache(maxsize=1)
def override_parser():
    """Hydra's override parser, built once per process."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


QUOTING = "README: Quoting"  # where the README explains how to quote an override in the shell and for Hydra


def is_run_overrides(key: str) -> bool:
    """Whether study option `key` is a list of `deepexp train` overrides for its runs: the options named
    `overrides` or `<what>_overrides` (residual's `no_norm_overrides`)."""
    return key == "overrides" or key.endswith("_overrides")


def unparsable(line: str, reason: str) -> str:
    """One line for an override Hydra's parser cannot read: the override, the parser's reason and, where
    the override has a key, the same value written so that Hydra reads it (`hydra_override`: quoted, each
    element of a `[...]` list quoted on its own), as a shell word to paste."""
    key, sep, raw = line.partition("=")
    advice = "quote a value that holds =, a space, a comma, a bracket or a quote"
    example = None
    if sep and key.lstrip("+~") and parse_key(f"{key}=x") is not None:
        inner = raw.strip()
        value: Any = [_unquoted(v) for v in _split_top_level(inner[1:-1])] if inner[:1] == "[" and inner[-1:] == "]" else raw
        if is_run_overrides(key.lstrip("+~")) and not isinstance(value, list):
            value = [_unquoted(raw)]
        example = f"{key}={hydra_value(value)}"
        if isinstance(value, list):
            advice = "quote each element of a list of overrides"
        if parse_key(example) is None:
            example = None
    said = f"{advice}, e.g. {shell_word(example)}" if example else "an override is key=value"
    return f"cannot parse {line!r} ({reason}): {said} ({QUOTING})"


def _split_top_level(text: str) -> List[str]:
    """`text` split at the commas outside brackets, braces and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [p.strip() for p in [*parts, text[start:]] if p.strip()]


def _unquoted(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def shell_word(text: str) -> str:
    """`text` as one word for a POSIX shell: bare when nothing in it means something to the shell, else in
    double quotes when it holds single quotes (and nothing a shell expands inside double quotes), else in
    single quotes (shlex.quote)."""
    import shlex

    if re.fullmatch(r"[\w@%+=:,./-]+", text):
        return text
    if "'" in text and not re.search(r'["$`\\!]', text):
        return f'"{text}"'
    return shlex.quote(text)


def parse_key(line: str) -> Optional[str]:
    """The key (or group) an override sets, as Hydra reads it, or None for what is not an override."""
    from hydra.errors import HydraException

    try:
        return override_parser().parse_override(line).key_or_group
    except HydraException:
        return None


def parse_value(line: str) -> Any:
    """The value of one override as Hydra reads it: quotes removed, `null` as None, `true` as True
    (a sweep as Hydra's sweep object). Raises Hydra's OverrideParseException for what does not parse."""
    return override_parser().parse_override(line).value()


def check_choice_field(line: str) -> None:
    """Refuse an override that sets a group's choice field directly (`optim.name=adam`, `device.type=cpu`, also
    `optim={name: adam}`, `~optim.name`): it renames the choice but keeps the chosen group's node (an SGD node
    named adam, an MLP node named resnet20), which the trainer cannot build. Lines Hydra cannot parse pass
    (their composition names them).

    Raises:
        ConfigError: naming the line and the group choice to use instead (`optim=adam`).
    """
    from hydra.errors import HydraException

    try:
        o = override_parser().parse_override(line)
    except HydraException:
        return
    group, _, field = o.key_or_group.partition(".")
    value = None if o.is_delete() or o.is_sweep_override() else o.value()
    if CHOICE_FIELDS.get(group) == field:
        choice = line.split("=", 1)[1] if "=" in line and not o.is_delete() else "..."
    elif not field and group in CHOICE_FIELDS and isinstance(value, dict) and CHOICE_FIELDS[group] in value:
        choice = hydra_value(value[CHOICE_FIELDS[group]])
    else:
        return
    raise ConfigError(f"{line}: choose the group instead: {group}={choice}")


def job_output_dir() -> Path:
    """The running Hydra job's output folder as Hydra stored it (`hydra.runtime.output_dir`, an absolute path
    it resolved from hydra.run.dir or the sweep's folders), read without resolving it again: a folder named
    with a literal `${` (`hydra.run.dir='/x/\\${y}'` makes `/x/${y}`) would read as an interpolation."""
    from hydra.core.hydra_config import HydraConfig

    return Path(OmegaConf.to_container(HydraConfig.get().runtime, resolve=False)["output_dir"])


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/<name>.yaml` with overrides, inside or outside a running Hydra app.

    Raises:
        ConfigError: an override of a study key under the name it had before (check_renamed).
        hydra.errors.HydraException: what Hydra refuses (an unknown key or choice, a wrong type).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_renamed(name, overrides)
    register_schemas()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def check_renamed(name: str, overrides: Sequence[str]) -> None:
    """Refuse an override of study `name` that sets a key under its former name (StudyConfig.RENAMED:
    `train=[...]` of activations and residual is `overrides=[...]`, efficient's `train=false` is
    `train_models=false`), naming the key that took its place; Hydra would only call it unknown.

    Raises:
        ConfigError: the first such override, in one line, with the same override under the new name.
    """
    renamed = STUDY_SCHEMAS[name].RENAMED if name in STUDY_SCHEMAS else {}
    for line in overrides:
        key = parse_key(line) or ""
        old, dot, rest = key.partition(".")
        if old in renamed:
            new = renamed[old]
            prefix = line[: len(line) - len(line.lstrip("+~"))]
            example = prefix + new + dot + rest + line.lstrip("+~")[len(key) :]
            value = _value_or_none(line)
            if new == "overrides" and not dot and prefix != "~" and not isinstance(value, list):
                example = "overrides=['key=value',...]"  # a list of deepexp train overrides: the old value was no list either
            elif new != "overrides" and isinstance(value, list) and hasattr(STUDY_SCHEMAS[name], "overrides"):
                new, example = "overrides", prefix + "overrides" + line.lstrip("+~")[len(key) :]  # a list: the run overrides
            raise ConfigError(f"{line!r}: deepexp {name} calls this key {new!r} now: {shell_word(example)}")


def _value_or_none(line: str) -> Any:
    """The value of override `line` as Hydra parses it, or None where it does not parse (parse_value)."""
    try:
        return parse_value(line)
    except ConfigError:
        return None


def compose_train(overrides: Sequence[str] = ()) -> TrainConfig:
    """The `deepexp train` config of one run: `configs/train.yaml` composed with `overrides` (Hydra's compose
    API, as `deepexp train` composes it) and validated into typed objects. The one way deepexp composes a
    run's config: the studies (runner.run_config), the tests and the benchmark scripts all call it.

    Args:
        overrides: `deepexp train` overrides in Hydra's grammar (`lr=0.01`, `model=resnet20`), applied in order.

    Returns:
        The TrainConfig (a new object on every call: the caller may change it).

    Raises:
        ConfigError: an impossible value (validate) or a key out of line with the schemas.
        hydra.errors.HydraException: an override Hydra refuses (an unknown key or choice, a wrong type).
    """
    return validate(compose_config("train", overrides))


def validate(cfg: DictConfig) -> TrainConfig:
    """Turn a composed config into typed objects, raising ConfigError on impossible values."""
    check_run_overrides_literal(cfg)
    mismatch = schema_mismatch(cfg)
    if mismatch:
        raise ConfigError(mismatch)
    try:
        typed = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except MissingMandatoryValue as exc:
        raise ConfigError(f"{exc.full_key} is required: add {exc.full_key}=...") from None
    except Exception as exc:  # a type OmegaConf could not convert
        raise ConfigError(first_line(exc)) from None
    return typed  # type: ignore[return-value]


def check_run_overrides_literal(cfg: DictConfig) -> None:
    """Refuse a `${...}` interpolation inside a study's lists of run overrides (`overrides=[...]`,
    `no_norm_overrides=[...]`): OmegaConf would resolve it against the study's config (`${lr}` the study's
    lr, `${seed}` an error naming no override), not each run's. Raises ConfigError naming the override."""
    if not any(is_run_overrides(str(key)) for key in cfg):
        return
    plain = OmegaConf.to_container(cfg, resolve=False)  # as written: interpolations not resolved
    for key, raw in plain.items():
        if not is_run_overrides(str(key)) or not isinstance(raw, list):
            continue
        bad = next((line for line in raw if "${" in str(line)), None)
        if bad is not None:
            raise ConfigError(
                f"{key}=[...]: {bad!r} holds an interpolation, which would be resolved against the study's config, "
                f"not each run's: write the value itself"
            )


def schema_mismatch(node: DictConfig, prefix: str = "") -> Optional[str]:
    """What `+key=...` or `~key` left out of line with the schemas, as one sentence, or None.

    Hydra's `+key=value` adds a key even to a structured config, and `~key` deletes one; OmegaConf
    would then drop the added key silently, or build the dataclass with its `???` placeholder."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        fields = dataclasses.fields(schema)
        names = {f.name for f in fields}
        extra = [k for k in node if k not in names]
        if extra:
            return f"unknown key '{prefix}{extra[0]}' ({schema.__name__} has no such key); see the keys with --help"
        for f in fields:
            if f.name not in node and f.default == MISSING:
                return f"{prefix}{f.name} is required: add {prefix}{f.name}=..."
    for key in node:
        if not OmegaConf.is_missing(node, key) and isinstance(node[key], DictConfig):
            found = schema_mismatch(node[key], f"{prefix}{key}.")
            if found:
                return found
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def to_plain(cfg: Any) -> dict:
    """A JSON-ready dict of a DictConfig or a typed config object."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        # Not through OmegaConf again: a resolved string that holds `${` would become an interpolation.
        return dataclasses.asdict(cfg)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
