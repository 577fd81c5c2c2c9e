"""Compaction: the compact CNN equals the search network with the pruned channels masked."""

from __future__ import annotations

import copy

import pytest
import torch
from dhp_helpers import NETS, build
from torch import nn
from torch.nn.utils import parametrize

from harness.structure import Plan, Structure, build_structure, masked_copy
from methods.dhp import build_search_net, compact, materialise
from methods.dhp.search import keep_masks


def randomize(net: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters, so equality cannot hold by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


def prune_some(net, structure: Structure, seed: int) -> dict[str, torch.Tensor]:
    """Zero ~40 % of every prunable latent (as the proximal step would) and read the masks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for group in structure.prunable:
            z = net.latents[group.name]
            z[torch.rand(z.shape, generator=g) < 0.4] = 0.0
    vectors = {grp.name: net.latents[grp.name] for grp in structure.prunable}
    keep = keep_masks(vectors, threshold=5e-3)
    return {name: ~k for name, k in keep.items() if not bool(k.all())}


def mask_search_network(net, structure: Structure, removed: dict[str, torch.Tensor]) -> list:
    """Cut the removed channels' activations right after their producers (conv and BatchNorm),
    i.e. after BN and before any residual add, on the hypernetwork network itself."""
    modules = dict(net.net.named_modules())
    handles = []
    for name, r in removed.items():
        for slot in structure.groups[name].producers:
            keep = torch.ones(
                modules[slot.module].weight.shape[0]
                if not isinstance(modules[slot.module], nn.ConvTranspose2d)
                else modules[slot.module].out_channels
            )
            keep[slot.channels[r[slot.units]]] = 0.0

            def hook(m, inputs, out, keep=keep):
                return out * keep.view(1, -1, 1, 1)

            handles.append(modules[slot.module].register_forward_hook(hook))
    return handles


@pytest.mark.parametrize("name", sorted(NETS))
def test_compact_equals_the_masked_search_network(name):
    model = build(name)
    x = torch.randn(4, 3, 8, 8)
    structure = build_structure(model, x[:1])
    net = build_search_net(model, structure, seed=0)
    randomize(net, seed=1)
    removed = prune_some(net, structure, seed=2)
    assert removed, "the test must remove something"
    plan = Plan.from_removed(removed)
    net.eval()
    with torch.no_grad():
        unmasked = net(x)
        handles = mask_search_network(net, structure, removed)
        masked = net(x)
        for h in handles:
            h.remove()
        reference = masked_copy(materialise(copy.deepcopy(net)), structure, plan)(x)
    small = compact(net, structure, plan).eval()
    with torch.no_grad():
        out = small(x)
    assert not torch.allclose(out, unmasked, atol=1e-3)  # compaction is not output-preserving
    torch.testing.assert_close(out, masked, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    # a plain CNN: no parametrizations, hypernetworks or latents left, fewer parameters
    assert not any(parametrize.is_parametrized(m) for m in small.modules())
    assert sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in build(name).parameters()
    )


def test_materialise_keeps_the_output_exactly():
    model = build("inverted_residual")
    x = torch.randn(4, 3, 8, 8)
    net = build_search_net(model, build_structure(model, x[:1]), seed=0).eval()
    with torch.no_grad():
        before = net(x)
        plain = materialise(net)
        after = plain(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert convs and all(type(m) in (nn.Conv2d, nn.ConvTranspose2d) for m in convs)
    assert all(isinstance(m.weight, nn.Parameter) for m in convs)
