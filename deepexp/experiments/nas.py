"""`deepexp nas`: neural architecture search over conv / depthwise-separable / residual chains.

Every search (a strategy and a search seed) is an Optuna study in one storage
(SQLite in the experiment folder, or any database URL that several workers
share). A trial proposes a spec (deepexp/models/nas_space.py), scores it with the
zero-cost proxies, measures its parameters, MACs and latency, and rates it by the
validation accuracy of a short proxy training through the ordinary trainer. All
strategies get the same number of evaluations. A killed search resumes: its
unfinished trial is trained again from its run directory's checkpoint and told
to the study, and the search goes on with new trials (each trial's random draws
are seeded by its own number, so a resumed search continues its sequence instead
of replaying it). `n_workers` processes (or several `deepexp nas` invocations given
one `storage`) work on the same searches at once: each asks the storage for the
next trial, so the budget is shared, not repeated. A proposal whose architecture
the search has already evaluated (in any session, by any worker) is told that
score and is not an evaluation. Afterwards the top architectures and the
hand-designed baselines are retrained with the full budget and several seeds,
and the report compares them.
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
from .runner import (RunSpec, check_extra, experiment_dir, group_overrides, preset_note, provenance_values, run_all,
                     run_one, study_console, train_overrides)

PROXY_BATCH = 64  # images the zero-cost proxies see
POLL_SECONDS = 0.5  # how often a worker looks again at a trial another worker is still deciding or evaluating
DECIDE_SECONDS = 600  # a proposal takes seconds (a zero-cost pool the longest); a trial of another machine still
                      # undecided after this long is taken for abandoned: that machine's worker cannot be checked


def nas_command(cfg: DictConfig) -> int:
    study = validate(cfg)
    exp_dir, console = experiment_dir(), study_console()
    start = time.perf_counter()
    check_overrides(study)
    console.print(f"nas study: {len(study.strategies)} strategies x {study.search_seeds} search seed(s) x {study.trials} evaluations "
                  f"in {exp_dir}", highlight=False, soft_wrap=True)  # where to look, before the search's long silence
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
        self.clock = time.time  # seconds since the epoch, for max_minutes across sessions and workers
        # SQLite serialises writers; several workers wait for the lock instead of failing at once.
        self.storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 300}}
                                                  if storage.startswith("sqlite") else {})
        data = run_splits(validate(compose_config("train", base_overrides(study, 1, study.proxy_subset, 0))))
        self.input_shape, self.num_classes = data.input_shape, data.num_classes  # (C, H, W), K
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data.y_train), generator=g)[:PROXY_BATCH]
        self.proxy_x = normalize(data.x_train[pick], data.mean, data.std)  # training images only
        self.proxy_y = data.y_train[pick]
        (exp_dir / "specs").mkdir(parents=True, exist_ok=True)

    # -- bookkeeping --

    def optuna_study(self, strategy: str, seed: int):
        import optuna

        # The sampler only matters for NSGA-II, whose proposals run() draws through a sampler seeded per trial
        # (nsga2_sampler); the other strategies propose specs themselves.
        directions = ["maximize", "minimize"] if strategy == "nsga2" else ["maximize"]
        return optuna.create_study(storage=self.storage, study_name=f"{strategy}-s{seed}", sampler=optuna.samplers.RandomSampler(seed=seed),
                                   directions=directions, load_if_exists=True)

    def nsga2_sampler(self, name: str, n_trials: int):
        """NSGA-II (Deb et al. 2002) seeded by the search, the number of trials it already holds and the worker.

        A sampler seeded once per process would replay its first proposals whenever a process starts on a
        search that already has trials (a resumed search, a later invocation on a shared storage). Seeded by
        the trial count, the proposal of the n-th trial is the same whether or not the search was interrupted
        before it; the worker index keeps parallel workers apart. The generations and parents NSGA-II works
        from live in the storage, so a fresh sampler per trial loses nothing."""
        import optuna

        seed = random.Random(f"{name}/{n_trials}/{self.worker}").getrandbits(32)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, self.study.population))

    def searches(self) -> List[Tuple[str, int]]:
        return [(strategy, seed) for strategy in self.study.strategies for seed in range(self.study.search_seeds)]

    def all_trials(self) -> List[Dict[str, Any]]:
        """Every search's first `trials` evaluations (fewer if it stopped at max_minutes), in order. Trials that
        reused an earlier evaluation's score are left out: each evaluated architecture appears once."""
        import optuna

        rows = []
        for strategy, seed in self.searches():
            done = self.optuna_study(strategy, seed).get_trials(states=[optuna.trial.TrialState.COMPLETE])
            for t in sorted(done, key=lambda t: t.number):
                if t.user_attrs.get("evaluation", self.study.trials + 1) > self.study.trials:
                    continue
                rows.append({"strategy": strategy, "search_seed": seed, "trial": t.number, "val_acc": t.values[0],
                             **{k: v for k, v in t.user_attrs.items() if k not in ("spec", "worker", "clock")}, "spec": t.user_attrs["spec"],
                             "worker_pid": t.user_attrs.get("worker", {}).get("pid")})
        return rows

    def count_skipped(self) -> int:
        """Candidates skipped untrained for exceeding max_macs, over every search (all sessions)."""
        import optuna

        trials = [t for strategy, seed in self.searches() for t in self.optuna_study(strategy, seed).get_trials(deepcopy=False)]
        return sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) + sum(t.user_attrs.get("rejected", 0) for t in trials)

    def spent(self, trials) -> bool:
        """Whether a search with these trials has its budget: `trials` evaluations, counting the proposals other
        live workers are still deciding on (if one turns out not to be an evaluation, that worker goes on), or
        max_minutes of time with a trial under way, summed over every session and worker (_busy_seconds)."""
        evaluations = sum("evaluation" in t.user_attrs for t in trials)
        pending = sum(_deciding(t) for t in trials)
        if evaluations + pending >= self.study.trials:
            return True
        return self.study.max_minutes is not None and _busy_seconds(trials) >= 60 * self.study.max_minutes

    def tell(self, opt, trial, began: float, values: Optional[List[float]] = None, state=None) -> None:
        """Finish a trial, recording the span of time it took (seconds since the epoch) for max_minutes."""
        trial.set_user_attr("clock", [began, self.clock()])
        opt.tell(trial, values, state=state)

    def settle(self, opt, number: int) -> List[Any]:
        """The search's trials numbered below `number`, once every one of them is decided: an evaluation, a
        reused score, or finished. Deciding in trial-number order gives each evaluation a number of its own
        (1 + the evaluations before it) and lets no two workers evaluate the same spec; other workers decide
        within moments of asking, so the wait is short. An undecided trial of a stopped worker is not an
        evaluation (the next invocation on its machine fails it: finish_abandoned)."""
        while True:
            earlier = [t for t in opt.get_trials(deepcopy=False) if t.number < number]
            if not any(_deciding(t) for t in earlier):
                return earlier
            time.sleep(POLL_SECONDS)

    def values_of(self, opt, number: int) -> Optional[List[float]]:
        """The values of trial `number` once it is complete (waiting while a live worker of this machine
        evaluates it); None if it failed, its worker stopped, or it runs on another machine, whose worker
        cannot be checked and might never finish it."""
        import optuna

        while True:
            t = next(t for t in opt.get_trials(deepcopy=False) if t.number == number)
            if t.state == optuna.trial.TrialState.COMPLETE:
                return t.values
            if t.state != optuna.trial.TrialState.RUNNING or not _in_progress(t) or not _on_this_machine(t):
                return None
            time.sleep(POLL_SECONDS)

    def reuse(self, opt, trial, twin: int, name: str, began: float) -> None:
        """Tell `trial`, whose spec trial `twin` evaluated, `twin`'s values: the strategy learns the score, no
        budget is spent. If `twin`'s values cannot be had here (values_of), `trial` fails instead: still no
        evaluation, and a later proposal of the spec reuses the score."""
        import optuna

        trial.set_user_attr("reused_from", twin)  # first: decided, so later trials need not wait for this one
        values = self.values_of(opt, twin)
        if values is None:
            self.tell(opt, trial, began, state=optuna.trial.TrialState.FAIL)
            return
        self.tell(opt, trial, began, values)
        self.console.print(f"{name}/t{trial.number:03d}: the architecture of t{twin:03d}, already evaluated: its score reused",
                           highlight=False, markup=False)

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
        return mac_count(spec, self.input_shape, self.num_classes)

    # -- measuring and evaluating --

    def build(self, spec):
        c, h, w = self.input_shape
        torch.manual_seed(0)
        model = create_model("nas", in_channels=c, image_shape=(h, w), num_classes=self.num_classes, act=self.study.act.name, arch=spec)
        init_weights(model, "auto", self.study.act.name)
        return model

    def measure(self, spec, latency: bool = False) -> Dict[str, float]:
        """Parameters, MACs and the zero-cost proxies of one freshly built candidate (and its
        batch-1 latency when asked: pre-screening needs only the proxies)."""
        model = self.build(spec)
        # MACs by formula (exact: tests/test_nas.py checks it against FlopCounter), which saves a forward pass
        out: Dict[str, float] = {"params": count_params(model), "macs": self.macs(spec)}
        out.update(score_all(model, self.proxy_x, self.proxy_y))
        if latency:
            out["latency_ms"] = torch_latency(model, self.input_shape, 1, self.study.latency_threads, 0.1).median_ms
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
        """Ask, propose, decide and evaluate until the search has its budget (spent()).

        Each trial is decided before anything is trained: a spec over max_macs is skipped (PRUNED), a spec the
        search already evaluated reuses that score (reuse()), and any other spec becomes the next evaluation,
        numbered 1..trials across every worker and session (settle()). Random draws are seeded by the trial's
        number, so neither a resumed search nor a second worker repeats the proposals of another process."""
        import optuna

        opt, name = self.optuna_study(strategy, seed), f"{strategy}-s{seed}"
        while True:
            trials = opt.get_trials(deepcopy=False)
            if self.spent(trials):
                break
            began = self.clock()
            if strategy == "nsga2":
                opt.sampler = self.nsga2_sampler(name, len(trials))
            trial = opt.ask()
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})  # first, so others see it
            rng = random.Random(f"{name}/{trial.number}")  # per trial: a resumed search or another worker draws anew
            if strategy == "random":  # rejection sampling: draws over max_macs are counted, not stored as trials
                spec, rejected = self.affordable_counted(rng)
                trial.set_user_attr("rejected", rejected)
            elif strategy == "nsga2":
                spec = self.suggest_spec(trial)
            elif strategy == "evolution":  # the population: every told score, reused ones included
                spec = self.evolve_spec([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE], rng)
            else:
                spec = self.prescreen_spec(rng)
            spec = check_spec(spec)
            trial.set_user_attr("spec", spec)
            if not self.within_budget(spec):
                trial.set_user_attr("macs", self.macs(spec))
                self.tell(opt, trial, began, state=optuna.trial.TrialState.PRUNED)  # over the cost limit: not an evaluation
                continue
            earlier = self.settle(opt, trial.number)
            twin = next((t for t in earlier if "evaluation" in t.user_attrs and spec_key(t.user_attrs["spec"]) == spec_key(spec)), None)
            if twin is not None:
                self.reuse(opt, trial, twin.number, name, began)
                continue
            ordinal = 1 + sum("evaluation" in t.user_attrs for t in earlier)
            if ordinal > self.study.trials:  # other workers took the last evaluations while this one proposed
                self.tell(opt, trial, began, state=optuna.trial.TrialState.FAIL)
                break
            trial.set_user_attr("evaluation", ordinal)  # after the spec: an evaluation can always be resumed
            self.complete(opt, trial, spec, name, ordinal, strategy, began)

    def complete(self, opt, trial, spec, name: str, ordinal: int, strategy: str, began: float) -> None:
        """Measure and train evaluation number `ordinal` of the search and tell its score."""
        number = trial.number
        start = time.perf_counter()
        attrs = {**self.measure(spec, latency=True), "spec_key": spec_key(spec),
                 "depth": len(spec["layers"])}
        val_acc, m = self.evaluate(spec, f"{name}/t{number:03d}", f"{name} {ordinal}/{self.study.trials}")
        attrs.update({"status": m["status"], "train_seconds": m.get("seconds"), "device": m.get("provenance", {}).get("device"),
                      "wall_seconds": time.perf_counter() - start, "run_dir": f"runs/{name}/t{number:03d}"})
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        cost = {"params": attrs["params"], "macs": attrs["macs"], "latency": attrs["latency_ms"]}[self.study.second_objective]
        self.tell(opt, trial, began, [val_acc, cost] if strategy == "nsga2" else [val_acc])

    def finish_abandoned(self, strategy: str, seed: int) -> None:
        """Trials left RUNNING by a dead process of this machine are finished as that process would have:
        an evaluation is trained again (resuming its run directory) and told, a reused score is told, a spec
        over max_macs is skipped, and a trial killed before its decision fails (nothing of it was trained).
        Those of live or other-machine workers are left alone."""
        import optuna

        opt, name = self.optuna_study(strategy, seed), f"{strategy}-s{seed}"
        for t in opt.get_trials(states=[optuna.trial.TrialState.RUNNING]):
            if _in_progress(t):
                continue
            began = self.clock()
            trial = optuna.trial.Trial(opt, t._trial_id)  # the same trial, reopened in this process
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
            if "evaluation" in t.user_attrs:
                self.console.print(f"{name}: resuming trial {t.number} left by a stopped search", highlight=False)
                self.complete(opt, trial, t.user_attrs["spec"], name, t.user_attrs["evaluation"], strategy, began)
            elif "reused_from" in t.user_attrs:
                self.reuse(opt, trial, t.user_attrs["reused_from"], name, began)
            elif "spec" in t.user_attrs and not self.within_budget(t.user_attrs["spec"]):  # killed before it was skipped
                trial.set_user_attr("macs", self.macs(t.user_attrs["spec"]))
                self.tell(opt, trial, began, state=optuna.trial.TrialState.PRUNED)
            else:
                self.tell(opt, trial, began, state=optuna.trial.TrialState.FAIL)


def _decided(trial) -> bool:
    """Whether a trial's fate is known: finished, or an evaluation, or waiting to reuse another's score."""
    import optuna

    return trial.state != optuna.trial.TrialState.RUNNING or "evaluation" in trial.user_attrs or "reused_from" in trial.user_attrs


def _deciding(trial) -> bool:
    """Whether a live worker other than this process is still deciding this trial (later trials wait for it).
    A worker on another machine cannot be checked: its trial counts for DECIDE_SECONDS after it was asked."""
    if _decided(trial) or not _in_progress(trial):
        return False
    return _on_this_machine(trial) or (datetime.datetime.now() - trial.datetime_start).total_seconds() < DECIDE_SECONDS


def _on_this_machine(trial) -> bool:
    """Whether a trial's worker runs here (an unsigned trial is taken to: its worker signs at once)."""
    return (trial.user_attrs.get("worker") or {}).get("host", socket.gethostname()) == socket.gethostname()


def _busy_seconds(trials) -> float:
    """Wall-clock seconds during which the search had a trial under way: the length of the union of the
    trials' recorded spans, so that parallel workers' overlapping trials count once and the time between
    sessions not at all (a trial cut short by a kill records no span; its resumption does)."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(tuple(t.user_attrs["clock"]) for t in trials if "clock" in t.user_attrs):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


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
    # where the candidates and the retrained networks trained (trials recorded before "device" was kept: unknown)
    devices = provenance_values([*({"provenance": {"device": t.get("device")}} for t in trials), *(m for _, m in final)], "device")
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
             f"Search cost: {len(trials)} evaluations taking {hours:.2f} h of wall-clock time on {devices} ({threads} threads, "
             f"{hours * threads:.2f} CPU-hours); {skipped} sampled candidates over max_macs={study.max_macs} were skipped untrained. "
             f"This invocation: {wall_seconds:.0f} s (searches and runs on disk are reused).", "", "## Results", table, ""]
    lines += [f"![{name}](plots/{file})" for name, file in files.items()]
    lines += ["", "## Findings"] + [f"- {line}" for line in findings(study, trials, groups)]
    lines += ["", "## Limitations", *(f"- {line}" for line in preset_note(study.preset)),
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
