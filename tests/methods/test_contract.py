"""Contract suite over the registry: every registered method on every tiny model it supports.

Each case runs the real pipeline (digits data, 1-epoch budgets) and checks what a user relies on:
the compact model forwards, its MAC ratio is at the target, the floor holds, the saved model
reloads (without the pruning code) to the recorded quality, and the same seed gives the same plan.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import methods  # noqa: F401
import tasks  # noqa: F401
from harness.config import compose, config_dir
from harness.method import OneShotMethod, TrainTimeMethod
from harness.registry import METHODS, MODELS, TASKS
from harness.run.pipeline import build_method, run
from harness.runtime.device import pick_runtime
from harness.runtime.plugins import load_plugins
from harness.structure import CostModel, build_structure, floor_of, load_pruned
from harness.train import evaluate

load_plugins()  # installed plug-ins' methods are held to the same contract
# search methods own their search loop (covered by tests/methods/dhp); the rest score one-shot
ONE_SHOT = [m for m in METHODS.names() if issubclass(METHODS.get(m), OneShotMethod)]
TINY = ["test_resnet", "test_depthwise", "test_grouped"]
FLOOR = 0.25


def run_tiny(method: str, model: str, outputs: Path, target: float = 0.5, seed: int = 0):
    cfg = compose([
        "data=digits", f"model.name={model}", "~model.shortcut", f"method={method}",
        f"target={target}", f"seed={seed}", "train.epochs=1", "finetune.epochs=0",
        f"prune.floor={FLOOR}", "measure.latency=false", "tracking.enabled=false",
        f"outputs={outputs}",
    ])  # fmt: skip
    method_obj = build_method(cfg.method)
    if isinstance(method_obj, TrainTimeMethod) and method_obj.epochs > 0:
        cfg.method.epochs = 1  # their own training phase: keep it as short as the baseline's
    return cfg, run(cfg)


def unit_macs(cost: CostModel, group: str) -> int:
    """MACs saved by removing one unit (the first) of `group` from the unpruned net."""
    mask = torch.zeros(cost.structure.groups[group].size, dtype=torch.bool)
    mask[0] = True
    return cost.base_macs - cost.macs({group: mask})


@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("method", ONE_SHOT)
def test_method_contract(method, model, tmp_path_factory):
    outputs = tmp_path_factory.getbasetemp() / "contract"
    cfg, record = run_tiny(method, model, outputs)
    # MAC ratio at the target: never above it, and below it by at most the MACs of the costliest
    # single unit (channel) of the unpruned net, an upper bound of any unit's cost after pruning
    art = Path(record["artifacts"])
    doc = json.loads((art / "plan.json").read_text())
    structure = build_structure(
        MODELS.get(model)(in_chans=1, num_classes=10), torch.zeros(1, 1, 8, 8)
    )
    cost = CostModel(structure)
    unit = max(unit_macs(cost, g) for g in doc["plan"]) / cost.base_macs
    assert 0.5 - unit - 1e-9 <= record["macs_ratio"] <= 0.5 + 1e-9, (record["macs_ratio"], unit)
    # the floor holds in every pruned group
    assert doc["plan"], "nothing was pruned"
    for group, kept in doc["plan"].items():
        size = structure.groups[group].size
        assert len(kept) >= floor_of(size, FLOOR, 1), (group, len(kept), size)
    # the saved compact model reloads without the pruning code and scores what the run recorded
    task = TASKS.get("classification")(cfg.task)
    data = task.build_data(cfg.data, seed=cfg.seed)
    reloaded, _ = load_pruned(art, MODELS.get(model)(in_chans=1, num_classes=10))
    runtime = pick_runtime("cpu")
    assert evaluate(task, reloaded, data.val, runtime)["top1"] == pytest.approx(
        record["val_metric"]
    )
    assert evaluate(task, reloaded, data.test, runtime)["top1"] == pytest.approx(
        record["test_metric"]
    )
    # same seed, same plan
    _, again = run_tiny(method, model, outputs)
    assert json.loads((Path(again["artifacts"]) / "plan.json").read_text())["plan"] == doc["plan"]


def test_every_method_config_has_a_registered_method_and_back():
    confs = {p.stem for p in (config_dir() / "method").glob("*.yaml")}
    assert confs == set(METHODS.names())
    for name in confs:
        doc = yaml.safe_load((config_dir() / "method" / f"{name}.yaml").read_text())
        assert doc["name"] == name
        assert isinstance(doc.get("search_space"), dict), f"{name}.yaml lacks search_space"
        build_method(compose([f"method={name}"]).method)  # constructor accepts the defaults
