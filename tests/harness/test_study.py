"""`prunebench study` / `compare` end to end on digits: budgets, resume, workers, dead workers,
failed trials, PostgreSQL, MLflow parent/child runs and pareto tags, and the config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.config import compose
from harness.errors import ConfigError
from harness.report.compare import run_compare
from harness.study import SearchSpace, resolve_storage, run_study

FAST = [
    "data=digits", "model=resnet20", "train.epochs=1", "finetune.epochs=1",
    "measure.latency=false", "study.n_startup_trials=2", "study.target.low=0.3",
]  # fmt: skip


def cfg_for(outputs: Path, *extra: str):
    return compose([*FAST, f"outputs={outputs}", *extra])


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def load(summary: dict) -> optuna.Study:
    storage = resolve_storage(summary["storage"], outputs=".", workers=1).open()
    return optuna.load_study(study_name=summary["study_name"], storage=storage)


def children(summary: dict) -> list:
    client = MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["parent_run_id"])
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'",
        max_results=1000,
    )


def assert_pareto_tags_match(summary: dict) -> None:
    study = load(summary)
    front = {t.number for t in study.best_trials}
    assert sorted(front) == summary["pareto"]
    runs = {r.info.run_id: r for r in children(summary)}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna_trial"] == str(t.number)
        assert run.data.tags["pareto"] == ("true" if t.number in front else "false"), t.number


@pytest.mark.slow
def test_study_budget_resume_pareto_tags_and_compare(tmp_path):
    first = run_study(
        cfg_for(tmp_path, "method=l1", "study.n_trials=6", "study.enqueue=[{target:0.35}]")
    )
    study = load(first)
    assert len(finished(study)) == 6 and first["n_complete"] + first["n_pruned"] == 6
    assert study.trials[0].user_attrs.get("paper_default") is True  # the defaults go first
    assert study.trials[0].params["target"] == 0.5
    assert study.trials[1].params["target"] == 0.35  # then study.enqueue, over the defaults
    assert study.trials[1].params["finetune.lr"] == study.trials[0].params["finetune.lr"]
    assert len(children(first)) == 6
    assert_pareto_tags_match(first)
    for key in ("study_name", "storage", "n_complete", "n_failed", "pareto", "parent_run_id",
                "tracking_uri"):  # fmt: skip
        assert key in first
    client = MlflowClient(first["tracking_uri"])
    parent = client.get_run(first["parent_run_id"])
    assert parent.data.tags["optuna_study"] == first["study_name"]
    assert study.user_attrs["mlflow_parent_run_id"] == first["parent_run_id"]
    arts = {a.path for a in client.list_artifacts(first["parent_run_id"], "study")}
    assert {"study/pareto_front.png", "study/pareto_front.html", "study/trials.json"} <= arts

    again = run_study(cfg_for(tmp_path, "method=l1", "study.n_trials=9"))
    assert len(finished(load(again))) == 9  # resumed to 9, not 6 + 9
    assert again["parent_run_id"] == first["parent_run_id"]
    assert len(children(again)) == 9
    assert_pareto_tags_match(again)

    run_study(cfg_for(tmp_path, "method=random", "study.n_trials=3"))
    report = run_compare(cfg_for(tmp_path, "compare.methods=[l1,random]", "compare.seeds=[0]"))
    # the hypervolume, recomputed by hand from the stored trials: validation front, test
    # quality, reference (1.0, chance accuracy 10 %)
    for method in ("l1", "random"):
        storage = resolve_storage(None, outputs=tmp_path, workers=1).open()
        st = optuna.load_study(
            study_name=f"classification-digits-resnet20-{method}-s0", storage=storage
        )
        done = [t for t in st.trials if t.state == TrialState.COMPLETE]
        assert done and all("cost_wall_s" in t.user_attrs for t in done)  # cost on every trial
        front = [t for t in done if not any(
            (o.user_attrs["macs_ratio"] <= t.user_attrs["macs_ratio"]
             and o.user_attrs["val_metric"] >= t.user_attrs["val_metric"])
            and (o.user_attrs["macs_ratio"], o.user_attrs["val_metric"])
            != (t.user_attrs["macs_ratio"], t.user_attrs["val_metric"]) for o in done)]  # fmt: skip
        pts = sorted((t.user_attrs["macs_ratio"], t.user_attrs["test_metric"]) for t in front)
        pts = [p for p in pts if p[1] > 10.0]  # points below the reference add nothing
        # the staircase under the test-quality front of those points, down to quality 10
        stair = sorted({p for p in pts if not any(
            o[0] <= p[0] and o[1] >= p[1] and o != p for o in pts)})  # fmt: skip
        area = sum((nxt - m) * (q - 10.0) for (m, q), nxt in
                   zip(stair, [p[0] for p in stair[1:]] + [1.0], strict=True))  # fmt: skip
        assert report["hypervolume"][method] == pytest.approx(area)
    md = Path(report["table_md"]).read_text()
    assert "| l1 " in md and "| random " in md and "Coverage" in md
    assert "paired t-test" in md and "- git: " in md and "- hardware: " in md
    summary = pd.read_csv(report["summary_csv"])
    assert pd.api.types.is_float_dtype(summary["q@0.5_mean"])
    assert summary["cost_wall_s"].gt(0).all() and summary["cost_baseline_wall_s"].gt(0).all()
    assert set(summary["seeds"]) == {1} and summary["prov_git_sha"].notna().all()
    assert pd.read_csv(report["points_csv"])["prov_command"].notna().all()


@pytest.mark.slow
def test_resume_with_other_trial_settings_is_refused_and_changes_nothing(tmp_path):
    run_study(cfg_for(tmp_path, "method=l1", "study.n_trials=1"))
    storage = resolve_storage(None, outputs=tmp_path, workers=1).open()
    name = "classification-digits-resnet20-l1-s0"
    before = optuna.load_study(study_name=name, storage=storage)
    trials, attrs = len(before.trials), dict(before.user_attrs)
    with pytest.raises(ConfigError) as e:
        run_study(cfg_for(tmp_path, "method=l1", "study.n_trials=2", "finetune.epochs=2",
                          "train.epochs=3"))  # fmt: skip
    msg = str(e.value)
    assert "\n" not in msg and "finetune.epochs=1→2" in msg and "train.epochs=1→3" in msg
    assert "lr" not in msg.split(":", 1)[1].split(";")[0]  # sampled values are not settings
    after = optuna.load_study(study_name=name, storage=storage)
    assert len(after.trials) == trials and dict(after.user_attrs) == attrs
    # the same settings resume; only the budget changes
    run_study(cfg_for(tmp_path, "method=l1", "study.n_trials=2"))


@pytest.mark.slow
def test_failed_trials_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path):
    # an lr of 1e5 makes the fine-tuning loss non-finite; 1e-2 trains normally. The configured
    # lr is 1e5, so the enqueued defaults (trial 0) fail for certain.
    lr = "study.shared_space.classification.finetune.lr"
    cfg = cfg_for(
        tmp_path, "method=l1", "study.n_trials=3", "study.sampler=random", "study.seed=3",
        "finetune.lr=100000.0", f"~{lr}", f"+{lr}={{choices:[0.01,100000.0]}}",
    )  # fmt: skip
    summary = run_study(cfg)
    study = load(summary)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert summary["n_complete"] == 3 and summary["n_failed"] == len(failed) >= 1
    assert study.trials[0].state == TrialState.FAIL  # and the study went on after it
    for t in failed:
        assert t.params["finetune.lr"] == 100000.0
        assert "non-finite loss" in t.user_attrs["fail_reason"]
        run = MlflowClient(summary["tracking_uri"]).get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED" and "NonFiniteLossError" in run.data.tags["error"]


@pytest.mark.slow
def test_two_workers_give_the_requested_trials_without_duplicates(tmp_path):
    summary = run_study(cfg_for(tmp_path, "method=random", "study.n_trials=4", "study.workers=2"))
    assert summary["storage"].endswith("optuna.journal")
    study = load(summary)
    done = finished(study)
    assert len(done) == 4
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == 4
    assert len(children(summary)) == len(done)  # a surplus trial stops before its MLflow run
    assert_pareto_tags_match(summary)


@pytest.mark.slow
def test_a_killed_worker_leaves_a_study_that_the_next_run_completes(tmp_path):
    args = [*FAST, f"outputs={tmp_path}", "method=l1", "study.n_trials=3", "finetune.epochs=4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", "study", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    name = "classification-digits-resnet20-l1-s0"
    victim = None
    deadline = time.time() + 300
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(1.0)
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except Exception:  # noqa: BLE001 - not created yet
                continue
            running = [
                t for t in study.get_trials(states=(TrialState.RUNNING,))
                if "mlflow_run_id" in t.user_attrs
            ]  # fmt: skip
            if running and finished(study):
                victim = running[0]
        assert victim is not None, "the study never had a running trial after a finished one"
        os.kill(proc.pid, signal.SIGKILL)  # mid-trial
    finally:
        proc.kill()
        proc.wait()
    summary = run_study(cfg_for(tmp_path, "method=l1", "study.n_trials=3", "finetune.epochs=4"))
    study = load(summary)
    assert len(finished(study)) == 3
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == dead.params
    assert retry[0].state == TrialState.COMPLETE
    run = MlflowClient(summary["tracking_uri"]).get_run(victim.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert_pareto_tags_match(summary)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_through_postgresql(tmp_path, postgres_url):
    summary = run_study(
        cfg_for(
            tmp_path,
            "method=random",
            "study.n_trials=4",
            "study.workers=2",
            f"study.storage={postgres_url}",
        )  # fmt: skip
    )
    assert summary["storage"].startswith("postgresql+psycopg://")
    study = load(summary)
    assert len(finished(study)) == 4
    assert sorted(t.number for t in study.best_trials) == summary["pareto"] != []
    assert_pareto_tags_match(summary)


def test_existing_study_with_other_objectives_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="mine", storage=storage, directions=["maximize"])
    cfg = cfg_for(tmp_path, "study.name=mine", "study.n_trials=1")
    with pytest.raises(ConfigError, match=r"exists with objectives \['maximize'\].*quality"):
        run_study(cfg)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("study.storage=mysql://u:secret@h/db", r"unknown storage scheme 'mysql'.*known: sqlite"),
        ("study.target={type:float,low:0.6,high:0.2}", r"'target': empty range low=0.6"),
        ("study.target={type:float,low:0.0,high:0.5,log:true}", "log-scaled range needs low > 0"),
        ("study.target={type:gaussian,low:0.1,high:0.5}", "unknown type 'gaussian'"),
        ("study.objectives=[quality,flops]", "unknown study objective 'flops'"),
        ("study.sampler=cmaes", "unknown sampler 'cmaes'"),
        ("study.n_trials=null", "needs a budget"),
        ("study.enqueue=[{target:0.4,method.lamda:1}]", r"enqueue\[0\]: 'method.lamda' is not"),
        ("study.enqueue=[{target:0.05}]", r"target=0.05 lies outside its range .0.3, 0.9"),
        ("study.enqueue=[0.2]", "must be a list of mappings"),
    ],
)
def test_bad_study_settings_get_clear_errors(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match) as err:
        run_study(cfg_for(tmp_path, override))
    assert "secret" not in str(err.value)


def test_search_space_conditions_task_overrides_and_defaults():
    dhp = compose(["data=digits", "method=dhp"])
    space = SearchSpace.from_config(dhp)
    assert {"method.gamma", "method.aim", "method.search_lr", "finetune.lr", "target"} <= set(
        space.names
    )
    defaults = space.defaults(dhp)  # gamma_mode=auto: aim is sampled, the paper-mode γ is not
    assert "method.aim" in defaults and "method.gamma" not in defaults
    assert defaults["method.search_lr"] == 0.1 and defaults["target"] == 0.5
    sr = SearchSpace.from_config(compose(["task=sr", "method=dhp", "method.gamma_mode=paper"]))
    gamma = next(p for p in sr.params if p.path == "method.gamma")
    assert (gamma.low, gamma.high, gamma.log) == (1.0e-3, 1.0, True)  # task bounds, base log
    assert "finetune.weight_decay" not in sr.names  # Adam with no weight decay on restoration
    typo = compose(["method=slimming", "+method.search_space.lamda={low:0.1,high:0.2}"])
    with pytest.raises(ConfigError, match="names no config value; keys of 'method'"):
        SearchSpace.from_config(typo)


@pytest.mark.slow  # a whole study through the CLI: ~11 s on a loaded 2-core machine
def test_study_cli_prints_one_json_line(tmp_path, capsys):
    from harness.cli.main import main

    assert main(["study", *FAST, f"outputs={tmp_path}", "study.n_trials=1", "method=random"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["n_complete"] + record["n_pruned"] == 1 and record["pareto"] in ([0], [])


@pytest.mark.parametrize(
    ("model", "gamma", "threshold"), [("resnet56", 3.0e-4, 5.0e-3), ("mobilenetv2", 1.0e-4, 1.0e-3)]
)
def test_trial_zero_is_the_paper_configuration_of_the_model(model, gamma, threshold):
    """DHP leaves γ and T null in its config (the per-model maps fill them): the enqueued
    first trial must still carry the model's paper values, not a sampled draw."""
    import methods  # noqa: F401  (registers dhp)
    from harness.run.pipeline import method_defaults

    cfg = compose([f"model={model}", "method=dhp", "method.gamma_mode=paper"])
    space = SearchSpace.from_config(cfg)
    args = method_defaults(cfg.method, model=cfg.model.name, task=cfg.task.name)
    defaults = space.defaults(cfg, args)
    assert defaults["method.gamma"] == gamma and defaults["method.threshold"] == threshold
    assert "method.gamma" not in space.defaults(cfg)  # what the bare config alone gives
