"""The task behind each `deepexp <command>`: a thin layer over the trainer."""
