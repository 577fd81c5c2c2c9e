"""An Optuna trial's sampled γ is the γ DHP's search used (issue 12: the per-model map used to
shadow it, so the study's `gamma` dimension tuned nothing on every model in the map)."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.config import compose
from harness.study import resolve_storage, run_study


@pytest.mark.slow
def test_a_study_trial_searches_with_its_sampled_gamma(tmp_path):
    cfg = compose([
        "data=digits", "model=resnet20", "method=dhp", "method.gamma_mode=paper",
        "method.epochs=1", "train.epochs=0", "finetune.epochs=0", "measure.latency=false",
        "study.n_trials=2", "study.n_startup_trials=2", f"outputs={tmp_path}",
    ])  # fmt: skip
    summary = run_study(cfg)
    storage = resolve_storage(summary["storage"], outputs=".", workers=1).open()
    study = optuna.load_study(study_name=summary["study_name"], storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    client = MlflowClient(summary["tracking_uri"])
    sampled = []
    for t in trials:
        gamma = t.params["method.gamma"]
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.metrics["search_gamma"] == pytest.approx(gamma, rel=1e-12)
        assert run.data.metrics["search_initial_gamma"] == pytest.approx(gamma, rel=1e-12)
        assert run.data.metrics["search_final_gamma"] == pytest.approx(gamma, rel=1e-12)
        assert run.data.metrics["search_paper_gamma"] == 1.0
        sampled.append(gamma)
    # trial 0 is ResNet-20's paper value (enqueued), trial 1 a draw from 1e-5 … 0.1; each search
    # ran with its own trial's γ
    assert 2.0e-4 in sampled
    assert sampled[0] != sampled[1]
