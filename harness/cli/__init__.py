"""Entry points: the `prunebench` command, Hydra's launcher entry, demo, show, exit codes."""

from harness.cli.main import main

__all__ = ["main"]
