"""DHP through the real pipeline (digits, tiny registered nets): the contract suite's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dhp_helpers import unit_share

import methods  # noqa: F401
import tasks  # noqa: F401
from harness.cli import compose
from harness.pipeline import run
from harness.registry import MODELS
from harness.structure import CostModel, build_structure, load_pruned

TARGET = 0.5


def run_dhp(model: str, outputs: Path):
    cfg = compose([
        "data=digits", f"model.name={model}", "~model.shortcut", "method=dhp",
        f"target={TARGET}", "train.epochs=0", "finetune.epochs=0", "method.epochs=10",
        "measure.latency=false", "tracking.enabled=false", f"outputs={outputs}",
    ])  # fmt: skip
    return run(cfg)


@pytest.mark.parametrize("model", ["test_resnet", "test_depthwise"])
def test_dhp_pipeline_contract(model, tmp_path):
    if model not in MODELS:
        pytest.skip(f"{model} is registered by tests/conftest.py")
    record = run_dhp(model, tmp_path)
    assert record["search_stop_reason"] == "macs_ratio<=target+0.01"
    # fvcore on the compact model; on these 8–24-channel nets one unit is several % of the MACs
    cost = CostModel(build_structure(MODELS.get(model)(in_chans=1), torch.randn(1, 1, 8, 8)))
    assert TARGET - 2 * unit_share(cost) <= record["macs_ratio"] <= TARGET + 0.01
    assert record["macs_ratio"] == pytest.approx(record["search_macs_ratio"])
    art = Path(record["artifacts"])
    doc = json.loads((art / "plan.json").read_text())
    reloaded, _ = load_pruned(art, MODELS.get(model)(in_chans=1, num_classes=10))
    twin, _ = load_pruned(art, MODELS.get(model)(in_chans=1, num_classes=10))
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(reloaded.eval()(x), twin.eval()(x))
    for kept in doc["plan"].values():
        assert len(kept) >= 4 or len(kept) == 0
    again = run_dhp(model, tmp_path / "again")
    assert json.loads((Path(again["artifacts"]) / "plan.json").read_text())["plan"] == doc["plan"]
