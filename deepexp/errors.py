"""The few exceptions deepexp turns into one line and an exit code (see DESIGN.md)."""


class DeepexpError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""

    exit_code = 1


class ConfigError(DeepexpError):
    """Bad input: a config value, an override, a file. Exit code 2."""

    exit_code = 2


class DataError(ConfigError):
    """A dataset that is missing, unreadable or malformed. Exit code 2."""


class CheckpointError(ConfigError):
    """A checkpoint that is corrupt, from another model, or from another config. Exit code 2."""


class RunLockedError(ConfigError):
    """Another live process holds the run directory. Exit code 2."""
