"""What is loaded is verified (a damaged or edited baseline cache is refused in one line), and the
docs/studies.md names the study artifacts that are really written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.faults.conftest import REPO, TINY, TINY_STUDY


@pytest.fixture
def cached_baseline(run_main, tmp_path) -> Path:
    r = run_main("run", *TINY, f"outputs={tmp_path}", "tracking.enabled=false")
    assert r.code == 0, r.stderr[-2000:]
    (path,) = (tmp_path / "cache" / "baselines").glob("*.pt")
    return path


def _edit(path: Path, edit) -> None:
    blob = torch.load(path, weights_only=True)
    edit(blob)
    torch.save(blob, path)


@pytest.mark.parametrize("damage", ["nan weight", "fake metrics"])
def test_a_damaged_baseline_cache_is_refused_in_one_line(
    run_main, tmp_path, cached_baseline, damage
):
    def nan_weight(blob):
        blob["state_dict"]["fc.weight"][0, 0] = float("nan")

    def fake_metrics(blob):
        blob["val"]["top1"] = 99.9
        blob["test"]["top1"] = 99.9

    _edit(cached_baseline, nan_weight if damage == "nan weight" else fake_metrics)
    r = run_main("run", *TINY, f"outputs={tmp_path}", "tracking.enabled=false")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("prunebench")]
    assert r.code == 1 and r.stdout == "" and len(lines) == 1, r.stderr[-2000:]
    assert str(cached_baseline) in lines[0] and "delete it to retrain" in lines[0]
    assert ("non-finite weights" if damage == "nan weight" else "records val top1=99.9") in lines[0]


def test_an_intact_cache_is_loaded(run_main, tmp_path, cached_baseline):
    r = run_main("run", *TINY, f"outputs={tmp_path}", "tracking.enabled=false")
    assert r.code == 0, r.stderr[-2000:]
    record = json.loads(r.stdout)
    assert (
        record["base_val_metric"] == torch.load(cached_baseline, weights_only=True)["val"]["top1"]
    )


@pytest.mark.slow
def test_docs_name_the_study_artifacts_that_are_written(run_main, tmp_path):
    r = run_main("study", *TINY_STUDY, f"outputs={tmp_path}", "study.n_trials=2")
    assert r.code == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    written = {a.path for a in client.list_artifacts(summary["parent_run_id"], "study")}
    docs = (REPO / "docs" / "studies.md").read_text()
    named = set(re.findall(r"`(study/[\w.]+)`", docs))
    assert written and named == written, (named, written)
