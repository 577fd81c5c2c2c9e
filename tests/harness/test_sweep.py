"""Grids of studies through real launchers: joblib (parallel jobs on this machine), submitit_local
(two launcher jobs as two workers of ONE study) and submitit_slurm against a real one-node Slurm
(tests/slurm_cluster.py; a measure grid here). Budgets are tiny (1 epoch, 1-2 trials); the
acceptance-size grid (4 studies × 3 trials) through every launcher, the Slurm one included, is
benchmarks/launch_grid.py."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.cli.main import main

TINY = [
    "data=digits", "model=resnet20", "train.epochs=1", "finetune.epochs=1",
    "measure.latency=false", "study.n_startup_trials=1", "study.target.low=0.3",
]  # fmt: skip


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


def parents(outputs: Path) -> list:
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("prunebench")
    return client.search_runs([exp.experiment_id], filter_string="tags.kind = 'study'")


def studies(storage: str) -> dict[str, optuna.Study]:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return {n: optuna.load_study(study_name=n, storage=storage) for n in names}


def done(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


@pytest.mark.slow
def test_joblib_grid_of_studies_then_compare_over_seeds(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = ["study", "-m", "method=l1,random", "seed=0,1", "study.n_trials=1", *TINY,
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "outputs=out"]  # fmt: skip
    assert main(grid) == 0
    jobs = lines(capsys.readouterr().out)
    assert len(jobs) == 4 and all("error" not in j for j in jobs)
    out = tmp_path / "out"
    found = studies(f"sqlite:///{out / 'optuna.db'}")
    assert sorted(found) == sorted(j["study_name"] for j in jobs)
    assert all(len(done(s)) == 1 for s in found.values())
    assert len(parents(out)) == 4
    assert main(["compare", "compare.sweep=latest", "outputs=out"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["studies"]) == sorted(found)
    md = Path(report["table_md"]).read_text()
    assert "±" in md and "seeds [0, 1]" in md


@pytest.mark.slow
def test_two_submitit_jobs_are_two_workers_of_one_study(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = ["study", "-m", "method=random", "study.job=0,1", "study.n_trials=2",
            "study.storage=journal", *TINY, "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=20", "outputs=out"]  # fmt: skip
    assert main(grid) == 0
    jobs = lines(capsys.readouterr().out)
    assert len(jobs) == 2 and {j["study_name"] for j in jobs} == {jobs[0]["study_name"]}
    from harness.study.storage import resolve_storage

    spec = resolve_storage("journal", outputs=str(tmp_path / "out"), workers=1)
    study = optuna.load_study(study_name=jobs[0]["study_name"], storage=spec.open())
    finished = done(study)
    assert len(finished) == 2  # exactly the budget over both jobs
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 2
    assert {j["parent_run_id"] for j in jobs} == {jobs[0]["parent_run_id"]}  # one parent run
    assert len(parents(tmp_path / "out")) == 1


@pytest.mark.slurm
def test_measure_sweep_through_slurm_prints_one_json_line_per_job(
    tmp_path, capsys, monkeypatch, slurm_cluster
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    args = ["measure", "-m", "model=resnet20,resnet56", "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=1",
            "hydra.launcher.cpus_per_task=1", "outputs=out"]  # fmt: skip
    assert main(args) == 0
    jobs = lines(capsys.readouterr().out)  # submitit's own log lines must not reach stdout
    assert sorted(j["model"] for j in jobs) == ["resnet20", "resnet56"]
    assert slurm_cluster.startup_s < 60
