"""Group tracing: Torch-Pruning's groups one root at a time, bounded on window attention."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import (
    PatchMergingV2,
    SwinTransformer,
    SwinTransformerBlockV2,
)

from harness.structure import CostModel, allocate, apply_plan, build_structure, masked_copy
from harness.structure.tracing import traced_groups

ROOTS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: the unbounded graph ran for minutes on these models."""

    def expire(signum, frame):
        raise TimeoutError(f"still tracing after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def tiny_swin(v2: bool) -> nn.Module:
    """A two-stage Swin (windows of 2×2, 8 → 16 channels): the real torchvision blocks."""
    torch.manual_seed(0)
    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    return SwinTransformer(
        patch_size=[2, 2],
        embed_dim=8,
        depths=[2, 2],
        num_heads=[2, 2],
        window_size=[2, 2],
        num_classes=10,
        **extra,
    ).eval()


def _signature(group) -> list[tuple[int, str, tuple[int, ...], tuple[int, ...]]]:
    return [
        (id(i.dep.target.module), str(i.dep.handler), tuple(i.idxs), tuple(i.root_idxs))
        for i in group.items
    ]


def test_traced_groups_are_torch_pruning_groups(tiny):
    import torch_pruning as tp

    _, model, x = tiny
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1], verbose=False)
    expected = [_signature(g) for g in dg.get_all_groups(root_module_types=ROOTS)]
    assert [_signature(g) for g in traced_groups(dg, model, ROOTS)] == expected


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_window_attention_freezes_runaway_groups_and_prunes_the_rest(v2):
    model = tiny_swin(v2)
    x = torch.randn(2, 3, 16, 16)
    with deadline(60):
        st = build_structure(model, x[:1])
    runaway = [g for g in st.groups.values() if "cannot follow" in g.reason]
    assert runaway and all(not g.prunable for g in runaway)
    assert "more than the widest dimension of the model" in runaway[0].reason
    # each block's MLP hidden layer (fc1 → GELU → fc2) is its own group and still prunes
    mlp = {g.name for g in st.prunable}
    assert mlp == {f"features.{s}.{b}.mlp.0" for s in (1, 3) for b in (0, 1)}
    cost = CostModel(st)
    rng = torch.Generator().manual_seed(0)
    scores = {g.name: torch.rand(g.size, generator=rng) for g in st.prunable}
    plan = allocate(cost, scores, 0.8)
    assert cost.ratio(plan.removed(st)) <= 0.8
    reference = masked_copy(model, st, plan)(x)
    apply_plan(model, st, plan)
    assert model.features[1][0].mlp[0].out_features < 32  # 4 × 8 before
    torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)


def test_rexnet_partial_residuals_stop_at_the_item_bound():
    """ReXNet adds its shortcut to a slice of the channels; the unbounded traversal of those
    groups splits into one-index items that never stop multiplying."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("rexnet_100", in_chans=1, num_classes=10).eval()
    x = torch.randn(2, 1, 16, 16)
    with deadline(60):
        st = build_structure(model, x[:1])
    stopped = [g for g in st.groups.values() if "its traversal passed" in g.reason]
    assert stopped and all(not g.prunable for g in stopped)
    assert len(st.prunable) >= 20  # the expansion and SE groups of every block still prune
    rng = torch.Generator().manual_seed(0)
    cost = CostModel(st)
    plan = allocate(cost, {g.name: torch.rand(g.size, generator=rng) for g in st.prunable}, 0.6)
    reference = masked_copy(model, st, plan)(x)
    apply_plan(model, st, plan)
    torch.testing.assert_close(model(x), reference, atol=1e-4, rtol=1e-4)
