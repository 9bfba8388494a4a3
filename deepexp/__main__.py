"""`python -m deepexp` is the `deepexp` command."""

from .cli import main

main()
