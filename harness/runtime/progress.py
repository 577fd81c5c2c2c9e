"""Progress of long work on stderr: a live tqdm line on a terminal, periodic log lines otherwise.

Used by studies (trials done / total, failures, front size, ETA) and by the training loop (steps
within an epoch that takes more than a few seconds). Nothing here touches stdout, which carries
the one JSON result line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["LOG_EVERY_S", "TICK_AFTER_S", "Ticker", "is_terminal", "track_steps"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: without a terminal, at most one progress log line per this many seconds
LOG_EVERY_S = 30.0
#: an epoch shows step progress only once it has run this long
TICK_AFTER_S = 5.0


def is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def track_steps(
    steps: Iterable[T], total: int, desc: str, *, every_s: float = LOG_EVERY_S
) -> Iterator[T]:
    """Yield `steps`; show progress once they have taken more than TICK_AFTER_S seconds."""
    if is_terminal():
        from tqdm import tqdm

        yield from tqdm(steps, total=total, desc=desc, delay=TICK_AFTER_S, leave=False,
                        file=sys.stderr, dynamic_ncols=True)  # fmt: skip
        return
    start = last = time.perf_counter()
    for i, item in enumerate(steps, 1):
        yield item
        now = time.perf_counter()
        if now - start > TICK_AFTER_S and now - last > every_s and i < total:
            last = now
            log.info("%s: step %d/%d (%.0f s)", desc, i, total, now - start)


class Ticker:
    """One line of state (e.g. trials done / total) kept current: a tqdm bar on a terminal,
    a log line per update otherwise (updates are rare: one per finished trial)."""

    def __init__(self, total: int | None, desc: str, unit: str = "trial") -> None:
        self.total, self.desc = total, desc
        self._bar = None
        if is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                             dynamic_ncols=True, leave=True)  # fmt: skip

    def update(self, done: int, status: str) -> None:
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix_str(status, refresh=True)
        else:
            total = "?" if self.total is None else self.total
            log.info("%s: %d/%s %s", self.desc, done, total, status)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
