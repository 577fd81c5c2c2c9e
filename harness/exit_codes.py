"""The exit codes of `prunebench` (documented in docs/cli.md): each says what happened, so a
scheduler or a script can tell a finished study from one that only looks finished."""

from __future__ import annotations

__all__ = [
    "BUDGET_NOT_MET",
    "ERROR",
    "INTERRUPTED",
    "OK",
    "TERMINATED",
    "USAGE",
    "WORKER_DIED",
]

OK = 0
#: a bad input or a refused file (PruneBenchError); one line on stderr names it and the fix
ERROR = 1
#: no or unknown command
USAGE = 2
#: a study ended with fewer finished trials than `study.n_trials` (failures reached
#: `study.max_failures`, or every trial failed); the JSON line still comes
BUDGET_NOT_MET = 3
#: a study's worker process died (killed or crashed); its trial is retried on the next start
WORKER_DIED = 4
#: Ctrl-C (SIGINT): runs marked KILLED, studies resume where they stopped
INTERRUPTED = 130
#: SIGTERM (timeout, Slurm, Kubernetes): handled exactly like Ctrl-C
TERMINATED = 143
