"""Concurrency and crash leftovers: two studies creating one new SQLite file, temp files of
killed writes, MLflow runs of dead processes, and temp names no two writers share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness.runtime.atomic import atomic_write, clean_stale_temps, temp_path
from harness.runtime.processes import process_token
from tests.faults.conftest import REPO, TINY, TINY_STUDY, TINYCLI, Spawned, spawned_runs


def _dead_token() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return process_token(proc.pid).replace(":?", ":1")  # a finished pid (start time unknown)


def test_stale_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "resnet20-digits-s0-abc.pt"
    host, pid, _ = _dead_token().split(":")
    dead = tmp_path / f".{target.name}.tmp.{host}:{pid}:1.0123abcd"
    live = temp_path(target)
    legacy_old = tmp_path / f".{target.name}.k3j4h5g6"  # tempfile.mkstemp's name, before
    legacy_new = tmp_path / f".{target.name}.a1b2c3d4"
    for p in (dead, live, legacy_old, legacy_new):
        p.write_bytes(b"")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    assert set(clean_stale_temps(tmp_path)) == {dead, legacy_old}
    assert live.exists() and legacy_new.exists()


def test_temp_names_are_unique_per_write_and_never_outlive_a_failed_write(tmp_path):
    target = tmp_path / "dhp_search.pt"
    assert temp_path(target) != temp_path(target)  # two searches on one checkpoint_dir

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fail)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["dhp_search.pt"]


@pytest.mark.slow
def test_dhp_search_checkpoints_leave_no_temp_files(run_main, tmp_path):
    ckpt = tmp_path / "ckpt"
    r = run_main(
        "run", *TINY, f"outputs={tmp_path}/o", "method=dhp", "method.epochs=2",
        f"method.checkpoint_dir={ckpt}", "tracking.enabled=false",
    )  # fmt: skip
    assert r.code == 0, r.stderr[-2000:]
    assert [p.name for p in ckpt.iterdir()] == ["dhp_search.pt"]


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_the_next_run_does_not_clean(run_main, tmp_path):
    # (eager training: the probe is about the kill, not the compiler)
    proc = Spawned("run", *TINY, f"outputs={tmp_path}", "finetune.epochs=100000", "compile=false",
                   logs=tmp_path / "logs")  # fmt: skip

    def running_run():
        runs = spawned_runs(tmp_path)
        return runs[0] if runs and runs[0].info.status == "RUNNING" else None

    try:
        victim = proc.wait_for(running_run)
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
    cache = tmp_path / "cache" / "baselines"
    cache.mkdir(parents=True, exist_ok=True)  # the kill may have come before the baseline
    host, pid, _ = _dead_token().split(":")
    stale = cache / f".test_resnet-digits-s0-0.pt.tmp.{host}:{pid}:1.deadbeef"
    stale.write_bytes(b"")  # what a write killed mid-way leaves
    assert client.get_run(victim.info.run_id).info.status == "RUNNING"

    r = run_main("run", *TINY, f"outputs={tmp_path}")
    assert r.code == 0, r.stderr[-2000:]
    killed = client.get_run(victim.info.run_id)
    assert killed.info.status == "KILLED" and "died" in killed.data.tags["error"]
    assert not stale.exists()


@pytest.mark.slow
def test_two_studies_started_together_on_a_new_sqlite_file_both_work(tmp_path):
    storage = f"study.storage=sqlite:///{tmp_path}/new/optuna.db"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(TINYCLI),
                "study",
                *TINY_STUDY,
                f"outputs={tmp_path}",
                storage,
                f"method={method}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )  # fmt: skip
        for method in ("l1", "random")
    ]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out)["n_complete"] == 1
