"""SIGTERM is handled like Ctrl-C: `timeout`, Slurm and Kubernetes stop a job with SIGTERM, and the
job must then end as an interrupted one would (MLflow run KILLED, study resumable, exit 143)."""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["Terminated", "install_sigterm_handler"]


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM. A KeyboardInterrupt, so every Ctrl-C path (runs
    marked KILLED, trials marked interrupted and retried) handles it unchanged."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated(f"terminated by signal {signum}")


def install_sigterm_handler() -> None:
    """Turn SIGTERM into `Terminated` (main thread only; elsewhere Python forbids handlers)."""
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        pass
