"""The many-machine set-up for real on loopback: Optuna on PostgreSQL plus `mlflow server` with a
PostgreSQL backend store and a served artifact root. Two `prunebench study` processes with their
own outputs folders (two "machines") are launcher jobs 0 and 1 of ONE study: exactly the
requested trials, no duplicates, one parent run with a child per trial, pareto tags and
artifacts intact, and the password in the storage URL appears in no log, file, param or tag."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pw-17"  # trust auth accepts it; it must never be written anywhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


@pytest.fixture
def mlflow_server(postgres_url, tmp_path):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mlflow_store")
        conn.execute("CREATE DATABASE mlflow_store")
    backend = postgres_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 - closed at teardown
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"{backend}/mlflow_store",
           "--artifacts-destination", str(tmp_path / "server-artifacts")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                tail = (tmp_path / "mlflow-server.log").read_text()[-3000:]
                pytest.fail(f"mlflow server did not start:\n{tail}")
            time.sleep(1.0)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_machines_share_one_study_and_one_tracking_server(tmp_path, postgres_url,
                                                             mlflow_server):  # fmt: skip
    storage = _with_password(postgres_url)
    # trials long enough (6 fine-tuning epochs) that machine 0 cannot finish the budget before
    # machine 1, which trains its own baseline first, joins; a study name of its own, since the
    # session's PostgreSQL holds other tests' studies
    args = ["data=digits", "model=resnet20", "train.epochs=1", "finetune.epochs=6",
            "measure.latency=false", "study.n_startup_trials=1", "study.target.low=0.3",
            "method=random", "study.n_trials=4", f"study.storage={storage}",
            f"tracking.uri={mlflow_server}", "study.heartbeat_s=10",
            "study.name=two-machines"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    machines = []
    for job in (0, 1):
        out = tmp_path / f"machine{job}"
        out.mkdir()
        machines.append((out, subprocess.Popen(
            [sys.executable, "-m", "harness.cli.main", "study", *args, f"outputs={out}",
             f"study.job={job}"],
            stdout=open(out / "stdout.txt", "w"), stderr=open(out / "stderr.txt", "w"),  # noqa: SIM115
            env=env, cwd=tmp_path,
        )))  # fmt: skip
    for out, proc in machines:
        assert proc.wait(timeout=1500) == 0, (out / "stderr.txt").read_text()[-3000:]
    summaries = [json.loads((out / "stdout.txt").read_text()) for out, _ in machines]
    name = summaries[0]["study_name"]
    assert {s["study_name"] for s in summaries} == {name}
    study = optuna.load_study(study_name=name, storage=postgres_url.replace(
        "postgresql://", "postgresql+psycopg://"))  # fmt: skip
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) == 4  # exactly the budget, over both machines
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4
    owners = {t.user_attrs["owner"].rsplit(":", 2)[1] for t in done}
    assert len(owners) == 2, "both machines ran trials"

    client = MlflowClient(mlflow_server)
    assert {s["parent_run_id"] for s in summaries} == {summaries[0]["parent_run_id"]}
    parent = client.get_run(summaries[0]["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    by_id = {r.info.run_id: r for r in children}
    front = {t.number for t in study.best_trials}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["pareto"] == ("true" if t.number in front else "false")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served, not a local path
        assert client.list_artifacts(run.info.run_id), "the trial's artifacts reached the server"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "study")}

    # the password: in no log, no output file, no MLflow param/tag, no served artifact
    for out, _ in machines:
        for path in out.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert PASSWORD.encode() not in path.read_bytes(), path
    for path in (tmp_path / "server-artifacts").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    for run in [parent, *children]:
        assert PASSWORD not in json.dumps({**run.data.params, **run.data.tags})
