"""EDSR / SRResNet: the PixelShuffle upsampler convs share the trunk's latent vector (the paper's
sharing rule), each trunk feature channel owning its r² sub-pixel channels; compact == masked."""

from __future__ import annotations

import copy

import pytest
import torch
from dhp_helpers import make_sr_ctx
from torch import nn

import tasks  # noqa: F401
from harness.registry import MODELS
from harness.structure import Plan, build_structure, masked_copy
from methods.dhp import DHP, build_search_net, compact, materialise
from methods.dhp.latents import upsampler_ties, with_ties
from methods.dhp.search import keep_masks

#: model → (trunk group, upsampler convs) at ×4: two ×2 stages
PAPER_NETS = {
    "edsr_paper": ("head", ["upsampler.0", "upsampler.2"]),
    "srresnet": ("head", ["upsampler.0", "upsampler.3"]),
}


@pytest.mark.parametrize("name", sorted(PAPER_NETS))
def test_full_size_upsampler_groups_are_tied_to_the_trunk(name):
    trunk, ups = PAPER_NETS[name]
    model = MODELS.get(name)(scale=4)
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    ties = upsampler_ties(structure)
    assert ties == dict.fromkeys(ups, trunk)
    width = structure.groups[trunk].size  # 128 (EDSR of the DHP tables) / 64 (SRResNet)
    assert width == {"edsr_paper": 128, "srresnet": 64}[name]
    for up in ups:
        group = structure.groups[up]
        (producer,) = [s for s in group.producers if s.module == up]
        assert group.size == width and len(producer.channels) == 4 * width
        # unit u owns the 4 sub-pixel channels 4u … 4u + 3 of the conv's output
        by_channel = producer.units[producer.channels.argsort()]
        assert torch.equal(by_channel, torch.arange(4 * width) // 4)


def small(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.get(name)(scale=4, n_blocks=2, n_feats=12)


@pytest.mark.parametrize("name", sorted(PAPER_NETS))
@pytest.mark.parametrize("tie", [True, False])
def test_search_net_shares_the_trunk_vector_and_compact_equals_masked(name, tie):
    trunk, ups = PAPER_NETS[name]
    model = small(name)
    x = torch.rand(2, 3, 6, 6)
    structure = build_structure(model, x[:1])
    ties = upsampler_ties(structure) if tie else {}
    net = build_search_net(model, structure, seed=0, ties=ties)
    groups = set(net.latents.groups())
    if tie:  # no latent of their own: the upsampler convs read the trunk's
        assert trunk in groups and not groups & set(ups)
        for up in ups:
            gen = net.generators()[up]
            assert gen.wiring(net.latents).shape == (4 * 12, 12)
            row = net.latents.vector(_row_spec(gen))
            torch.testing.assert_close(row, net.latents[trunk].detach().repeat_interleave(4))
    else:  # the per-conv option: each upsampler conv owns a 12-unit vector
        assert set(ups) <= groups
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for group in net.latents.groups():
            if structure.groups[group].prunable:
                z = net.latents[group]
                z[torch.rand(z.shape, generator=g) < 0.4] = 0.0
    vectors = {
        grp: net.latents[grp] for grp in net.latents.groups() if structure.groups[grp].prunable
    }
    removed = with_ties({k: ~m for k, m in keep_masks(vectors, threshold=5e-3).items()}, ties)
    assert bool(removed[trunk].any())
    if tie:
        for up in ups:
            assert torch.equal(removed[up], removed[trunk])
    plan = Plan.from_removed({k: v for k, v in removed.items() if bool(v.any())})
    net.eval()
    with torch.no_grad():
        reference = masked_copy(materialise(copy.deepcopy(net)), structure, plan)(x)
    pruned = compact(net, structure, plan).eval()
    kept = int((~removed[trunk]).sum())
    convs = dict(pruned.named_modules())
    if tie:
        for up in ups:  # each surviving trunk channel keeps its 4 sub-pixel channels
            assert convs[up].in_channels == kept and convs[up].out_channels == 4 * kept
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (2, 3, 24, 24)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PAPER_NETS))
def test_dhp_search_on_an_sr_net_keeps_four_upsampler_channels_per_kept_trunk_channel(name):
    """Issue 23: no test ran DHP's search on an SR net, so dropping the tie (`ties={}`) passed.
    End to end on EDSR / SRResNet (12 features): the compact model's upsampler convs read the
    kept trunk channels and write 4 sub-pixel channels for each (×2 PixelShuffle stages)."""
    trunk, ups = PAPER_NETS[name]
    ctx = make_sr_ctx(small(name), target=0.75)
    # only the trunk (and what is tied to it) prunes, so reaching the target must thin it
    others = [g.name for g in ctx.structure.prunable if g.name not in {trunk, *ups}]
    result = DHP(search={"epochs": 8, "lr": 1e-3}, freeze=others).search(ctx)
    stats = result.stats
    assert stats["tied_groups"] == len(ups) and stats["batch"] == 8.0
    assert 0.73 <= stats["macs_ratio"] <= 0.75
    assert set(result.plan.kept) <= {trunk, *ups}
    kept = len(result.plan.kept[trunk])
    assert kept < 12
    convs = dict(result.model.named_modules())
    for up in ups:
        assert convs[up].in_channels == kept and convs[up].out_channels == 4 * kept, up
    assert result.model(torch.rand(1, 3, 6, 6)).shape == (1, 3, 24, 24)


def _row_spec(gen):
    from methods.dhp.latents import VectorSpec

    return VectorSpec(gen.wiring.row_sources, gen.wiring.row_index)
