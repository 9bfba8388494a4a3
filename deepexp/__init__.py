"""deepexp: a command-line experiment runner for deep-learning course projects."""

__version__ = "0.1.0"
