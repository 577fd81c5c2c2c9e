"""Store faults lose no finished work: a torn journal tail is cut off (and kept) before anything is
appended, a damaged journal is refused in one line, a locked store is waited for with backoff,
and a run whose store fails is marked FAILED with one line."""

from __future__ import annotations

import optuna
import pytest

from harness.errors import ConfigError
from harness.study.storage import StorageSpec


def _journal_with_trials(path, n: int) -> None:
    storage = StorageSpec("journal", str(path)).open()
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)


def test_a_torn_journal_tail_is_cut_off_before_appending(tmp_path):
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path, 2)
    whole = path.read_bytes()
    with open(path, "ab") as f:  # a writer killed mid-append
        f.write(b'{"op_code":6,"worker_id":"w","trial_id":1,"sta')
    storage = StorageSpec("journal", str(path)).open()
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # appends after the repair
    fresh = StorageSpec("journal", str(path)).open()  # readable for good, by Optuna too
    trials = optuna.load_study(study_name="s", storage=fresh).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert path.read_bytes().startswith(whole)
    (kept,) = tmp_path.glob("optuna.journal.torn-*")
    assert kept.read_bytes().startswith(b'{"op_code":6')


def test_a_damaged_journal_is_refused_in_one_line(tmp_path):
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path, 1)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[0], b"{not json\n", *lines[1:]]))
    with pytest.raises(ConfigError, match="is damaged") as e:
        StorageSpec("journal", str(path)).open()
    assert "\n" not in str(e.value)


def test_a_locked_store_is_retried_with_backoff_and_other_errors_are_not():
    from harness.runtime.retry import retry_locked

    calls, slept = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "stored"

    assert retry_locked(flaky, sleep=slept.append) == "stored"
    assert slept == [0.5, 1.0]  # backoff
    slept.clear()
    with pytest.raises(RuntimeError, match="locked"):  # gives up after its wait
        retry_locked(_locked, wait_s=3, sleep=slept.append)
    assert slept == [0.5, 1.0, 2.0]

    def other():
        calls.append(1)
        raise ValueError("no such table")

    calls.clear()
    with pytest.raises(ValueError):
        retry_locked(other, sleep=slept.append)
    assert len(calls) == 1


def _locked():
    raise RuntimeError("database is locked")


class _StoreCreatedElsewhere:
    """An MLflow client whose store another process is creating: its first answers are what
    MLflow raises meanwhile, the last one is the store's."""

    def __init__(self, errors: list[str]) -> None:
        self.errors, self.calls = list(errors), 0

    def search_experiments(self, max_results: int):
        self.calls += 1
        if self.errors:
            raise RuntimeError(self.errors.pop(0))
        return []


@pytest.mark.parametrize(
    ("errors", "outcome"),
    [
        # the other process's migration is midway, then one revision behind, then done
        (["(sqlite3.OperationalError) table sql_trace_metric_daily_rollups already exists",
          "Detected out-of-date database schema (found version a, but expected b)"], "ok"),
        # an old store that nobody is creating is refused at once
        (["Detected out-of-date database schema (found version a, but expected b)"], "refused"),
    ],
)  # fmt: skip
def test_a_tracking_store_created_by_another_process_at_the_same_time_is_waited_for(
    tmp_path, monkeypatch, errors, outcome
):
    from harness.run import preflight
    from harness.runtime import retry

    client, slept = _StoreCreatedElsewhere(errors), []
    monkeypatch.setattr("harness.tracking.mlflow_client", lambda uri: client)
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    if outcome == "ok":
        preflight.check_tracking(uri)
        assert client.calls == 3 and slept == [0.5, 1.0]
    else:
        with pytest.raises(ConfigError, match="does not answer .*out-of-date"):
            preflight.check_tracking(uri)
        assert client.calls == 1 and slept == []


def test_a_sqlite_study_store_locked_at_start_is_one_line_naming_the_lock(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.setattr("harness.study.storage.START_LOCK_WAIT_S", 0.5)
    path = tmp_path / "optuna.db"
    holder = sqlite3.connect(str(path))
    holder.execute("CREATE TABLE t (x)")
    holder.commit()
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ConfigError, match="is locked by another process") as e:
            StorageSpec("sqlite", f"sqlite:///{path}").open()
    finally:
        holder.rollback()
        holder.close()
    assert "host" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow  # a fresh MLflow store: ~10 s on a shared machine
def test_a_failed_artifact_copy_leaves_no_truncated_file_and_fails_the_run(tmp_path, monkeypatch):
    from pathlib import Path
    from urllib.parse import unquote, urlsplit

    from mlflow.tracking import MlflowClient

    from harness.errors import StoreError
    from harness.tracking import Tracker

    src = tmp_path / "run"
    src.mkdir()
    (src / "model.pt").write_bytes(b"x" * 1000)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(StoreError, match="partial copy was removed"):
        with Tracker(uri, "e", outputs=tmp_path) as tracker:
            client = tracker._client._target
            dest = Path(unquote(urlsplit(client.get_run(tracker.run_id).info.artifact_uri).path))

            def disk_full(run_id, local_dir, artifact_path=None):
                (dest / artifact_path).mkdir(parents=True)
                (dest / artifact_path / "model.pt").write_bytes(b"x" * 397)  # torn copy
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(client, "log_artifacts", disk_full)
            tracker.log_artifacts(src, "pruned")
    assert not (dest / "pruned").exists()
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FAILED"


def test_a_study_store_that_cannot_record_a_trial_is_one_line(tmp_path):
    import sqlite3

    from harness.errors import StoreError
    from harness.study.workers import _optimize_one

    spec = StorageSpec("sqlite", "sqlite:///u:pw@nowhere/optuna.db")

    class Study:
        def optimize(self, *args, **kwargs):
            try:
                raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError as e:
                raise optuna.exceptions.StorageInternalError("An exception is raised") from e

    with pytest.raises(StoreError, match="database is locked") as e:
        _optimize_one(Study(), None, [], spec)
    assert "rerun the study" in str(e.value) and "\n" not in str(e.value)


def test_mlflow_lock_tracebacks_are_dropped_while_the_retry_says_it_waits(caplog):
    import logging

    from harness.runtime.retry import quiet_lock_reports

    quiet_lock_reports()
    logger = logging.getLogger("mlflow.store.db.utils")
    try:
        raise RuntimeError("(sqlite3.OperationalError) database is locked")
    except RuntimeError:
        logger.exception("SQLAlchemy database error. The following exception is caught.")
    logger.error("(sqlite3.OperationalError) no such table: runs")
    assert "database is locked" not in caplog.text and "no such table" in caplog.text
