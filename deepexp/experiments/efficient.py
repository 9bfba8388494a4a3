"""`deepexp efficient`: a baseline CNN against cheaper designs, measured for deployment.

Trains every model of `models` (several seeds) through the ordinary trainer, then
measures each one the way a deployment would meet it: parameters, MACs, size on
disk, CPU latency at batch 1 and 32 in PyTorch and in ONNX Runtime (FP32 and
static INT8), and test accuracy in all three runtimes. Writes the tables, the
accuracy-against-cost plots with their Pareto fronts, a report whose every
statement is computed from the measurements, and the recommended model's ONNX
files under `deploy/`. `train=false` measures size and speed only.
"""
from __future__ import annotations

import functools
import io
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from .. import plots
from ..config import EfficientConfig, EfficientModelConfig, compose_config, hydra_override, validate
from ..data import CLASS_NAMES, Splits
from ..deploy import Deployable, OnnxExporter, onnx_latency, onnx_predictions, parity, quantize_int8, session
from ..measure import count_macs, count_params, torch_latency
from ..models import init_weights
from ..results import Stat, markdown_table, pareto_front, publish_report, spearman, verdict, welch, write_csv, write_text
from ..rundir import atomic_write, load_checkpoint, read_json, write_json
from ..train import build_model, run_splits
from .runner import RunSpec, group_overrides, preset_note, run_study, train_overrides

PYTORCH, ORT_FP32, ORT_INT8 = "pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"
PARITY_IMAGES = 64


def efficient_command(cfg: DictConfig) -> int:
    return run_study(cfg, "efficient", plan, write_study)


# --- the runs ------------------------------------------------------------------------------


# The study options behind the train keys it sets under another name (overrides=[...] may not set them).
OWN_KEYS = {"seed": "seeds=N", "model": "models=[...]", "model.width": "width=..."}


def run_overrides(study: EfficientConfig, model: str, seed: int) -> List[str]:
    values: Dict[str, Any] = {"model": model, "epochs": study.epochs, "batch_size": study.batch_size, "lr": study.lr,
                              "weight_decay": study.weight_decay, "sched": "cosine", "monitor.figure": False, "seed": seed}
    values["subset"] = study.subset  # also when null (all images): the study's own key either way
    if study.width is not None and takes_width(model):
        values["model.width"] = study.width
    values.update(group_overrides(study, {"dataset": "name", "act": "name", "device": "type"}))
    return train_overrides(study, values, study.overrides, "overrides", OWN_KEYS)


@functools.lru_cache(maxsize=None)  # one composition per model, not one per run
def takes_width(model: str) -> bool:
    """Whether `model` has the width multiplier of configs/model/<efficient family>.yaml."""
    return OmegaConf.get_type(compose_config("train", [hydra_override("model", model)]).model) is EfficientModelConfig


def plan(study: EfficientConfig) -> List[RunSpec]:
    if not study.train:
        return []
    return [RunSpec(f"{model}-s{seed}", {"model": model, "seed": seed}, run_overrides(study, model, seed))
            for model in study.models for seed in range(study.seeds)]


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


def export_and_score(study: EfficientConfig, model: torch.nn.Module, name: str, data: Splits, folder: Path, threads: int,
                     score: bool, key: Dict[str, Any], exporter: OnnxExporter) -> Dict[str, Any]:
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
        calibration = (data.x_train[:study.calibration_images].float() / 255).numpy()  # training images only
        int8 = quantize_int8(fp32, folder / "model.int8.onnx", calibration)
        out["onnx_int8"] = int8.name
        if score:
            int8_predictions = onnx_predictions(session(int8, threads), data.x_test)
            out["onnx_int8_acc"] = float((int8_predictions == data.y_test.numpy()).mean())
            out["int8_agreement"] = float((int8_predictions == predictions).mean())
    write_json(record, out)
    return out


def measure_cost(study: EfficientConfig, model: torch.nn.Module, data: Splits, folder: Path, threads: int) -> Dict[str, Any]:
    """Parameters, MACs, sizes and latencies of one architecture (files exported in `folder`), cached."""
    settings = {"threads": threads, "batches": list(study.latency_batches), "min_run_time": study.min_run_time,
                "quantize": study.quantize, "torch": torch.__version__}
    record = folder.parent / "cost.json"
    cached = read_json(record)
    if cached is not None and cached.get("settings") == settings:
        return cached
    shape = data.input_shape  # (C, H, W): the exported model's fixed image shape
    cost: Dict[str, Any] = {"settings": settings, "input": list(shape), "params": count_params(model), "macs": count_macs(model, shape),
                            "size_bytes": {PYTORCH: state_dict_bytes(model), ORT_FP32: (folder / "model.onnx").stat().st_size},
                            "latency": {}}
    sessions = {ORT_FP32: session(folder / "model.onnx", threads)}
    if study.quantize:
        cost["size_bytes"][ORT_INT8] = (folder / "model.int8.onnx").stat().st_size
        sessions[ORT_INT8] = session(folder / "model.int8.onnx", threads)
    for batch in study.latency_batches:
        cost["latency"].setdefault(PYTORCH, {})[str(batch)] = torch_latency(model, shape, batch, threads, study.min_run_time).as_dict()
        for runtime, sess in sessions.items():
            cost["latency"].setdefault(runtime, {})[str(batch)] = onnx_latency(sess, shape, batch, threads, study.min_run_time).as_dict()
    write_json(record, cost)
    return cost


def measure_all(study: EfficientConfig, results: List[Tuple[RunSpec, dict]], exp_dir: Path, console) -> List[Measured]:
    threads = study.threads or torch.get_num_threads()
    exporter = OnnxExporter()
    measured = []
    for name in study.models:
        runs = [(spec, m) for spec, m in results if spec.labels["model"] == name and m["status"] == "completed"]
        seeds, first_export = [], None
        for spec, metrics in runs:
            cfg = validate(compose_config("train", spec.overrides))
            data = run_splits(cfg)
            model = build_model(cfg, data)
            checkpoint = exp_dir / "runs" / spec.name / "checkpoints" / "last.pt"
            model.load_state_dict(load_checkpoint(checkpoint)["model"])
            folder = exp_dir / "models" / name / f"s{cfg.seed}"
            key = {"weights": checkpoint.stat().st_mtime_ns, "calibration_images": study.calibration_images, "quantize": study.quantize}
            exported = export_and_score(study, model.eval(), name, data, folder, threads, score=True, key=key, exporter=exporter)
            history = metrics["history"]
            seeds.append({"seed": cfg.seed, "test_acc": metrics["test"]["acc"], "val_acc": history[-1]["val_acc"] if history else None,
                          "seconds": metrics.get("seconds"), "folder": folder, "mean": data.mean.tolist(), "std": data.std.tolist(),
                          "num_classes": data.num_classes, **exported})
            first_export = first_export or (model, data, folder)
        if first_export is None:  # train=false, or no seed of this model completed: untrained weights
            cfg = validate(compose_config("train", run_overrides(study, name, 0)))
            data = run_splits(cfg)
            torch.manual_seed(0)
            model = build_model(cfg, data)
            init_weights(model, cfg.init.name, cfg.act.name)
            folder = exp_dir / "models" / name / "untrained"
            export_and_score(study, model.eval(), name, data, folder, threads, score=False, key={"quantize": study.quantize},
                             exporter=exporter)
            first_export = (model, data, folder)
        model, data, folder = first_export
        console.print(f"measuring {name}: latency at batch {list(study.latency_batches)}, {threads} threads", highlight=False)
        measured.append(Measured(name, measure_cost(study, model.eval(), data, folder, threads), seeds))
    return measured


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
            row: Dict[str, Any] = {"model": m.name, "runtime": runtime, "params": m.cost["params"], "macs": m.cost["macs"],
                                   "size_bytes": m.cost["size_bytes"][runtime]}
            for batch, lat in m.cost["latency"][runtime].items():
                row.update({f"latency_b{batch}_ms": lat["median_ms"], f"latency_b{batch}_iqr_ms": lat["iqr_ms"],
                            f"throughput_b{batch}_img_s": lat["images_per_s"]})
            row.update({"threads": m.cost["settings"]["threads"], "seeds": acc.n, "test_acc_mean": acc.mean, "test_acc_std": acc.std,
                        "drop_vs_baseline": drop,
                        "drop_p_value": welch(baseline, acc.values) if m.name != study.baseline or runtime != PYTORCH else None,
                        "under_max_params": m.cost["params"] < study.max_params,
                        "under_max_drop": drop < study.max_drop if drop is not None else None})
            row["meets_targets"] = bool(row["under_max_params"] and row["under_max_drop"]) if drop is not None else None
            rows.append(row)
    return rows


def run_rows(measured: List[Measured]) -> List[Dict[str, Any]]:
    keys = ("seed", "test_acc", "val_acc", "onnx_fp32_acc", "onnx_int8_acc", "int8_agreement", "parity_max_abs", "seconds")
    return [{"model": m.name, **{k: s.get(k) for k in keys}, "folder": str(Path(*s["folder"].parts[-3:]))}
            for m in measured for s in m.seeds]


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def fmt_latency(row: Dict[str, Any], batch: int) -> str:
    return f"{row[f'latency_b{batch}_ms']:.2f} ({row[f'latency_b{batch}_iqr_ms']:.2f})"


def fmt_acc(row: Dict[str, Any]) -> str:
    if row["test_acc_mean"] is None:
        return "-"
    return f"{row['test_acc_mean']:.4f}" + (f" ± {row['test_acc_std']:.4f}" if row["seeds"] > 1 else "")


def quoted_batches(study: EfficientConfig) -> List[int]:
    """The batch sizes tables and sentences quote: the first and the last of latency_batches, once each."""
    return list(dict.fromkeys((study.latency_batches[0], study.latency_batches[-1])))


def table(study: EfficientConfig, rows: List[Dict[str, Any]], runtime_names: Sequence[str]) -> Tuple[List[str], List[List[str]]]:
    batches, bn = quoted_batches(study), study.latency_batches[-1]
    header = ["model", "runtime", "params", "MACs", "size", *[f"latency b={b} ms (IQR)" for b in batches],
              f"images/s b={bn}", "test acc (mean ± std)", "drop vs baseline", "meets targets"]
    body = [[r["model"], r["runtime"], f"{r['params'] / 1e3:,.0f}K", f"{r['macs'] / 1e6:.1f}M", fmt_bytes(r["size_bytes"]),
             *[fmt_latency(r, b) for b in batches], f"{r[f'throughput_b{bn}_img_s']:,.0f}", fmt_acc(r),
             "-" if r["drop_vs_baseline"] is None else f"{r['drop_vs_baseline']:+.4f}",
             "-" if r["meets_targets"] is None else ("yes" if r["meets_targets"] else "no")]
            for r in rows if r["runtime"] in runtime_names]
    return header, body


# --- the recommendation, plots and report ------------------------------------------------------


@dataclass
class Recommendation:
    model: str
    runtime: str
    row: Dict[str, Any]
    meets_targets: bool
    files: List[Path]


def recommend(study: EfficientConfig, rows: List[Dict[str, Any]], measured: List[Measured], exp_dir: Path) -> Optional[Recommendation]:
    """The fastest deployable (ONNX Runtime, batch 1) model that meets both targets; failing that, the most
    accurate one under the parameter target. Its best-validation seed's ONNX files are copied to deploy/."""
    scored = [r for r in rows if r["runtime"] != PYTORCH and r["test_acc_mean"] is not None and r["model"] != study.baseline]
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
    deploy = exp_dir / "deploy"
    deploy.mkdir(parents=True, exist_ok=True)
    files = []
    for key, suffix in (("onnx_fp32", ".onnx"), ("onnx_int8", ".int8.onnx")):
        if seed.get(key):
            target, source = deploy / f"{m.name}{suffix}", seed["folder"] / seed[key]
            atomic_write(target, lambda f, source=source: f.write(source.read_bytes()))
            files.append(target)
    info = {"model": m.name, "runtime": best["runtime"], "seed": seed["seed"], "dataset": study.dataset.name,
            "input": {"name": "image", "shape": ["batch", *m.cost["input"]], "dtype": "float32",
                      "range": [0.0, 1.0], "normalisation": "inside the model", "mean": seed["mean"], "std": seed["std"]},
            "output": {"name": "logits", "classes": CLASS_NAMES.get(study.dataset.name, list(range(seed["num_classes"])))},
            "test_acc": {"pytorch": seed["test_acc"], "onnx_fp32": seed.get("onnx_fp32_acc"), "onnx_int8": seed.get("onnx_int8_acc")},
            "file": files[-1 if best["runtime"] == ORT_INT8 else 0].name,  # the recommended runtime's model
            "files": [f.name for f in files]}
    write_json(deploy / f"{m.name}.json", info)
    return Recommendation(m.name, best["runtime"], best, ok, files + [deploy / f"{m.name}.json"])


def write_plots(study: EfficientConfig, rows: List[Dict[str, Any]], exp_dir: Path, subtitle: str) -> Dict[str, str]:
    folder, files = exp_dir / "plots", {}
    b1 = study.latency_batches[0]
    scored = any(r["test_acc_mean"] is not None for r in rows)
    styles = {PYTORCH: ("o", "C0"), ORT_FP32: ("s", "C2"), ORT_INT8: ("^", "C3")}
    if scored:
        for name, x_of, xlabel, shown in (
                ("accuracy_vs_latency", lambda r: r[f"latency_b{b1}_ms"], f"CPU latency at batch {b1} (ms, median)", runtimes(study)),
                ("accuracy_vs_macs", lambda r: r["macs"] / 1e6, "MACs per image (millions)", [PYTORCH])):
            fig, (ax,) = plots.panels(1, width=7.5, height=5.0)
            pts = [r for r in rows if r["runtime"] in shown and r["test_acc_mean"] is not None]
            for runtime in shown:
                mine = [r for r in pts if r["runtime"] == runtime]
                xs, ys = [x_of(r) for r in mine], [r["test_acc_mean"] for r in mine]
                plots.pareto_scatter(ax, xs, ys, [r["test_acc_std"] or 0 for r in mine], [r["params"] for r in mine],
                                     pareto_front(xs, ys), *styles[runtime], legend=runtime)
            plots.log_axis(ax, "x")
            ax.set(xlabel=xlabel, ylabel="test accuracy (mean ± std over seeds)",
                   title=f"accuracy against {'latency' if 'latency' in name else 'MACs'} (marker area ~ parameters; "
                         f"dashed: Pareto front)\n{subtitle}")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8, markerscale=0.5)
            plots.label_points(ax, [x_of(r) for r in pts], [r["test_acc_mean"] for r in pts], [r["model"] for r in pts])
            files[name] = plots.save(fig, folder / f"{name}.png")
    fig, (ax,) = plots.panels(1, width=7.5, height=5.0)
    pts = [r for r in rows if r["runtime"] in runtimes(study)]
    macs, latency = [r["macs"] / 1e6 for r in pts], [r[f"latency_b{b1}_ms"] for r in pts]
    for runtime in runtimes(study):
        marker, color = styles[runtime]
        mine = [i for i, r in enumerate(pts) if r["runtime"] == runtime]
        ax.scatter([macs[i] for i in mine], [latency[i] for i in mine], marker=marker, color=color, label=runtime)
    plots.log_axis(ax, "x")
    plots.log_axis(ax, "y")
    ax.set(xlabel="MACs per image (millions)", ylabel=f"CPU latency at batch {b1} (ms, median)",
           title=f"MACs are not latency: measured time against counted work\n{subtitle}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    plots.label_points(ax, macs, latency, [r["model"] for r in pts])
    files["latency_vs_macs"] = plots.save(fig, folder / "latency_vs_macs.png")
    return files


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def findings(study: EfficientConfig, rows: List[Dict[str, Any]], measured: List[Measured], rec: Optional[Recommendation]) -> List[str]:
    get = {(r["model"], r["runtime"]): r for r in rows}
    b1, batches = study.latency_batches[0], quoted_batches(study)
    base = get[(study.baseline, PYTORCH)]
    scored = base["test_acc_mean"] is not None
    lines = []
    if scored:
        meet = [r["model"] for r in rows if r["runtime"] == PYTORCH and r["meets_targets"]]
        lines.append(f"**Targets** (under {study.max_params:,} parameters and under {study.max_drop:.0%} absolute accuracy drop "
                     f"against {study.baseline}'s {base['test_acc_mean']:.4f}): "
                     + (f"met by {', '.join(meet)}." if meet else "met by no model at this training budget."))
    for m in measured:
        if m.name == study.baseline:
            continue
        r = get[(m.name, PYTORCH)]
        speed = lambda runtime, b: ratio(get[(study.baseline, runtime)][f"latency_b{b}_ms"], get[(m.name, runtime)][f"latency_b{b}_ms"])
        line = (f"**{m.name}**: {ratio(r['params'], base['params'])} the parameters and {ratio(r['macs'], base['macs'])} the MACs "
                f"of {study.baseline}; speed (baseline latency / this latency) "
                f"{' and '.join(f'{speed(PYTORCH, b)} at batch {b}' for b in batches)} in PyTorch, "
                f"{' and '.join(speed(ORT_FP32, b) for b in batches)} in ONNX Runtime")
        if scored and r["test_acc_mean"] is not None:
            line += (f"; test accuracy {fmt_acc(r)}, a drop of {r['drop_vs_baseline']:+.4f} against the baseline, "
                     f"{verdict(r['drop_p_value'])}")
        lines.append(line + ".")
    pt = [r for r in rows if r["runtime"] == PYTORCH]
    rho = spearman([r["macs"] for r in pt], [r[f"latency_b{b1}_ms"] for r in pt])
    if rho is not None:
        speed = sorted(pt, key=lambda r: r["macs"] / r[f"latency_b{b1}_ms"])
        lines.append(f"**MACs against latency**: Spearman rho = {rho:.2f} over {len(pt)} models (PyTorch, batch {b1}). "
                     f"Throughput ranges from {speed[0]['macs'] / speed[0][f'latency_b{b1}_ms'] / 1e6:.2f} GMAC/s ({speed[0]['model']}) to "
                     f"{speed[-1]['macs'] / speed[-1][f'latency_b{b1}_ms'] / 1e6:.2f} GMAC/s ({speed[-1]['model']}): depthwise and 1x1 "
                     f"convolutions do little arithmetic per byte moved, so cutting MACs buys less time than it promises.")
    if study.quantize:
        speedups = {b: [get[(m.name, ORT_FP32)][f"latency_b{b}_ms"] / get[(m.name, ORT_INT8)][f"latency_b{b}_ms"] for m in measured]
                    for b in batches}
        shrink = [get[(m.name, ORT_FP32)]["size_bytes"] / get[(m.name, ORT_INT8)]["size_bytes"] for m in measured]
        line = (f"**INT8** (ONNX Runtime static QDQ, per-channel weights, {study.calibration_images} calibration images): files "
                f"{min(shrink):.1f}-{max(shrink):.1f}x smaller; latency speed-up over ONNX Runtime FP32 "
                + " and ".join(f"{min(speedups[b]):.2f}-{max(speedups[b]):.2f}x at batch {b} (median {statistics.median(speedups[b]):.2f}x)"
                               for b in batches))
        paired = [s["onnx_int8_acc"] - s["onnx_fp32_acc"] for m in measured for s in m.seeds if s.get("onnx_int8_acc") is not None]
        agree = [s["int8_agreement"] for m in measured for s in m.seeds if s.get("int8_agreement") is not None]
        if paired:
            change = Stat(paired)
            line += (f"; accuracy change against FP32 {change.mean:+.4f} ± {change.std:.4f} (mean ± std over {change.n} trained "
                     f"models, worst {min(paired):+.4f}), predictions agreeing with FP32 on {min(agree):.1%}-{max(agree):.1%} of test images")
        lines.append(line + ".")
    parities = [s["parity_max_abs"] for m in measured for s in m.seeds]
    if parities:
        worst = max(parities)
        lines.append(f"**Export parity**: the largest |logit difference| between PyTorch and the ONNX FP32 export over "
                     f"{len(parities)} models and {PARITY_IMAGES} test images each is {worst:.2e} "
                     f"({'within' if worst <= study.parity_tolerance else 'OUTSIDE'} the tolerance {study.parity_tolerance:g}).")
    if rec:
        r = rec.row
        lines.append(f"**Recommended for deployment: {rec.model} in {rec.runtime}**"
                     + ("" if rec.meets_targets else " (no model met both targets; this is the most accurate one under the parameter "
                                                      "target, short of the accuracy target)")
                     + f": {r['params']:,} parameters, {fmt_bytes(r['size_bytes'])}, {r[f'latency_b{b1}_ms']:.2f} ms at batch {b1}, "
                       f"test accuracy {fmt_acc(r)}. Files: {', '.join(f'`deploy/{f.name}`' for f in rec.files)}.")
    return lines


def limitations(study: EfficientConfig, data: dict) -> List[str]:
    out = preset_note(study.preset)
    if study.train and (study.epochs < 30 or (data.get("train") or 0) < 20000):
        out.append(f"{study.epochs} epochs on {data.get('train', '?')} training images: far from converged CIFAR-10 training, "
                   f"so the accuracies rank designs at a small budget; smaller models may close or widen the gap with longer training.")
    if study.train and study.seeds < 3:
        out.append(f"{study.seeds} seed(s): the t-tests have little power.")
    out.append("Latency is one 2-core CPU with a fixed thread count; other processes on the machine add noise (see the IQR). "
               "INT8 gains depend on the CPU's integer instructions (VNNI), so measure on the deployment target.")
    out.append("Knowledge distillation (kd=true in the issue) is not implemented.")
    return out


def write_study(study: EfficientConfig, results: List[Tuple[RunSpec, dict]], exp_dir: Path, console, wall_seconds: float) -> Path:
    measure_start = time.perf_counter()
    measured = measure_all(study, results, exp_dir, console)
    wall_seconds += time.perf_counter() - measure_start  # the measurements are part of this invocation
    rows = summary_rows(study, measured)
    write_csv(exp_dir / "summary.csv", rows)
    if study.train:
        write_csv(exp_dir / "runs.csv", run_rows(measured))
    first = next((m for _, m in results if m.get("data")), {})
    data, prov = first.get("data", {}), first.get("provenance", {})
    trained = f"{data.get('train', '?')} train images, {study.epochs} epochs, {study.seeds} seeds" if study.train else "untrained (train=false)"
    subtitle = f"{study.dataset.name}, {trained}"
    main_header, main_rows = table(study, rows, [PYTORCH])
    ort_header, ort_rows = table(study, rows, [ORT_FP32, ORT_INT8])
    tables = (f"### PyTorch FP32\n\n{markdown_table(main_header, main_rows)}\n\n### Deployed: ONNX Runtime FP32 and INT8\n\n"
              f"{markdown_table(ort_header, ort_rows)}\n")
    threads = rows[0]["threads"]
    write_text(exp_dir / "summary.md", f"# Efficient models: {subtitle}\n\nLatency: median per batch (interquartile range), "
                                       f"{threads} threads. Accuracy: test set, mean ± std over seeds.\n\n{tables}")
    rec = recommend(study, rows, measured, exp_dir) if study.train else None
    files = write_plots(study, rows, exp_dir, subtitle)
    train_seconds = sum(s.get("seconds") or 0 for m in measured for s in m.seeds)
    report = [
        "# Efficient CNNs: what each design costs and what it buys", "", "## Setup",
        f"- Data: {study.dataset.name} ({data.get('source', '?')}): {data.get('train', '?')} training, {data.get('val', '?')} "
        f"validation, {data.get('test', '?')} test images." if study.train else "- No training (train=false): size and speed only.",
        f"- Models: {', '.join(study.models)}; baseline {study.baseline}; act={study.act.name}"
        + (f"; width multiplier {study.width}" if study.width is not None else "") + " (configs/model/<name>.yaml).",
    ]
    if study.train:
        report.append(f"- Training: {study.epochs} epochs, batch {study.batch_size}, SGD momentum 0.9, lr {study.lr} with a cosine "
                      f"schedule, weight decay {study.weight_decay}; {study.seeds} seeds per model.")
    report += [
        f"- Hardware: {prov.get('device', 'cpu')}, torch {torch.__version__}; latency with {threads} intra-op threads "
        f"(torch.utils.benchmark: warm-up, then blocks of calls for {study.min_run_time:g} s; median and IQR per batch), "
        f"ONNX Runtime CPU execution provider with the same thread count. Training time summed over runs: {train_seconds:.0f} s; "
        f"this invocation: {wall_seconds:.0f} s (runs and measurements on disk are reused).",
        "- MACs per image from torch.utils.flop_counter (1 MAC = 2 FLOPs). Size: the PyTorch state_dict and the ONNX files on disk. "
        "Exported models take [0, 1] images and normalise inside.",
        "", "## Results", tables, ""]
    report += [f"![{name}](plots/{file})" for name, file in files.items()]
    report += ["", "## Findings"] + [f"- {line}" for line in findings(study, rows, measured, rec)]
    report += ["", "## Limitations"] + [f"- {line}" for line in limitations(study, data)]
    report += ["", "## References",
               "- Simonyan & Zisserman 2015 (VGG); Howard et al. 2017 (MobileNets, depthwise-separable convolutions); "
               "Sandler et al. 2018 (MobileNetV2); Iandola et al. 2016 (SqueezeNet); Szegedy et al. 2015, 2016 (Inception); "
               "He et al. 2016 (bottleneck blocks).",
               "- Jacob et al. 2018, Quantization and training of neural networks for efficient integer-arithmetic-only inference.",
               "- Published counters this code reproduces: torchvision ResNet-18 at 224 px 1.82 GMACs and 11.69M parameters; "
               "MobileNetV2 300M MACs and 3.50M parameters (tests/test_efficient.py).", ""]
    return publish_report(exp_dir, report, console, f"efficient models: {subtitle}", main_header, main_rows + ort_rows)
