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
PROBES = ("epochs=0", "seeds=0", "subset=1", "batch_size=0", "lr=0", "lr=-1", "weight_decay=-1", "n_workers=0",
          "device.threads=-1", "preset=other")
# Study keys under their name at the time of the record -> their name now.
RENAMED = {}


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
    return {"defaults": {name: {p: composed_defaults(name, p) for p in PRESETS} for name in STUDIES},
            "checks": {name: {line: probe(name, line) for line in PROBES} for name in STUDIES}}


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
