"""`deepexp efficient`: a baseline CNN against cheaper designs, measured for deployment.

Trains every model of `models` (several seeds) through the ordinary trainer, then
measures each one the way a deployment would meet it: parameters, MACs, size on
disk, CPU latency at batch 1 and 32 in PyTorch and in ONNX Runtime (FP32 and
static INT8), and test accuracy in all three runtimes. Writes the tables, the
accuracy-against-cost plots with their Pareto fronts, a report whose every
statement is computed from the measurements, and the recommended model's ONNX
files under `deploy/`. `train_models=false` measures size and speed only.
"""

from __future__ import annotations

import functools
import io
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from .. import plots
from ..config import EfficientConfig, EfficientModelConfig, compose_config, hydra_override, to_plain
from ..data import CLASS_NAMES, Splits
from ..deploy import Deployable, OnnxExporter, onnx_latency, onnx_predictions, parity, quantize_int8, session
from ..host import HostLoad, cores_available, cpu_name, host_load
from ..measure import MAX_RELATIVE_IQR, MIN_BLOCKS, count_macs, count_params, spread_problems, torch_latency
from ..models import create_model, init_weights
from ..report_doc import Figure, Report, Section, figure_code, notebook_loader
from ..results import MIN_SEEDS, Stat, chance_loss, compare, comparison_method, describe, holm, markdown_table, pareto_front, spearman
from ..results import held_out, run_stalled, stalled_evidence, stalled_rule, write_csv, write_text
from ..rundir import atomic_write, load_checkpoint, read_json, write_json
from ..train import build_model, run_splits
from .runner import RunSpec, base_overrides, check_study, hardware_line, overrides_phrase, precision, preset_note, run_config, run_study
from .runner import train_overrides, training_description

PYTORCH, ORT_FP32, ORT_INT8 = "pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"
PARITY_IMAGES = 64
# Contention shows in the figures themselves. PyTorch eager dispatches every operator from Python where ONNX Runtime
# runs a fused graph, so at batch 1 a small CNN is several times slower in PyTorch: 2-21x measured at one thread on
# this project's 2-core VM (inception_cnn, 180 modules, the most). Threads waiting for cores made it 75-800x
# (PyTorch at 2 threads on the same machine under a load of 5-10). Beyond this factor for the same model, batch and
# thread count, the PyTorch figure timed the queue:
PYTORCH_ORT_MAX_RATIO = 30.0
# On a free CPU more intra-op threads make a call at worst a little slower than one thread (small tensors gain
# little); 2 threads on that loaded VM were 2-330x slower than 1. Beyond this factor a figure timed the queue:
THREADS_MAX_SLOWDOWN = 2.0
# INT8 predictions that differ from the FP32 model's on more than this fraction of the test images: the INT8 file
# is another classifier, whatever its accuracy; it is called out and not recommended.
INT8_MAX_DISAGREEMENT = 0.05
# Accuracy that covers less than this fraction of the way from chance (1/K) to 1: near chance, not deployable as is.
NEAR_CHANCE = 0.2


def efficient_command(cfg: DictConfig) -> int:
    return run_study(cfg, "efficient", plan, write_study)


def check_command(study: EfficientConfig, exp_dir: Optional[Path]) -> None:
    """What `deepexp efficient` refuses, checked before anything is written (runner.check_study). With
    train_models=false nothing trains, but every model is still built and measured with `overrides`: one run
    config per model is composed and checked alike (there are no runs in `exp_dir` to check)."""
    if study.train_models:
        check_study(study, plan, exp_dir)
    else:
        check_study(study, lambda s: [RunSpec(m, {"model": m}, run_overrides(s, m, 0)) for m in s.models], None)


# --- the runs ------------------------------------------------------------------------------


# The study options behind the train keys it sets under another name (overrides=[...] may not set them).
OWN_KEYS = {"seed": "seeds=N", "model": "models=[...]", "model.width": "width=..."}
# What the study reads from every run at the trainer's setting (overrides=[...] may not change it either).
NEEDS = {"eval_test": "the tables and the report compare every trained model's test accuracy"}


def run_overrides(study: EfficientConfig, model: str, seed: int) -> List[str]:
    """The `deepexp train` overrides of `model` trained with `seed` (runner.base_overrides, with the study's
    weight decay and cosine schedule, and its `width` where the model takes one)."""
    values = base_overrides(study, {"weight_decay": study.weight_decay, "sched": "cosine"})
    values.update({"model": model, **({"model.width": study.width} if study.width is not None and takes_width(model) else {}), "seed": seed})
    return train_overrides(study, values, OWN_KEYS, NEEDS)


@functools.lru_cache(maxsize=None)  # one composition per model, not one per run
def takes_width(model: str) -> bool:
    """Whether `model` has the width multiplier of configs/model/<efficient family>.yaml."""
    return OmegaConf.get_type(compose_config("train", [hydra_override("model", model)]).model) is EfficientModelConfig


def plan(study: EfficientConfig) -> List[RunSpec]:
    if not study.train_models:
        return []
    return [
        RunSpec(f"{model}-s{seed}", {"model": model, "seed": seed}, run_overrides(study, model, seed))
        for model in study.models
        for seed in range(study.seeds)
    ]


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Measured:
    """Everything measured for one model: its architecture's cost and each trained seed's accuracies."""

    name: str
    cost: Dict[str, Any]  # params, macs, sizes, latency per runtime and batch
    seeds: List[Dict[str, Any]] = field(default_factory=list)  # one per trained seed: accuracies, parity, files

    def accuracies(self, runtime: str) -> List[float]:
        key = {PYTORCH: "test_acc", ORT_FP32: "onnx_fp32_acc", ORT_INT8: "onnx_int8_acc"}[runtime]
        return [s[key] for s in self.seeds if s.get(key) is not None]


def state_dict_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def export_and_score(
    study: EfficientConfig,
    model: torch.nn.Module,
    name: str,
    data: Splits,
    folder: Path,
    threads: int,
    score: bool,
    key: Dict[str, Any],
    exporter: OnnxExporter,
) -> Dict[str, Any]:
    """Export FP32 (and INT8) ONNX of the study model `name` into `folder`, check parity, and score on the test set.

    The result is cached in `folder/export.json` under `key`, so rerunning the study
    on the same directory does not redo finished exports."""
    record = folder / "export.json"
    cached = read_json(record)
    if cached is not None and cached.get("key") == key:
        return cached
    deployable = Deployable(model, data.mean, data.std).eval()
    test_images = data.x_test.float() / 255
    fp32 = exporter.export(deployable, test_images[:2], folder / "model.onnx", architecture=name)  # seeds share a trace
    fp32_session = session(fp32, threads)
    out: Dict[str, Any] = {"key": key, "onnx_fp32": fp32.name, "parity_max_abs": parity(deployable, fp32_session, test_images[:PARITY_IMAGES])}
    predictions = onnx_predictions(fp32_session, data.x_test) if score else None
    if score:
        out["onnx_fp32_acc"] = float((predictions == data.y_test.numpy()).mean())
    if study.quantize:
        calibration = (data.x_train[: study.calibration_images].float() / 255).numpy()  # training images only
        int8 = quantize_int8(fp32, folder / "model.int8.onnx", calibration)
        out["onnx_int8"] = int8.name
        if score:
            int8_predictions = onnx_predictions(session(int8, threads), data.x_test)
            out["onnx_int8_acc"] = float((int8_predictions == data.y_test.numpy()).mean())
            out["int8_agreement"] = float((int8_predictions == predictions).mean())
    write_json(record, out)
    return out


def measure_cost(study: EfficientConfig, model: torch.nn.Module, data: Splits, folder: Path, threads: int) -> Dict[str, Any]:
    """Parameters, MACs, sizes and latencies of one architecture (files exported in `folder`), cached.

    Latency at every batch of latency_batches in every runtime, with `threads` intra-op threads and with
    one thread (`latency` and `latency_1_thread`: runtime -> batch -> Latency.as_dict() plus its
    `problems` and `reliable`, see `assess`), and the host's load before and after the timings."""
    thread_counts = list(dict.fromkeys((threads, 1)))
    settings = {
        "threads": threads,
        "thread_counts": thread_counts,
        "batches": list(study.latency_batches),
        "min_run_time": study.min_run_time,
        "min_blocks": MIN_BLOCKS,
        "quantize": study.quantize,
        "torch": torch.__version__,
        "host": platform.node(),
    }
    record = folder.parent / "cost.json"
    cached = read_json(record)
    if cached is not None and cached.get("settings") == settings:
        return cached
    shape = data.input_shape  # (C, H, W): the exported model's fixed image shape
    cost: Dict[str, Any] = {
        "settings": settings,
        "input": list(shape),
        "params": count_params(model),
        "macs": count_macs(model, shape),
        "size_bytes": {PYTORCH: state_dict_bytes(model), ORT_FP32: (folder / "model.onnx").stat().st_size},
    }
    files = {ORT_FP32: folder / "model.onnx"}
    if study.quantize:
        cost["size_bytes"][ORT_INT8] = (folder / "model.int8.onnx").stat().st_size
        files[ORT_INT8] = folder / "model.int8.onnx"
    before = host_load()
    for n in thread_counts:
        figures: Dict[str, Dict[str, Any]] = {}
        sessions = {runtime: session(path, n) for runtime, path in files.items()}  # ONNX Runtime fixes threads per session
        for batch in study.latency_batches:
            figures.setdefault(PYTORCH, {})[str(batch)] = torch_latency(model, shape, batch, n, study.min_run_time).as_dict()
            for runtime, sess in sessions.items():
                figures.setdefault(runtime, {})[str(batch)] = onnx_latency(sess, shape, batch, n, study.min_run_time).as_dict()
        cost["latency" if n == threads else "latency_1_thread"] = figures
    after = host_load()
    cost["host"] = {
        "name": platform.node(),
        "cpu": cpu_name(),
        "cores": cores_available(),
        "cpus": os.cpu_count(),
        "before": before.as_dict() if before else None,
        "after": after.as_dict() if after else None,
    }
    write_json(record, assess(cost))
    return cost


def one_thread(cost: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The 1-thread latencies of `cost` (the configured ones where that was one thread)."""
    return cost.get("latency_1_thread") or cost["latency"]


def loads(cost: Dict[str, Any]) -> List[HostLoad]:
    """The host's load before and after the timings of `cost` (none where the host had no load average)."""
    host = cost.get("host") or {}
    return [HostLoad.from_dict(host[k]) for k in ("before", "after") if host.get(k)]


SPREAD, CONTENTION = "spread", "contention"  # the two kinds of check a latency figure can fail


def latency_checks(cost: Dict[str, Any], runtime: str, batch: str, single_thread: bool = False) -> List[Tuple[str, str]]:
    """The checks one latency figure of `cost` failed, as (kind, why); empty where it passed them all:
    - SPREAD: fewer than MIN_BLOCKS timed blocks, or an IQR above MAX_RELATIVE_IQR of the median;
    - CONTENTION: other processes' threads (the load average) plus the timed threads exceed the cores;
      PyTorch more than PYTORCH_ORT_MAX_RATIO times slower than ONNX Runtime FP32 on the same model, batch
      and threads; more than THREADS_MAX_SLOWDOWN times slower with the configured threads than with one."""
    table = one_thread(cost) if single_thread else cost["latency"]
    fig = table[runtime][batch]
    failed = [(SPREAD, why) for why in spread_problems(fig["blocks"], fig["iqr_ms"] / fig["median_ms"] if fig["median_ms"] > 0 else float("inf"))]
    busy = [load for load in loads(cost) if load.oversubscribed(fig["threads"])]
    if busy:
        worst = max(busy, key=lambda load: load.others)
        failed.append(
            (CONTENTION, f"cores taken (other processes {worst.others:.1f} threads + {threads_label(fig['threads'])} timed on {worst.cpus} cores)")
        )
    ort = table.get(ORT_FP32, {}).get(batch)
    if runtime == PYTORCH and ort and fig["median_ms"] > PYTORCH_ORT_MAX_RATIO * ort["median_ms"]:
        failed.append(
            (
                CONTENTION,
                f"{fig['median_ms'] / ort['median_ms']:.0f}x slower than ONNX Runtime on the same model "
                f"(beyond {PYTORCH_ORT_MAX_RATIO:.0f}x: threads waiting for cores)",
            )
        )
    single = one_thread(cost)[runtime][batch]
    if fig["threads"] > 1 and fig["median_ms"] > THREADS_MAX_SLOWDOWN * single["median_ms"]:
        failed.append(
            (
                CONTENTION,
                f"{fig['median_ms'] / single['median_ms']:.1f}x slower with {fig['threads']} threads than "
                f"with 1 (beyond {THREADS_MAX_SLOWDOWN:g}x: threads waiting for cores)",
            )
        )
    return failed


def latency_problems(cost: Dict[str, Any], runtime: str, batch: str, single_thread: bool = False) -> List[str]:
    """Why one latency figure of `cost` is not measured reliably (latency_checks); empty where it is."""
    return [why for _, why in latency_checks(cost, runtime, batch, single_thread)]


def load_phrase(cost: Dict[str, Any]) -> str:
    """'load average 3.31 before and 4.02 after the timings on 2 cores' (or '' without a load average)."""
    found = loads(cost)
    if not found:
        return ""
    mine = f", {found[0].cores} for this process" if found[0].cores != found[0].cpus else ""
    return (
        f"load average {' before and '.join(f'{x.average[0]:.2f}' for x in found)}{' after' if len(found) == 2 else ''} "
        f"the timings on {found[0].cpus} cores{mine}"
    )


def assess(cost: Dict[str, Any]) -> Dict[str, Any]:
    """`cost` with `problems` (latency_problems) and `reliable` written into each of its latency figures."""
    for key, single in (("latency", False), ("latency_1_thread", True)):
        for runtime, by_batch in (cost.get(key) or {}).items():
            for batch, fig in by_batch.items():
                fig["problems"] = latency_problems(cost, runtime, batch, single)
                fig["reliable"] = not fig["problems"]
    return cost


def measure_all(study: EfficientConfig, results: List[Tuple[RunSpec, dict]], exp_dir: Path, console) -> List[Measured]:
    threads = study.threads or torch.get_num_threads()
    exporter = OnnxExporter()
    measured = []
    for name in study.models:
        runs = [(spec, m) for spec, m in results if spec.labels["model"] == name and m["status"] == "completed"]
        seeds, first_export = [], None
        for spec, metrics in runs:
            cfg = run_config(spec.overrides)
            data = run_splits(cfg)
            model = build_model(cfg, data)
            checkpoint = exp_dir / "runs" / spec.name / "checkpoints" / "last.pt"
            model.load_state_dict(load_checkpoint(checkpoint)["model"])
            folder = exp_dir / "models" / name / f"s{cfg.seed}"
            key = {"weights": checkpoint.stat().st_mtime_ns, "calibration_images": study.calibration_images, "quantize": study.quantize}
            exported = export_and_score(study, model.eval(), name, data, folder, threads, score=True, key=key, exporter=exporter)
            history = metrics["history"]
            seeds.append(
                {
                    "seed": cfg.seed,
                    "test_acc": metrics["test"]["acc"],
                    "val_acc": history[-1]["val_acc"] if history else None,
                    "seconds": metrics.get("seconds"),
                    "folder": folder,
                    "mean": data.mean.tolist(),
                    "std": data.std.tolist(),
                    "num_classes": data.num_classes,
                    **exported,
                }
            )
            first_export = first_export or (model, data, folder)
        if first_export is None:  # train_models=false, or no seed of this model completed: untrained weights
            cfg = run_config(run_overrides(study, name, 0))
            data = run_splits(cfg)
            torch.manual_seed(0)
            model = build_model(cfg, data)
            init_weights(model, cfg.init.name, cfg.act.name)
            folder = exp_dir / "models" / name / "untrained"
            export_and_score(study, model.eval(), name, data, folder, threads, score=False, key={"quantize": study.quantize}, exporter=exporter)
            first_export = (model, data, folder)
        model, data, folder = first_export
        counts = f"{threads} and 1 threads" if threads != 1 else "1 thread"
        console.print(f"measuring {name}: latency at batch {list(study.latency_batches)}, {counts}", highlight=False)
        cost = measure_cost(study, model.eval(), data, folder, threads)
        warning = unreliable_warning(name, cost)
        if warning:
            console.print(warning, highlight=False, soft_wrap=True)
        measured.append(Measured(name, cost, seeds))
    return measured


def unreliable_warning(name: str, cost: Dict[str, Any]) -> Optional[str]:
    """The terminal's line for a model some of whose latency figures failed their checks, naming contention; else None."""
    unreliable = unreliable_figures(cost)
    if not unreliable:
        return None
    kinds = {kind for _, failed in unreliable for kind, _ in failed}
    why = ([f"contention: {load_phrase(cost) or 'threads waiting for cores'}"] if CONTENTION in kinds else []) + (
        [f"too few timed blocks or an IQR above {MAX_RELATIVE_IQR:.0%} of the median"] if SPREAD in kinds else []
    )
    return (
        f"warning: {name}: {len(unreliable)} of {count_figures(cost)} latency figures not measured reliably "
        f"({'; '.join(why)}); starred in the tables, report.md says why"
    )


def unreliable_figures(cost: Dict[str, Any]) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """('pytorch-fp32 b=1, 2 threads', failed latency_checks) for every latency figure of `cost` that failed a check."""
    out = []
    for key, single in (("latency", False), ("latency_1_thread", True)):
        for runtime, by_batch in (cost.get(key) or {}).items():
            for batch, fig in by_batch.items():
                failed = latency_checks(cost, runtime, batch, single)
                if failed:
                    out.append((f"{runtime} b={batch}, {threads_label(fig['threads'])}", failed))
    return out


def count_figures(cost: Dict[str, Any]) -> int:
    return sum(len(by_batch) for key in ("latency", "latency_1_thread") for by_batch in (cost.get(key) or {}).values())


# --- tables ------------------------------------------------------------------------------------


def runtimes(study: EfficientConfig) -> List[str]:
    return [PYTORCH, ORT_FP32] + ([ORT_INT8] if study.quantize else [])


def summary_rows(study: EfficientConfig, measured: List[Measured]) -> List[Dict[str, Any]]:
    """One row per model and runtime: cost, latency, accuracy mean ± std and the targets."""
    baseline = next(m for m in measured if m.name == study.baseline).accuracies(PYTORCH)
    base_mean = statistics.fmean(baseline) if baseline else None
    rows = []
    for m in measured:
        for runtime in runtimes(study):
            acc = Stat(m.accuracies(runtime))
            drop = base_mean - acc.mean if acc.mean is not None and base_mean is not None else None
            row: Dict[str, Any] = {
                "model": m.name,
                "runtime": runtime,
                "params": m.cost["params"],
                "macs": m.cost["macs"],
                "size_bytes": m.cost["size_bytes"][runtime],
            }
            for batch, lat in m.cost["latency"][runtime].items():
                single = one_thread(m.cost)[runtime][batch]
                row.update(
                    {
                        f"latency_b{batch}_ms": lat["median_ms"],
                        f"latency_b{batch}_iqr_ms": lat["iqr_ms"],
                        f"latency_b{batch}_blocks": lat["blocks"],
                        f"throughput_b{batch}_img_s": lat["images_per_s"],
                        f"latency_b{batch}_reliable": not latency_problems(m.cost, runtime, batch),
                        f"latency_b{batch}_1t_ms": single["median_ms"],
                        f"latency_b{batch}_1t_iqr_ms": single["iqr_ms"],
                        f"latency_b{batch}_1t_reliable": not latency_problems(m.cost, runtime, batch, single_thread=True),
                    }
                )
            row.update(
                {
                    "threads": m.cost["settings"]["threads"],
                    "seeds": acc.n,
                    "test_acc_mean": acc.mean,
                    "test_acc_std": acc.std,
                    "drop_vs_baseline": drop,
                    "drop_p_value": compare(baseline, acc.values).p if m.name != study.baseline or runtime != PYTORCH else None,
                    "under_max_params": m.cost["params"] < study.max_params,
                    "under_max_drop": drop < study.max_drop if drop is not None else None,
                }
            )
            row["meets_targets"] = bool(row["under_max_params"] and row["under_max_drop"]) if drop is not None else None
            rows.append(row)
    return rows


def run_rows(measured: List[Measured]) -> List[Dict[str, Any]]:
    keys = ("seed", "test_acc", "val_acc", "onnx_fp32_acc", "onnx_int8_acc", "int8_agreement", "parity_max_abs", "seconds")
    return [{"model": m.name, **{k: s.get(k) for k in keys}, "folder": str(Path(*s["folder"].parts[-3:]))} for m in measured for s in m.seeds]


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


UNRELIABLE = "*"  # beside a latency figure that failed a check (latency_checks)
UNRELIABLE_NOTE = (
    f"Figures marked {UNRELIABLE} were not measured reliably (too few timed blocks, an IQR above {MAX_RELATIVE_IQR:.0%} "
    "of the median, or threads waiting for cores): see Measurement reliability; no finding rests on them."
)


def fmt_latency(row: Dict[str, Any], batch: int, single_thread: bool = False) -> str:
    """'12.30 (0.10)': median (IQR) in ms, starred where the figure is not measured reliably; one thread: median only."""
    key = f"latency_b{batch}_1t" if single_thread else f"latency_b{batch}"
    text = f"{row[f'{key}_ms']:.2f}{'' if row[f'{key}_reliable'] else UNRELIABLE}"
    return text if single_thread else f"{text} ({row[f'{key}_iqr_ms']:.2f})"


def reliable(rows: Sequence[Dict[str, Any]], batch: int, single_thread: bool = False) -> bool:
    """Whether every latency figure of `rows` at `batch` passed its checks."""
    return all(r[f"latency_b{batch}{'_1t' if single_thread else ''}_reliable"] for r in rows)


def fmt_acc(row: Dict[str, Any]) -> str:
    if row["test_acc_mean"] is None:
        return "-"
    return f"{row['test_acc_mean']:.4f}" + (f" ± {row['test_acc_std']:.4f}" if row["seeds"] > 1 else "")


def quoted_batches(study: EfficientConfig) -> List[int]:
    """The batch sizes tables and sentences quote: the first and the last of latency_batches, once each."""
    return list(dict.fromkeys((study.latency_batches[0], study.latency_batches[-1])))


def table(study: EfficientConfig, rows: List[Dict[str, Any]], runtime_names: Sequence[str]) -> Tuple[List[str], List[List[str]]]:
    batches, bn = quoted_batches(study), study.latency_batches[-1]
    single = [b for b in batches if rows and rows[0]["threads"] != 1]  # a column of its own where threads is not 1
    header = [
        "model",
        "runtime",
        "params",
        "MACs",
        "size",
        *[f"latency b={b} ms (IQR)" for b in batches],
        *[f"1 thread b={b} ms" for b in single],
        f"images/s b={bn}",
        "test acc (mean ± std)",
        "drop vs baseline",
        "meets targets",
    ]
    body = [
        [
            r["model"],
            r["runtime"],
            f"{r['params'] / 1e3:,.0f}K",
            f"{r['macs'] / 1e6:.1f}M",
            fmt_bytes(r["size_bytes"]),
            *[fmt_latency(r, b) for b in batches],
            *[fmt_latency(r, b, single_thread=True) for b in single],
            f"{r[f'throughput_b{bn}_img_s']:,.0f}{'' if r[f'latency_b{bn}_reliable'] else UNRELIABLE}",
            fmt_acc(r),
            "-" if r["drop_vs_baseline"] is None else f"{r['drop_vs_baseline']:+.4f}",
            "-" if r["meets_targets"] is None else ("yes" if r["meets_targets"] else "no"),
        ]
        for r in rows
        if r["runtime"] in runtime_names
    ]
    return header, body


# --- the recommendation, plots and report ------------------------------------------------------


@dataclass
class Recommendation:
    model: str
    runtime: str
    row: Dict[str, Any]
    meets_targets: bool
    files: List[Path]
    seed: Dict[str, Any]  # the deployed seed (Measured.seeds entry)
    cautions: List[str]  # what a user of the deployed file must know (near chance, INT8 disagreement, latency)


ACC_KEYS = {PYTORCH: "test_acc", ORT_FP32: "onnx_fp32_acc", ORT_INT8: "onnx_int8_acc"}


def int8_disagreement(m: Measured) -> Optional[float]:
    """The largest fraction of test images on which a seed's INT8 predictions differ from its FP32 model's; None
    without INT8 scores."""
    agree = [s["int8_agreement"] for s in m.seeds if s.get("int8_agreement") is not None]
    return 1 - min(agree) if agree else None


def near_chance(acc: float, num_classes: int) -> bool:
    """Whether accuracy `acc` covers less than NEAR_CHANCE of the way from chance (1 / num_classes) to 1."""
    chance = 1 / num_classes
    return acc < chance + NEAR_CHANCE * (1 - chance)


def recommend(study: EfficientConfig, rows: List[Dict[str, Any]], measured: List[Measured], exp_dir: Path) -> Optional[Recommendation]:
    """The fastest deployable (ONNX Runtime, batch 1) model that meets both targets; failing that, the most
    accurate one under the parameter target. An INT8 copy whose predictions differ from its FP32 model's on more
    than INT8_MAX_DISAGREEMENT of the test images is no candidate.

    The seed with the best validation accuracy is deployed: its ONNX files are copied to deploy/, and
    deploy/<model>.json gives that seed's test accuracies (and the mean over seeds beside them, labelled as
    such), the chance level and the cautions: accuracy near chance, INT8 disagreement, latency not measured
    reliably."""
    risky_int8 = {m.name for m in measured if (int8_disagreement(m) or 0) > INT8_MAX_DISAGREEMENT}
    scored = [
        r
        for r in rows
        if r["runtime"] != PYTORCH
        and r["test_acc_mean"] is not None
        and r["model"] != study.baseline
        and not (r["runtime"] == ORT_INT8 and r["model"] in risky_int8)
    ]
    if not scored:
        return None
    b1 = study.latency_batches[0]
    meeting = [r for r in scored if r["meets_targets"]]
    if meeting:
        best, ok = min(meeting, key=lambda r: r[f"latency_b{b1}_ms"]), True
    else:
        small = [r for r in scored if r["under_max_params"]] or scored
        best, ok = max(small, key=lambda r: r["test_acc_mean"]), False
    m = next(x for x in measured if x.name == best["model"])
    seed = max(m.seeds, key=lambda s: s["val_acc"] or 0.0)  # chosen on validation, never on test
    acc, classes = seed[ACC_KEYS[best["runtime"]]], seed["num_classes"]
    cautions = []
    if near_chance(acc, classes):
        cautions.append(f"its test accuracy {acc:.4f} is near chance ({1 / classes:.4f} for {classes} classes): not usable as trained")
    if m.name in risky_int8:
        cautions.append(
            f"its INT8 file's predictions differ from FP32 on up to {int8_disagreement(m):.1%} of test images "
            f"(beyond {INT8_MAX_DISAGREEMENT:.0%}); use the FP32 file"
        )
    if meeting and not best[f"latency_b{b1}_reliable"]:
        cautions.append(f"it was chosen as the fastest on a batch-{b1} latency not measured reliably")
    deploy = exp_dir / "deploy"
    deploy.mkdir(parents=True, exist_ok=True)
    files = []
    for key, suffix in (("onnx_fp32", ".onnx"), ("onnx_int8", ".int8.onnx")):
        if seed.get(key):
            target, source = deploy / f"{m.name}{suffix}", seed["folder"] / seed[key]
            atomic_write(target, lambda f, source=source: f.write(source.read_bytes()))
            files.append(target)
    info = {
        "model": m.name,
        "runtime": best["runtime"],
        "seed": seed["seed"],
        "seed_choice": f"the highest validation accuracy of {len(m.seeds)} trained seed{'s' if len(m.seeds) != 1 else ''}",
        "dataset": study.dataset.name,
        "input": {
            "name": "image",
            "shape": ["batch", *m.cost["input"]],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "normalisation": "inside the model",
            "mean": seed["mean"],
            "std": seed["std"],
        },
        "output": {"name": "logits", "classes": CLASS_NAMES.get(study.dataset.name, list(range(classes)))},
        "test_acc": {"pytorch": seed["test_acc"], "onnx_fp32": seed.get("onnx_fp32_acc"), "onnx_int8": seed.get("onnx_int8_acc")},
        "test_acc_mean_over_seeds": {"runtime": best["runtime"], "mean": best["test_acc_mean"], "std": best["test_acc_std"], "seeds": best["seeds"]},
        "chance": 1 / classes,
        "int8_agreement": seed.get("int8_agreement"),
        "cautions": cautions,
        "file": files[-1 if best["runtime"] == ORT_INT8 else 0].name,  # the recommended runtime's model
        "files": [f.name for f in files],
    }
    write_json(deploy / f"{m.name}.json", info)
    return Recommendation(m.name, best["runtime"], best, ok, files + [deploy / f"{m.name}.json"], seed, cautions)


def threads_label(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def analysed_latency(rows: Sequence[Dict[str, Any]], batch: int) -> Optional[Tuple[str, str]]:
    """The latency figures at `batch` a finding may rest on: ('latency_b1', 'N threads') where all of `rows`'
    configured-thread figures passed their checks, else ('latency_b1_1t', '1 thread') where the 1-thread ones
    did, else None."""
    if rows and reliable(rows, batch):
        return f"latency_b{batch}", threads_label(rows[0]["threads"])
    if rows and reliable(rows, batch, single_thread=True):
        return f"latency_b{batch}_1t", "1 thread"
    return None


def latency_title(rows: Sequence[Dict[str, Any]], batch: int) -> str:
    """The latency-against-MACs figure's title: a neutral line, then the Spearman rank correlation of the PyTorch
    figures where they were measured reliably (`analysed_latency`), else how many were not."""
    pt = [r for r in rows if r["runtime"] == PYTORCH]
    used = analysed_latency(pt, batch)
    if used is None:
        bad = sum(not r[f"latency_b{batch}_reliable"] for r in pt)
        return f"CPU latency against MACs at batch {batch}\n{bad} of {len(pt)} PyTorch figures not measured reliably (hollow): no correlation drawn"
    rho = spearman([r["macs"] for r in pt], [r[f"{used[0]}_ms"] for r in pt])
    if rho is None:
        return f"CPU latency against MACs at batch {batch}"
    return f"CPU latency against MACs at batch {batch}\nSpearman rho = {rho:+.2f} over {len(pt)} models (PyTorch, {used[1]})"


STYLES = {PYTORCH: ("o", "C0"), ORT_FP32: ("s", "C2"), ORT_INT8: ("^", "C3")}  # runtime: (marker, colour)


def accuracy_figure(rows: List[Dict[str, Any]], study: EfficientConfig, subtitle: str, name: str):
    """Test accuracy (mean ± std over seeds) against a cost, per model, with each runtime's Pareto front:
    `name` "accuracy_vs_latency" (CPU latency at the first latency batch, ms, every runtime) or
    "accuracy_vs_macs" (MACs per image, millions, PyTorch); marker area ~ parameters. `rows` are
    summary.csv's (one per model and runtime). Returns the matplotlib Figure."""
    b1 = study.latency_batches[0]
    shown_rows = [r for r in rows if r["runtime"] in runtimes(study)]
    bad = sum(not r[f"latency_b{b1}_reliable"] for r in shown_rows)
    x_of, xlabel, shown = {
        "accuracy_vs_latency": (lambda r: r[f"latency_b{b1}_ms"], f"CPU latency at batch {b1} (ms, median)", runtimes(study)),
        "accuracy_vs_macs": (lambda r: r["macs"] / 1e6, "MACs per image (millions)", [PYTORCH]),
    }[name]
    fig, (ax,) = plots.panels(1, width=7.5, height=5.0)
    pts = [r for r in rows if r["runtime"] in shown and r["test_acc_mean"] is not None]
    for runtime in shown:
        mine = [r for r in pts if r["runtime"] == runtime]
        xs, ys = [x_of(r) for r in mine], [r["test_acc_mean"] for r in mine]
        plots.pareto_scatter(
            ax, xs, ys, [r["test_acc_std"] or 0 for r in mine], [r["params"] for r in mine], pareto_front(xs, ys), *STYLES[runtime], legend=runtime
        )
    plots.log_axis(ax, "x")
    caveat = f"\n{bad} of {len(shown_rows)} latencies not measured reliably" if "latency" in name and bad else ""
    ax.set(
        xlabel=xlabel,
        ylabel="test accuracy (mean ± std over seeds)",
        title=f"accuracy against {'latency' if 'latency' in name else 'MACs'} (marker area ~ parameters; dashed: Pareto front){caveat}\n{subtitle}",
    )
    ax.grid(alpha=0.3, which="both")
    plots.legend(ax, fontsize=8, markerscale=0.5)
    plots.label_points(ax, [x_of(r) for r in pts], [r["test_acc_mean"] for r in pts], [r["model"] for r in pts])
    return fig


def latency_figure(rows: List[Dict[str, Any]], study: EfficientConfig, subtitle: str):
    """CPU latency (ms, median) at the first latency batch against MACs per image (millions), log-log, per
    model and runtime; figures not measured reliably hollow. The latencies are the configured threads' or,
    where those were not measured reliably, the 1-thread ones (analysed_latency), as the title's correlation.
    `rows` are summary.csv's. Returns the matplotlib Figure."""
    b1 = study.latency_batches[0]
    shown_rows = [r for r in rows if r["runtime"] in runtimes(study)]
    key, label = analysed_latency([r for r in rows if r["runtime"] == PYTORCH], b1) or (f"latency_b{b1}", threads_label(shown_rows[0]["threads"]))
    fig, (ax,) = plots.panels(1, width=7.5, height=5.0)
    macs, latency = [r["macs"] / 1e6 for r in shown_rows], [r[f"{key}_ms"] for r in shown_rows]
    for runtime in runtimes(study):
        marker, color = STYLES[runtime]
        for ok in (True, False):  # figures not measured reliably: hollow
            mine = [i for i, r in enumerate(shown_rows) if r["runtime"] == runtime and r[f"{key}_reliable"] == ok]
            if mine:
                ax.scatter(
                    [macs[i] for i in mine],
                    [latency[i] for i in mine],
                    marker=marker,
                    label=runtime + ("" if ok else " (unreliable)"),
                    **({"color": color} if ok else {"facecolors": "none", "edgecolors": color}),
                )
    plots.log_axis(ax, "x")
    plots.log_axis(ax, "y")
    ax.set(
        xlabel="MACs per image (millions)", ylabel=f"CPU latency at batch {b1}, {label} (ms, median)", title=f"{latency_title(rows, b1)}\n{subtitle}"
    )
    ax.grid(alpha=0.3, which="both")
    plots.legend(ax, fontsize=8)
    plots.label_points(ax, macs, latency, [r["model"] for r in shown_rows])
    return fig


def write_plots(study: EfficientConfig, rows: List[Dict[str, Any]], exp_dir: Path, subtitle: str) -> List[Figure]:
    """The accuracy figures (where any model has a test accuracy) and the latency figure, saved under plots/."""
    figures = []
    if any(r["test_acc_mean"] is not None for r in rows):
        figures += [
            (name, lambda name=name: accuracy_figure(rows, study, subtitle, name), f"efficient.accuracy_figure(rows, study, subtitle, {name!r})")
            for name in ("accuracy_vs_latency", "accuracy_vs_macs")
        ]
    figures.append(("latency_vs_macs", lambda: latency_figure(rows, study, subtitle), "efficient.latency_figure(rows, study, subtitle)"))
    return [Figure(name, plots.save(draw(), exp_dir / "plots" / f"{name}.png"), figure_code(call)) for name, draw, call in figures]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def findings(
    study: EfficientConfig,
    rows: List[Dict[str, Any]],
    measured: List[Measured],
    rec: Optional[Recommendation],
    final_runs: Optional[Dict[Tuple[str, int], Dict[str, Any]]] = None,
    chance: Optional[float] = None,
) -> List[str]:
    """The report's findings. `final_runs` ({(model, seed): {final_train_loss, final_val_acc, val_images}}) and
    `chance` (ln K) name the runs that never left chance level (results.run_stalled): they are listed first and left out of the
    accuracy comparisons against the baseline, which are Holm-adjusted over all models."""
    get = {(r["model"], r["runtime"]): r for r in rows}
    b1, batches = study.latency_batches[0], quoted_batches(study)
    base = get[(study.baseline, PYTORCH)]
    scored = base["test_acc_mean"] is not None
    lines = []
    stuck = {key: run for key, run in (final_runs or {}).items() if chance is not None and run_stalled(run, chance)}
    if stuck:
        lines.append(
            f"**Left out of the accuracy comparisons below: runs that never left chance level** ({stalled_rule(chance)}): "
            f"{'; '.join(f'{name} seed {seed}: {stalled_evidence(run)}' for (name, seed), run in stuck.items())}."
        )
    learned = lambda m: [s["test_acc"] for s in m.seeds if (m.name, s["seed"]) not in stuck and s.get("test_acc") is not None]
    baseline = next(m for m in measured if m.name == study.baseline)
    others = [m for m in measured if m.name != study.baseline and learned(m)] if learned(baseline) else []
    drops = dict(zip((m.name for m in others), holm([compare(learned(baseline), learned(m)) for m in others])))
    if scored:
        meet = [r["model"] for r in rows if r["runtime"] == PYTORCH and r["meets_targets"]]
        lines.append(
            f"**Targets** (under {study.max_params:,} parameters and under {study.max_drop:.0%} absolute accuracy drop "
            f"against {study.baseline}'s {base['test_acc_mean']:.4f}): "
            + (f"met by {', '.join(meet)}" if meet else "met by no model at this training budget")
            + ("; the targets compare means over every seed, runs at chance level included." if stuck else ".")
        )
    starred = False
    for m in measured:
        if m.name == study.baseline:
            continue
        r = get[(m.name, PYTORCH)]

        def speed(runtime: str, b: int) -> str:
            nonlocal starred
            pair = (get[(study.baseline, runtime)], get[(m.name, runtime)])
            ok = all(x[f"latency_b{b}_reliable"] for x in pair)
            starred |= not ok
            return ratio(pair[0][f"latency_b{b}_ms"], pair[1][f"latency_b{b}_ms"]) + ("" if ok else UNRELIABLE)

        line = (
            f"**{m.name}**: {ratio(r['params'], base['params'])} the parameters and {ratio(r['macs'], base['macs'])} the MACs "
            f"of {study.baseline}; speed (baseline latency / this latency) "
            f"{' and '.join(f'{speed(PYTORCH, b)} at batch {b}' for b in batches)} in PyTorch, "
            f"{' and '.join(speed(ORT_FP32, b) for b in batches)} in ONNX Runtime"
        )
        if scored and r["test_acc_mean"] is not None:
            line += f"; test accuracy {fmt_acc(r)}"
            if m.name in drops:
                left_out = any(key[0] in (m.name, study.baseline) for key in stuck)
                line += (
                    f"; the drop against the baseline (baseline minus this{', runs at chance level left out' if left_out else ''}): "
                    f"{describe(drops[m.name])}"
                )
            else:
                line += "; not compared with the baseline: " + ("every run of one of them stayed at chance level" if stuck else "no runs")
        lines.append(line + ".")
    if starred:
        lines.append(f"Speed ratios marked {UNRELIABLE} rest on a latency not measured reliably (see Measurement reliability).")
    lines += macs_against_latency(study, rows)
    if study.quantize:
        lines += int8_findings(study, get, measured, batches)
    lines += separable_theory(study, measured)
    parities = [s["parity_max_abs"] for m in measured for s in m.seeds]
    if parities:
        worst = max(parities)
        lines.append(
            f"**Export parity**: the largest |logit difference| between PyTorch and the ONNX FP32 export over "
            f"{len(parities)} models and {PARITY_IMAGES} test images each is {worst:.2e} "
            f"({'within' if worst <= study.parity_tolerance else 'OUTSIDE'} the tolerance {study.parity_tolerance:g})."
        )
    if rec:
        r, seed = rec.row, rec.seed
        lat = f"{r[f'latency_b{b1}_ms']:.2f}{'' if r[f'latency_b{b1}_reliable'] else UNRELIABLE} ms"
        line = (
            f"**Recommended for deployment: {rec.model} in {rec.runtime}**"
            + (
                ""
                if rec.meets_targets
                else " (no model met both targets; this is the most accurate one under the parameter target, short of the accuracy target)"
            )
            + f": {r['params']:,} parameters, {fmt_bytes(r['size_bytes'])}, {lat} at batch {b1}, test accuracy {fmt_acc(r)} "
            f"(over seeds). Deployed: seed {seed['seed']}, the highest validation accuracy, with test accuracy "
            f"{seed[ACC_KEYS[rec.runtime]]:.4f} in {rec.runtime}. Files: {', '.join(f'`deploy/{f.name}`' for f in rec.files)}."
        )
        if rec.cautions:
            line += " **Caution**: " + "; ".join(rec.cautions) + "."
        lines.append(line)
    return lines


def macs_against_latency(study: EfficientConfig, rows: List[Dict[str, Any]]) -> List[str]:
    """How PyTorch latency follows MACs, on figures measured reliably only (`analysed_latency`). An explanation is
    attached only where the numbers show what it explains: every design with fewer MACs than the baseline gains less
    speed than its MAC cut, and the baseline (standard 3x3 convolutions) runs the most MACs per second."""
    b1 = study.latency_batches[0]
    pt = [r for r in rows if r["runtime"] == PYTORCH]
    used = analysed_latency(pt, b1)
    if used is None:
        bad = sum(not r[f"latency_b{b1}_reliable"] for r in pt)
        at = f"at {pt[0]['threads']} threads and at 1" if pt[0]["threads"] != 1 else "at 1 thread"
        return [
            f"**MACs against latency**: {bad} of {len(pt)} PyTorch latencies at batch {b1} were not measured reliably, {at} "
            f"(see Measurement reliability); no correlation or explanation is drawn from them."
        ]
    key, label = used
    rho = spearman([r["macs"] for r in pt], [r[f"{key}_ms"] for r in pt])
    if rho is None:
        return []
    rate = sorted(pt, key=lambda r: r["macs"] / r[f"{key}_ms"])
    line = (
        f"**MACs against latency**: Spearman rho = {rho:+.2f} over {len(pt)} models (PyTorch, batch {b1}, {label}). "
        f"Throughput ranges from {rate[0]['macs'] / rate[0][f'{key}_ms'] / 1e6:.2f} GMAC/s ({rate[0]['model']}) to "
        f"{rate[-1]['macs'] / rate[-1][f'{key}_ms'] / 1e6:.2f} GMAC/s ({rate[-1]['model']})"
    )
    base = next((r for r in pt if r["model"] == study.baseline), None)
    cheaper = [r for r in pt if base and r["macs"] < base["macs"]]
    short = [r for r in cheaper if base[f"{key}_ms"] / r[f"{key}_ms"] < base["macs"] / r["macs"]]
    if cheaper:
        line += f"; {len(short)} of the {len(cheaper)} designs with fewer MACs than {study.baseline} gain less speed than their MAC cut"
        if len(short) == len(cheaper) and rate[-1] is base:
            line += (
                ", as expected of depthwise and 1x1 convolutions, which do little arithmetic per byte moved: cutting MACs "
                "buys less time than it promises"
            )
    return [line + "."]


def int8_findings(study: EfficientConfig, get: Dict[Tuple[str, str], Dict[str, Any]], measured: List[Measured], batches: List[int]) -> List[str]:
    """INT8 against ONNX Runtime FP32: file size, latency, accuracy, agreement; and the models whose INT8 predictions
    differ from FP32 on more than INT8_MAX_DISAGREEMENT of the test images."""
    speedups = {b: [get[(m.name, ORT_FP32)][f"latency_b{b}_ms"] / get[(m.name, ORT_INT8)][f"latency_b{b}_ms"] for m in measured] for b in batches}
    checks = [get[(m.name, rt)][f"latency_b{b}_reliable"] for m in measured for rt in (ORT_FP32, ORT_INT8) for b in batches]
    bad = len(checks) - sum(checks)
    shrink = [get[(m.name, ORT_FP32)]["size_bytes"] / get[(m.name, ORT_INT8)]["size_bytes"] for m in measured]
    line = (
        f"**INT8** (ONNX Runtime static QDQ, per-channel weights, {study.calibration_images} calibration images): files "
        f"{min(shrink):.1f}-{max(shrink):.1f}x smaller; latency speed-up over ONNX Runtime FP32 "
        + " and ".join(f"{min(speedups[b]):.2f}-{max(speedups[b]):.2f}x at batch {b} (median {statistics.median(speedups[b]):.2f}x)" for b in batches)
        + (
            ""
            if not bad
            else f" ({'all' if bad == len(checks) else bad} of the {len(checks)} latencies behind these ratios "
            f"{'was' if bad == 1 else 'were'} not measured reliably: see Measurement reliability)"
        )
    )
    paired = [s["onnx_int8_acc"] - s["onnx_fp32_acc"] for m in measured for s in m.seeds if s.get("onnx_int8_acc") is not None]
    agree = [s["int8_agreement"] for m in measured for s in m.seeds if s.get("int8_agreement") is not None]
    if paired:
        change = Stat(paired)
        line += (
            f"; accuracy change against FP32 {change.mean:+.4f} ± {change.std:.4f} (mean ± std over {change.n} trained "
            f"models, worst {min(paired):+.4f}), predictions agreeing with FP32 on {min(agree):.1%}-{max(agree):.1%} of test images"
        )
    lines = [line + "."]
    risky = [(m, int8_disagreement(m)) for m in measured if (int8_disagreement(m) or 0) > INT8_MAX_DISAGREEMENT]
    if risky:
        lines.append(
            f"**INT8 changes the predictions of {', '.join(m.name for m, _ in risky)}**: "
            + ", ".join(f"{m.name}'s INT8 copy differs from FP32 on up to {d:.1%} of test images" for m, d in risky)
            + f" (more than {INT8_MAX_DISAGREEMENT:.0%}): there, INT8 is another classifier than the one validated, so it is "
            f"not recommended for deployment; quantization-aware training or calibration on more images may close the gap."
        )
    return lines


def reliability_lines(measured: List[Measured]) -> List[str]:
    """The report's Measurement reliability section: per model, the load while timing and each figure that failed a
    check, with why; or that every figure passed."""
    lines = []
    for m in measured:
        failed = unreliable_figures(m.cost)
        if failed:
            load = load_phrase(m.cost)
            lines.append(
                f"**{m.name}**{f' ({load})' if load else ''}: {len(failed)} of {count_figures(m.cost)} figures not "
                f"measured reliably: " + "; ".join(f"{label}: {', '.join(why for _, why in checks)}" for label, checks in failed) + "."
            )
    checks = (
        f"at least {MIN_BLOCKS} timed blocks, an IQR within {MAX_RELATIVE_IQR:.0%} of the median, other processes' threads "
        f"(the load average) plus the timed ones within the cores, PyTorch within {PYTORCH_ORT_MAX_RATIO:.0f}x of ONNX Runtime "
        f"on the same model and batch, and the configured threads within {THREADS_MAX_SLOWDOWN:g}x of one thread"
    )
    if not lines:
        return [f"Every latency figure passed its checks: {checks}."]
    return [
        f"A figure is measured reliably with {checks}. Figures that failed are marked {UNRELIABLE} in the tables and no "
        f"finding rests on them; rerun on an idle machine (or with threads=1) for a ranking."
    ] + lines


def training_setup(runs: List[dict]) -> str:
    """Where and in which precision the runs trained and were tested, as every study's report says it
    (runner.hardware_line, runner.precision: every process of a resumed run, amp's dtype and TF32 as
    recorded). Where any of it was not plain float32 (amp, TF32), the pytorch-fp32 column holds that
    precision's accuracies, and the report says so."""
    runs = list(runs)
    if not runs:
        return "no run recorded where it trained"
    precisions = {
        precision(attempt, m.get("config") or {})
        for m in runs
        for attempt in ((m.get("provenance") or {}), *(m.get("provenance") or {}).get("earlier_attempts", []))
    }
    text = f"trained and tested on {hardware_line(runs)}"
    if precisions - {"fp32"}:
        whose = "that precision's" if len(precisions) == 1 else "those precisions'"
        text += f"; so the pytorch-fp32 accuracies are {whose}, and the onnxruntime-fp32 column is the float32 CPU accuracy of the same weights"
    return text


def cores_phrase(host: Dict[str, Any]) -> str:
    """'2 cores' or '64 cores, 4 available to this process' from a cost's `host` record."""
    cores, cpus = host.get("cores", "?"), host.get("cpus") or host.get("cores", "?")
    return f"{cpus} cores" + (f", {cores} available to this process" if cores != cpus else "")


def conv_layers(model: torch.nn.Module, input_shape: Sequence[int]) -> List[Tuple[int, int, int, int, Tuple[int, ...], int]]:
    """Every Conv2d of `model` in the order one forward pass calls them, as (c_in, c_out, k, groups,
    output (H, W), MACs per image); k is 0 for a non-square kernel. MACs = H_out W_out c_out (c_in / groups)
    k_h k_w, the count torch.utils.flop_counter makes (1 MAC = 2 FLOPs)."""
    found: List[Tuple[int, int, int, int, Tuple[int, ...], int]] = []

    def record(conv: torch.nn.Conv2d, inputs, output: torch.Tensor) -> None:
        kh, kw = conv.kernel_size
        found.append(
            (
                conv.in_channels,
                conv.out_channels,
                kh if kh == kw else 0,
                conv.groups,
                tuple(output.shape[-2:]),
                output[0].numel() * conv.in_channels // conv.groups * kh * kw,
            )
        )

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def merge_separable(convs: List[Tuple[int, int, int, int, Tuple[int, ...], int]]) -> Tuple[List[tuple], List[Tuple[int, int, int]]]:
    """The layer list with each depthwise-separable pair (a k x k depthwise conv, c -> c in c groups,
    then a 1x1 conv c -> N at the same resolution) written as the standard k x k conv c -> N it
    replaces, and the pairs as (position in that list, k, N). Layers are (c_in, c_out, k, groups, output (H, W))."""
    merged: List[tuple] = []
    pairs: List[Tuple[int, int, int]] = []
    i = 0
    while i < len(convs):
        c_in, c_out, k, groups, hw, _ = convs[i]
        after = convs[i + 1] if i + 1 < len(convs) else None
        if k > 1 and groups == c_in == c_out > 1 and after and after[2:5] == (1, 1, hw) and after[0] == c_out:
            pairs.append((len(merged), k, after[1]))
            merged.append((c_in, after[1], k, 1, hw))
            i += 2
        else:
            merged.append((c_in, c_out, k, groups, hw))
            i += 1
    return merged, pairs


def separable_theory(study: EfficientConfig, measured: List[Measured]) -> List[str]:
    """Howard et al. (2017): a k x k conv with N output channels made depthwise-separable costs
    k^2 M + M N instead of k^2 M N multiply-accumulates per output position (M input channels), a ratio of
    1/N + 1/k^2. For each model that is the baseline with some of its standard convs made separable (the
    same layers otherwise: channels, kernels, resolutions), that ratio applied to the baseline's own layers
    predicts the model's MACs; the sentence sets the prediction against the model's measured MACs."""
    base = next(m for m in measured if m.name == study.baseline)
    shape = base.cost.get("input")  # (C, H, W) the models were measured at
    if not shape:
        return []

    def convs(name: str):
        width = {"width": study.width} if study.width is not None and takes_width(name) else {}
        # two classes: the classifier does not enter, only the convolutions are compared
        model = create_model(name, in_channels=shape[0], image_shape=tuple(shape[1:]), num_classes=2, act=study.act.name, **width)
        return conv_layers(model, shape)

    baseline_convs = convs(base.name)
    lines = []
    for m in measured:
        if m.name == base.name or m.cost.get("input") != shape:
            continue
        merged, pairs = merge_separable(convs(m.name))
        if not pairs or merged != [c[:5] for c in baseline_convs]:
            continue  # not the baseline with separable layers: the formula has no standard counterpart to predict from
        ratios = [1 / n + 1 / k**2 for _, k, n in pairs]
        replaced = [baseline_convs[i][5] for i, _, _ in pairs]
        predicted = base.cost["macs"] - sum(replaced) + sum(macs * r for macs, r in zip(replaced, ratios))
        ks, ns = sorted({k for _, k, _ in pairs}), sorted({n for _, _, n in pairs})
        span = lambda values, fmt: fmt(values[0]) if len(values) == 1 else f"{fmt(values[0])}-{fmt(values[-1])}"
        lines.append(
            f"**Depthwise-separable cost, theory against measurement**: made depthwise-separable, a k×k convolution with N "
            f"output channels costs 1/N + 1/k² of the original (Howard et al. 2017). {m.name} is {base.name} with {len(pairs)} of "
            f"its convolutions made separable (k = {span(ks, str)}, N = {span(ns, str)}): {span(sorted(ratios), lambda r: f'{r:.3f}')} "
            f"of each, which predicts {predicted / 1e6:.2f}M MACs ({predicted / base.cost['macs']:.3f}x {base.name}'s measured "
            f"{base.cost['macs'] / 1e6:.2f}M, the layers it keeps included); measured: {m.cost['macs'] / 1e6:.2f}M "
            f"({m.cost['macs'] / base.cost['macs']:.3f}x)."
        )
    return lines


def limitations(study: EfficientConfig, data: dict, host: Dict[str, Any]) -> List[str]:
    out = preset_note(study.preset)
    if study.train_models and (study.epochs < 30 or (data.get("train") or 0) < 20000):
        out.append(
            f"{study.epochs} epochs on {data.get('train', '?')} training images: far from converged {study.dataset.name} training, "
            f"so the accuracies rank designs at a small budget; smaller models may close or widen the gap with longer training."
        )
    if study.train_models and study.seeds < MIN_SEEDS:
        out.append(
            f"{study.seeds} seed(s) per model: every comparison is indicative only (fewer than {MIN_SEEDS} per side), "
            f"and the tests have little power."
        )
    out.append(
        f"Latency is one CPU ({host.get('cpu', '?')}, {cores_phrase(host)}) with fixed thread counts; other "
        f"processes on the machine add noise (see the IQR and Measurement reliability). INT8 gains depend on the CPU's integer "
        f"instructions (VNNI), so measure on the deployment target."
    )
    out.append("No knowledge distillation: every small model learns from the labels alone, not from the baseline's outputs.")
    return out


def write_study(study: EfficientConfig, results: List[Tuple[RunSpec, dict]], exp_dir: Path, console, wall_seconds: float) -> Path:
    measure_start = time.perf_counter()
    measured = measure_all(study, results, exp_dir, console)
    wall_seconds += time.perf_counter() - measure_start  # the measurements are part of this invocation
    rows = summary_rows(study, measured)
    write_csv(exp_dir / "summary.csv", rows)
    if study.train_models:
        write_csv(exp_dir / "runs.csv", run_rows(measured))
    first = next((m for _, m in results if m.get("data")), {})
    data = first.get("data", {})
    trained = (
        f"{data.get('train', '?')} train images, {study.epochs} epochs, {study.seeds} seeds"
        if study.train_models
        else "untrained (train_models=false)"
    )
    subtitle = f"{study.dataset.name}, {trained}"
    main_header, main_rows = table(study, rows, [PYTORCH])
    ort_header, ort_rows = table(study, rows, [ORT_FP32, ORT_INT8])
    threads = rows[0]["threads"]
    starred = any(UNRELIABLE in cell for row in main_rows + ort_rows for cell in row)
    note = f"\n\n{UNRELIABLE_NOTE}" if starred else ""
    tables = (
        f"### PyTorch (CPU float32 latency; test accuracy as the trainer evaluated it)\n\n{markdown_table(main_header, main_rows)}\n\n"
        f"### Deployed: ONNX Runtime FP32 and INT8\n\n{markdown_table(ort_header, ort_rows)}{note}\n"
    )
    reliability = reliability_lines(measured)
    write_text(
        exp_dir / "summary.md",
        f"# Efficient models: {subtitle}\n\nLatency: median per batch (interquartile range), "
        f"{threads} threads{' and 1 thread' if threads != 1 else ''}. Accuracy: test set, mean ± std "
        f"over seeds.\n\n{tables}\n## Measurement reliability\n\n" + "\n".join(f"- {line}" for line in reliability) + "\n",
    )
    rec = recommend(study, rows, measured, exp_dir) if study.train_models else None
    figures = write_plots(study, rows, exp_dir, subtitle)
    train_seconds = sum(s.get("seconds") or 0 for m in measured for s in m.seeds)
    host = measured[0].cost.get("host") or {}
    setup = [
        f"Data: {study.dataset.name} ({data.get('source', '?')}): {data.get('train', '?')} training, {data.get('val', '?')} "
        f"validation, {data.get('test', '?')} test images."
        if study.train_models
        else "No training (train_models=false): size and speed only.",
        f"Models: {', '.join(study.models)}; baseline {study.baseline}; act={study.act.name}"
        + (f"; width multiplier {study.width}" if study.width is not None else "")
        + " (configs/model/<name>.yaml).",
    ]
    if study.train_models:
        setup.append(
            f"Training: {study.epochs} epochs, {training_description(m for _, m in results)}{overrides_phrase(study.overrides)}; "
            f"{study.seeds} seeds per model; {training_setup([m for _, m in results if m.get('status') == 'completed'])}."
        )
    setup += [
        f"Measured on {host.get('name', '?')}: CPU {host.get('cpu', '?')}, {cores_phrase(host)}, torch "
        f"{torch.__version__}; latency in float32 with {threads_label(threads)}"
        + (" and with 1" if threads != 1 else "")
        + f" (intra-op; torch.utils.benchmark: warm-up, then blocks of calls for {study.min_run_time:g} s and at least {MIN_BLOCKS} blocks; "
        f"median and IQR per batch), ONNX Runtime CPU execution provider with the same thread counts; ONNX Runtime accuracy on "
        f"the same CPU. Training time summed over runs: {train_seconds:.0f} s; this invocation: {wall_seconds:.0f} s (runs and "
        f"measurements on disk are reused).",
        "MACs per image from torch.utils.flop_counter (1 MAC = 2 FLOPs). Size: the PyTorch state_dict and the ONNX files on disk. "
        "Exported models take [0, 1] images and normalise inside.",
        *([comparison_method()] if study.train_models else []),
    ]
    final_runs = {
        (spec.labels["model"], spec.labels["seed"]): {"final_train_loss": m["history"][-1]["train_loss"], **held_out(m)}
        for spec, m in results
        if m["history"]
    }
    chance = chance_loss(m for _, m in results)
    report = Report(
        "Efficient CNNs: what each design costs and what it buys",
        setup,
        tables,
        findings(study, rows, measured, rec, final_runs, chance),
        figures,
        [Section("Measurement reliability", reliability)],
        limitations(study, data, host),
        references=[
            "Simonyan & Zisserman 2015 (VGG); Howard et al. 2017 (MobileNets, depthwise-separable convolutions); "
            "Sandler et al. 2018 (MobileNetV2); Iandola et al. 2016 (SqueezeNet); Szegedy et al. 2015, 2016 (Inception); "
            "He et al. 2016 (bottleneck blocks).",
            "Jacob et al. 2018, Quantization and training of neural networks for efficient integer-arithmetic-only inference.",
            "Published counters this code reproduces: torchvision ResNet-18 at 224 px 1.82 GMACs and 11.69M parameters; "
            "MobileNetV2 300M MACs and 3.50M parameters (tests/test_efficient.py).",
        ],
        load=notebook_loader("deepexp.experiments.efficient", study=to_plain(study), subtitle=subtitle),
    )
    return report.write(exp_dir, console, f"efficient models: {subtitle}", main_header, main_rows + ort_rows)
