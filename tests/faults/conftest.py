"""Fault probes: helpers that run the real CLI in a subprocess on tiny models and budgets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.conftest import postgres_url  # noqa: F401  (the same throwaway server)

REPO = Path(__file__).resolve().parents[2]
TINYCLI = Path(__file__).with_name("tinycli.py")

#: a tiny classification run: 3.7 k-parameter net, 8×8 digits, no training unless asked
TINY = [
    "data=digits", "model.name=test_resnet", "~model.shortcut", "train.epochs=0",
    "finetune.epochs=0", "measure.latency=false",
]  # fmt: skip
#: a tiny study on top of TINY
TINY_STUDY = [*TINY, "method=random", "study.n_trials=1", "study.sampler=random", "study.seed=0"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """stderr lines that are not ordinary log lines (`HH:MM:SS LEVEL name: ...`)."""
        return [
            line
            for line in self.stderr.splitlines()
            if line.strip() and not (len(line) > 9 and line[2] == ":" and line[5] == ":")
        ]


def prunebench(*args: str, timeout: float = 900, env: dict | None = None) -> Result:
    """Run `prunebench <args>` (tiny models registered) and capture everything it prints."""
    proc = subprocess.run(
        [sys.executable, str(TINYCLI), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return prunebench


class Spawned:
    """`prunebench <args>` (tiny models registered) in the background, its output going to files:
    a pipe nobody reads fills up and stalls a long run, and a probe whose condition is never
    reached shows what the process printed."""

    def __init__(
        self, *args: str, logs: Path, prefix: tuple[str, ...] = (), env: dict | None = None
    ) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "stdout.txt", logs / "stderr.txt"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, str(TINYCLI), *args], stdout=out, stderr=err,
                cwd=REPO, env={**os.environ, **(env or {})},
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, predicate, timeout: float = 900.0):
        """`predicate()`'s first truthy value, polled while the process runs."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                found = predicate()
            except Exception:  # noqa: BLE001 - the stores may not exist yet
                found = None
            if found:
                return found
            time.sleep(0.5)
        self.kill()
        raise AssertionError(
            f"condition not reached (process exit code {self.proc.poll()}); its stderr ends:\n"
            + self.err_path.read_text()[-3000:]
        )

    def finish(self, timeout: float = 900.0) -> Result:
        """Wait for the process to end (killing it after `timeout`) and read what it printed."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
            self.proc.wait()
        return Result(self.proc.returncode, self.out_path.read_text(), self.err_path.read_text())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def spawned_runs(outputs: Path) -> list:
    """The MLflow runs a spawned `prunebench` keeps under `outputs`, [] before its store exists.

    The probe never creates the store itself: MLflow's table creation and migration are not
    locked, and two processes doing it at once fail. The run creates its store while holding a
    lock on `outputs`, so once the file is there, taking that lock waits for it to be done."""
    from mlflow.tracking import MlflowClient

    from harness.run.preflight import folder_lock

    db = Path(outputs) / "mlflow.db"
    if not db.exists():
        return []
    with folder_lock(outputs):
        pass
    client = MlflowClient(f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@dataclass
class InProcess:
    code: int
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture
def run_main(capsys):
    """`prunebench <args>` in this process (no interpreter start-up: most probes fail in
    milliseconds); process-wide hooks the CLI installs are put back afterwards."""
    import logging
    import signal
    import time

    from harness.cli.main import main

    saved = signal.getsignal(signal.SIGTERM), sys.excepthook

    def call(*args: str) -> InProcess:
        capsys.readouterr()
        t = time.perf_counter()
        code = main(list(args))
        out = capsys.readouterr()
        return InProcess(code, out.out, out.err, time.perf_counter() - t)

    yield call
    signal.signal(signal.SIGTERM, saved[0])
    sys.excepthook = saved[1]
    logging.captureWarnings(False)
