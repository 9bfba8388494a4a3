"""The study schemas: every study's composed defaults and range checks, held against a record taken before the
shared fields moved into one base schema (tests/data/study_defaults.json)."""

import json
from pathlib import Path

import pytest

from deepexp.config import compose_config, to_plain, validate
from deepexp.errors import ConfigError

RECORD = Path(__file__).parent / "data" / "study_defaults.json"
STUDIES = ("activations", "residual", "efficient", "nas")
PRESETS = ("full", "quick")
# One impossible (or possible but unusual) value per shared field; a field a study does not have is refused by Hydra.
PROBES = ("epochs=0", "seeds=0", "subset=1", "batch_size=0", "lr=0", "lr=-1", "weight_decay=-1", "n_workers=0", "device.threads=-1", "preset=other")
# Study keys under their name at the time of the record -> their name now.
RENAMED = {"activations": {"train": "overrides"}, "residual": {"train": "overrides"}, "efficient": {"train": "train_models"}}


def composed_defaults(name, preset):
    return to_plain(validate(compose_config(name, [f"{name}/preset={preset}"])))


def probe(name, line):
    """What validating the study's default config with `line` says: `ok`, the ConfigError's line, or `no such key`."""
    try:
        compose = compose_config(name, [f"{name}/preset=quick", line])
    except Exception:  # Hydra: the schema has no such key
        return "no such key"
    try:
        validate(compose)
    except ConfigError as exc:
        return str(exc)
    return "ok"


def record():
    """The record this file compares with (run once, before the schemas changed)."""
    return {
        "defaults": {name: {p: composed_defaults(name, p) for p in PRESETS} for name in STUDIES},
        "checks": {name: {line: probe(name, line) for line in PROBES} for name in STUDIES},
    }


def renamed(name, values):
    names = RENAMED.get(name, {})
    return {names.get(key, key): value for key, value in values.items()}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", STUDIES)
def test_every_study_composes_the_same_defaults_as_recorded(name, preset):
    expected = renamed(name, json.loads(RECORD.read_text())["defaults"][name][preset])
    assert composed_defaults(name, preset) == expected


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_refuses_the_same_values_of_its_shared_fields_as_recorded(name):
    expected = json.loads(RECORD.read_text())["checks"][name]
    assert {line: probe(name, line) for line in PROBES} == expected


if __name__ == "__main__":  # python tests/test_study_config.py: write the record
    RECORD.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")


# --- the runs each study plans, held against a record taken before runner.base_overrides --------------------------

PLANS = Path(__file__).parent / "data" / "study_plans.json"
SMALL = {
    "activations": ["acts=[relu,tanh]", "seeds=2", "ablations=[init,norm,depth]", "overrides=['optim=adam']"],
    "residual": ["depths=[20]", "seeds=1", "ablations=[shortcut,norm]", "densenet=true", "overrides=['optim=adam']"],
    "efficient": ["models=[baseline_cnn,mobilenet_v2]", "seeds=2", "width=0.5", "overrides=['optim=adam']"],
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_study_plans_the_same_runs_with_the_same_overrides_as_recorded(name):
    import importlib

    module = importlib.import_module(f"deepexp.experiments.{name}")
    study = validate(compose_config(name, [f"{name}/preset=quick", *SMALL[name]]))
    planned = {spec.name: {"labels": spec.labels, "overrides": sorted(spec.overrides)} for spec in module.plan(study)}
    assert planned == json.loads(PLANS.read_text())[name]


def test_nas_gives_its_search_and_final_runs_the_same_overrides_as_recorded():
    from deepexp.experiments import nas

    study = validate(compose_config("nas", ["nas/preset=quick", "overrides=['optim=adam','compile=true']"]))
    recorded = json.loads(PLANS.read_text())["nas"]
    assert sorted(nas.run_overrides(study, study.final_epochs, study.final_subset, 1, {"model": "resnet20"})) == recorded["final"]
    assert sorted(nas.search_overrides(study, "x.json")) == recorded["search"]  # (without compile=true: see nas.compile_note)
    assert nas.shared_values(study, 3, 100, 1) == recorded["shared"]


def test_base_overrides_are_the_settings_every_run_of_a_study_shares_then_the_study_s_own():
    from deepexp.experiments.runner import base_overrides

    study = validate(compose_config("residual", ["residual/preset=quick", "dataset=npz", "dataset.path=/d/x.npz", "lr=0.2", "subset=null"]))
    assert base_overrides(study, {"sched": "cosine", "lr": 0.3}) == {
        "epochs": study.epochs,
        "subset": None,
        "batch_size": study.batch_size,
        "lr": 0.3,
        "monitor.figure": False,
        "dataset": "npz",
        "dataset.augment": study.dataset.augment,
        "dataset.num_classes": None,
        "dataset.path": "/d/x.npz",
        "act": "relu",
        "device": "cpu",
        "device.threads": study.device.threads,
        "device.index": None,
        "sched": "cosine",
    }
    nas_study = validate(compose_config("nas", ["act=gelu"]))  # no epochs or subset of its own: its runs' budgets differ
    assert base_overrides(nas_study) == {
        "batch_size": nas_study.batch_size,
        "lr": nas_study.lr,
        "monitor.figure": False,
        **{k: v for k, v in base_overrides(study).items() if k.startswith("device")},
        "dataset": "cifar10",
        "dataset.augment": nas_study.dataset.augment,
        "dataset.num_classes": nas_study.dataset.num_classes,
        "act": "gelu",
    }


# --- a study key under its former name -------------------------------------------------------------------------------


def test_the_former_name_of_a_study_s_overrides_is_refused_with_the_new_one_through_the_cli(tmp_path):
    from conftest import run_cli

    out = run_cli(["residual", "train=['optim=adam']", f"hydra.run.dir={tmp_path / 'exp'}"], cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "deepexp: \"train=['optim=adam']\": deepexp residual calls this key 'overrides' now: \"overrides=['optim=adam']\""
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    "name, line, message",
    [
        ("activations", "train=[]", "'train=[]': deepexp activations calls this key 'overrides' now: 'overrides=[]'"),
        ("residual", "train.0=x", "'train.0=x': deepexp residual calls this key 'overrides' now: overrides.0=x"),
        # a value that was no list before either: the hint shows the list the new key takes, not overrides=true
        ("activations", "train=true", "'train=true': deepexp activations calls this key 'overrides' now: \"overrides=['key=value',...]\""),
        ("efficient", "train=false", "'train=false': deepexp efficient calls this key 'train_models' now: train_models=false"),
        ("efficient", "+train=false", "'+train=false': deepexp efficient calls this key 'train_models' now: +train_models=false"),
        # a list given to efficient's former `train` was run overrides: train_models (a bool) would refuse it again
        (
            "efficient",
            "train=['optim=adam']",
            "\"train=['optim=adam']\": deepexp efficient calls this key 'overrides' now: \"overrides=['optim=adam']\"",
        ),
    ],
)
def test_every_former_study_key_names_the_key_that_took_its_place(name, line, message):
    with pytest.raises(ConfigError) as caught:
        compose_config(name, [line])
    assert str(caught.value) == message


def test_an_interpolation_inside_a_studys_run_overrides_is_refused_naming_the_override():
    """`${lr}` would be resolved against the study's config (the study's lr, silently), `${seed}` would fail naming no override."""
    for line in ("weight_decay=${lr}", "weight_decay=${seed}"):
        with pytest.raises(ConfigError) as caught:
            validate(compose_config("activations", [f"overrides=['{line}']"]))
        assert str(caught.value) == (
            f"overrides=[...]: '{line}' holds an interpolation, which would be resolved against the study's config, not each run's: "
            "write the value itself"
        )


def test_a_bare_value_for_a_list_of_run_overrides_is_shown_quoted_as_a_list():
    from deepexp.config import unparsable

    assert unparsable("overrides=optim=adam", "mismatched input").endswith(
        "quote each element of a list of overrides, e.g. \"overrides=['optim=adam']\" (README: Quoting)"
    )
