"""The structure check: groups whose removal breaks the model's own code are frozen, not pruned."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer  # the dev extras install timm
from torch import nn

from harness.structure import CostModel, allocate, apply_plan, build_structure, masked_copy


def tiny_timm_vit() -> nn.Module:
    """timm's ViT reshapes qkv to (3, heads, head_dim) with sizes fixed at construction."""
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2, num_heads=2
    ).eval()


def test_groups_that_break_the_forward_pass_are_frozen_with_the_error():
    model = tiny_timm_vit()
    x = torch.randn(2, 1, 16, 16)
    st = build_structure(model, x[:1])
    broken = {g.name: g.reason for g in st.groups.values() if "breaks the forward" in g.reason}
    assert set(broken) == {"blocks.0.attn.qkv", "blocks.1.attn.qkv"}
    assert "RuntimeError: shape" in broken["blocks.0.attn.qkv"]
    assert {g.name for g in st.prunable} == {"blocks.0.mlp.fc1", "blocks.1.mlp.fc1"}
    # what stays prunable prunes: the compact model runs and equals the masked one
    rng = torch.Generator().manual_seed(0)
    cost = CostModel(st)
    plan = allocate(cost, {g.name: torch.rand(g.size, generator=rng) for g in st.prunable}, 0.8)
    reference = masked_copy(model, st, plan)(x)
    apply_plan(model, st, plan)
    assert model.blocks[0].mlp.fc1.out_features < 64
    torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)


def test_a_model_that_prunes_cleanly_is_left_as_derived(tiny):
    from harness.structure.groups import derive_structure

    _, model, x = tiny
    derived = derive_structure(model, x[:1])
    built = build_structure(model, x[:1])
    assert [(g.name, g.prunable) for g in built] == [(g.name, g.prunable) for g in derived]
