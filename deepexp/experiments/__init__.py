"""The project commands: each builds a list of trainer runs, runs them, and writes a report."""
