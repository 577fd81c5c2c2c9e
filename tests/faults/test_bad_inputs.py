"""Round 2 of the fault audit: every bad input is refused in one line naming it, before any work;
anything unforeseen still ends in one line with the MLflow run FAILED; unsafe weights advice and
non-finite weights are refused; `compare` neither reports on no methods nor silently replaces a
fuller report."""

from __future__ import annotations

import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from harness.errors import CheckpointError
from tasks.classification.models.factories import load_weights
from tests.faults.conftest import TINY, TINY_STUDY

BAD = {
    "seed=-1": (["run", *TINY, "seed=-1"], "seed=-1"),
    "seed=abc": (["run", *TINY, "seed=abc"], "seed='abc'"),
    "batch 0": (["run", *TINY, "task.batch_size=0"], "task.batch_size=0"),
    "no classes": (["run", *TINY, "data.num_classes=0"], "data.num_classes=0"),
    "log level": (["run", *TINY, "log_level=BOGUS"], "log_level='BOGUS'"),
    "device": (["run", *TINY, "device=tpu"], "device='tpu'"),
    "empty shape": (["measure", "data=digits", "model.name=test_resnet", "data.shape=[1,0,0]"],
                    "data.shape=[1, 0, 0]"),
    "targets": (["compare", "data=digits", "compare.targets=[abc]"], "compare.targets holds 'abc'"),
    "no methods": (["compare", "data=digits", "compare.methods=[]"], "compare.methods=[]"),
    "unset env": (["run", *TINY, "+tracking.tags.db=${oc.env:PB_SURELY_UNSET_VAR}"],
                  "environment variable PB_SURELY_UNSET_VAR is not set"),
    "resolver": (["run", *TINY, "+tracking.tags.db=${nosuch:x}"],
                 "Unsupported interpolation type nosuch"),
    "huge steps": (["run", *TINY, "prune.steps=100000"], "prune.steps=100000"),
    "half epochs": (["run", *TINY, "finetune.epochs=2.5"], "finetune.epochs=2.5 is not a whole"),
    "no workers": (["study", *TINY_STUDY, "study.workers=0"], "study.workers=0"),
    "half trials": (["study", *TINY_STUDY, "study.n_trials=2.5"], "study.n_trials=2.5"),
    "enqueue": (["study", *TINY_STUDY, "study.enqueue=[{target: 0.99}]"],
                "target=0.99 lies outside"),
    "enqueue bound": (["study", *TINY_STUDY, "study.enqueue=[{target: 0.8}]",
                       "study.constraints.macs_ratio_max=0.3"], "cannot meet"),
}  # fmt: skip


def _one_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in lines if ln.startswith("prunebench: error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("probe", BAD)
def test_a_bad_input_is_refused_in_one_line_before_any_work(run_main, tmp_path, probe):
    args, named = BAD[probe]
    r = run_main(*args, f"outputs={tmp_path}")
    assert r.code == 1
    assert named in _one_line(r)
    assert not list(tmp_path.glob("cache/baselines/*.pt"))  # nothing trained


@pytest.mark.parametrize(
    ("source", "named"),
    [("def broken(:\n", "has a syntax error"), ("raise RuntimeError('at import')\n", "raised")],
)
def test_a_broken_plugin_module_is_one_line(run_main, tmp_path, monkeypatch, source, named):
    (tmp_path / "pb_broken_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = run_main("run", *TINY, "plugins=[pb_broken_plugin]", f"outputs={tmp_path}")
    assert r.code == 1
    line = _one_line(r)
    assert "pb_broken_plugin" in line and named in line


@pytest.mark.slow  # two runs through the CLI with a fresh MLflow store: ~10 s loaded
def test_an_unexpected_error_is_one_line_and_fails_the_mlflow_run(run_main, tmp_path, monkeypatch):
    import harness.run.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(harness.run.pipeline, "evaluate", broken)
    r = run_main("run", *TINY, f"outputs={tmp_path}")
    assert r.code == 1
    assert "RuntimeError: disk on fire second line" in _one_line(r)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [run.info.status for run in runs] == ["FAILED"]
    monkeypatch.setenv("PRUNEBENCH_DEBUG", "1")  # the debug setting shows the traceback
    assert "Traceback" in run_main("run", *TINY, f"outputs={tmp_path}").stderr


class _Evil:
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.parametrize("kind", ["garbage", "pickled code", "nan"])
def test_weight_files_are_refused_in_one_line_without_unsafe_advice(tmp_path, kind):
    path = tmp_path / "w.pt"
    net = nn.Linear(3, 2)
    if kind == "garbage":
        path.write_bytes(b"not a weights file")
    elif kind == "pickled code":
        torch.save({"weight": _Evil()}, path)
    else:
        state = net.state_dict()
        state["weight"][0, 0] = math.nan
        torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_weights(nn.Linear(3, 2), path)
    text = str(e.value)
    assert "\n" not in text and "weights_only=False" not in text and "likely succeed" not in text
    if kind == "nan":
        assert "non-finite" in text


def test_compare_keeps_a_fuller_report_it_would_replace(tmp_path, caplog):
    from harness.report.compare import StudyPoints, _keep_fuller_report

    (tmp_path / "summary.csv").write_text("method,hv\nl1,0.5\nrandom,0.4\n")
    (tmp_path / "compare.md").write_text("the two-method report")
    _keep_fuller_report(tmp_path, [StudyPoints("l1", 0, "s", [], [], [], [])])
    (kept,) = tmp_path.glob("previous-*")
    assert (kept / "compare.md").read_text() == "the two-method report"
    assert "random" in caplog.text and str(kept) in caplog.text
    _keep_fuller_report(
        tmp_path, [StudyPoints(m, 0, "s", [], [], [], []) for m in ("l1", "random")]
    )
    assert len(list(tmp_path.glob("previous-*"))) == 1  # a report with as much: no copy
