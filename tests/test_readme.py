"""Every documented command parses and composes: the README, the config files' comments, the --help texts."""

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from deepexp.cli import COMMANDS, hydra_args, prevalidate, usage
from deepexp.config import CONFIG_DIR, override_parser, register_schemas

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_commands(text: str):
    """`deepexp ...` command lines of fenced shell blocks (continuations joined, comments dropped)."""
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line):
                words = shlex.split(part, comments=True)
                if words[:1] == ["deepexp"]:
                    yield " ".join(shlex.quote(w) for w in words)


def inline_commands(text: str):
    """`deepexp ...` in inline code, usage patterns (`deepexp <command> ...`) left out."""
    for span in re.findall(r"`(deepexp [^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        if "<" not in span:
            yield span


def documented_commands():
    found = [("README.md", c) for c in [*shell_commands(README), *inline_commands(README)]]
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        text = path.read_text()
        comments = "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
        found += [(path.relative_to(ROOT).as_posix(), c) for c in inline_commands(comments)]
        footer = OmegaConf.select(OmegaConf.load(path), "hydra.help.footer", default=None)
        found += [
            (f"{path.relative_to(ROOT).as_posix()} footer", line.strip())
            for line in (footer or "").splitlines()
            if line.strip().startswith("deepexp ")
        ]
    found += [("deepexp --help", line.split("Example: ", 1)[1]) for line in usage().splitlines() if "Example: deepexp" in line]
    return list(dict.fromkeys(found))


COMMAND_LINES = documented_commands()


def test_the_documents_hold_the_commands_this_test_reads():
    assert len(COMMAND_LINES) > 30
    sources = {source.split(" ")[0] for source, _ in COMMAND_LINES}
    assert {"README.md", "configs/activations.yaml", "configs/train.yaml", "deepexp"} <= sources


@pytest.mark.parametrize("source, line", COMMAND_LINES, ids=[f"{s}: {c}" for s, c in COMMAND_LINES])
def test_every_documented_command_parses_and_composes(source, line):
    from hydra import compose, initialize_config_dir

    name, *args = shlex.split(line)[1:]
    assert name in (*COMMANDS, "--help"), f"{source}: {line}"
    if name == "--help" or "--help" in args or not args:  # a help text, or the command named in prose
        return
    args = hydra_args(name, args)
    prevalidate(name, args)  # what `deepexp` does before it starts: parse, expand sweeps, compose, validate
    hydra = [a for a in args if a.startswith(("hydra.", "hydra/"))]
    if hydra:  # the launcher and its settings compose as well
        register_schemas()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name=name, overrides=hydra, return_hydra_config=True)


def override_spans(text: str):
    """Inline code in the README's prose that is one `key=value` override (placeholders with <...> left out)."""
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        if re.match(r"""^["']?[+~]*[\w./@-]+=""", span) and "<" not in span:
            yield span


@pytest.mark.parametrize("span", list(dict.fromkeys(override_spans(README))))
def test_every_override_the_readme_shows_parses(span):
    for word in shlex.split(span):  # shell words, as they would be typed
        override_parser().parse_override(word)


def test_a_documented_study_command_with_a_key_the_study_sets_would_fail_this_test():
    """prevalidate applies a study's refusals of its own keys, so a README line that sets one cannot pass."""
    from deepexp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'lr=0.001' sets lr, which the study sets itself in every run"):
        prevalidate("activations", hydra_args("activations", ["preset=quick", "overrides=['optim=adam','lr=0.001']"]))
