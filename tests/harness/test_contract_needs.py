"""`Needs` is enforced: what a method does not declare it cannot use (ctx.data without `data`,
ctx.fit without `training`, `LayerView.grad` without `grads`), and a train-time method that does
not declare training is refused when its class is defined."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import IncompatibleMethodError
from harness.method import Needs, OneShotMethod, PruneContext, TrainTimeMethod, within_needs
from harness.registry import MODELS
from harness.structure import build_structure, score_groups


class Scorer(OneShotMethod):
    registry_name = "scorer"

    def __init__(self, needs: Needs) -> None:
        self.needs = needs

    def score(self, view):
        return view.weight.reshape(len(view.channels), -1).abs().sum(1)


def context() -> PruneContext:
    def fit(*args, **kwargs):
        return "trained"

    return PruneContext(
        model=nn.Linear(2, 2),
        structure=None,
        cost=None,
        task=None,
        data="the batches",
        runtime=None,
        target=0.5,
        seed=0,
        fit=fit,
    )


def test_undeclared_data_and_training_raise_naming_the_method_and_the_fix():
    ctx = within_needs(context(), Scorer(Needs()))
    with pytest.raises(IncompatibleMethodError, match=r"'scorer' uses ctx.data.*Needs\(data=True"):
        _ = ctx.data.train
    with pytest.raises(IncompatibleMethodError, match=r"'scorer' uses ctx.fit.*training=True"):
        ctx.fit(ctx.model, epochs=1)


def test_declared_needs_see_the_real_context():
    ctx = within_needs(context(), Scorer(Needs(data=True, training=True)))
    assert ctx.data == "the batches"
    assert ctx.fit() == "trained"


def test_the_stand_in_survives_copy():
    import copy

    ctx = within_needs(context(), Scorer(Needs()))
    copy.deepcopy(ctx.data)  # copy/pickle probes dunders; only real use raises


def test_layer_views_carry_gradients_only_when_declared():
    torch.manual_seed(0)
    net, x = MODELS.get("test_resnet")(), torch.randn(2, 3, 8, 8)
    structure = build_structure(net, x)
    net(x).sum().backward()
    seen: dict[bool, list] = {}
    for grads in (False, True):
        seen[grads] = []

        def score(view, grads=grads):
            seen[grads].append(view.grad)
            return view.weight.reshape(len(view.channels), -1).abs().sum(1)

        score_groups(net, structure, score, grads=grads)
    assert seen[False] and all(g is None for g in seen[False])
    assert any(g is not None for g in seen[True])


def test_a_train_time_method_must_declare_training():
    with pytest.raises(TypeError, match="training=True"):

        class Untrained(TrainTimeMethod):  # noqa: F841 - the definition itself must fail
            needs = Needs()

            def hooks(self, ctx):
                return []

            def score(self, view):
                return None
