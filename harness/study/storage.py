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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from harness.errors import ConfigError
from harness.preflight import CONNECT_TIMEOUT_S, check_folder, check_reachable, folder_lock
from harness.tracking import mask_secrets

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

__all__ = ["StorageSpec", "find_storage", "resolve_storage"]

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
            from optuna.storages.journal import JournalFileBackend

            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(self.url))
        kwargs: dict[str, Any] = {}
        if heartbeat_s:
            kwargs.update(
                heartbeat_interval=int(heartbeat_s), heartbeat_stale_trial_callback=on_stale
            )
        engine: dict[str, Any] = {"pool_pre_ping": True}
        lock: Any = contextlib.nullcontext()
        if self.kind == "sqlite":
            # several workers write one file: wait for the lock instead of failing at once
            engine["connect_args"] = {"timeout": 60}
            path = self.url.split(":///", 1)[-1]
            if path and path != ":memory:":  # a concurrent creator waits, then finds the tables
                lock = folder_lock(Path(path).expanduser().resolve().parent)
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
