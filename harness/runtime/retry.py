"""Retries with backoff for stores that are briefly locked.

A local SQLite store (`mlflow.db`, `optuna.db`) answers "database is locked" while another
process holds a write lock (a backup, a `sqlite3` shell, a sibling worker's long commit). Losing a
finished run's results to that is worse than waiting: `retry_locked` calls again with exponential
backoff for up to `LOCK_WAIT_S`, and `Retrying` wraps a client so that every call does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["LOCK_WAIT_S", "Retrying", "is_locked", "quiet_lock_reports", "retry_locked"]

log = logging.getLogger(__name__)

#: how long a call waits in all for a locked store before giving up
LOCK_WAIT_S = 180.0
T = TypeVar("T")


def is_locked(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is SQLite's "database is locked"/"busy"."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).lower()
        if "database is locked" in text or "database is busy" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def retry_locked(
    call: Callable[..., T],
    *args: Any,
    wait_s: float = LOCK_WAIT_S,
    first_delay_s: float = 0.5,
    sleep: Callable[[float], None] | None = None,
    busy: Callable[[BaseException], bool] = is_locked,
    **kwargs: Any,
) -> T:
    """`call(*args, **kwargs)`, again after 0.5, 1, 2, 4 … s (at most 15 s apart) while the
    store is busy (`busy(error)`: by default locked), for up to `wait_s` seconds of waiting;
    other errors are raised at once. `sleep`: time.sleep unless given."""
    delay, waited = first_delay_s, 0.0
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as e:
            if not busy(e) or waited >= wait_s:
                raise
            if waited == 0.0:
                name = getattr(call, "__name__", "a store call")
                what = "locked" if is_locked(e) else "busy"
                log.warning("%s: the store is %s; retrying for up to %g s", name, what, wait_s)
            (sleep or time.sleep)(delay)
            waited += delay
            delay = min(delay * 2, 15.0)


class Retrying:
    """A proxy whose method calls go through `retry_locked` (e.g. around an `MlflowClient`)."""

    def __init__(self, target: Any, wait_s: float = LOCK_WAIT_S) -> None:
        self._target, self._wait_s = target, wait_s
        quiet_lock_reports()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return retry_locked(value, *args, wait_s=self._wait_s, **kwargs)

        call.__name__ = name
        return call


class _DropLockReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (is_locked(Exception(record.getMessage())) or _locked_exc(record))


def _locked_exc(record: logging.LogRecord) -> bool:
    return bool(record.exc_info and record.exc_info[1] and is_locked(record.exc_info[1]))


def quiet_lock_reports() -> None:
    """MLflow's SQL store logs every "database is locked" with a full traceback before raising;
    `retry_locked` says once that it waits instead."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropLockReports) for f in logger.filters):
        logger.addFilter(_DropLockReports())
