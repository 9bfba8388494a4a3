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
of replaying it). A search records the settings it rates candidates with, and a
rerun with other ones is refused (check_rating). `n_workers` processes (or several `deepexp nas` invocations given
one `storage`) work on the same searches at once: each asks the storage for the
next trial, so the budget is shared, not repeated. A proposal whose architecture
the search has already evaluated (in any session, by any worker) is told that
score and is not an evaluation. Afterwards the top architectures and the
hand-designed baselines are retrained with the full budget and several seeds,
and the report compares them.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import random
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from .. import plots
from ..config import NASConfig, hydra_override, parse_key, parse_value, to_plain, validate
from ..data import normalize
from ..errors import ConfigError, RunLockedError
from ..host import keep_freed_memory
from ..measure import count_params, torch_latency
from ..parallel import map_in_processes, threads_per_worker, worker_device, worker_plan
from ..models import create_model, init_weights
from ..models.nas_space import CHANNELS, LAYER_TYPES, MAX_DOWNSAMPLES, check_spec, mac_count, mutate, random_spec, spec_key
from ..results import Comparison, Group, Stat, chance_loss, compare, comparison_method, describe, group, holm, markdown_table, pareto_front
from ..results import spearman, held_out, load_runs, run_stalled, stalled_evidence, stalled_rule, write_csv, write_text
from ..report_doc import Figure, Report, figure_code, notebook_loader
from ..rundir import RunLock, write_json
from ..zero_cost import PROXIES, score_all
from ..train import run_splits
from .runner import RunSpec, base_overrides, check_extra, check_runs, experiment_dir, group_overrides, hardware_line, hardware_record
from .runner import on_command_line, overrides_phrase, preset_note, provenance_values, run_all, run_config, run_one, start_worker_device
from .runner import distinct, study_console, train_overrides, training_description

PROXY_BATCH = 64  # images the zero-cost proxies see
LATENCY_SECONDS = 0.1  # timed calls behind each candidate's batch-1 latency (the median is kept)
POLL_SECONDS = 0.5  # how often a worker looks again at a trial another worker is still deciding or evaluating
# Where each evaluated architecture came from (the `origin` of a trial): a strategy is credited only with what its
# own proposals found. Evolution and NSGA-II start from a population drawn at random, which is random search.
INITIAL = "initial population"
ORIGINS = {"random": "random draw", "evolution": "mutation", "nsga2": "NSGA-II offspring", "zero_cost": "pre-screened draw"}
OWN_PROPOSALS = {"evolution": "mutations", "nsga2": "crossover and mutation of NSGA-II parents"}  # after the initial population
NSGA2_GENERATION = "NSGAIISampler:generation"  # the system attribute in which Optuna's NSGA-II keeps a trial's generation
# (optuna/samplers/_ga/_base.py, "<sampler class>:generation"); 0: random
DECIDE_SECONDS = 600  # a proposal takes seconds (a zero-cost pool the longest); a trial of another process still
# undecided after this long is taken for abandoned and no longer waited for
ASK_SECONDS = 60  # a worker signs its trial right after asking for it: an unsigned trial counts as being asked this long
NOTE_SECONDS = 5  # a wait for other workers longer than this gets a line that says what it waits for
RATING = "rating"  # the study user attribute that records the settings a search rates its candidates with


def nas_command(cfg: DictConfig) -> int:
    study = validate(cfg)
    exp_dir, console = experiment_dir(), study_console()
    start = time.perf_counter()
    check_overrides(study)
    console.print(
        f"nas study: {len(study.strategies)} strategies x {study.search_seeds} search seed(s) x {study.trials} evaluations in {exp_dir}",
        highlight=False,
        soft_wrap=True,
    )  # where to look, before the search's long silence
    storage = storage_url(study, exp_dir)
    search = Search(study, exp_dir, storage, console)  # composes a run config: a bad override value is refused here
    if compile_asked(study):
        console.print(compile_note(study), highlight=False, markup=False)
    for strategy, seed in search.searches():  # before any worker starts, so that one process redoes each
        search.finish_abandoned(strategy, seed)
    n_workers, note = worker_plan(study.device.type, study.device.index, study.n_workers, on_command_line("n_workers"))
    if note:
        console.print(note, highlight=False, markup=False)
    if n_workers > 1:
        run_workers(study, exp_dir, storage, console, n_workers)
    else:
        for strategy, seed in search.searches():
            search.run(strategy, seed)
    trials = search.all_trials()
    final = retrain(study, trials, exp_dir, console, n_workers) if study.retrain else []
    write_study(study, trials, final, exp_dir, console, time.perf_counter() - start, storage, search.count_skipped())
    return 0


# --- the search ----------------------------------------------------------------------------


# The study options behind the train keys it sets under another name (overrides=[...] may not set them).
OWN_KEYS = {
    "epochs": "proxy_epochs= and final_epochs=",
    "subset": "proxy_subset= and final_subset=",
    "seed": "final_seeds=N",
    "model": "baselines=[...]",
}
RUN_KEYS = ("model", "model.arch", "eval_test")  # set per run, beyond the shared settings of shared_values


def run_overrides(
    study: NASConfig, epochs: int, subset: Optional[int], seed: int, run: Optional[Dict[str, Any]] = None, compiled: bool = True
) -> List[str]:
    """The `deepexp train` overrides of one run: the settings every run shares (shared_values), the run's own
    (`run`: model, model.arch, eval_test), then the user's `overrides=[...]`, without their `compile`
    entries where not `compiled` (a search evaluation: see compile_note)."""
    extra = study.overrides if compiled else [line for line in study.overrides if parse_key(line) != "compile"]
    return train_overrides(study, {**shared_values(study, epochs, subset, seed), **(run or {})}, OWN_KEYS, extra=extra)


def compile_asked(study: NASConfig) -> bool:
    """Whether `overrides=[...]` turns torch.compile on: the last `compile=` entry decides, as in Hydra, read
    as the trainer's bool field reads it (`true`, `yes`, `1`, ...). Call it after a run config with these
    overrides has been validated: a value that is no bool raises OmegaConf's ValidationError."""
    values = [parse_value(line) for line in study.overrides if parse_key(line) == "compile"]
    return bool(values) and OmegaConf.merge(OmegaConf.structured(_Flag), {"value": values[-1]}).value


@dataclass
class _Flag:
    value: bool = False  # a bool field, to read a value as OmegaConf reads TrainConfig.compile


def compile_note(study: NASConfig) -> str:
    """The line that says where `compile=true` applies in a NAS study: to the final retraining only.

    Every candidate is a new architecture, so a compiled search would compile a new graph for every
    evaluation (tens of seconds each, before the first step), which can exceed the whole proxy training
    it serves; the final runs train `final_epochs` on the same few architectures, where compiling can pay."""
    return (
        f"compile=true applies to the final retraining only: the search's candidates train eagerly, because each "
        f"is a new graph to compile, which can take longer than its {study.proxy_epochs}-epoch proxy training"
    )


def shared_values(study: NASConfig, epochs: int, subset: Optional[int], seed: int) -> Dict[str, Any]:
    """{train key: value} that every search and final run sets (runner.base_overrides), with the budget
    of its kind of run (`epochs`, `subset`: the proxy's or the final one) and its `seed`."""
    return base_overrides(study, {"epochs": epochs, "subset": subset, "weight_decay": study.weight_decay, "sched": "cosine", "seed": seed})


def check_overrides(study: NASConfig) -> None:
    """Refuse an `overrides=[...]` entry that any search or final run sets, before the search touches its storage."""
    check_extra(study, [*shared_values(study, 1, 1, 0), *RUN_KEYS], study.overrides, "overrides", OWN_KEYS)


def storage_url(study: NASConfig, exp_dir: Optional[Path]) -> Optional[str]:
    """The search's Optuna storage: `storage=URL`, else SQLite in the experiment folder (None without either)."""
    return study.storage or (f"sqlite:///{Path(exp_dir) / 'search.db'}" if exp_dir is not None else None)


def storage_file(url: str) -> Optional[Path]:
    """The file of a SQLite storage URL (SQLAlchemy's reading of it); None for an in-memory or server database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") else None


# What a search's ratings depend on, besides the dataset, the activation and the trainer overrides (rating_settings).
RATED_BY = ("proxy_epochs", "proxy_subset", "batch_size", "lr", "weight_decay", "max_macs", "latency_threads")
RATED_BY_STRATEGY = {
    "evolution": ("population", "sample_size"),
    "nsga2": ("population", "second_objective"),
    "zero_cost": ("zero_cost_pool", "zero_cost_proxy"),
}


def rating_settings(study: NASConfig, strategy: str) -> Dict[str, Any]:
    """{study key: value} of every setting that decides how a search of `strategy` rates its candidates or which
    candidates it proposes: the proxy training (proxy_epochs, proxy_subset, batch_size, lr, weight_decay, every
    dataset and act field, the `overrides` a candidate trains with: all but `compile`, see compile_note), the space
    (max_macs), the latency measurement (latency_threads) and the strategy's own settings (RATED_BY_STRATEGY).
    Not in it, free to change on a resumed search: trials, search_seeds, max_minutes, strategies, the final
    retraining (retrain, top_k, final_*, baselines), the device and n_workers. Values as JSON gives them back."""
    values: Dict[str, Any] = {key: getattr(study, key) for key in (*RATED_BY, *RATED_BY_STRATEGY.get(strategy, ()))}
    values.update(group_overrides(study, {"dataset": "name", "act": "name"}))
    values["overrides"] = [line for line in study.overrides if parse_key(line) != "compile"]
    return json.loads(json.dumps(values))


def rating_changes(recorded: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    """The keys whose values differ between a search's recorded rating settings and this command's; a key only
    one side has (a setting added or dropped by another deepexp version) cannot be compared and is left out."""
    return [key for key in now if key in recorded and recorded[key] != now[key]]


def check_rating(study: NASConfig, url: Optional[str], storage=None, files_only: bool = False) -> None:
    """Refuse to go on with a search of the storage at `url` that was rated with other settings (rating_settings,
    recorded when the search was created): its report would put candidates rated one way next to candidates rated
    another, under one description. Reads the storage only where it exists (a SQLite file is not created); pass
    the open `storage` where the caller holds one. `files_only`: a database server is left alone (the CLI's
    check before Hydra starts reads only a SQLite file; the command checks a server itself).

    Raises:
        ConfigError: the first search with a changed setting, naming every changed setting with both values.
    """
    import optuna

    if storage is None:
        file = storage_file(url) if url is not None else None
        if url is None or (file is None and files_only) or (file is not None and not file.is_file()):
            return
        storage = optuna.storages.RDBStorage(url)
    names = set(optuna.get_all_study_names(storage))
    for strategy in study.strategies:
        now = rating_settings(study, strategy)
        for seed in range(study.search_seeds):
            name = f"{strategy}-s{seed}"
            recorded = storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(RATING) if name in names else None
            changed = rating_changes(recorded or {}, now)
            if changed:
                was, asked = (" ".join(hydra_override(key, values[key]) for key in changed) for values in (recorded, now))
                raise ConfigError(
                    f"search {name} rated its candidates with {was}; this command asks for {asked}, and one search "
                    f"rates all its candidates alike: resume it with its own settings, or start a new search in "
                    f"another hydra.run.dir{' (and storage)' if study.storage else ''}"
                )


def check_command(study: NASConfig, exp_dir: Optional[Path]) -> None:
    """What `deepexp nas` refuses, checked before anything is written: its `overrides=[...]`
    (check_overrides), a search evaluation's and each baseline's run config composed and validated, and
    a search resumed with other rating settings (check_rating; a database server is checked by the command
    itself), every run already in `exp_dir` against the config this study would now give it (runner.check_runs):
    the study's storage holds the scores of those runs, so a changed lr or epochs count would mix two
    settings in one search."""
    check_overrides(study)
    run_config(search_overrides(study, "spec.json"))
    for name in study.baselines:
        run_config(run_overrides(study, study.final_epochs, study.final_subset, 0, {"model": name}))
    check_rating(study, storage_url(study, exp_dir), files_only=True)
    if exp_dir is not None:
        check_runs(exp_dir, existing_runs(study, exp_dir))


def search_overrides(study: NASConfig, arch: str) -> List[str]:
    """The `deepexp train` overrides of a search evaluation of the spec file `arch`, as Search.evaluate writes
    them: the proxy budget, no test set (a candidate is rated on validation; the test set is for the final
    retraining), uncompiled."""
    return run_overrides(study, study.proxy_epochs, study.proxy_subset, 0, {"model": "nas", "model.arch": arch, "eval_test": False}, compiled=False)


def existing_runs(study: NASConfig, exp_dir: Path) -> List[Tuple[str, List[str]]]:
    """(name under runs/, the overrides this study would give it now) of every run already in `exp_dir`: a
    final run (`final/...`) of its recorded model, architecture file and seed, else a search evaluation of its
    recorded architecture file."""
    from ..rundir import read_metrics

    runs = []
    for path in sorted((exp_dir / "runs").glob("**/metrics.json")):
        config = (read_metrics(path.parent) or {}).get("config") or {}
        if not config.get("model"):
            continue
        name = path.parent.relative_to(exp_dir / "runs").as_posix()
        if name.startswith("final/"):
            run = {"model": config["model"], **({"model.arch": config.get("model.arch")} if config["model"] == "nas" else {})}
            runs.append((name, run_overrides(study, study.final_epochs, study.final_subset, config.get("seed", 0), run)))
        else:
            runs.append((name, search_overrides(study, str(config.get("model.arch")))))
    return runs


def run_workers(study: NASConfig, exp_dir: Path, storage: str, console, n_workers: int) -> None:
    """`n_workers` processes running every search on one storage, each with its share of the CPU
    threads (evolution becomes asynchronous, as in Real et al. 2019) and, on CUDA, worker i on GPU
    i mod count (parallel.worker_device), which its trainer runs get as `device.index=N`."""
    threads = threads_per_worker(study.device.threads, n_workers)
    jobs = []
    for i in range(n_workers):
        worker_study = copy.deepcopy(study)
        worker_study.device.threads = threads  # the trainer runs the workers ask for use this many threads too
        worker_study.device.index = worker_device(study.device.type, study.device.index, i)
        jobs.append((worker_study, exp_dir, storage, i))
    gpus = sorted({job[0].device.index for job in jobs} - {None})
    console.print(f"{n_workers} search workers, {threads} thread(s) each" + (f", on GPU(s) {gpus}" if gpus else ""), highlight=False)
    map_in_processes(search_worker, jobs, n_workers, threads)


def search_worker(study: NASConfig, exp_dir: Path, storage: str, worker: int) -> None:
    """The body of one worker process: every search, until each has its budget of trials."""
    deterministic = run_config(run_overrides(study, 1, study.proxy_subset, 0)).deterministic
    start_worker_device(study.device.index, deterministic)
    search = Search(study, exp_dir, storage, study_console(), worker)
    for strategy, seed in search.searches():
        search.run(strategy, seed)


def initial_population(study: NASConfig, strategy: str) -> int:
    """How many of a search's first proposals `strategy` draws at random before its own method starts: aging
    evolution's population, NSGA-II's first generation (at least 4: Optuna's NSGA-II needs parents to cross);
    0 for random search and zero-cost pre-screening, every proposal of which is their own."""
    return {"evolution": study.population, "nsga2": max(4, study.population)}.get(strategy, 0)


class Search:
    """Optuna ask/tell around deepexp's trainer; one object serves every strategy and seed."""

    def __init__(self, study: NASConfig, exp_dir: Path, storage: str, console, worker: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        keep_freed_memory()  # as the trainer does: scoring candidates one after another frees and refills as much
        self.study, self.exp_dir, self.console, self.worker, self.url = study, exp_dir, console, worker, storage
        self.clock = time.time  # seconds since the epoch, for max_minutes across sessions and workers
        # What this process signs its trials with: the start time tells it from a later process given the same pid.
        self.signature = {"host": socket.gethostname(), "pid": os.getpid(), "started": process_start(os.getpid())}
        self.given_up: set = set()  # (search, trial number) of the trials this process stopped waiting for
        check_rating(study, storage)  # a search rated with other settings: refused before anything is read or written
        data = run_splits(run_config(run_overrides(study, 1, study.proxy_subset, 0)))
        self.input_shape, self.num_classes = data.input_shape, data.num_classes  # (C, H, W), K
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data.y_train), generator=g)[:PROXY_BATCH]
        self.proxy_x = normalize(data.x_train[pick], data.mean, data.std)  # training images only
        self.proxy_y = data.y_train[pick]
        # SQLite serialises writers; several workers wait for the lock instead of failing at once.
        self.storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 300}} if storage.startswith("sqlite") else {})
        for strategy, seed in self.searches():
            self.record_rating(strategy, seed)
        check_rating(study, storage, self.storage)  # again: another invocation may have created a search since
        (exp_dir / "specs").mkdir(parents=True, exist_ok=True)

    # -- bookkeeping --

    def optuna_study(self, strategy: str, seed: int):
        import optuna

        # The sampler only matters for NSGA-II, whose proposals run() draws through a sampler seeded per trial
        # (nsga2_sampler); the other strategies propose specs themselves.
        directions = ["maximize", "minimize"] if strategy == "nsga2" else ["maximize"]
        return optuna.create_study(
            storage=self.storage,
            study_name=f"{strategy}-s{seed}",
            sampler=optuna.samplers.RandomSampler(seed=seed),
            directions=directions,
            load_if_exists=True,
        )

    def nsga2_sampler(self, name: str, n_trials: int):
        """NSGA-II (Deb et al. 2002) seeded by the search, the number of trials it already holds and the worker.

        A sampler seeded once per process would replay its first proposals whenever a process starts on a
        search that already has trials (a resumed search, a later invocation on a shared storage). Seeded by
        the trial count, the proposal of the n-th trial is the same whether or not the search was interrupted
        before it; the worker index keeps parallel workers apart. The generations and parents NSGA-II works
        from live in the storage, so a fresh sampler per trial loses nothing."""
        import optuna

        seed = random.Random(f"{name}/{n_trials}/{self.worker}").getrandbits(32)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=initial_population(self.study, "nsga2"))

    def record_rating(self, strategy: str, seed: int) -> None:
        """Record in a new search's study the settings it rates its candidates with (rating_settings), which
        check_rating compares on every later invocation. A search an earlier deepexp created without them gets
        this command's, with a line saying that its earlier trials could not be checked."""
        opt = self.optuna_study(strategy, seed)
        if RATING in opt.user_attrs:
            return
        earlier = len(opt.get_trials(deepcopy=False))
        if earlier:
            self.console.print(
                f"{strategy}-s{seed}: no rating settings recorded with its {earlier} trial(s) (an earlier deepexp "
                f"created it); this command's are recorded now, unchecked against them",
                highlight=False,
                markup=False,
            )
        opt.set_user_attr(RATING, rating_settings(self.study, strategy))

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
                rows.append(
                    {
                        "strategy": strategy,
                        "search_seed": seed,
                        "trial": t.number,
                        "val_acc": t.values[0],
                        **{k: v for k, v in t.user_attrs.items() if k not in ("spec", "worker", "clock")},
                        "spec": t.user_attrs["spec"],
                        "worker_pid": t.user_attrs.get("worker", {}).get("pid"),
                    }
                )
        return rows

    def count_skipped(self) -> int:
        """Candidates skipped untrained for exceeding max_macs, over every search (all sessions)."""
        import optuna

        trials = [t for strategy, seed in self.searches() for t in self.optuna_study(strategy, seed).get_trials(deepcopy=False)]
        return sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) + sum(t.user_attrs.get("rejected", 0) for t in trials)

    def spent(self, trials) -> bool:
        """Whether a search with these trials has its budget: `trials` evaluations (finished, under way, or left
        by a stopped worker for the next invocation to resume), or max_minutes of time with a trial under way,
        summed over every session and worker (_busy_seconds). Proposals still being decided are not counted:
        run() waits for their decision instead, so that a search never ends short on a proposal that never
        becomes an evaluation."""
        if sum("evaluation" in t.user_attrs for t in trials) >= self.study.trials:
            return True
        return self.study.max_minutes is not None and _busy_seconds(trials) >= 60 * self.study.max_minutes

    def tell(self, opt, trial, began: float, values: Optional[List[float]] = None, state=None) -> None:
        """Finish a trial, recording the span of time it took (seconds since the epoch) for max_minutes."""
        trial.set_user_attr("clock", [began, self.clock()])
        opt.tell(trial, values, state=state)

    def settle(self, opt, name: str, number: Optional[int] = None) -> List[Any]:
        """The search's trials numbered below `number` (every trial with None), once no other worker is still
        deciding one of them (_deciding): each is an evaluation, a reused score, finished, or given up on.
        Deciding in trial-number order gives each evaluation a number of its own (1 + the evaluations before
        it) and lets no two workers evaluate the same spec; workers decide within moments of asking, so the
        wait is short. A wait of more than NOTE_SECONDS says what it waits for. A trial still undecided
        DECIDE_SECONDS after it was asked (ASK_SECONDS if unsigned) is given up on, with a line: it is not an
        evaluation (were its worker to decide it after all, run() drops it), and the next invocation on its
        machine fails it (finish_abandoned)."""
        start, noted = time.monotonic(), False
        while True:
            earlier = [t for t in opt.get_trials(deepcopy=False) if number is None or t.number < number]
            for t in earlier:
                if not _decided(t) and _worker(t) != GONE and not _deciding(t) and (name, t.number) not in self.given_up:
                    self.given_up.add((name, t.number))
                    self.console.print(
                        f"{name}: trial {t.number}, asked {_age(t):.0f} s ago by {_who(t)}, is still undecided: given up on, it is not an evaluation",
                        highlight=False,
                        markup=False,
                    )
            waiting = [t for t in earlier if _deciding(t)]
            if not waiting:
                return earlier
            if not noted and time.monotonic() - start >= NOTE_SECONDS:
                noted, t = True, waiting[0]
                self.console.print(
                    f"{name}: waiting for {_who(t)} to decide trial {t.number} (an evaluation or not), asked "
                    f"{_age(t):.0f} s ago; given up on {_limit(t)} s after it was asked",
                    highlight=False,
                    markup=False,
                )
            time.sleep(POLL_SECONDS)

    def values_of(self, opt, number: int, name: str) -> Optional[List[float]]:
        """The values of trial `number` once it is complete, waiting (and saying so) while a live worker of this
        machine evaluates it; None if it failed, its worker stopped, or its worker cannot be checked (another
        machine, _worker: UNKNOWN), which might never finish it."""
        import optuna

        noted = False
        while True:
            t = next(t for t in opt.get_trials(deepcopy=False) if t.number == number)
            if t.state == optuna.trial.TrialState.COMPLETE:
                return t.values
            if t.state != optuna.trial.TrialState.RUNNING or _worker(t) != LIVE:
                return None
            if not noted:
                noted = True
                self.console.print(f"{name}: waiting for the score of trial {number}, which {_who(t)} is evaluating", highlight=False, markup=False)
            time.sleep(POLL_SECONDS)

    def reuse(self, opt, trial, twin: int, name: str, began: float) -> None:
        """Tell `trial`, whose spec trial `twin` evaluated, `twin`'s values: the strategy learns the score, no
        budget is spent. If `twin`'s values cannot be had here (values_of), `trial` fails instead: still no
        evaluation, and a later proposal of the spec reuses the score."""
        import optuna

        trial.set_user_attr("reused_from", twin)  # first: decided, so later trials need not wait for this one
        values = self.values_of(opt, twin, name)
        if values is None:
            self.tell(opt, trial, began, state=optuna.trial.TrialState.FAIL)
            return
        self.tell(opt, trial, began, values)
        self.console.print(
            f"{name}/t{trial.number:03d}: the architecture of t{twin:03d}, already evaluated: its score reused", highlight=False, markup=False
        )

    # -- proposing --

    def suggest_spec(self, trial) -> Dict[str, Any]:
        """A spec drawn through Optuna's distributions, which NSGA-II's crossover and mutation work on."""
        depth = trial.suggest_int("depth", 5, 15)
        layers = [
            {
                "type": trial.suggest_categorical(f"type_{i}", LAYER_TYPES),
                "channels": trial.suggest_categorical(f"channels_{i}", CHANNELS),
                "stride": trial.suggest_categorical(f"stride_{i}", (1, 2)),
            }
            for i in range(depth)
        ]
        downs = [i for i, layer in enumerate(layers) if layer["stride"] == 2]
        for i in downs[MAX_DOWNSAMPLES:]:  # the space allows three downsamplings; later ones become stride 1
            layers[i]["stride"] = 1
        return {"layers": layers}

    def evolve_spec(self, trials, rng: random.Random) -> Tuple[Dict[str, Any], str]:
        """Aging evolution: tournament among the most recent `population` evaluations, mutate the winner
        (a few tries for a child within max_macs); until the search holds `population` scores, a random
        spec for the initial population. Returns the spec and its origin (INITIAL or a mutation)."""
        if len(trials) < self.study.population:
            return self.affordable(rng), INITIAL
        population = sorted(trials, key=lambda t: t.number)[-self.study.population :]
        parent = max(rng.sample(population, self.study.sample_size), key=lambda t: t.values[0])
        children = [mutate(parent.user_attrs["spec"], rng) for _ in range(10)]
        return next((c for c in children if self.within_budget(c)), children[-1]), ORIGINS["evolution"]

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
            out["latency_ms"] = torch_latency(model, self.input_shape, 1, self.study.latency_threads, LATENCY_SECONDS).median_ms
        return out

    def evaluate(self, spec, name: str, counter: str) -> Tuple[float, dict]:
        """Train the candidate `spec` with the proxy budget in `runs/<name>` and rate it: (its best validation
        accuracy, 0.0 for a run that did not complete; its metrics dict).

        An ordinary trainer run (runner.run_one on a RunSpec), but not one of a list planned beforehand for
        runner.run_all: a search proposes each candidate from the ratings of those before it (Optuna's
        ask/tell), so its runs exist only one at a time, and a search spreads over processes as search
        workers sharing one storage (run_workers), each already holding its share of the threads and its GPU."""
        path = self.exp_dir / "specs" / f"{spec_key(spec)}.json"
        if not path.exists():
            write_json(path, spec)
        # No test set: a candidate is rated on validation, and the test set is for the final retraining only.
        overrides = search_overrides(self.study, str(path))
        m = run_one(RunSpec(name, {"spec": spec_key(spec)}, overrides), run_config(overrides), self.exp_dir, self.console, "nas", counter)
        return (m["best_val_acc"] or 0.0) if m["status"] == "completed" else 0.0, m

    # -- one search --

    def run(self, strategy: str, seed: int) -> None:
        """Ask, propose, decide and evaluate until the search has its budget (spent()).

        Each trial is decided before anything is trained: a spec over max_macs is skipped (PRUNED), a spec the
        search already evaluated reuses that score (reuse()), and any other spec becomes the next evaluation,
        numbered 1..trials across every worker and session (settle()). Random draws are seeded by the trial's
        number, so neither a resumed search nor a second worker repeats the proposals of another process.
        Where other workers' undecided proposals could fill the rest of the budget, it waits for their decision
        rather than asking for a trial that may be one too many."""
        import optuna

        opt, name = self.optuna_study(strategy, seed), f"{strategy}-s{seed}"
        while True:
            trials = opt.get_trials(deepcopy=False)
            if self.spent(trials):
                break
            if sum("evaluation" in t.user_attrs for t in trials) + sum(_deciding(t) for t in trials) >= self.study.trials:
                self.settle(opt, name)
                continue
            began = self.clock()
            if strategy == "nsga2":
                opt.sampler = self.nsga2_sampler(name, len(trials))
            trial = opt.ask()
            try:
                trial.set_user_attr("worker", self.signature)  # first, so that others can tell whose it is
            except optuna.exceptions.UpdateFinishedTrialError:  # in the moment before, another command's start took the
                continue  # unsigned trial for abandoned (finish_abandoned) and failed it
            rng = random.Random(f"{name}/{trial.number}")  # per trial: a resumed search or another worker draws anew
            origin = ORIGINS[strategy]
            if strategy == "random":  # rejection sampling: draws over max_macs are counted, not stored as trials
                spec, rejected = self.affordable_counted(rng)
                trial.set_user_attr("rejected", rejected)
            elif strategy == "nsga2":
                spec = self.suggest_spec(trial)
                asked = next(t for t in opt.get_trials(deepcopy=False) if t.number == trial.number)  # its generation, set by ask()
                origin = {0: INITIAL, None: None}.get(asked.system_attrs.get(NSGA2_GENERATION), origin)
            elif strategy == "evolution":  # the population: every told score, reused ones included
                spec, origin = self.evolve_spec([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE], rng)
            else:
                spec = self.prescreen_spec(rng)
            spec = check_spec(spec)
            trial.set_user_attr("origin", origin)
            trial.set_user_attr("spec", spec)
            if not self.within_budget(spec):
                trial.set_user_attr("macs", self.macs(spec))
                self.tell(opt, trial, began, state=optuna.trial.TrialState.PRUNED)  # over the cost limit: not an evaluation
                continue
            earlier = self.settle(opt, name, trial.number)
            twin = next((t for t in earlier if "evaluation" in t.user_attrs and spec_key(t.user_attrs["spec"]) == spec_key(spec)), None)
            if twin is not None:
                self.reuse(opt, trial, twin.number, name, began)
                continue
            if any("evaluation" in t.user_attrs for t in opt.get_trials(deepcopy=False) if t.number > trial.number):
                # A later trial is numbered already: another worker gave up waiting for this one (settle). Its number
                # would be taken twice; the trial is dropped and the budget goes on with a new one.
                self.console.print(
                    f"{name}: trial {trial.number} decided after another worker had given up on it: dropped", highlight=False, markup=False
                )
                self.tell(opt, trial, began, state=optuna.trial.TrialState.FAIL)
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
        attrs = {**self.measure(spec, latency=True), "spec_key": spec_key(spec), "depth": len(spec["layers"])}
        val_acc, m = self.evaluate(spec, f"{name}/t{number:03d}", f"{name} {ordinal}/{self.study.trials}")
        attrs.update(
            {
                "status": m["status"],
                "train_seconds": m.get("seconds"),
                "device": m.get("provenance", {}).get("device"),
                "hardware": hardware_record(m),
                "wall_seconds": time.perf_counter() - start,
                "run_dir": f"runs/{name}/t{number:03d}",
            }
        )
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        cost = {"params": attrs["params"], "macs": attrs["macs"], "latency": attrs["latency_ms"]}[self.study.second_objective]
        self.tell(opt, trial, began, [val_acc, cost] if strategy == "nsga2" else [val_acc])

    def finish_abandoned(self, strategy: str, seed: int) -> None:
        """Trials left RUNNING by a stopped process of this machine are finished as that process would have:
        an evaluation is trained again (resuming its run directory) and told, a reused score is told, a spec
        over max_macs is skipped, and a trial killed before its decision fails (nothing of it was trained).

        A trial's process is stopped when no process with its pid and start time runs here (_worker: GONE; a
        pid taken over by a later process included). A trial whose worker cannot be checked (UNKNOWN: unsigned,
        killed between asking and signing, or signed by an earlier deepexp without a start time) is taken for
        abandoned too where no other process here can be working on the search (sole_user). Trials of live
        workers and of other machines are left alone."""
        import optuna

        opt, name = self.optuna_study(strategy, seed), f"{strategy}-s{seed}"
        with contextlib.ExitStack() as held:
            sole = self.sole_user(held)
            for t in opt.get_trials(states=[optuna.trial.TrialState.RUNNING]):
                state = _worker(t)
                if not (state == GONE or (state == UNKNOWN and sole and _on_this_machine(t))):
                    continue
                began = self.clock()
                trial = optuna.trial.Trial(opt, t._trial_id)  # the same trial, reopened in this process
                trial.set_user_attr("worker", self.signature)
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

    def sole_user(self, held) -> bool:
        """Whether no other process on this machine can be working on the storage while `held` (an ExitStack) is
        open: the storage is the SQLite file in this study's folder, and this process holds that folder's RunLock
        (the CLI holds it for the whole command; taken into `held` otherwise). Another command could still use
        the file with storage=..., but its workers sign their trials with their start time, which _worker checks."""
        file = storage_file(self.url)
        if file is None or file.resolve().parent != Path(self.exp_dir).resolve():
            return False
        try:
            held.enter_context(RunLock(self.exp_dir))
        except RunLockedError:
            return False
        return True


LIVE, GONE, UNKNOWN = "live", "gone", "unknown"  # what this process can tell of a trial's worker (_worker)


def process_start(pid: int) -> Optional[str]:
    """When process `pid` started, as a value that a later process given the same pid does not share: the boot
    (/proc/sys/kernel/random/boot_id) and the start time in clock ticks after it (/proc/<pid>/stat field 22,
    `starttime`, proc(5)); where there is no /proc, `ps -o lstart= -p PID` (to the second, POSIX ps). None where
    the process does not exist or neither source answers."""
    if Path("/proc/self/stat").is_file():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return None
        return f"{boot}/{stat.rsplit(')', 1)[1].split()[19]}"  # after the command name in parentheses: field 3 onwards
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _worker(trial) -> str:
    """What this process can tell of the worker that signed `trial` (its `worker` attribute: host, pid, start):
    LIVE, a process with that pid and that start time runs on this machine; GONE, none does (the pid is free,
    or taken by a later process), or the worker is this process, whose own undecided trials are never
    anyone's but the one it is deciding; UNKNOWN, it cannot be checked: a worker of another machine, an
    unsigned trial (a worker signs right after asking, and one killed in between leaves none), or a signature
    without a start time (an earlier deepexp, or no /proc and no ps) whose pid runs."""
    worker = trial.user_attrs.get("worker")
    if not worker or not _on_this_machine(trial) or not worker.get("pid"):
        return UNKNOWN
    pid = worker["pid"]
    if pid == os.getpid():
        return GONE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return GONE
    except PermissionError:
        pass  # another user's process: it exists
    recorded, running = worker.get("started"), process_start(pid)
    if recorded and running:
        return LIVE if recorded == running else GONE
    return UNKNOWN


def _decided(trial) -> bool:
    """Whether a trial's fate is known: finished, or an evaluation, or waiting to reuse another's score."""
    import optuna

    return trial.state != optuna.trial.TrialState.RUNNING or "evaluation" in trial.user_attrs or "reused_from" in trial.user_attrs


def _deciding(trial) -> bool:
    """Whether another worker may still be deciding this trial (later trials wait for it): undecided, its
    worker not GONE, and asked less than _limit(trial) seconds ago."""
    return not _decided(trial) and _worker(trial) != GONE and _age(trial) < _limit(trial)


def _age(trial) -> float:
    """Seconds since the trial was asked for."""
    return (datetime.datetime.now() - trial.datetime_start).total_seconds()


def _limit(trial) -> int:
    """How long after asking a trial's worker may still be deciding it: ASK_SECONDS for an unsigned trial (its
    worker, had it lived, would have signed it at once), DECIDE_SECONDS for a signed one."""
    return DECIDE_SECONDS if trial.user_attrs.get("worker") else ASK_SECONDS


def _who(trial) -> str:
    """The worker of a trial, in words."""
    worker = trial.user_attrs.get("worker")
    if not worker:
        return "a worker that did not sign it"
    if not _on_this_machine(trial):
        return f"the worker on {worker.get('host')} (pid {worker.get('pid')})"
    return f"the worker with pid {worker.get('pid')}"


def _on_this_machine(trial) -> bool:
    """Whether a trial's worker runs here (an unsigned trial is taken to: it is judged by _limit and sole_user)."""
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
    chosen = ranked[: study.top_k - n_front]
    front = [ranked[i] for i in pareto_front([t["params"] for t in ranked], [t["val_acc"] for t in ranked])]
    chosen += [t for t in sorted(front, key=lambda t: -t["val_acc"]) if t not in chosen][:n_front]
    chosen += [t for t in ranked if t not in chosen][: study.top_k - len(chosen)]
    return chosen


def final_plan(study: NASConfig, trials: List[Dict[str, Any]], exp_dir: Path) -> List[RunSpec]:
    """The full-budget runs: each of the top architectures (top_specs, its spec written to
    `<exp_dir>/top5/<rank>-<key>.json`, which its runs read) and each hand-designed baseline, `final_seeds`
    times, as ordinary trainer runs under `runs/final/`."""
    specs = []
    for rank, t in enumerate(top_specs(study, trials), 1):
        path = exp_dir / "top5" / f"{rank}-{t['spec_key']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, t["spec"])
        for seed in range(study.final_seeds):
            overrides = run_overrides(study, study.final_epochs, study.final_subset, seed, {"model": "nas", "model.arch": str(path)})
            specs.append(
                RunSpec(
                    f"final/top{rank}-s{seed}",
                    {
                        "model": f"top{rank}",
                        "kind": "searched",
                        "spec": t["spec_key"],
                        "found_by": found_by(trials, t["spec_key"]),
                        "seed": seed,
                        "file": str(path.relative_to(exp_dir)),
                    },
                    overrides,
                )
            )
    for name in study.baselines:
        for seed in range(study.final_seeds):
            overrides = run_overrides(study, study.final_epochs, study.final_subset, seed, {"model": name})
            specs.append(RunSpec(f"final/{name}-s{seed}", {"model": name, "kind": "hand-designed", "seed": seed}, overrides))
    return specs


def retrain(study: NASConfig, trials: List[Dict[str, Any]], exp_dir: Path, console, n_workers: int) -> List[Tuple[RunSpec, dict]]:
    """The full-budget retraining (final_plan) through runner.run_all, as every study runs its runs, `n_workers` at a time."""
    specs = final_plan(study, trials, exp_dir)
    n_searched = sum(spec.labels["kind"] == "searched" for spec in specs) // study.final_seeds
    console.print(
        f"retraining {n_searched} searched and {len(study.baselines)} hand-designed networks x {study.final_seeds} seeds, "
        f"{study.final_epochs} epochs",
        highlight=False,
    )
    return run_all(specs, exp_dir, console, "nas", n_workers)


# --- writing -----------------------------------------------------------------------------------


def found_by(trials: List[Dict[str, Any]], key: str) -> str:
    """Which searches evaluated the architecture `key`, as `evolution-s1 #3 (mutation)`: search, evaluation
    number, origin of the proposal (INITIAL for a random initial-population draw)."""
    return "; ".join(
        f"{t['strategy']}-s{t['search_seed']} #{t.get('evaluation', '?')} ({t.get('origin') or 'origin not recorded'})"
        for t in trials
        if t["spec_key"] == key
    )


LAYER_CODES = {
    "conv": "3x3 conv",
    "dws": "depthwise-separable conv (3x3 depthwise, then 1x1 pointwise)",
    "residual": "residual block (two 3x3 convs, an identity or 1x1-projection shortcut, the activation after the sum)",
}


def code_definition(act: str) -> str:
    """What an architecture code (nas_space.spec_key) such as `c32-d64s-r128` says, for the report."""
    letters = "; ".join(f"{t[0]} = {LAYER_CODES[t]}" for t in LAYER_TYPES)
    example = {
        "layers": [
            {"type": "conv", "channels": 32, "stride": 1},
            {"type": "dws", "channels": 64, "stride": 2},
            {"type": "residual", "channels": 128, "stride": 1},
        ]
    }
    return (
        f"Architecture codes such as `{spec_key(example)}` list the layers from input to output, one token each: the "
        f"layer type ({letters}), its output channels, and `s` where it has stride 2 (halves height and width). Every "
        f"conv has BatchNorm and {act} after it; a 3x3 stem conv comes first, global average pooling and a linear "
        f"classifier last."
    )


def best_so_far(trials: List[Dict[str, Any]], strategy: str, seeds: int, n: int) -> List[List[float]]:
    curves = []
    for seed in range(seeds):
        accs = [t["val_acc"] for t in sorted(trials, key=lambda t: t["trial"]) if t["strategy"] == strategy and t["search_seed"] == seed]
        if len(accs) >= n:
            curves.append([max(accs[: i + 1]) for i in range(n)])
    return curves


def search_runs(exp_dir: Path, trials: List[Dict[str, Any]]) -> List[dict]:
    """The metrics dicts of the search evaluations still in `exp_dir` (each trial's `run_dir`; a reused score's run
    once), for what the Setup says about how candidates trained; a run folder that is gone or unreadable is left out.
    """
    runs, _ = load_runs(exp_dir / run_dir for run_dir in distinct(t.get("run_dir") or None for t in trials))
    return runs


def write_study(
    study: NASConfig,
    trials: List[Dict[str, Any]],
    final: List[Tuple[RunSpec, dict]],
    exp_dir: Path,
    console,
    wall_seconds: float,
    storage: str,
    skipped: int,
) -> Path:
    rows = [{k: v for k, v in t.items() if k not in ("spec", "hardware")} | {"spec": json.dumps(t["spec"])} for t in trials]
    write_csv(exp_dir / "evaluated.csv", rows)
    final_rows = [
        {
            **spec.labels,
            "status": m["status"],
            "test_acc": (m.get("test") or {}).get("acc"),
            "best_val_acc": m.get("best_val_acc"),
            "params": m.get("params"),
            "seconds": m.get("seconds"),
            "final_train_loss": m["history"][-1]["train_loss"] if m.get("history") else None,
            **held_out(m),
        }
        for spec, m in final
    ]
    write_csv(exp_dir / "summary.csv", final_rows)
    groups = group(final_rows, ["model", "kind"])
    header = [
        "network",
        "kind",
        "architecture",
        "found by (search #evaluation, origin)",
        "params",
        "runs",
        "test acc (mean ± std)",
        "best val acc (mean ± std)",
    ]
    table_rows = [
        [
            g.key["model"],
            g.key["kind"],
            g.rows[0].get("spec", g.key["model"]),
            g.rows[0].get("found_by") or "-",
            f"{g.rows[0]['params']:,}",
            len(g.rows),
            g.stat("test_acc").fmt(4),
            g.stat("best_val_acc").fmt(4),
        ]
        for g in groups
    ]
    table = (
        markdown_table(header, table_rows)
        if final_rows
        else "No full-budget retraining in this invocation (retrain=false): the search's candidates are in evaluated.csv."
    )
    first = next((m for _, m in final if m.get("data")), {})
    data = first.get("data", {})
    subtitle = f"{study.dataset.name}, proxy {study.proxy_epochs} epochs on {study.proxy_subset or 'all'} images"
    write_text(exp_dir / "summary.md", f"# NAS: full-budget retraining ({study.final_epochs} epochs, {study.final_seeds} seeds)\n\n{table}\n")

    figures = write_plots(study, trials, final_rows, exp_dir, subtitle)

    hours = sum(t["wall_seconds"] for t in trials) / 3600
    # where the candidates trained and were measured, from what each trial recorded (older trials: the device only)
    searched_on = [t.get("hardware") or {"provenance": {"device": t.get("device")}} for t in trials]
    hardware = [f"search evaluations on {hardware_line(searched_on)}"]
    hardware += [f"final retraining on {hardware_line(m for _, m in final)}"] if final else []
    setup = [
        f"Space: {5}-{15} layers of {', '.join(LAYER_TYPES)}; channels {list(CHANNELS)}; at most {MAX_DOWNSAMPLES} stride-2 layers; "
        f"act={study.act.name} (deepexp/models/nas_space.py). {code_definition(study.act.name)}",
        f"Search: strategies {list(study.strategies)}, {study.search_seeds} search seeds each, {study.trials} evaluations per search "
        f"(the same budget for every strategy)"
        + (f"; aging evolution with population {study.population}, tournament {study.sample_size}" if "evolution" in study.strategies else "")
        + ". "
        + initial_sentence(study),
        f"Evaluation: {study.proxy_epochs} epoch(s) of training on {study.proxy_subset or 'all'} {study.dataset.name} images, "
        f"rated by the best validation accuracy (the test set is never used to select).",
        (
            f"Final: top {study.top_k} architectures and baselines {list(study.baselines)} retrained {study.final_epochs} epochs, "
            f"{study.final_seeds} seeds, on {data['train']} training images; test accuracy mean ± std."
            if final and "train" in data
            else "Final: no retraining (retrain=false, or no candidate finished); the tables below rank candidates by proxy accuracy only."
        ),
        f"Training (search evaluations and final retraining): "
        f"{training_description([*search_runs(exp_dir, trials), *(m for _, m in final)])}{overrides_phrase(study.overrides)}.",
        f"Hardware: {'; '.join(hardware)}; torch {provenance_values([*searched_on, *(m for _, m in final)], 'torch')}."
        + (f" {compile_note(study)}." if compile_asked(study) else ""),
        f"Measured: parameters and MACs per image by formula (deepexp/models/nas_space.py, checked against the built "
        f"networks); latency at batch 1 in fp32, eager PyTorch in inference mode, on the CPU of the machine that evaluated "
        f"the candidate ({provenance_values(searched_on, 'host')}) with latency_threads={study.latency_threads}, the median of "
        f"{LATENCY_SECONDS} s of calls; zero-cost proxies on {PROXY_BATCH} training images, on the CPU.",
        f"Storage: `{storage}` (Optuna; every trial with its spec and measurements). "
        f"Search cost: {len(trials)} evaluations taking {hours:.2f} h of wall-clock time (measurement and proxy training, "
        f"summed over evaluations); {skipped} sampled candidates over max_macs={study.max_macs} were skipped untrained. "
        f"This invocation: {wall_seconds:.0f} s (searches and runs on disk are reused).",
        comparison_method(),
    ]
    report = Report(
        "Neural architecture search: conv / depthwise-separable / residual chains",
        setup,
        table,
        findings(study, trials, groups, chance_loss(m for _, m in final)),
        figures,
        limitations=[
            *preset_note(study.preset),
            f"Proxy training of {study.proxy_epochs} epoch(s) ranks candidates at a tiny budget; the ranking may change with full training.",
            f"{study.search_seeds} search seeds and {study.trials} evaluations per search: the comparison of strategies has little power.",
        ],
        references=[
            "Real et al. 2019 (aging evolution); Deb et al. 2002 (NSGA-II); Tanaka et al. 2020 (synflow); Mellor et al. 2021 (NASWOT); "
            "Abdelfattah et al. 2021 (zero-cost proxies; on NAS-Bench-201 CIFAR-10 synflow reaches Spearman 0.74, params 0.75)."
        ],
        load=notebook_loader(
            "deepexp.experiments.nas",
            study=to_plain(study),
            subtitle=subtitle,
            extra='trials = report_doc.records(report_doc.read_table("evaluated.csv"))',
        ),
    )
    return report.write(exp_dir, console, f"NAS: {subtitle}", header, table_rows)


PARETO_COSTS = {"params": "parameters", "latency_ms": "CPU latency at batch 1 (ms)"}  # cost column: its axis label


def pareto_figure(trials: List[Dict[str, Any]], rows: List[Dict[str, Any]], cost: str, subtitle: str):
    """Every evaluated candidate's proxy validation accuracy against `cost` ("params" or "latency_ms", the
    columns of evaluated.csv, `trials`), its Pareto front, and, against parameters, the hand-designed
    networks of the retraining (summary.csv's `rows`) as vertical lines. Returns the matplotlib Figure."""
    label = PARETO_COSTS[cost]
    hand: Dict[str, int] = {}  # one line per network, at its first run's count, as the table gives it
    for r in rows:
        if r["kind"] == "hand-designed":
            hand.setdefault(r["model"], r["params"])
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
    ax.set(xlabel=label, ylabel="proxy validation accuracy", title=f"accuracy against {label.split(' (')[0]}, every candidate\n{subtitle}")
    if cost == "params":
        for model, params in hand.items():
            ax.axvline(params, color="C0", alpha=0.5, linestyle=":")
            ax.annotate(model, (params, min(ys)), fontsize=7, rotation=90, color="C0")
    ax.grid(alpha=0.3, which="both")
    plots.legend(ax, fontsize=8)
    return fig


def best_so_far_figure(trials: List[Dict[str, Any]], study: NASConfig, subtitle: str):
    """The best proxy validation accuracy after each evaluation, mean ± std over search seeds, per strategy,
    with where each strategy's random initial population ends. Returns the matplotlib Figure."""
    fig, (ax,) = plots.panels(1, width=7.0, height=4.5)
    for strategy in study.strategies:
        curves = best_so_far(trials, strategy, study.search_seeds, study.trials)
        if curves:
            plots.band(ax, list(range(1, study.trials + 1)), curves, f"{strategy} ({len(curves)} searches)")
            if 0 < initial_population(study, strategy) < study.trials:  # up to here the strategy drew at random
                ax.axvline(
                    initial_population(study, strategy) + 0.5,
                    color=ax.get_lines()[-1].get_color(),
                    linestyle=":",
                    label=f"{strategy}: end of its random initial population",
                )
    ax.set(xlabel="evaluations", ylabel="best proxy validation accuracy so far", title=f"search progress, mean ± std over search seeds\n{subtitle}")
    ax.grid(alpha=0.3)
    plots.legend(ax, fontsize=8)
    return fig


def write_plots(study: NASConfig, trials: List[Dict[str, Any]], rows: List[Dict[str, Any]], exp_dir: Path, subtitle: str) -> List[Figure]:
    """The Pareto figures (where any candidate was evaluated) and the search progress, saved under plots/."""
    figures = [
        (f"pareto_{cost}", lambda cost=cost: pareto_figure(trials, rows, cost, subtitle), f"nas.pareto_figure(trials, rows, {cost!r}, subtitle)")
        for cost in PARETO_COSTS
        if trials
    ]
    figures.append(("best_so_far", lambda: best_so_far_figure(trials, study, subtitle), "nas.best_so_far_figure(trials, study, subtitle)"))
    return [Figure(name, plots.save(draw(), exp_dir / "plots" / f"{name}.png"), figure_code(call)) for name, draw, call in figures]


def initial_sentence(study: NASConfig) -> str:
    """How the report marks proposals that were random draws of a strategy's initial population."""
    seeded = [
        f"{'aging evolution' if s == 'evolution' else 'NSGA-II'}'s first {initial_population(study, s)}"
        for s in study.strategies
        if initial_population(study, s)
    ]
    if not seeded:
        return "Every proposal is its strategy's own (evaluated.csv, `origin`)."
    text = " and ".join(seeded)
    return (
        f"{text[0].upper()}{text[1:]} proposals per search are random draws, the initial population (`{INITIAL}` in "
        f"evaluated.csv's `origin`); a strategy is credited only with what its own proposals found."
    )


def credit(study: NASConfig, trials: List[Dict[str, Any]], strategy: str) -> Optional[str]:
    """Which of `strategy`'s results its own proposals found, for a strategy that starts from a random initial
    population (evolution, NSGA-II): in how many searches the best architecture was an initial-population draw,
    and by how much the best own proposal beat the initial population's best (mean over searches). None for
    a strategy without an initial population or without evaluations."""
    n_initial, own = initial_population(study, strategy), ORIGINS[strategy]
    searches = [[t for t in trials if t["strategy"] == strategy and t["search_seed"] == seed] for seed in range(study.search_seeds)]
    searches = [rows for rows in searches if rows]
    if not n_initial or not searches:
        return None
    if n_initial >= study.trials:
        return (
            f"**Credit, {strategy}**: its random initial population ({n_initial}) is at least the budget ({study.trials} "
            f"evaluations), so every {strategy} evaluation was a random draw: at this budget {strategy} is random search, "
            f"and none of its results is its own."
        )
    best = lambda rows: max(rows, key=lambda t: t["val_acc"])
    winners = [best(rows).get("origin") for rows in searches]
    gains = [
        best([t for t in rows if t.get("origin") == own])["val_acc"] - best([t for t in rows if t.get("origin") == INITIAL])["val_acc"]
        for rows in searches
        if {own, INITIAL} <= {t.get("origin") for t in rows}
    ]
    text = (
        f"**Credit, {strategy}**: its first {n_initial} evaluations per search are random draws (its initial population), the "
        f"other {study.trials - n_initial} its own proposals ({OWN_PROPOSALS[strategy]}). The best architecture came from the "
        f"initial population in {winners.count(INITIAL)} of {len(searches)} searches and from its own proposals in {winners.count(own)}"
    )
    unknown = len(winners) - winners.count(INITIAL) - winners.count(own)
    text += f" ({unknown} from trials that recorded no origin)" if unknown else ""
    if winners.count(INITIAL) == len(searches):
        text += f": its own proposals found nothing better than its random draws, so no result here is {strategy}'s doing"
    if gains:
        text += (
            f"; its best own proposal against the initial population's best: {statistics.fmean(gains):+.4f} proxy accuracy "
            f"(mean over {len(gains)} searches)"
        )
    return text + "."


PATTERN_MIN = 10  # architectures each side of the pattern comparison needs, for its shares and means to say anything


def patterns(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    """Layer-type shares, depth, mean channels and downsampling of the architectures `rows` (each counted once)."""
    layers = [layer for r in rows for layer in r["spec"]["layers"]]
    downs = [i / max(1, len(r["spec"]["layers"]) - 1) for r in rows for i, layer in enumerate(r["spec"]["layers"]) if layer["stride"] == 2]
    return {
        **{f"share {t}": sum(layer["type"] == t for layer in layers) / len(layers) for t in LAYER_TYPES},
        "depth": statistics.fmean(len(r["spec"]["layers"]) for r in rows),
        "mean channels": statistics.fmean(layer["channels"] for layer in layers),
        "downsamplings": sum(layer["stride"] == 2 for layer in layers) / len(rows),
        "downsampling position (0 first, 1 last layer)": statistics.fmean(downs) if downs else float("nan"),
    }


def pattern_line(trials: List[Dict[str, Any]]) -> str:
    """The top quarter of the distinct architectures (by proxy accuracy, each at its best evaluation) against the
    rest, quoted only when the top quarter holds PATTERN_MIN architectures or more."""
    best: Dict[str, Dict[str, Any]] = {}
    for t in trials:
        if t["spec_key"] not in best or t["val_acc"] > best[t["spec_key"]]["val_acc"]:
            best[t["spec_key"]] = t
    ranked = sorted(best.values(), key=lambda t: -t["val_acc"])
    top, rest = ranked[: len(ranked) // 4], ranked[len(ranked) // 4 :]
    if len(top) < PATTERN_MIN:
        return (
            f"**Patterns**: not quoted. The top quarter of the {len(ranked)} distinct architectures holds {len(top)}, fewer "
            f"than the {PATTERN_MIN} its layer shares, depth and channels need to describe more than these few networks "
            f"(more trials or search seeds give more)."
        )
    pt, pr = patterns(top), patterns(rest)
    return (
        f"**Patterns** (descriptive, no test): the top quarter, {len(top)} distinct architectures by proxy accuracy, against "
        f"the other {len(rest)}: " + "; ".join(f"{k} {pt[k]:.2f} vs {pr[k]:.2f}" for k in pt) + "."
    )


def size_pairs(groups: List[Group]) -> List[Tuple[Group, Group, bool]]:
    """Each hand-designed baseline with the searched network it is compared with: the most accurate retrained
    searched network with no more parameters (True), or, where none is that small, the smallest one (False)."""
    searched = [g for g in groups if g.key["kind"] == "searched" and g.stat("test_acc").n]
    pairs = []
    for h in (g for g in groups if g.key["kind"] == "hand-designed" and g.stat("test_acc").n):
        if not searched:
            break
        size = lambda g: g.rows[0]["params"]
        smaller = [g for g in searched if size(g) <= size(h)]
        pairs.append((max(smaller, key=lambda g: g.stat("test_acc").mean) if smaller else min(searched, key=size), h, bool(smaller)))
    return pairs


def size_comparisons(pairs: List[Tuple[Group, Group, bool]], tests: List[Comparison]) -> List[str]:
    """The sentences of `size_pairs`, each with its comparison (searched minus hand-designed) from `tests`."""
    lines = []
    for (s, h, equal), c in zip(pairs, tests):
        size = lambda g: g.rows[0]["params"]
        numbers = (
            f"{s.key['model']} ({size(s):,} parameters, {size(s) / size(h):.2f}x) {s.stat('test_acc').fmt(4)} against "
            f"{h.key['model']} ({size(h):,}) {h.stat('test_acc').fmt(4)}: {describe(c)}"
        )
        if equal:
            lines.append(f"**Searched against {h.key['model']} at no more parameters**, the same training budget: {numbers}.")
        else:
            lines.append(
                f"**Searched against {h.key['model']}**: no retrained searched network is as small; the smallest, {numbers}. "
                f"The sizes differ, so this does not compare designs at equal parameters."
            )
    return lines


def findings(study: NASConfig, trials: List[Dict[str, Any]], groups: List[Group], chance: float) -> List[str]:
    """The report's findings. Every Welch test here is one Holm family: evolution against random (searches
    as samples), and each hand-designed network against the searched network it is compared with
    (`size_pairs`). Retrained runs that never left chance level (results.stalled, `chance` = ln K) are named
    first and left out of the comparison of designs. A strategy is credited only with its own proposals."""
    lines = []
    stuck = [f"{r['model']} seed {r['seed']}: {stalled_evidence(r)}" for g in groups for r in g.rows if run_stalled(r, chance)]
    if stuck:
        lines.append(
            f"**Left out of the comparison of searched and hand-designed networks: retrained runs that never left "
            f"chance level** ({stalled_rule(chance)}): {'; '.join(stuck)}."
        )
    learned = [Group(g.key, [r for r in g.rows if not run_stalled(r, chance)]) for g in groups]
    finals = {s: [c[-1] for c in best_so_far(trials, s, study.search_seeds, study.trials)] for s in ("random", "evolution")}
    strategies = "random" in study.strategies and "evolution" in study.strategies and finals["random"] and finals["evolution"]
    pairs = size_pairs(learned)
    tests = holm(
        ([compare(finals["evolution"], finals["random"])] if strategies else [])
        + [compare(s.stat("test_acc").values, h.stat("test_acc").values) for s, h, _ in pairs]
    )
    if strategies:
        lines.append(
            f"**Evolution against random at {study.trials} evaluations**: best proxy accuracy "
            f"{Stat(finals['evolution']).fmt(4)} against {Stat(finals['random']).fmt(4)}: {describe(tests[0], 'search')}; "
            f"evolution's number includes its random initial population (credit below)."
        )
    lines += [line for line in (credit(study, trials, s) for s in study.strategies) if line]
    if not trials:
        return lines + ["No candidate was evaluated (max_minutes too short, or every sample over max_macs)."]
    accs = [t["val_acc"] for t in trials]
    corr = {name: spearman([t[name] for t in trials], accs) for name in (*PROXIES, "params", "macs")}
    lines.append(
        "**Zero-cost proxies** (Spearman rho with proxy-trained accuracy over "
        f"{len(trials)} candidates): "
        + ", ".join(f"{k} {v:+.2f}" if v is not None else f"{k} -" for k, v in corr.items())
        + " (NAS-Bench-201 CIFAR-10 reference: synflow 0.74, params 0.75)."
    )
    lines.append(pattern_line(trials))
    lines += size_comparisons(pairs, tests[1 if strategies else 0 :])
    if not pairs and stuck and {g.key["kind"] for g in groups if g.stat("test_acc").n} == {"searched", "hand-designed"}:
        lines.append("**Searched against hand-designed**: not compared, every run of one side stayed at chance level.")
    return lines
