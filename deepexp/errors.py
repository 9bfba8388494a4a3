"""The few exceptions deepexp turns into one line and an exit code (docs/formats.md, "Exit statuses"), and
`fail`, which prints that line. The bottom of the package: it imports nothing of deepexp, so that every module,
the Hydra callbacks included, can report an error the same way.
"""

import sys

EXIT_BAD_INPUT = 2  # the exit status of bad input of any kind (ConfigError and its subclasses)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print `deepexp: <message>` as one line on stderr and return the exit status `code` to end with."""
    sys.stderr.write(f"deepexp: {message}\n")
    return code


class DeepexpError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""

    exit_code = 1


class ConfigError(DeepexpError):
    """Bad input: a config value, an override, a file. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class DataError(ConfigError):
    """A dataset that is missing, unreadable or malformed. Exit code 2."""


class CheckpointError(ConfigError):
    """A checkpoint that is corrupt, from another model, or from another config. Exit code 2."""


class RunLockedError(ConfigError):
    """Another live process holds the run directory. Exit code 2."""
