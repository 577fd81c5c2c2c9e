"""Which process owns something (a trial, an MLflow run, a temp file), and whether it still runs.

A token is `host:pid:start`; the start time (Linux `/proc`) guards against a reused pid, so a
token names one process for ever.
"""

from __future__ import annotations

import os
import socket

__all__ = ["is_alive", "process_token"]


def process_token(pid: int | None = None) -> str:
    """`host:pid:start` of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22: starttime
    except (OSError, IndexError):
        return "?"


def is_alive(token: str) -> bool:
    """Whether the process a token names still runs (True for other hosts: not ours to judge)."""
    try:
        host, pid, start = token.rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return True  # not a token we wrote: leave it alone
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start == "?" or _start_time(pid_n) == start
