"""The pipeline end to end on the embedded digits data: acceptance of issue 2, errors, tracking."""

from __future__ import annotations

import json

import pytest

from harness.cli.main import main
from harness.config import compose
from harness.errors import (
    DataNotFoundError,
    ImpossibleTargetError,
    IncompatibleMethodError,
    UnknownNameError,
)
from harness.run.pipeline import run

BASELINES = ["random", "l1", "l2", "fpgm", "slimming", "taylor"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


def quick(outputs, *extra):
    return compose(
        [
            "task=classification",
            "data=digits",
            "model=resnet20",
            "train.epochs=1",
            "finetune.epochs=1",
            "measure.latency_repeats=2",
            f"outputs={outputs}",
            *extra,
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", BASELINES)
def test_each_baseline_meets_the_target_and_is_tracked(method, outputs):
    from mlflow.tracking import MlflowClient

    extra = ["method.epochs=1"] if method == "slimming" else []
    record = run(quick(outputs, f"method={method}", "target=0.5", *extra))
    assert abs(record["macs_ratio"] - 0.5) <= 0.02
    for key in (
        "macs",
        "macs_base",
        "params",
        "params_base",
        "params_ratio",
        "val_metric",
        "test_metric",
        "latency_ms",
        "run_id",
    ):
        assert record[key] is not None, key
    assert record["params"] < record["params_base"]
    run_ = MlflowClient(record["tracking_uri"]).get_run(record["run_id"])
    assert run_.data.tags["method"] == method and run_.data.tags["model"] == "resnet20"
    assert run_.data.metrics["macs_ratio"] == pytest.approx(record["macs_ratio"])
    assert "test_metric" in run_.data.metrics and "wall_finetune_s" in run_.data.metrics
    assert run_.data.params["target"] == "0.5"


@pytest.mark.slow  # two whole runs: ~14 s on a loaded 2-core machine
def test_baseline_is_trained_once_and_shared(tmp_path, monkeypatch):
    import harness.run.pipeline as pipeline

    trained = []
    real = pipeline._baseline_train

    def counting(*args, **kwargs):
        train = real(*args, **kwargs)
        return lambda model: (trained.append(1), train(model))[1]

    monkeypatch.setattr(pipeline, "_baseline_train", counting)
    a = run(quick(tmp_path, "method=random", "target=0.7", "tracking.enabled=false"))
    b = run(quick(tmp_path, "method=l1", "target=0.7", "tracking.enabled=false"))
    assert len(trained) == 1  # the second run loaded the first one's checkpoint
    assert len(list((tmp_path / "cache" / "baselines").glob("*.pt"))) == 1
    assert a["base_test_metric"] == b["base_test_metric"]
    # its cost is the original training's, also when loaded from the cache
    assert b["cost_baseline_wall_s"] == a["cost_baseline_wall_s"] > 0
    assert a["cost_baseline_epochs"] == b["cost_baseline_epochs"] == 1.0
    # a one-shot method trains only its fine-tuning epochs: images = epochs × train split
    assert a["cost_search_epochs"] == 0.0
    assert a["cost_train_images"] == a["cost_finetune_epochs"] * 1293  # digits train split
    c = run(quick(tmp_path, "method=l1", "target=0.7", "seed=1", "tracking.enabled=false"))
    assert len(trained) == 2 and c["seed"] == 1  # another seed: its own baseline


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(UnknownNameError, match=r"did you mean 'fpgm'.*known: "):
        run(compose(["data=digits", "method=fpgm", "method.name=fgpm"]))
    with pytest.raises(UnknownNameError, match="unknown model 'resnet57'"):
        run(compose(["data=digits", "model=resnet56", "model.name=resnet57"]))
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet57' \(did you mean"):
        compose(["model=resnet57"])


@pytest.mark.parametrize("target", [0.0, 1.2, -0.5])
def test_target_outside_unit_interval(target):
    with pytest.raises(ImpossibleTargetError, match=r"\(0, 1\]"):
        run(compose(["data=digits", f"target={target}"]))


def test_missing_cifar_root_names_path_and_fixes(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        run(compose(["data=cifar10", f"data.root={tmp_path / 'nowhere'}"]))
    assert "nowhere" in str(err.value) and "data.download=true" in str(err.value)


def test_slimming_refuses_a_model_without_batchnorm(outputs):
    with pytest.raises(IncompatibleMethodError, match="no BatchNorm"):
        run(
            quick(
                outputs,
                "method=slimming",
                "model.name=test_concat",
                "~model.shortcut",
                "tracking.enabled=false",
            )
        )


def test_cli_measure_resnet56(capsys):
    assert main(["measure", "task=classification", "model=resnet56"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 125.0e6 <= record["macs"] <= 127.0e6
    assert 0.85e6 <= record["params"] <= 0.86e6
    assert record["input_shape"] == [3, 32, 32]


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["run", "method=fgpm"]) == 1
    err = capsys.readouterr().err
    assert "did you mean" in err or "fgpm" in err
    assert "Traceback" not in err


def test_cli_ctrl_c_exits_130_without_traceback_or_json(monkeypatch, capsys):
    import harness.run.pipeline

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.run.pipeline, "measure", interrupted)
    assert main(["measure", "model=resnet20"]) == 130
    out = capsys.readouterr()
    assert out.out == "" and "measure interrupted" in out.err


def test_cli_list_shows_capabilities(capsys):
    assert main(["list"]) == 0
    listing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert listing["methods"]["slimming"]["needs"]["batchnorm"] is True
    assert "resnet56" in listing["models"] and "classification" in listing["tasks"]
