"""Overrides deepexp writes itself: quoted for Hydra's grammar, and a study's own keys kept its own."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import TINY, run_cli
from deepexp.config import compose_config, compose_train, hydra_override, parse_value, validate
from deepexp.experiments import activations, efficient, nas, residual

# A file name with every character Hydra's grammar gives a meaning to (`=`, space, comma, brackets,
# braces, colon, both quotes, backslash, an interpolation, a backslash before one); `"` cannot appear
# in a quoted path on the command line below, so it is tested in-process only.
TRICKY = [
    "/data/d=1/mini.npz",
    "/data/my data, v2/[a] {b}/x.npz",
    "/data/odd/bs\\${seed}/mini.npz",
    'it\'s "quoted"',
    "back\\slash\\",
    "${oc.env:HOME}",
    "\\${x}",
    "\\\\${x}",
    "a:b",
    "null",
    "true",
    "1.5",
    "",
    " padded ",
    "é",
]


@pytest.mark.parametrize("text", TRICKY, ids=repr)
def test_a_string_reads_back_as_the_same_string_through_hydra_and_omegaconf(text):
    line = hydra_override("dataset.path", text)
    assert compose_train(["dataset=npz", line]).dataset.path == text


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -3, 0.001, 1e-5, 1e16, [0.9, 0.999], [], ["a=1", "b c"], {"a": [1, None], "b": {"c": "d=e"}}, [[1, 2], [3]]],
    ids=repr,
)
def test_every_config_value_reads_back_as_itself(value):
    assert parse_value(hydra_override("key", value)) == value


# Pieces that mean something to Hydra's override grammar or to OmegaConf, strung together at random.
PIECES = st.sampled_from(
    [
        "\\",
        "\\\\",
        "$",
        "{",
        "}",
        "${",
        "${x}",
        "\\${",
        "'",
        '"',
        " ",
        "\t",
        ",",
        "=",
        ":",
        "[",
        "]",
        "(",
        ")",
        "a",
        "/",
        "é",
        "null",
        "1",
        "~",
        "+",
        "%",
    ]
)
NASTY = st.lists(PIECES, max_size=10).map("".join)


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(NASTY, st.lists(NASTY, max_size=3)))
def test_any_string_or_list_of_strings_composes_back_to_exactly_itself(value):
    """Hydra's parser, then OmegaConf's resolution (what composing a config does to an override's value)."""
    line = hydra_override("key", value)
    assert OmegaConf.to_container(OmegaConf.create({"key": parse_value(line)}), resolve=True)["key"] == value, line


def test_plain_names_stay_unquoted():
    assert [hydra_override(k, v) for k, v in (("model", "mlp"), ("act", "leaky_relu"), ("arch", "outputs/nas/top5/1-x.json"))] == [
        "model=mlp",
        "act=leaky_relu",
        "arch=outputs/nas/top5/1-x.json",
    ]


STUDIES = [
    ("activations", activations, ["acts=[relu,tanh]", "seeds=1"]),
    ("residual", residual, ["depths=[20]", "seeds=1"]),
    ("efficient", efficient, ["models=[baseline_cnn,mobilenet_v2]", "seeds=1"]),
    ("nas", nas, []),
]


def run_configs(name, module, small, path):
    """Every run config a (small) study composes, with `dataset.path` (and NAS's spec path) set to `path`."""
    study = validate(compose_config(name, [f"{name}/preset=quick", *small, "dataset=npz", hydra_override("dataset.path", path)]))
    if module is nas:
        overrides = [nas.run_overrides(study, 1, 100, seed, {"model": "nas", "model.arch": path}) for seed in (0, 1)]
    else:
        overrides = [spec.overrides for spec in module.plan(study)]
    return [compose_train(o) for o in overrides]


@pytest.mark.parametrize("name, module, small", STUDIES, ids=[s[0] for s in STUDIES])
@pytest.mark.parametrize("path", TRICKY[:3], ids=repr)
def test_every_study_passes_any_data_path_to_its_runs_unchanged(name, module, small, path):
    configs = run_configs(name, module, small, path)
    assert configs and {c.dataset.path for c in configs} == {path}
    if module is nas:
        assert {c.model.arch for c in configs} == {path}


def write_npz(path: Path, n: int = 96, size: int = 8) -> None:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n, size, size), dtype=np.uint8),
        y_train=rng.integers(0, 10, n),
        x_test=rng.integers(0, 256, (32, size, size), dtype=np.uint8),
        y_test=rng.integers(0, 10, 32),
    )


def test_the_activation_study_trains_on_a_file_whose_name_holds_hydra_syntax(tmp_path):
    data = tmp_path / "d=1, [x] {y} it's" / "mini.npz"
    write_npz(data)
    exp = tmp_path / "exp"
    out = run_cli(
        [
            "activations",
            "acts=[relu]",
            "seeds=1",
            "depth=1",
            "width=8",
            "epochs=2",
            "stability_epochs=2",
            "batch_size=16",
            "n_workers=1",
            "dataset=npz",
            f'dataset.path="{data}"',
            f"hydra.run.dir={exp}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads((exp / "runs" / "main" / "relu-s0" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["config"]["dataset.path"] == str(data)
    assert metrics["data"]["train"] + metrics["data"]["val"] == 96 and metrics["data"]["test"] == 32


def test_resume_true_continues_a_run_whose_folder_name_holds_hydra_syntax(tmp_path):
    from deepexp.train import flat_config

    run = tmp_path / "outputs" / "train" / "d=1, [x] it's" / "00-00-00"
    args = TINY
    run.mkdir(parents=True)  # as a killed run leaves it before its first checkpoint
    (run / "metrics.json").write_text(json.dumps({"status": "running", "config": flat_config(compose_train(args))}))
    out = run_cli(["train", *args, "resume=true"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"continuing {run.relative_to(tmp_path)}" in out.stdout
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


# --- a study's own keys ----------------------------------------------------------------------

HYDRA_SETTING = "is a Hydra setting, which applies to the whole command, not to each run: give it on the command line itself"


def refusal(line: str, instead, key: str = None) -> str:
    key = key or line.lstrip("+~").split("=")[0]
    advice = f"use the study's own {instead} instead" if instead else "the study does not let it change"
    return f"{line!r} sets {key}, which the study sets itself in every run; {advice}"


TEST_ACC = "the tables and the report compare every run's test accuracy"
DIAGNOSIS = "the diagnosis and the figures read every run's per-layer gradients and dead units"
GRADIENTS = "the gradient figures and the report read every run's per-layer gradients"
MODEL_ACC = "the tables and the report compare every trained model's test accuracy"


def needed(line: str, key: str, why: str) -> str:
    return f"{line!r} sets {key}, which the study needs as the trainer sets it: {why}"


SMALL = {
    "activations": ["acts=[relu]", "seeds=1", "depth=2", "epochs=2", "subset=300", "stability_epochs=2", "n_workers=1"],
    "residual": ["preset=quick", "depths=[20]", "seeds=1", "epochs=1", "subset=100"],
    "efficient": ["preset=quick", "models=[baseline_cnn]", "seeds=1", "epochs=1", "subset=100"],
    "nas": ["preset=quick", "trials=1", "proxy_epochs=1", "proxy_subset=100", "final_epochs=1", "final_subset=100", "final_seeds=1"],
}
OWN_KEY_CASES = [  # (command, the option, an extra override the study refuses, the refusal), one kind of refusal per study
    ("activations", "overrides", "eval_test=false", needed("eval_test=false", "eval_test", TEST_ACC)),
    ("residual", "overrides", "monitor.enabled=false", needed("monitor.enabled=false", "monitor.enabled", GRADIENTS)),
    ("efficient", "overrides", "debug=fast", refusal("debug=fast", "epochs=...", "epochs")),  # the debug group sets epochs
    ("nas", "overrides", "hydra.run.dir=/tmp/x", f"'hydra.run.dir=/tmp/x' {HYDRA_SETTING}"),
    ("activations", "overrides", "act.name=gelu", refusal("act.name=gelu", "acts=[...]")),  # a group's own choice field
]


@pytest.mark.parametrize("name, option, line, message", OWN_KEY_CASES, ids=[c[0] for c in OWN_KEY_CASES])
def test_an_extra_override_a_study_refuses_is_refused_before_hydra_makes_its_folder(tmp_path, name, option, line, message):
    exp = tmp_path / "exp"
    out = run_cli([name, *SMALL[name], f"{option}=['grad_clip=1.0','{line}']", f"hydra.run.dir={exp}"], tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"deepexp: {option}=[...]: {message}", out.stderr
    assert not exp.exists()  # refused before Hydra makes the folder: no record, no lock, no run, no search storage


OWN_KEYS_IN_PROCESS = [  # (study, its overrides, the option, the line, the study option named instead)
    ("activations", [], "overrides", "epochs=2", "epochs=..."),
    ("activations", [], "overrides", "subset=500", "subset=..."),  # (the full preset's subset is null: all images)
    ("activations", [], "overrides", "seed=3", "seeds=N"),
    ("activations", [], "overrides", "act=gelu", "acts=[...]"),
    ("activations", [], "overrides", "model=cnn", "depth=, width= and norm="),
    ("activations", [], "overrides", "~init", "init=..."),
    ("residual", [], "overrides", "epochs=1", "epochs=..."),
    ("residual", [], "overrides", "model.shortcut=B", "shortcut=..."),
    ("residual", [], "overrides", "sched=step", None),
    ("efficient", [], "overrides", "++seed=1", "seeds=N"),
    ("efficient", [], "overrides", "model=resnet20", "models=[...]"),
    ("efficient", [], "overrides", "model.width=0.5", "width=..."),  # (width is null: each model's own)
    ("nas", [], "overrides", "epochs=1", "proxy_epochs= and final_epochs="),
    ("nas", [], "overrides", "eval_test=true", None),
    ("nas", [], "overrides", "model.arch=x.json", None),
    # a group's choice field (`name`, device's `type`) is the group the study chooses
    ("activations", [], "overrides", "dataset.name=mnist", "dataset=..."),
    ("activations", [], "overrides", "init.name=xavier", "init=..."),
    ("residual", [], "overrides", "act.name=gelu", "act=..."),
    ("residual", [], "overrides", "device.type=cpu", "device=..."),
    ("residual", [], "overrides", "model.name=resnet20", "depths=[...] and densenet=true"),
    ("efficient", [], "overrides", "model.name=resnet20", "models=[...]"),
    ("nas", [], "overrides", "model.name=mlp", "baselines=[...]"),
    ("nas", [], "overrides", "dataset.name=mnist", "dataset=..."),
]


def refused_in_process(name: str, overrides, option: str, line: str) -> str:
    """What planning the study (NAS: checking its overrides) refuses, with `option=[line]` added."""
    from deepexp.errors import ConfigError

    module = {"activations": activations, "residual": residual, "efficient": efficient, "nas": nas}[name]
    study = validate(compose_config(name, [*overrides, f"{option}=[{hydra_override('x', line).split('=', 1)[1]}]"]))
    with pytest.raises(ConfigError) as refused:
        nas.check_overrides(study) if module is nas else module.plan(study)
    return str(refused.value)


@pytest.mark.parametrize("name, overrides, option, line, instead", OWN_KEYS_IN_PROCESS, ids=[f"{c[0]} {c[3]}" for c in OWN_KEYS_IN_PROCESS])
def test_every_key_a_study_sets_is_refused_in_its_extra_overrides(name, overrides, option, line, instead):
    assert refused_in_process(name, overrides, option, line) == f"{option}=[...]: {refusal(line, instead)}"


OTHER_REFUSALS = [  # (study, the option, the line, the refusal): keys the tables read, groups and parents that set
    # owned keys, Hydra's settings, residual's no_norm_overrides, a line Hydra cannot parse
    ("activations", "overrides", "monitor.enabled=false", needed("monitor.enabled=false", "monitor.enabled", DIAGNOSIS)),
    ("activations", "overrides", "monitor={enabled:false}", needed("monitor={enabled:false}", "monitor.enabled", DIAGNOSIS)),
    ("residual", "overrides", "eval_test=false", needed("eval_test=false", "eval_test", TEST_ACC)),
    ("efficient", "overrides", "eval_test=false", needed("eval_test=false", "eval_test", MODEL_ACC)),
    ("activations", "overrides", "debug=fast", refusal("debug=fast", "epochs=...", "epochs")),
    ("nas", "overrides", "debug=fast", refusal("debug=fast", "proxy_epochs= and final_epochs=", "epochs")),
    ("activations", "overrides", "hydra.run.dir=/tmp/x", f"'hydra.run.dir=/tmp/x' {HYDRA_SETTING}"),
    ("residual", "overrides", "hydra/launcher=joblib", f"'hydra/launcher=joblib' {HYDRA_SETTING}"),
    ("residual", "no_norm_overrides", "epochs=1", refusal("epochs=1", "epochs=...")),
    ("residual", "no_norm_overrides", "model.norm=batch", refusal("model.norm=batch", "norm=...")),
    (
        "activations",
        "overrides",
        "lr=0.001 x=1",
        "cannot parse 'lr=0.001 x=1' (mismatched input '=' expecting <EOF>): quote a "
        "value that holds =, a space, a comma, a bracket or a quote, e.g. \"lr='0.001 x=1'\" "
        "(README: Quoting)",
    ),
    # the choice field of a group the study leaves to the trainer: the group is chosen, not renamed
    ("activations", "overrides", "optim.name=adam", "optim.name=adam: choose the group instead: optim=adam"),
    ("efficient", "overrides", "init.name=xavier", "init.name=xavier: choose the group instead: init=xavier"),
]


@pytest.mark.parametrize("name, option, line, message", OTHER_REFUSALS, ids=[f"{c[0]} {c[2]}" for c in OTHER_REFUSALS])
def test_every_override_that_would_falsify_a_studys_tables_is_refused(name, option, line, message):
    assert refused_in_process(name, [], option, line) == f"{option}=[...]: {message}"


def test_the_norm_ablation_may_change_its_training_recipe():
    study = validate(
        compose_config(
            "residual", ["depths=[20]", "seeds=1", "ablations=[norm]", "no_norm_overrides=['init=default','lr=0.01','sched=step','batch_size=64']"]
        )
    )
    runs = {spec.name: compose_train(spec.overrides) for spec in residual.plan(study)}
    plain = runs["norm-none/plain20-s0"]
    assert (plain.model.norm, plain.init.name, plain.lr, plain.sched.name, plain.batch_size) == ("none", "default", 0.01, "step", 64)
    assert (runs["main/plain20-s0"].lr, runs["main/plain20-s0"].sched.name) == (study.lr, "cosine")


CONTRADICTIONS = [  # (command line, the one line it gets)
    (
        ["activations", "acts=[relu]", "epochs=2", "stability_epochs=3"],
        "stability_epochs=3 needs at least as many epochs; epochs=2 (the trend is fitted over the last stability_epochs epochs)",
    ),
    (
        ["residual", "preset=quick", "ablations=[norm]", "no_norm_overrides=['epochs=1']"],
        f"no_norm_overrides=[...]: {refusal('epochs=1', 'epochs=...')}",
    ),
]


@pytest.mark.parametrize("args, message", CONTRADICTIONS, ids=[c[0][0] for c in CONTRADICTIONS])
def test_study_options_that_contradict_the_report_are_refused_before_anything_runs(tmp_path, args, message):
    out = run_cli([*args, f"hydra.run.dir={tmp_path / 'exp'}"], tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [f"deepexp: {message}"], out.stderr
    assert not (tmp_path / "exp").exists()


UNPARSABLE = [  # (command line, the override named, the value its suggested quoting gives)
    (["report", "path=/tmp/a b/x=1"], "path=/tmp/a b/x=1", "/tmp/a b/x=1"),
    (["activations", "overrides=[optim=adam,lr=0.001]"], "overrides=[optim=adam,lr=0.001]", ["optim=adam", "lr=0.001"]),
]


@pytest.mark.parametrize("args, line, value", UNPARSABLE, ids=[c[0][0] for c in UNPARSABLE])
def test_an_override_hydra_cannot_parse_is_named_with_a_quoting_that_reads_back(tmp_path, args, line, value):
    import shlex

    out = run_cli([*args, f"hydra.run.dir={tmp_path / 'exp'}"], tmp_path)
    assert out.returncode == 2, out.stderr
    (message,) = out.stderr.strip().splitlines()
    assert message.startswith(f"deepexp: cannot parse {line!r} (") and message.endswith("(README: Quoting)"), message
    suggestion = message.split(", e.g. ", 1)[1].rsplit(" (README", 1)[0]
    (word,) = shlex.split(suggestion)  # one shell word, which Hydra reads as the value meant
    assert parse_value(word) == value
    assert not (tmp_path / "exp").exists()


def test_an_extra_override_of_a_key_the_study_leaves_alone_reaches_every_run():
    study = validate(
        compose_config("activations", ["activations/preset=quick", "acts=[relu]", "seeds=1", "overrides=['optim=adam','optim.betas=[0.5,0.9]']"])
    )
    configs = [compose_train(spec.overrides) for spec in activations.plan(study)]
    assert {(c.optim.name, tuple(c.optim.betas)) for c in configs} == {("adam", (0.5, 0.9))}


def history(epochs: int, layers: int = 3):
    return [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "val_loss": 2.1 / e,
            "train_acc": 0.1 * e,
            "val_acc": 0.1 * e,
            "seconds": 1.0,
            "layers": {"grad_norm": [1e-3 * e] * layers, "act_std": [0.5] * layers, "dead": [0.0] * layers},
        }
        for e in range(1, epochs + 1)
    ]


def recorded_bands(monkeypatch):
    """The x values of every band the figures draw."""
    from deepexp import plots

    seen, band = [], plots.band
    monkeypatch.setattr(
        plots, "band", lambda ax, x, series, *a, **k: (seen.append((list(x), [len(s) for s in series])), band(ax, x, series, *a, **k))
    )
    return seen


def test_activation_figures_draw_the_epochs_every_run_has(tmp_path, monkeypatch):
    results = [
        (
            activations.RunSpec(f"main/{act}-s{seed}", {"variant": "main", "act": act, "seed": seed}),
            {"status": "completed", "history": history(n), "test": {"acc": 0.5 + 0.1 * seed}},
        )
        for act, seed, n in (("relu", 0, 3), ("relu", 1, 2), ("tanh", 0, 3))
    ]  # one relu run stopped after epoch 2
    seen = recorded_bands(monkeypatch)
    files = {f.name for f in activations.write_plots([m for _, m in results], [spec.labels for spec, _ in results], tmp_path, "test")}
    assert files == {"loss", "grad", "act_std_vs_depth", "dead_units_by_layer", "accuracy"}
    curves = [(x, lengths) for x, lengths in seen if lengths[0] != 3 or x == [1, 2]][:4]  # the loss bands come first
    assert curves == [([1, 2], [2, 2]), ([1, 2], [2, 2]), ([1, 2], [2]), ([1, 2], [2])]


def test_residual_figures_draw_the_epochs_every_run_has(tmp_path, monkeypatch):
    study = validate(compose_config("residual", ["depths=[20]", "epochs=3"]))
    results = [
        (residual.RunSpec(f"main/{net}-s{seed}", {"variant": "main", "network": net, "seed": seed}), {"status": "completed", "history": history(n)})
        for net, seed, n in (("plain20", 0, 3), ("plain20", 1, 2), ("resnet20", 0, 3))
    ]
    seen = recorded_bands(monkeypatch)
    files = {f.name for f in residual.write_plots(study, [m for _, m in results], [spec.labels for spec, _ in results], tmp_path, "test")}
    assert files == {"training_error", "grad_norm_vs_depth", "grad_heatmap"}
    assert [x for x, _ in seen[:4]] == [[1, 2]] * 4  # training and validation error of plain20 and resnet20


REPEATS = [
    ("activations", "ablation_depths=[5,5]", "ablation_depths names 5 twice"),
    ("activations", "ablations=[norm,norm]", "ablations names norm twice"),
    ("residual", "ablations=[shortcut,shortcut]", "ablations names shortcut twice"),
    ("efficient", "latency_batches=[1,1]", "latency_batches names 1 twice"),
]


@pytest.mark.parametrize("name, line, said", REPEATS, ids=[f"{c[0]} {c[1]}" for c in REPEATS])
def test_a_study_list_that_repeats_a_value_is_refused(name, line, said):
    from deepexp.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        validate(compose_config(name, [line]))
    assert str(refused.value) == f"{said}; give each value once (more runs of one: seeds=N)"
