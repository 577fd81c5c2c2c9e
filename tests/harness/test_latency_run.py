"""Latency targets and the speed record through `run`, on the embedded digits data.

These runs time real forward passes, so they assert what does not depend on the clock: refusals
before training, the record's keys, and that the first plan's *predicted* ratio (the table's
arithmetic) is at or below the target. Whether the measured ratio is, is recorded
(`latency_target_met`), not tested.
"""

from __future__ import annotations

import pytest

from harness.config import compose
from harness.errors import ConfigError, ImpossibleTargetError, IncompatibleMethodError
from harness.run.pipeline import run


def quick(outputs, *extra):
    return compose(
        [
            "task=classification",
            "data=digits",
            "model=resnet20",
            "train.epochs=1",
            "finetune.epochs=0",
            "measure.latency_repeats=2",
            "measure.latency_batch=8",
            "latency.repeats=2",
            "tracking.enabled=false",
            f"outputs={outputs}",
            *extra,
        ]
    )


@pytest.fixture
def fake_device(monkeypatch):
    """Layer and network timings from the deterministic fake device of test_latency.py."""
    import torch

    import harness.run.speed as speed
    from harness.run.measure import Timing
    from tests.harness.test_latency import FakeTimer, fake_network_ms

    def measure(models, shape, runtime, *, batch_sizes, repeats):
        x = torch.randn(1, *shape)
        return {n: {b: Timing(fake_network_ms(m, x), 0.0) for b in batch_sizes}
                for n, m in models.items()}  # fmt: skip

    monkeypatch.setattr(speed, "TorchLayerTimer", lambda *a, **k: FakeTimer())
    monkeypatch.setattr(speed, "measure_speed", measure)


def test_unreachable_latency_target_is_refused_before_training(tmp_path, fake_device):
    cfg = quick(tmp_path, "target_kind=latency", "target=0.05", "prune.floor=0.5")
    with pytest.raises(ImpossibleTargetError, match="out of reach") as e:
        run(cfg)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache" / "baselines").exists()  # nothing was trained
    assert list((tmp_path / "cache" / "latency").glob("*.json"))  # the table was kept


def test_latency_target_refusals_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="target_kind=fast"):
        run(quick(tmp_path, "target_kind=fast"))
    with pytest.raises(ConfigError, match="prune.round_to=0"):
        run(quick(tmp_path, "prune.round_to=0"))
    with pytest.raises(ConfigError, match="prune.steps=1"):
        run(quick(tmp_path, "target_kind=latency", "prune.steps=2"))
    with pytest.raises(IncompatibleMethodError, match="searches to a MAC ratio"):
        run(quick(tmp_path, "target_kind=latency", "method=uniform"))  # a control: MACs only


@pytest.mark.slow
def test_latency_run_records_speed_and_lands_by_prediction(tmp_path):
    cfg = quick(tmp_path, "target_kind=latency", "target=0.7", "measure.latency_batch=64")
    cfg.latency.max_error = 1e9  # a loaded machine must not fail the test
    try:
        record = run(cfg)
    except ImpossibleTargetError as e:  # timings on a loaded machine put dispatch above 30 %
        pytest.skip(f"this machine's timings put the target out of reach: {e}")
    assert record["target_kind"] == "latency"
    first = record["latency_landing"][0]  # allocated to the table's prediction of the target
    assert first["predicted"] <= 0.7 + 1e-9
    assert 1 <= record["latency_landing_tries"] == len(record["latency_landing"]) <= 3
    assert isinstance(record["latency_target_met"], bool)
    for key in ("latency_ratio", "latency_ratio_batch", "latency_ms_base", "latency_ms_spread"):
        assert record[key] is not None and record[key] > 0, key
    assert record["latency_target_batch"] == 64


@pytest.mark.slow
def test_dhp_latency_run_lands_at_the_target_on_the_fake_device(tmp_path, fake_device):
    """DHP through `run` with a latency target: the search stops on the table's prediction and
    the compact model measures at or below the target on the (deterministic) device."""
    cfg = quick(tmp_path, "target_kind=latency", "target=0.7", "method=dhp", "method.epochs=4",
                "train.epochs=0")  # fmt: skip
    record = run(cfg)
    assert record["search_stop_on"] == "latency"
    assert record["search_stop_reason"] == "latency_ratio<=target+0.01"
    assert record["latency_target_ratio"] <= 0.7 + 1e-9 and record["latency_target_met"]
    assert record["latency_pred_ratio"] == pytest.approx(record["latency_target_ratio"], rel=1e-6)
    assert record["search_latency_ratio_predicted"] == pytest.approx(record["latency_pred_ratio"])
    assert record["macs_ratio"] < 0.7  # the residual does not shrink: MACs go lower


@pytest.mark.slow
def test_dhp_latency_run_rounds_and_records_its_measured_landing(tmp_path, fake_device):
    """DHP through `run` with prune.round_to=8 and a latency target: every pruned group keeps a
    multiple of 8, the plan is measured through the run's landing (recorded as one-shot runs
    record it) and lands at or below the target on the (deterministic) device."""
    import json
    from pathlib import Path

    cfg = quick(tmp_path, "target_kind=latency", "target=0.7", "method=dhp", "method.epochs=4",
                "train.epochs=0", "prune.round_to=8")  # fmt: skip
    record = run(cfg)
    assert record["search_round_to"] == 8
    assert record["latency_landing_tries"] == len(record["latency_landing"]) >= 1
    assert record["latency_landing"][0]["predicted"] <= 0.7 + 1e-9
    assert record["latency_target_ratio"] <= 0.7 + 1e-9 and record["latency_target_met"]
    plan = json.loads((Path(record["artifacts"]) / "plan.json").read_text())["plan"]
    assert plan and all(len(kept) % 8 == 0 for kept in plan.values()), plan
