"""Exit codes tell the truth: a study that did not meet its budget or lost a worker exits with
its documented code (harness/exit_codes.py) and one line saying why, after the JSON line;
SIGTERM is handled like Ctrl-C (MLflow run KILLED, study resumable, exit 143)."""

from __future__ import annotations

import json
import os
import signal

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness import exit_codes
from harness.study import resolve_storage
from tests.faults.conftest import TINY, TINY_STUDY, Spawned, spawned_runs


def _study(outputs, workers: int = 1) -> optuna.Study:
    storage = resolve_storage(None, outputs=outputs, workers=workers).open()
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def _running_trial(outputs, workers: int = 1):
    running = _study(outputs, workers).get_trials(states=(TrialState.RUNNING,))
    return next((t for t in running if "mlflow_run_id" in t.user_attrs), None)


@pytest.mark.slow
def test_a_study_whose_trials_all_fail_exits_3_with_one_line_and_no_traceback(cli, tmp_path):
    r = cli(
        "study", *TINY_STUDY, f"outputs={tmp_path}", "study.n_trials=3", "study.max_failures=2",
        "finetune.epochs=1", "finetune.lr=100000.0", "~study.shared_space",
    )  # fmt: skip
    assert r.code == exit_codes.BUDGET_NOT_MET, r.stderr[-3000:]
    summary = json.loads(r.stdout)  # the JSON line still comes
    assert summary["n_complete"] == 0 and summary["exit_code"] == 3
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("prunebench: study: every trial failed") and "non-finite" in last
    assert len([ln for ln in r.stderr.splitlines() if "failed" in ln and "Trial" in ln]) == 0


@pytest.mark.slow
def test_a_study_that_lost_a_worker_exits_4_and_the_sibling_recovers_its_trial(tmp_path):
    args = [
        *TINY_STUDY, f"outputs={tmp_path}", "study.workers=2", "study.n_trials=3",
        "finetune.epochs=3",
    ]  # fmt: skip
    proc = Spawned("study", *args, logs=tmp_path / "logs")
    try:
        victim = proc.wait_for(lambda: _running_trial(tmp_path, workers=2))
        os.kill(int(victim.user_attrs["owner"].split(":")[1]), signal.SIGKILL)  # mid-trial
    finally:
        r = proc.finish()
    out, err = r.stdout, r.stderr
    assert r.code == exit_codes.WORKER_DIED, err[-3000:]
    summary = json.loads(out)
    assert summary["exit_code"] == 4 and "SIGKILL" in summary["exit_reason"]
    assert err.strip().splitlines()[-1].startswith("prunebench: study: 1 worker(s) died")
    dead = _study(tmp_path, workers=2).trials[victim.number]
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(dead.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"  # by the surviving worker, not at the next start


@pytest.mark.slow
def test_timeout_sigterm_on_a_run_leaves_its_mlflow_run_killed_and_exits_143(tmp_path):
    # `timeout -s TERM` passes a SIGTERM it receives on to the command, as it does when its time
    # is up; signalling it once the MLflow run exists keeps the test independent of machine load
    # (eager training: the probe is about the signal, not the compiler)
    proc = Spawned(
        "run", *TINY, f"outputs={tmp_path}", "finetune.epochs=100000", "compile=false",
        logs=tmp_path / "logs", prefix=("timeout", "--preserve-status", "-s", "TERM", "900"),
    )  # fmt: skip
    try:
        proc.wait_for(lambda: [r for r in spawned_runs(tmp_path) if r.info.status == "RUNNING"])
        proc.proc.send_signal(signal.SIGTERM)
    finally:
        r = proc.finish()
    out, err = r.stdout, r.stderr
    assert r.code == exit_codes.TERMINATED, err[-3000:]
    assert out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "prunebench: run terminated (SIGTERM)"
    runs = spawned_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "KILLED"


@pytest.mark.slow
def test_sigterm_on_a_study_leaves_it_resumable(cli, tmp_path):
    # the resume must keep the settings (the study's resume guard)
    args = [*TINY_STUDY, f"outputs={tmp_path}", "study.n_trials=2", "finetune.epochs=4"]
    # trial 0 hangs once pruned (tests/faults/tinycli.py), so the signal lands mid-trial
    proc = Spawned("study", *args, logs=tmp_path / "logs", env={"TINYCLI_HANG_AT_TRIAL": "0"})
    try:
        victim = proc.wait_for(lambda: _running_trial(tmp_path))
        proc.proc.send_signal(signal.SIGTERM)
    finally:
        r = proc.finish()
    assert r.code == exit_codes.TERMINATED and r.stdout == "", r.stderr[-3000:]
    trial = _study(tmp_path).trials[victim.number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True
    status = {r.info.run_id: r.info.status for r in spawned_runs(tmp_path)}
    assert victim.number == 0 and len(status) == 2  # the trial's run and the study's
    assert set(status.values()) == {"KILLED"}

    again = cli("study", *args)  # resumes: the interrupted trial is retried, with its values
    assert again.code == 0, again.stderr[-3000:]
    study = _study(tmp_path)
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == trial.params
    assert json.loads(again.stdout)["n_complete"] == 2


def test_an_interrupt_after_the_run_finished_kills_that_run_and_marks_the_trial(tmp_path):
    # the window between the pipeline's end (MLflow run FINISHED) and Optuna's record of the
    # trial: the stores must agree (run KILLED, trial FAIL + interrupted, retried on resume)
    from harness.config import compose
    from harness.study.objective import TrialObjective
    from harness.study.settings import StudySettings

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"))
    client.set_terminated(run.info.run_id, status="FINISHED")
    cfg = compose(["data=digits", "model=resnet20", "method=l1", f"outputs={tmp_path}"])
    objective = TrialObjective(cfg, StudySettings.from_cfg(cfg), None, uri)

    def finished_then_interrupted(trial):
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        raise KeyboardInterrupt

    objective._run_trial = finished_then_interrupted
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True
    assert client.get_run(run.info.run_id).info.status == "KILLED"
