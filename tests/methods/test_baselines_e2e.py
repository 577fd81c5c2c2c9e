"""Every baseline end to end on a tiny residual net: structure → scores → allocate → remove."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import methods  # noqa: F401  (registers every method)
from harness.data import TensorBatches
from harness.method import PruneContext, TrainTimeMethod
from harness.registry import METHODS
from harness.run.pipeline import build_method as pipeline_build_method
from harness.runtime.device import pick_runtime
from harness.structure import (
    AllocationPolicy,
    CostModel,
    allocate,
    apply_plan,
    build_structure,
    score_groups,
)
from harness.task import DataSplits, Task
from harness.train import fit
from methods.depgraph import group_norms

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"
BASELINES = ["random", "l1", "l2", "fpgm", "slimming", "taylor", "sfp", "depgraph"]


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class ResidualNet(nn.Module):
    """conv-BN-ReLU ×3 with a residual add around the last two, then a linear head."""

    def __init__(self, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, width)
        self.body = nn.Sequential(conv_bn_relu(width, width), conv_bn_relu(width, width))
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.body(x)
        return self.fc(x.mean(dim=(2, 3)))


class ToyClassification(Task):
    metric = "top1"

    def input_shape(self, data_cfg):
        return (3, 8, 8)

    def build_data(self, data_cfg, *, seed):
        raise NotImplementedError

    def build_model(self, model_cfg, data_cfg):
        return ResidualNet()

    def loss(self, model, batch):
        x, y = batch
        out = model(x)
        return {"loss": F.cross_entropy(out, y), "output": out}

    def evaluate(self, model, batches):
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
        return {"top1": hits / batches.num_samples}


def build_method(name: str):
    return pipeline_build_method(OmegaConf.load(CONF / f"{name}.yaml"))


def make_ctx(model: nn.Module, seed: int = 0) -> PruneContext:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 4, (32,), generator=g)
    train = TensorBatches((x, y), batch_size=8, shuffle=True, seed=seed)
    held = TensorBatches((x[:8], y[:8]), batch_size=8)
    example = x[:1]
    structure = build_structure(model, example)
    return PruneContext(
        model=model,
        structure=structure,
        cost=CostModel(structure),
        policy=AllocationPolicy(CostModel(structure)),
        task=ToyClassification(OmegaConf.create({})),
        data=DataSplits(train, held, held),
        runtime=pick_runtime("cpu"),
        target=0.5,
        seed=seed,
        fit=None,
    )


def prune(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = ResidualNet()
    ctx = make_ctx(model, seed)
    method = build_method(name)
    method.check(model, "classification")
    if isinstance(method, TrainTimeMethod):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        fit(
            model,
            ctx.task,
            ctx.data.train,
            epochs=method.epochs,
            optimizer=opt,
            runtime=ctx.runtime,
            hooks=method.hooks(ctx),
        )
    method.prepare(ctx)
    scores = score_groups(model, ctx.structure, method.score)
    plan = allocate(
        ctx.cost, scores, ctx.target, allocation=getattr(method, "default_allocation", "uniform")
    )
    ratio = ctx.cost.ratio(plan.removed(ctx.structure))
    base_macs = ctx.cost.base_macs
    apply_plan(model, ctx.structure, plan)
    return model, plan, scores, ratio, base_macs


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_prunes_tiny_residual_net_to_half_the_macs(name):
    model, plan, scores, ratio, base_macs = prune(name)
    # both prunable groups get scores: the residual group (stem + body.1) and body.0's output
    assert len(scores) == 2
    assert all(torch.isfinite(s).all() for s in scores.values())
    assert 0.4 < ratio <= 0.5
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    assert model(x).shape == (2, 4)
    pruned_macs = CostModel(build_structure(model, x[:1])).base_macs
    assert pruned_macs / base_macs == pytest.approx(ratio)  # channels were really removed


@pytest.mark.parametrize("name", BASELINES)
def test_same_seed_gives_the_same_plan(name):
    assert prune(name, seed=3)[1].kept == prune(name, seed=3)[1].kept


def test_random_plans_differ_across_seeds():
    assert prune("random", seed=0)[1].kept != prune("random", seed=1)[1].kept


def test_slimming_training_pushes_bn_scales_toward_zero():
    gammas = []
    for lam in (0.0, 1.0e-1):
        torch.manual_seed(0)  # same initial weights and batches for both runs
        model = ResidualNet()
        ctx = make_ctx(model)
        method = METHODS.get("slimming")(lam=lam, epochs=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        fit(
            model,
            ctx.task,
            ctx.data.train,
            epochs=method.epochs,
            optimizer=opt,
            runtime=ctx.runtime,
            hooks=method.hooks(ctx),
        )
        gammas.append(
            sum(
                float(m.weight.detach().abs().sum())
                for m in model.modules()
                if isinstance(m, nn.BatchNorm2d)
            )
        )
    assert gammas[1] < gammas[0]


def test_depgraph_training_shrinks_group_norms():
    totals = []
    for lam in (0.0, 5.0e-1):
        torch.manual_seed(0)  # same initial weights and batches for both runs
        model = ResidualNet()
        ctx = make_ctx(model)
        method = METHODS.get("depgraph")(lam=lam, alpha=0.0, epochs=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        fit(
            model,
            ctx.task,
            ctx.data.train,
            epochs=method.epochs,
            optimizer=opt,
            runtime=ctx.runtime,
            hooks=method.hooks(ctx),
        )
        totals.append(sum(float(n.sum()) for n in group_norms(model, ctx.structure).values()))
    # the regulariser pulls each of the 32 units' norms in by Σ lr·λ = 12 steps·0.05·0.5 = 0.3
    assert totals[1] < totals[0] - 32 * 0.2


def test_sfp_training_leaves_the_cut_filters_zero():
    torch.manual_seed(0)
    model = ResidualNet()
    ctx = make_ctx(model)
    method = METHODS.get("sfp")(epochs=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    (hook,) = method.hooks(ctx)
    fit(model, ctx.task, ctx.data.train, epochs=2, optimizer=opt, runtime=ctx.runtime, hooks=[hook])
    scores = score_groups(model, ctx.structure, method.score)
    plan = allocate(ctx.cost, scores, ctx.target)
    for g, mask in plan.removed(ctx.structure).items():
        assert torch.equal(mask, hook.removed[g])
        assert bool((scores[g][mask] == 0).all()) and bool((scores[g][~mask] > 0).all())
