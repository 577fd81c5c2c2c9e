"""Where a study lives: SQLite (one machine, the default), a Journal file (several worker
processes on one machine) or PostgreSQL (many machines).

`study.storage` accepts `sqlite:///path.db`, `journal:///path.journal` (or plain `journal` for
`<outputs>/optuna.journal`) and `postgresql://user@host/db`. Relational storages (SQLite and
PostgreSQL) run with a heartbeat, so a trial whose worker died is failed after the grace period
and retried; the study runner also fails RUNNING trials whose process on this host is gone
(harness/study/recovery.py), which covers the Journal file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from harness.errors import ConfigError
from harness.run.preflight import (
    CONNECT_TIMEOUT_S,
    START_LOCK_WAIT_S,
    check_folder,
    check_reachable,
    folder_lock,
)
from harness.runtime.retry import LOCK_WAIT_S
from harness.tracking import mask_secrets

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

__all__ = ["StorageSpec", "find_storage", "repair_journal_tail", "resolve_storage"]

log = logging.getLogger(__name__)

SCHEMES = ("sqlite", "journal", "postgresql")


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: its kind and URL (or file path, for the Journal)."""

    kind: str  # sqlite | journal | postgresql
    url: str

    @property
    def masked(self) -> str:
        """The form to print and log: credentials masked; `study.storage=` accepts it back."""
        return f"journal://{self.url}" if self.kind == "journal" else mask_secrets(self.url)

    @property
    def is_relational(self) -> bool:
        return self.kind in ("sqlite", "postgresql")

    def open(
        self,
        *,
        heartbeat_s: int | None = None,
        on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    ) -> optuna.storages.BaseStorage:
        """The Optuna storage object; creates SQLite tables / the journal file on first use."""
        import optuna

        if self.kind == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            lock = JournalFileSymlinkLock(self.url)  # the lock Optuna appends under
            lock.acquire()
            try:
                repair_journal_tail(Path(self.url))
            finally:
                lock.release()
            try:
                return optuna.storages.JournalStorage(JournalFileBackend(self.url, lock))
            except ValueError as e:  # a damaged line inside the journal: Optuna cannot replay it
                raise ConfigError(
                    f"study journal {self.url} is damaged ({e}); restore it from a copy or start "
                    "a new one (move it away)"
                ) from e
        kwargs: dict[str, Any] = {}
        if heartbeat_s:
            kwargs.update(
                heartbeat_interval=int(heartbeat_s), heartbeat_stale_trial_callback=on_stale
            )
        engine: dict[str, Any] = {"pool_pre_ping": True}
        lock: Any = contextlib.nullcontext()
        if self.kind == "sqlite":
            # several workers write one file, and a backup or sqlite3 shell may hold it a while:
            # wait for the lock (SQLite retries with backoff) instead of losing a trial's result
            engine["connect_args"] = {"timeout": LOCK_WAIT_S}
            path = self.url.split(":///", 1)[-1]
            if path and path != ":memory:":  # a concurrent creator waits, then finds the tables
                lock = folder_lock(Path(path).expanduser().resolve().parent)
                check_not_locked(Path(path).expanduser())
        else:
            check_reachable("study.storage", self.url)
            engine["connect_args"] = {"connect_timeout": int(CONNECT_TIMEOUT_S)}
        try:
            with lock, warnings.catch_warnings():  # heartbeat_interval is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(self.url, engine_kwargs=engine, **kwargs)
        except Exception as e:  # sqlalchemy's errors: bad host, refused connection, no driver
            reason = mask_secrets(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
            raise ConfigError(
                f"cannot open study storage {self.masked}: {reason}; check study.storage "
                "(host, port, user, password, database) and that the server runs"
            ) from e


def check_not_locked(path: Path, wait_s: float | None = None) -> None:
    """Refuse, in one line, a local SQLite store that another process keeps locked at start
    (waiting `wait_s` first): a lock is not a host, port or password problem."""
    import sqlite3

    if not path.is_file():
        return
    wait_s = START_LOCK_WAIT_S if wait_s is None else wait_s  # read now: tests shorten it
    try:
        con = sqlite3.connect(str(path), timeout=wait_s)
        try:
            con.execute("BEGIN IMMEDIATE")  # the write lock a study needs
            con.rollback()
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "locked" not in str(e) and "busy" not in str(e):
            return  # not a lock: RDBStorage reports it
        raise ConfigError(
            f"study storage {path} is locked by another process (waited {wait_s:g} s): close "
            "what holds it (a sqlite3 shell, a backup, a hung prunebench) and rerun"
        ) from e


def repair_journal_tail(path: Path) -> int:
    """Cut a torn last line off an Optuna journal (a writer died mid-append: the line has no
    newline) so that appending after it does not make the whole journal unreadable; the torn
    bytes are kept beside it. Call under the journal's lock. Returns the bytes cut."""
    if not path.is_file():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        keep, chunk = size, 1 << 16
        while keep > 0:  # back to the last newline
            start = max(0, keep - chunk)
            f.seek(start)
            block = f.read(keep - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            keep = start
        f.seek(keep)
        torn = f.read()
        kept = path.with_name(f"{path.name}.torn-{int(time.time())}")
        kept.write_bytes(torn)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("study journal %s ended in a torn line (%d bytes, a writer died mid-append); "
                "cut it off, kept in %s", path, len(torn), kept)  # fmt: skip
    return len(torn)


def resolve_storage(spec: str | None, *, outputs: str | Path, workers: int) -> StorageSpec:
    """`study.storage` → StorageSpec. Null means SQLite at `<outputs>/optuna.db` for one worker
    and a Journal file at `<outputs>/optuna.journal` for several (SQLite locks under load)."""
    outputs = Path(outputs).resolve()
    if spec in (None, ""):
        if workers > 1:
            return StorageSpec("journal", str(outputs / "optuna.journal"))
        return StorageSpec("sqlite", f"sqlite:///{outputs / 'optuna.db'}")
    spec = str(spec)
    if spec == "journal":
        return StorageSpec("journal", str(outputs / "optuna.journal"))
    scheme = urlsplit(spec).scheme
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        path = spec.split(":///", 1)[-1]
        if path and path != ":memory:":
            check_folder("study.storage", Path(path).expanduser().resolve().parent)
        return StorageSpec("sqlite", spec)
    if base == "journal":
        path = spec.split("://", 1)[1]
        if not path:
            raise ConfigError(f"study.storage={spec} names no file; e.g. journal:///tmp/s.journal")
        path = Path(path).expanduser().resolve()
        check_folder("study.storage", path.parent)
        return StorageSpec("journal", str(path))
    if base in ("postgresql", "postgres"):
        return StorageSpec("postgresql", _postgres_url(spec))
    raise ConfigError(
        f"unknown storage scheme '{scheme or spec}' in study.storage={mask_secrets(spec)}; known: "
        "sqlite:///<file>.db, journal:///<file>.journal (or journal), postgresql://<user>@<host>/<db>"
    )


def find_storage(
    spec: str | None, *, outputs: str | Path, workers: int, study_name: str
) -> StorageSpec:
    """The configured storage; with none configured, the default store already holding
    `study_name` wins (a study started with one worker resumes with several, and back)."""
    import optuna

    if spec:
        return resolve_storage(spec, outputs=outputs, workers=workers)
    wanted = resolve_storage(None, outputs=outputs, workers=workers)
    for n in (1, 2):
        other = resolve_storage(None, outputs=outputs, workers=n)
        path = other.url.split(":///", 1)[-1]
        if other == wanted or not os.path.exists(path):
            continue
        try:
            names = {s.study_name for s in optuna.get_all_study_summaries(other.open())}
        except Exception:  # noqa: BLE001 - an unreadable default store is not ours to fix here
            continue
        if study_name in names:
            log.info("study %s found in %s; resuming there", study_name, other.masked)
            return other
    return wanted


def _postgres_url(url: str) -> str:
    """Pick the installed driver: psycopg (3) from the `postgres` extra, else psycopg2."""
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    try:
        import psycopg  # noqa: F401

        return f"postgresql+psycopg://{rest}"
    except ImportError:
        pass
    try:
        import psycopg2  # noqa: F401

        return f"postgresql://{rest}"
    except ImportError as e:
        raise ConfigError(
            "a PostgreSQL study storage needs a driver: pip install 'prunebench[postgres]'"
        ) from e
