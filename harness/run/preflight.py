"""Checks that run before any training, so a bad setting fails in seconds with one line instead
of after the baseline has trained (or after minutes of a library's retries).

- budgets: no negative epochs / steps (a negative `train.epochs` would cache an untrained
  baseline under a new key);
- folders: `outputs` and `cache_dir` are (or can become) writable folders;
- the MLflow tracking store: a known URI scheme, reachable within `CONNECT_TIMEOUT_S`, and
  answering a real request (SQLite stores are created here, under a lock, so two processes
  starting on a new outputs folder do not both create the tables).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError
from harness.runtime.secrets import mask_secrets

__all__ = [
    "CONNECT_TIMEOUT_S",
    "check_budgets",
    "check_folder",
    "check_settings",
    "check_tracking",
    "folder_lock",
    "preflight",
]

#: how long a tracking or study server may take to accept a connection
CONNECT_TIMEOUT_S = 5.0
#: how long a start waits, retrying, for a local store another process keeps locked
START_LOCK_WAIT_S = 30.0
#: MLflow tracking URI schemes (a database driver may follow a `+`)
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
_TRACKING_FIX = (
    "use sqlite:///<file>.db, postgresql://<user>@<host>/<db>, http(s)://<server> or "
    "tracking.uri=null for <outputs>/mlflow.db"
)


def preflight(cfg: DictConfig) -> None:
    """Everything a run or study checks before it trains (see the module doc)."""
    check_budgets(cfg)
    check_folder("outputs", cfg.outputs)
    check_folder("cache_dir", cfg.cache_dir)
    if cfg.tracking.enabled:
        from harness.tracking import default_tracking_uri

        check_tracking(cfg.tracking.uri or default_tracking_uri(cfg.outputs))


# ---------------------------------------------------------------------------- budgets
def _is_budget(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return (
        last == "epochs"
        or last.endswith(("_epochs", "_steps", "per_epoch"))
        or last
        in (
            "steps",
            "finetune_between",
        )
    )


def check_budgets(cfg: DictConfig) -> None:
    """Every epoch / step budget in the config is a whole number ≥ 0 (`prune.steps` ≥ 1 and at
    most `MAX_PRUNE_STEPS`: a huge count runs for hours without a word)."""
    from harness.tracking import flatten

    tree = OmegaConf.to_container(cfg, resolve=True)
    for key, value in flatten(tree).items():
        if not _is_budget(key) or isinstance(value, bool) or value is None:
            continue
        if not _whole(value):
            raise ConfigError(f"{key}={value!r} is not a whole number; budgets count epochs/steps")
        low = 1 if key == "prune.steps" else 0
        if value < low:
            raise ConfigError(f"{key}={value} is negative; budgets must be ≥ {low}: set {key}=")
        if key == "prune.steps" and value > MAX_PRUNE_STEPS:
            raise ConfigError(
                f"prune.steps={value} is more than {MAX_PRUNE_STEPS} pruning steps; "
                "a few (1–20) reach the target"
            )


#: a progressive schedule with more steps than this is a typo, not a plan
MAX_PRUNE_STEPS = 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(cfg: DictConfig) -> None:
    """The top-level values every command reads, checked right after the config composes (one
    line each, before any logging, data or training): seed, log level, device, batch sizes,
    class count, input shape and budgets."""
    seed = cfg.get("seed")
    if not _whole(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r}; give a whole number from 0 to 2**32-1")
    level = cfg.get("log_level", "INFO")
    if str(level) not in LOG_LEVELS:
        raise ConfigError(f"log_level={level!r}; known: {', '.join(LOG_LEVELS)}")
    device = str(cfg.get("device", "auto"))
    if not (device in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", device)):
        raise ConfigError(f"device={device!r}; known: auto, cpu, cuda, cuda:N, mps")
    for key in ("task.batch_size", "task.eval_batch_size", "train.batch_size"):
        value = OmegaConf.select(cfg, key)
        if value is not None and (not _whole(value) or value < 1):
            raise ConfigError(f"{key}={value!r}; give a whole number ≥ 1")
    classes = OmegaConf.select(cfg, "data.num_classes")
    if classes is not None and (not _whole(classes) or classes < 1):
        raise ConfigError(f"data.num_classes={classes!r}; give a whole number ≥ 1")
    shape = OmegaConf.select(cfg, "data.shape")
    if shape is not None:
        dims = list(shape) if OmegaConf.is_list(shape) else [shape]
        if not dims or not all(_whole(d) and d >= 1 for d in dims):
            raise ConfigError(
                f"data.shape={OmegaConf.to_container(shape) if OmegaConf.is_list(shape) else shape}"
                "; give positive whole numbers, e.g. [3,32,32] (channels, height, width)"
            )
    check_budgets(cfg)


# ---------------------------------------------------------------------------- folders
def check_folder(key: str, path: str | Path) -> Path:
    """`path` exists as a writable folder afterwards, or ConfigError names what is in the way."""
    path = Path(path).expanduser()
    fix = f"set {key}= to a writable folder"
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{key}={path}: {parent} is a file, not a folder; {fix}")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".prunebench-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={path} is not writable ({e.strerror or e}); {fix}") from e
    return path


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """An exclusive lock on a folder (flock on its descriptor; nothing is left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------------- tracking store
def _scheme(uri: str) -> str:
    return urlsplit(uri).scheme.split("+", 1)[0].lower()


def _host_port(uri: str) -> tuple[str | None, int | None]:
    """Host and port as the client will read them (SQLAlchemy's parser for databases: it
    accepts a `/` in the password, which `urlsplit` takes for the start of the path)."""
    if _scheme(uri) in ("http", "https"):
        parts = urlsplit(uri)
        return parts.hostname, parts.port
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    return url.host, url.port


def check_reachable(what: str, uri: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to the URI's host and port opens within `timeout` seconds."""
    try:
        host, port = _host_port(uri)
    except Exception as e:  # noqa: BLE001 - an unparsable URL; its text may hold the password
        raise ConfigError(
            f"{what}={mask_secrets(uri)} is not a valid URL ({type(e).__name__}); fix {what}"
        ) from e
    if not host:
        return  # a local socket or a default host: the driver's own check follows
    port = port or _DEFAULT_PORTS.get(_scheme(uri))
    if port is None:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError(
            f"cannot reach {what}={mask_secrets(uri)} ({host}:{port}: {reason} within "
            f"{timeout:g} s); start the server or fix {what}"
        ) from e


def check_tracking(uri: str) -> None:
    """The MLflow store at `uri` is usable now; SQLite stores are created here, under a lock."""
    scheme = _scheme(uri)
    if scheme not in TRACKING_SCHEMES:
        what = f"unknown scheme '{scheme}'" if scheme else "not a URI"
        raise ConfigError(f"tracking.uri={mask_secrets(uri)}: {what}; {_TRACKING_FIX}")
    if scheme == "file":
        check_folder("tracking.uri", urlsplit(uri).path)
        return
    if scheme == "sqlite":
        db = uri.split(":///", 1)[-1]
        if not db or db == ":memory:" or "://" in db:
            raise ConfigError(f"tracking.uri={uri} names no file; {_TRACKING_FIX}")
        folder = check_folder("tracking.uri", Path(db).expanduser().resolve().parent)
        with folder_lock(folder):
            _ask_store(uri)
        return
    check_reachable("tracking.uri", uri)
    _ask_store(uri)


def _ask_store(uri: str) -> None:
    """One real request (this creates a new SQLite store), with few and short HTTP retries."""
    for var, value in _HTTP_LIMITS.items():
        os.environ.setdefault(var, value)
    from harness.runtime.retry import is_locked, retry_locked
    from harness.tracking import mlflow_client

    try:  # a store another process holds locked, or is creating, a moment is waited for
        retry_locked(
            mlflow_client(uri).search_experiments, max_results=1, wait_s=START_LOCK_WAIT_S,
            busy=_locked_or_created_elsewhere(),
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - MLflow and its drivers raise many kinds
        text = str(e).strip().splitlines()
        reason = mask_secrets(text[0] if text else type(e).__name__)[:300]
        if is_locked(e):
            raise ConfigError(
                f"tracking store tracking.uri={mask_secrets(uri)} is locked by another process "
                f"(waited {START_LOCK_WAIT_S:g} s and more): close what holds it (a sqlite3 "
                "shell, a backup, a hung prunebench) and rerun"
            ) from e
        raise ConfigError(
            f"tracking store tracking.uri={mask_secrets(uri)} does not answer "
            f"({type(e).__name__}: {reason}); start it, fix tracking.uri or set it to null"
        ) from e


def _locked_or_created_elsewhere() -> Callable[[BaseException], bool]:
    """`retry_locked`'s `busy` for a store's first request: locked, or being created by another
    process at the same moment.

    MLflow's SQL store creates its tables and then migrates them, unlocked; a second process
    that opens the store meanwhile (an `mlflow ui`, a script reading runs, a run started without
    PruneBench's folder lock) finds some tables missing, migrates too and fails on "table …
    already exists", or finds the schema a revision behind. Both pass once the first process is
    done; an out-of-date schema seen without such a race is a real error, raised at once.
    """
    from harness.runtime.retry import is_locked

    racing = False

    def busy(error: BaseException) -> bool:
        nonlocal racing
        text = str(error).lower()
        racing = racing or "already exists" in text
        return is_locked(error) or (racing and ("already exists" in text or "out-of-date" in text))

    return busy


#: MLflow's HTTP client otherwise retries a dead server for minutes
_HTTP_LIMITS: Mapping[str, Any] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
