"""`deepexp nas`: neural architecture search over conv / depthwise-separable / residual chains.

Every search (a strategy and a search seed) is an Optuna study in one storage
(SQLite in the experiment folder, or any database URL that several workers
share). A trial proposes a spec (deepexp/models/nas_space.py), scores it with the
zero-cost proxies, measures its parameters, MACs and latency, and rates it by the
validation accuracy of a short proxy training through the ordinary trainer. All
strategies get the same number of evaluations. A killed search resumes: its
unfinished trial is trained again from its run directory's checkpoint and told
to the study. `n_workers` processes (or several `deepexp nas` invocations given one
`storage`) work on the same searches at once: each asks the storage for the next
trial, so the budget is shared, not repeated. Afterwards the top architectures
and the hand-designed baselines are retrained with the full budget and several
seeds, and the report compares them.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import random
import socket
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from omegaconf import DictConfig

from .. import plots
from ..config import NASConfig, compose_config, validate
from ..data import normalize
from ..host import keep_freed_memory
from ..measure import count_params, torch_latency
from ..parallel import map_in_processes, threads_per_worker
from ..models import create_model, init_weights
from ..models.nas_space import CHANNELS, LAYER_TYPES, MAX_DOWNSAMPLES, check_spec, mac_count, mutate, random_spec, spec_key
from ..results import Stat, group, markdown_table, pareto_front, publish_report, spearman, verdict, welch, write_csv, write_text
from ..rundir import write_json
from ..zero_cost import PROXIES, score_all
from ..train import run_splits
from .runner import RunSpec, check_extra, experiment_dir, group_overrides, run_all, run_one, study_console, train_overrides

PROXY_BATCH = 64  # images the zero-cost proxies see


def nas_command(cfg: DictConfig) -> int:
    study = validate(cfg)
    exp_dir, console = experiment_dir(), study_console()
    start = time.perf_counter()
    check_overrides(study)
    storage = study.storage or f"sqlite:///{exp_dir / 'search.db'}"
    search = Search(study, exp_dir, storage, console)
    for strategy, seed in search.searches():  # before any worker starts, so that one process redoes each
        search.finish_abandoned(strategy, seed)
    if study.n_workers > 1:
        run_workers(study, exp_dir, storage, console)
    else:
        for strategy, seed in search.searches():
            search.run(strategy, seed)
    trials = search.all_trials()
    final = retrain(study, trials, exp_dir, console) if study.retrain else []
    write_study(study, trials, final, exp_dir, console, time.perf_counter() - start, storage, search.count_skipped())
    return 0


# --- the search ----------------------------------------------------------------------------


# The study options behind the train keys it sets under another name (overrides=[...] may not set them).
OWN_KEYS = {"epochs": "proxy_epochs= and final_epochs=", "subset": "proxy_subset= and final_subset=",
            "seed": "final_seeds=N", "model": "baselines=[...]"}
RUN_KEYS = ("model", "model.arch", "eval_test")  # set per run, beyond the shared settings of base_overrides


def base_overrides(study: NASConfig, epochs: int, subset: Optional[int], seed: int, run: Optional[Dict[str, Any]] = None) -> List[str]:
    """The `deepexp train` overrides of one run: the settings every run shares, the run's own
    (`run`: model, model.arch, eval_test), then the user's `overrides=[...]`."""
    return train_overrides(study, {**shared_values(study, epochs, subset, seed), **(run or {})}, study.overrides, "overrides", OWN_KEYS)


def shared_values(study: NASConfig, epochs: int, subset: Optional[int], seed: int) -> Dict[str, Any]:
    """{train key: value} that every search and final run sets."""
    values: Dict[str, Any] = {"epochs": epochs, "batch_size": study.batch_size, "lr": study.lr, "weight_decay": study.weight_decay,
                              "sched": "cosine", "monitor.figure": False, "seed": seed}
    values["subset"] = subset  # also when null (all images): the study's own key either way
    values.update(group_overrides(study, {"dataset": "name", "act": "name", "device": "type"}))
    return values


def check_overrides(study: NASConfig) -> None:
    """Refuse an `overrides=[...]` entry that any search or final run sets, before the search touches its storage."""
    check_extra(study, [*shared_values(study, 1, 1, 0), *RUN_KEYS], study.overrides, "overrides", OWN_KEYS)


def run_workers(study: NASConfig, exp_dir: Path, storage: str, console) -> None:
    """`n_workers` processes running every search on one storage, each with its share of the CPU
    threads (evolution becomes asynchronous, as in Real et al. 2019)."""
    threads = threads_per_worker(study.device.threads, study.n_workers)
    console.print(f"{study.n_workers} search workers, {threads} thread(s) each", highlight=False)
    worker_study = copy.deepcopy(study)
    worker_study.device.threads = threads  # the trainer runs the workers ask for use this many threads too
    map_in_processes(search_worker, [(worker_study, exp_dir, storage, i) for i in range(study.n_workers)],
                     study.n_workers, threads)


def search_worker(study: NASConfig, exp_dir: Path, storage: str, worker: int) -> None:
    """The body of one worker process: every search, until each has its budget of trials."""
    search = Search(study, exp_dir, storage, study_console(), worker)
    for strategy, seed in search.searches():
        search.run(strategy, seed)


class Search:
    """Optuna ask/tell around deepexp's trainer; one object serves every strategy and seed."""

    def __init__(self, study: NASConfig, exp_dir: Path, storage: str, console, worker: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        keep_freed_memory()  # as the trainer does: scoring candidates one after another frees and refills as much
        self.study, self.exp_dir, self.console, self.worker = study, exp_dir, console, worker
        # SQLite serialises writers; several workers wait for the lock instead of failing at once.
        self.storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 300}}
                                                  if storage.startswith("sqlite") else {})
        data = run_splits(validate(compose_config("train", base_overrides(study, 1, study.proxy_subset, 0))))
        self.shape = (data.in_channels, data.image_size, data.num_classes)
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data.y_train), generator=g)[:PROXY_BATCH]
        self.proxy_x = normalize(data.x_train[pick], data.mean, data.std)  # training images only
        self.proxy_y = data.y_train[pick]
        (exp_dir / "specs").mkdir(parents=True, exist_ok=True)

    # -- bookkeeping --

    def optuna_study(self, strategy: str, seed: int):
        import optuna

        # Only NSGA-II proposes through Optuna's sampler; each worker seeds its own so that they differ.
        sampler = optuna.samplers.NSGAIISampler(seed=seed + 1000 * self.worker, population_size=max(4, self.study.population)) \
            if strategy == "nsga2" else optuna.samplers.RandomSampler(seed=seed)
        directions = ["maximize", "minimize"] if strategy == "nsga2" else ["maximize"]
        return optuna.create_study(storage=self.storage, study_name=f"{strategy}-s{seed}", sampler=sampler,
                                   directions=directions, load_if_exists=True)

    def searches(self) -> List[Tuple[str, int]]:
        return [(strategy, seed) for strategy in self.study.strategies for seed in range(self.study.search_seeds)]

    def all_trials(self) -> List[Dict[str, Any]]:
        """Every search's first `trials` completed trials (parallel workers can overshoot by a trial or
        two; the extra ones are left out so that every strategy is compared at the same budget)."""
        import optuna

        rows = []
        for strategy, seed in self.searches():
            done = self.optuna_study(strategy, seed).get_trials(states=[optuna.trial.TrialState.COMPLETE])
            for t in sorted(done, key=lambda t: t.number)[:self.study.trials]:
                rows.append({"strategy": strategy, "search_seed": seed, "trial": t.number, "val_acc": t.values[0],
                             **{k: v for k, v in t.user_attrs.items() if k not in ("spec", "worker")}, "spec": t.user_attrs["spec"],
                             "worker_pid": t.user_attrs.get("worker", {}).get("pid")})
        return rows

    def count_skipped(self) -> int:
        """Candidates skipped untrained for exceeding max_macs, over every search (all sessions)."""
        import optuna

        trials = [t for strategy, seed in self.searches() for t in self.optuna_study(strategy, seed).get_trials(deepcopy=False)]
        return sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) + sum(t.user_attrs.get("rejected", 0) for t in trials)

    # -- proposing --

    def suggest_spec(self, trial) -> Dict[str, Any]:
        """A spec drawn through Optuna's distributions, which NSGA-II's crossover and mutation work on."""
        depth = trial.suggest_int("depth", 5, 15)
        layers = [{"type": trial.suggest_categorical(f"type_{i}", LAYER_TYPES),
                   "channels": trial.suggest_categorical(f"channels_{i}", CHANNELS),
                   "stride": trial.suggest_categorical(f"stride_{i}", (1, 2))} for i in range(depth)]
        downs = [i for i, layer in enumerate(layers) if layer["stride"] == 2]
        for i in downs[MAX_DOWNSAMPLES:]:  # the space allows three downsamplings; later ones become stride 1
            layers[i]["stride"] = 1
        return {"layers": layers}

    def evolve_spec(self, trials, rng: random.Random) -> Dict[str, Any]:
        """Aging evolution: tournament among the most recent `population` evaluations, mutate the winner
        (a few tries for a child within max_macs)."""
        if len(trials) < self.study.population:
            return self.affordable(rng)
        population = sorted(trials, key=lambda t: t.number)[-self.study.population:]
        parent = max(rng.sample(population, self.study.sample_size), key=lambda t: t.values[0])
        children = [mutate(parent.user_attrs["spec"], rng) for _ in range(10)]
        return next((c for c in children if self.within_budget(c)), children[-1])

    def prescreen_spec(self, rng: random.Random) -> Dict[str, Any]:
        """Zero-cost pre-screening: the best of `zero_cost_pool` affordable random specs by the chosen proxy."""
        pool = [self.affordable(rng) for _ in range(self.study.zero_cost_pool)]
        return max(pool, key=lambda spec: self.measure(spec)[self.study.zero_cost_proxy])

    def affordable(self, rng: random.Random, tries: int = 500) -> Dict[str, Any]:
        return self.affordable_counted(rng, tries)[0]

    def affordable_counted(self, rng: random.Random, tries: int = 500) -> Tuple[Dict[str, Any], int]:
        """The first random spec within max_macs, and how many were drawn and rejected before it
        (after `tries`, an unaffordable one, which the search then skips)."""
        for rejected in range(tries):
            spec = random_spec(rng)
            if self.within_budget(spec):
                return spec, rejected
        return random_spec(rng), tries

    def within_budget(self, spec) -> bool:
        return self.study.max_macs is None or self.macs(spec) <= self.study.max_macs

    def macs(self, spec) -> int:
        c, s, k = self.shape
        return mac_count(spec, c, s, k)

    # -- measuring and evaluating --

    def build(self, spec):
        c, s, k = self.shape
        torch.manual_seed(0)
        model = create_model("nas", in_channels=c, image_size=s, num_classes=k, act=self.study.act.name, arch=spec)
        init_weights(model, "auto", self.study.act.name)
        return model

    def measure(self, spec, latency: bool = False) -> Dict[str, float]:
        """Parameters, MACs and the zero-cost proxies of one freshly built candidate (and its
        batch-1 latency when asked: pre-screening needs only the proxies)."""
        c, s, _ = self.shape
        model = self.build(spec)
        # MACs by formula (exact: tests/test_nas.py checks it against FlopCounter), which saves a forward pass
        out: Dict[str, float] = {"params": count_params(model), "macs": self.macs(spec)}
        out.update(score_all(model, self.proxy_x, self.proxy_y))
        if latency:
            out["latency_ms"] = torch_latency(model, c, s, 1, self.study.latency_threads, 0.1).median_ms
        return out

    def evaluate(self, spec, name: str, counter: str) -> Tuple[float, dict]:
        path = self.exp_dir / "specs" / f"{spec_key(spec)}.json"
        if not path.exists():
            write_json(path, spec)
        # No test set: a candidate is rated on validation, and the test set is for the final retraining only.
        overrides = base_overrides(self.study, self.study.proxy_epochs, self.study.proxy_subset, 0,
                                   {"model": "nas", "model.arch": str(path), "eval_test": False})
        run = RunSpec(name, {"spec": spec_key(spec)}, overrides)
        m = run_one(run, validate(compose_config("train", overrides)), self.exp_dir, self.console, "nas", counter)
        return (m["best_val_acc"] or 0.0) if m["status"] == "completed" else 0.0, m

    # -- one search --

    def run(self, strategy: str, seed: int) -> None:
        import optuna

        opt = self.optuna_study(strategy, seed)
        name = f"{strategy}-s{seed}"
        deadline = time.time() + 60 * self.study.max_minutes if self.study.max_minutes else None
        while True:
            trials = opt.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING])
            done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            elsewhere = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and _in_progress(t)]
            if len(done) + len(elsewhere) >= self.study.trials or (deadline and time.time() > deadline):
                break
            trial = opt.ask()
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})  # first, so others see it
            rng = random.Random(f"{name}/{trial.number}")  # per trial, so that parallel workers draw different specs
            if strategy == "random":  # rejection sampling: draws over max_macs are counted, not stored as trials
                spec, rejected = self.affordable_counted(rng)
                trial.set_user_attr("rejected", rejected)
            elif strategy == "nsga2":
                spec = self.suggest_spec(trial)
            elif strategy == "evolution":
                spec = self.evolve_spec(done, rng)
            else:
                spec = self.prescreen_spec(rng)
            spec = check_spec(spec)
            trial.set_user_attr("spec", spec)
            if not self.within_budget(spec):
                trial.set_user_attr("macs", self.macs(spec))
                opt.tell(trial, state=optuna.trial.TrialState.PRUNED)  # over the cost limit: not an evaluation
                continue
            self.complete(opt, trial, spec, name, f"{name} {len(done) + len(elsewhere) + 1}/{self.study.trials}", strategy)

    def complete(self, opt, trial, spec, name: str, counter: str, strategy: str) -> None:
        number = trial.number
        start = time.perf_counter()
        attrs = {**self.measure(spec, latency=True), "spec_key": spec_key(spec),
                 "depth": len(spec["layers"])}
        val_acc, m = self.evaluate(spec, f"{name}/t{number:03d}", counter)
        attrs.update({"status": m["status"], "train_seconds": m.get("seconds"),
                      "wall_seconds": time.perf_counter() - start, "run_dir": f"runs/{name}/t{number:03d}"})
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        cost = {"params": attrs["params"], "macs": attrs["macs"], "latency": attrs["latency_ms"]}[self.study.second_objective]
        opt.tell(number, [val_acc, cost] if strategy == "nsga2" else val_acc)

    def finish_abandoned(self, strategy: str, seed: int) -> None:
        """Trials left RUNNING by a dead process of this machine are evaluated again (resuming their
        run directory) and told; those of live or other-machine workers are left alone."""
        import optuna

        opt, name = self.optuna_study(strategy, seed), f"{strategy}-s{seed}"
        for t in opt.get_trials(states=[optuna.trial.TrialState.RUNNING]):
            if _in_progress(t):
                continue
            if "spec" not in t.user_attrs:  # killed before the spec was recorded: nothing to redo
                opt.tell(t.number, state=optuna.trial.TrialState.FAIL)
                continue
            if not self.within_budget(t.user_attrs["spec"]):  # killed before it was skipped
                opt.tell(t.number, state=optuna.trial.TrialState.PRUNED)
                continue
            self.console.print(f"{name}: resuming trial {t.number} left by a stopped search", highlight=False)
            trial = optuna.trial.Trial(opt, t._trial_id)  # the same trial, reopened in this process
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
            self.complete(opt, trial, t.user_attrs["spec"], name, f"{name} resumed", strategy)


def _in_progress(trial) -> bool:
    """Whether a RUNNING trial belongs to a live worker other than this process. One on another
    machine counts as live; an unsigned one (a worker signs right after asking) only for a minute."""
    worker = trial.user_attrs.get("worker")
    if not worker:
        return (datetime.datetime.now() - trial.datetime_start).total_seconds() < 60
    if worker.get("host") != socket.gethostname():
        return True
    return _alive(worker.get("pid"))


def _alive(pid: Optional[int]) -> bool:
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the full-budget comparison ----------------------------------------------------------------


def top_specs(study: NASConfig, trials: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """`top_k` distinct architectures: the most accurate (proxy validation accuracy), with the last
    two places (for top_k >= 3) going to the most accurate Pareto-front members (accuracy against
    parameters) not already chosen, so that small efficient designs get a full-budget retraining too."""
    best: Dict[str, Dict[str, Any]] = {}
    for t in trials:
        if t["spec_key"] not in best or t["val_acc"] > best[t["spec_key"]]["val_acc"]:
            best[t["spec_key"]] = t
    ranked = sorted(best.values(), key=lambda t: -t["val_acc"])
    n_front = 2 if study.top_k >= 3 else 0
    chosen = ranked[:study.top_k - n_front]
    front = [ranked[i] for i in pareto_front([t["params"] for t in ranked], [t["val_acc"] for t in ranked])]
    chosen += [t for t in sorted(front, key=lambda t: -t["val_acc"]) if t not in chosen][:n_front]
    chosen += [t for t in ranked if t not in chosen][:study.top_k - len(chosen)]
    return chosen


def retrain(study: NASConfig, trials: List[Dict[str, Any]], exp_dir: Path, console) -> List[Tuple[RunSpec, dict]]:
    specs = []
    top = top_specs(study, trials)
    for rank, t in enumerate(top, 1):
        path = exp_dir / "top5" / f"{rank}-{t['spec_key']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, t["spec"])
        for seed in range(study.final_seeds):
            overrides = base_overrides(study, study.final_epochs, study.final_subset, seed, {"model": "nas", "model.arch": str(path)})
            specs.append(RunSpec(f"final/top{rank}-s{seed}", {"model": f"top{rank}", "kind": "searched", "spec": t["spec_key"],
                                                                  "seed": seed, "file": str(path.relative_to(exp_dir))}, overrides))
    for name in study.baselines:
        for seed in range(study.final_seeds):
            overrides = base_overrides(study, study.final_epochs, study.final_subset, seed, {"model": name})
            specs.append(RunSpec(f"final/{name}-s{seed}", {"model": name, "kind": "hand-designed", "seed": seed}, overrides))
    console.print(f"retraining {len(top)} searched and {len(study.baselines)} hand-designed networks x {study.final_seeds} seeds, "
                  f"{study.final_epochs} epochs", highlight=False)
    return run_all(specs, exp_dir, console, "nas", study.n_workers)


# --- writing -----------------------------------------------------------------------------------


def best_so_far(trials: List[Dict[str, Any]], strategy: str, seeds: int, n: int) -> List[List[float]]:
    curves = []
    for seed in range(seeds):
        accs = [t["val_acc"] for t in sorted(trials, key=lambda t: t["trial"]) if t["strategy"] == strategy and t["search_seed"] == seed]
        if len(accs) >= n:
            curves.append([max(accs[:i + 1]) for i in range(n)])
    return curves


def patterns(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    layers = [layer for r in rows for layer in r["spec"]["layers"]]
    downs = [i / max(1, len(r["spec"]["layers"]) - 1) for r in rows for i, l in enumerate(r["spec"]["layers"]) if l["stride"] == 2]
    return {**{f"share {t}": sum(layer["type"] == t for layer in layers) / len(layers) for t in LAYER_TYPES},
            "depth": statistics.fmean(len(r["spec"]["layers"]) for r in rows),
            "mean channels": statistics.fmean(layer["channels"] for layer in layers),
            "downsamplings": sum(l["stride"] == 2 for l in layers) / len(rows),
            "downsampling position (0 first, 1 last layer)": statistics.fmean(downs) if downs else float("nan")}


def write_study(study: NASConfig, trials: List[Dict[str, Any]], final: List[Tuple[RunSpec, dict]], exp_dir: Path, console,
                wall_seconds: float, storage: str, skipped: int) -> Path:
    rows = [{k: v for k, v in t.items() if k != "spec"} | {"spec": json.dumps(t["spec"])} for t in trials]
    write_csv(exp_dir / "evaluated.csv", rows)
    final_rows = [{**spec.labels, "status": m["status"], "test_acc": (m.get("test") or {}).get("acc"),
                   "best_val_acc": m.get("best_val_acc"), "params": m.get("params"), "seconds": m.get("seconds")} for spec, m in final]
    write_csv(exp_dir / "summary.csv", final_rows)
    groups = group(final_rows, ["model", "kind"])
    header = ["network", "kind", "architecture", "params", "runs", "test acc (mean ± std)", "best val acc (mean ± std)"]
    table_rows = [[g.key["model"], g.key["kind"], g.rows[0].get("spec", g.key["model"]), f"{g.rows[0]['params']:,}", len(g.rows),
                   g.stat("test_acc").fmt(4), g.stat("best_val_acc").fmt(4)] for g in groups]
    table = markdown_table(header, table_rows) if final_rows else \
        "No full-budget retraining in this invocation (retrain=false): the search's candidates are in evaluated.csv."
    first = next((m for _, m in final if m.get("data")), {})
    data = first.get("data", {})
    subtitle = f"{study.dataset.name}, proxy {study.proxy_epochs} epochs on {study.proxy_subset or 'all'} images"
    write_text(exp_dir / "summary.md", f"# NAS: full-budget retraining ({study.final_epochs} epochs, {study.final_seeds} seeds)\n\n{table}\n")

    files, folder = {}, exp_dir / "plots"
    hand = [g for g in groups if g.key["kind"] == "hand-designed"]
    for cost, label in (("params", "parameters"), ("latency_ms", "CPU latency at batch 1 (ms)")) if trials else ():
        fig, (ax,) = plots.panels(1, width=7.5, height=5.0)
        xs, ys = [t[cost] for t in trials], [t["val_acc"] for t in trials]
        front = pareto_front(xs, ys)
        ax.scatter(xs, ys, s=14, alpha=0.45, color="grey", label="evaluated candidates")
        ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=40, color="C3", label="Pareto front")
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="C3", linestyle="--")
        if cost == "latency_ms":
            plots.log_axis(ax, "x")  # a decade or so of milliseconds: plain numbers read best
        else:
            ax.set_xscale("log")
        ax.set(xlabel=label, ylabel="proxy validation accuracy",
               title=f"accuracy against {label.split(' (')[0]}, every candidate\n{subtitle}")
        if cost == "params":
            for g in hand:
                ax.axvline(g.rows[0]["params"], color="C0", alpha=0.5, linestyle=":")
                ax.annotate(g.key["model"], (g.rows[0]["params"], min(ys)), fontsize=7, rotation=90, color="C0")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        files[f"pareto_{cost}"] = plots.save(fig, folder / f"pareto_{cost}.png")
    fig, (ax,) = plots.panels(1, width=7.0, height=4.5)
    for strategy in study.strategies:
        curves = best_so_far(trials, strategy, study.search_seeds, study.trials)
        if curves:
            plots.band(ax, list(range(1, study.trials + 1)), curves, f"{strategy} ({len(curves)} searches)")
    ax.set(xlabel="evaluations", ylabel="best proxy validation accuracy so far",
           title=f"search progress, mean ± std over search seeds\n{subtitle}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files["best_so_far"] = plots.save(fig, folder / "best_so_far.png")

    hours = sum(t["wall_seconds"] for t in trials) / 3600
    threads = first.get("provenance", {}).get("threads", torch.get_num_threads())
    lines = ["# Neural architecture search: conv / depthwise-separable / residual chains", "", "## Setup",
             f"- Space: {5}-{15} layers of {', '.join(LAYER_TYPES)}; channels {list(CHANNELS)}; at most {MAX_DOWNSAMPLES} stride-2 layers; "
             f"act={study.act.name} (deepexp/models/nas_space.py).",
             f"- Search: strategies {list(study.strategies)}, {study.search_seeds} search seeds each, {study.trials} evaluations per search "
             f"(the same budget for every strategy); aging evolution with population {study.population}, tournament {study.sample_size}.",
             f"- Evaluation: {study.proxy_epochs} epoch(s) of training on {study.proxy_subset or 'all'} {study.dataset.name} images, "
             f"rated by the best validation accuracy (the test set is never used to select).",
             f"- Final: top {study.top_k} architectures and baselines {list(study.baselines)} retrained {study.final_epochs} epochs, "
             f"{study.final_seeds} seeds, on {data.get('train', '?')} training images; test accuracy mean ± std.",
             f"- Storage: `{storage}` (Optuna; every trial with its spec and measurements). "
             f"Search cost: {len(trials)} evaluations taking {hours:.2f} h of wall-clock time ({hours * threads:.2f} CPU-hours at "
             f"{threads} threads, no GPU); {skipped} sampled candidates over max_macs={study.max_macs} were skipped untrained. "
             f"This invocation: {wall_seconds:.0f} s (searches and runs on disk are reused).", "", "## Results", table, ""]
    lines += [f"![{name}](plots/{file})" for name, file in files.items()]
    lines += ["", "## Findings"] + [f"- {line}" for line in findings(study, trials, groups)]
    lines += ["", "## Limitations",
              f"- Proxy training of {study.proxy_epochs} epoch(s) ranks candidates at a tiny budget; the ranking may change with full training.",
              f"- {study.search_seeds} search seeds and {study.trials} evaluations per search: the comparison of strategies has little power.",
              "", "## References",
              "- Real et al. 2019 (aging evolution); Deb et al. 2002 (NSGA-II); Tanaka et al. 2020 (synflow); Mellor et al. 2021 (NASWOT); "
              "Abdelfattah et al. 2021 (zero-cost proxies; on NAS-Bench-201 CIFAR-10 synflow reaches Spearman 0.74, params 0.75).", ""]
    return publish_report(exp_dir, lines, console, f"NAS: {subtitle}", header, table_rows)


def findings(study: NASConfig, trials: List[Dict[str, Any]], groups) -> List[str]:
    lines = []
    if "random" in study.strategies and "evolution" in study.strategies:
        finals = {s: [c[-1] for c in best_so_far(trials, s, study.search_seeds, study.trials)] for s in ("random", "evolution")}
        if finals["random"] and finals["evolution"]:
            p = welch(finals["evolution"], finals["random"])
            d = statistics.fmean(finals["evolution"]) - statistics.fmean(finals["random"])
            said = verdict(p, "the spread between searches", "one search each, not testable")
            lines.append(f"**Evolution against random at {study.trials} evaluations**: best proxy accuracy "
                         f"{Stat(finals['evolution']).fmt(4)} against {Stat(finals['random']).fmt(4)} ({d:+.4f}, {said}).")
    if not trials:
        return ["No candidate was evaluated (max_minutes too short, or every sample over max_macs)."]
    accs = [t["val_acc"] for t in trials]
    corr = {name: spearman([t[name] for t in trials], accs) for name in (*PROXIES, "params", "macs")}
    lines.append("**Zero-cost proxies** (Spearman rho with proxy-trained accuracy over " f"{len(trials)} candidates): "
                 + ", ".join(f"{k} {v:+.2f}" if v is not None else f"{k} -" for k, v in corr.items())
                 + " (NAS-Bench-201 CIFAR-10 reference: synflow 0.74, params 0.75).")
    ranked = sorted(trials, key=lambda t: -t["val_acc"])
    top = ranked[:max(study.top_k, 1)]
    if len(trials) > len(top):
        pt, pa = patterns(top), patterns(trials)
        lines.append("**Patterns** (top " + f"{len(top)} against all {len(trials)} candidates): "
                     + "; ".join(f"{k} {pt[k]:.2f} vs {pa[k]:.2f}" for k in pt) + ".")
    searched = [g for g in groups if g.key["kind"] == "searched" and g.stat("test_acc").n]
    hand = [g for g in groups if g.key["kind"] == "hand-designed" and g.stat("test_acc").n]
    if searched and hand:
        s, h = max(searched, key=lambda g: g.stat("test_acc").mean), max(hand, key=lambda g: g.stat("test_acc").mean)
        p = welch(s.stat("test_acc").values, h.stat("test_acc").values)
        lines.append(f"**Searched against hand-designed at equal budget**: best searched {s.key['model']} ({s.rows[0]['params']:,} parameters) "
                     f"{s.stat('test_acc').fmt(4)} against {h.key['model']} ({h.rows[0]['params']:,}) {h.stat('test_acc').fmt(4)}: "
                     f"{s.stat('test_acc').mean - h.stat('test_acc').mean:+.4f}, {verdict(p, untestable='not testable')}.")
    return lines
