"""DHP's latents: one per group by name, the conv ↔ latent wiring, dropping a zeroed entry."""

from __future__ import annotations

import torch
from dhp_helpers import build, make_ctx
from torch import nn

from harness.structure import ChannelGroup, Plan, Slot, Structure, apply_plan, build_structure
from methods.dhp import DHP, build_search_net, last_stream_groups, materialise
from methods.dhp.latents import build_latents
from methods.dhp.search import keep_masks


def side_vector(net, conv: str, rows: bool) -> torch.Tensor:
    gen = net.generators()[conv]
    z = gen.wiring(net.latents).detach()  # [rows, cols] = row ⊗ col
    return z[:, 0] if rows else z[0]


def test_one_latent_per_group_keyed_by_name():
    model = build("resnet_proj")
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    net = build_search_net(model, structure, seed=0)
    conv_groups = {g.name for g in structure if any(s.module in net.generators() for s in g.slots)}
    assert set(net.latents.groups()) == conv_groups
    for name in conv_groups:
        assert net.latents[name].shape == (structure.groups[name].size,)
    # the image channels of the stem read a vector of their own, not a group's
    assert list(net.latents.fixed) == ["in:stem/0"]
    assert net.latents.fixed["in:stem/0"].shape == (3,)
    # one group for the stride-2 stage stream: b2's and proj's outputs share a latent
    b2_out = structure.slots_of("b2.0", "out")[0][0].name
    assert structure.slots_of("proj.0", "out")[0][0].name == b2_out
    assert net.generators()["b2.0"].wiring.row_sources == (("z", b2_out.replace(".", "/")),)


def test_same_seed_same_latents_and_hypernetworks():
    a = build_search_net(build("concat"), build_structure(build("concat"), torch.randn(1, 3, 8, 8)))
    b = build_search_net(build("concat"), build_structure(build("concat"), torch.randn(1, 3, 8, 8)))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb), ka


def test_concat_input_is_the_sources_latents_in_channel_order():
    model = build("concat")
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    net = build_search_net(model, structure, seed=0)
    a = side_vector(net, "dec.0", rows=False)  # dec reads cat([up (6), enc (8)])
    up, enc = structure.slots_of("up", "out")[0][0].name, structure.slots_of("enc.0", "out")[0][0]
    expected = torch.cat([net.latents[up], net.latents[enc.name]]).detach()
    torch.testing.assert_close(a / a[0], expected / expected[0])
    # the transposed conv's rows are its input channels: they read the `down` group's latent
    rows = side_vector(net, "up", rows=True)
    down = structure.slots_of("down.0", "out")[0][0].name
    torch.testing.assert_close(rows / rows[0], (net.latents[down] / net.latents[down][0]).detach())


def test_depthwise_reads_its_own_input_vector_and_passes_its_group_through():
    model = build("inverted_residual")
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    net = build_search_net(model, structure, seed=0)
    dw = "blocks.0.dw.0"
    gen = net.generators()[dw]
    assert gen.wiring.col_sources == (("fixed", "dw:blocks/0/dw/0"),)
    expand_group = structure.slots_of("blocks.0.expand.0", "out")[0][0].name
    assert structure.slots_of(dw, "out")[0][0].name == expand_group
    assert gen.wiring.row_sources == (("z", expand_group.replace(".", "/")),)


def test_units_expand_to_channels_like_a_pixelshuffle_upsampler():
    """A unit owning several channels (PixelShuffle(2): 4 sub-pixel channels per feature) gives
    all of them its latent entry, on the producer's output and on the consumer's input."""

    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(3, 4, 3, padding=1)
            self.up = nn.Conv2d(4, 12, 3, padding=1)  # 3 features × 4 sub-pixels
            self.shuffle = nn.PixelShuffle(2)
            self.tail = nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            return self.tail(self.shuffle(self.up(self.head(x))))

    model = Up()
    units = torch.arange(12) // 4  # channel c of `up` belongs to feature c // 4
    ch = torch.arange(12)
    structure = Structure(
        groups={
            "head": ChannelGroup("head", 4, [Slot("head", "out", torch.arange(4), torch.arange(4)),
                                             Slot("up", "in", torch.arange(4), torch.arange(4))]),
            "up": ChannelGroup("up", 3, [Slot("up", "out", units, ch),
                                         Slot("tail", "in", torch.arange(3), torch.arange(3))]),
            "tail": ChannelGroup("tail", 2, [Slot("tail", "out", torch.arange(2), torch.arange(2))],
                                 prunable=False, reason="feeds the model output"),
        },
        layers={},
        input_shape=(3, 8, 8),
    )  # fmt: skip
    latents, wiring = build_latents(model, structure, generator=torch.Generator().manual_seed(0))
    z = latents["up"].detach()
    b = wiring["up"](latents)[:, 0].detach() / latents["head"][0].detach()
    torch.testing.assert_close(b, z.repeat_interleave(4))
    tail_in = wiring["tail"](latents)[0].detach() / latents["tail"][0].detach()
    torch.testing.assert_close(tail_in, z)


def test_a_zeroed_latent_entry_drops_its_channel_from_every_consumer():
    model = build("resnet_proj")
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    net = build_search_net(model, structure, seed=0)
    stream = structure.slots_of("stem.0", "out")[0][0]  # stem, a2, proj.in, b1.in, a1.in
    with torch.no_grad():
        net.latents[stream.name][3] = 0.0
    vectors = {g: net.latents[g] for g in net.latents.groups()}
    keep = keep_masks(vectors, threshold=5e-3)
    assert torch.equal(~keep[stream.name], torch.arange(8) == 3)
    plan = Plan.from_removed({g: ~k for g, k in keep.items() if not bool(k.all())})
    full = materialise(net)
    reference = {
        n: m.weight.detach().clone()
        for n, m in full.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d)
    }
    compact = dict(apply_plan(full, structure, plan).named_modules())
    kept = torch.tensor([i for i in range(8) if i != 3])
    assert len(stream.consumers) >= 3
    for slot in stream.slots:
        w = compact[slot.module].weight
        if slot.side == "out":
            torch.testing.assert_close(w, reference[slot.module][kept])
        else:
            torch.testing.assert_close(w, reference[slot.module][:, kept])


def test_frozen_groups_keep_latents_but_are_not_prunable():
    model = build("resnet_proj")
    ctx = make_ctx(model, model_name="resnet_proj")
    net = build_search_net(model, ctx.structure, seed=0)
    dhp = DHP(freeze=["a1*"], freeze_last_stream=True)
    st = dhp.settings(model="resnet_proj", task="toy", train={}, loader=ctx.data.train)
    prunable = dhp.prunable(ctx.structure, net.latents, st)
    last = last_stream_groups(ctx.structure)
    assert last == [structure_group(ctx.structure, "b2.0")]
    assert last[0] in net.latents and last[0] not in prunable
    assert "a1.0" in net.latents and "a1.0" not in prunable
    assert set(prunable) < set(net.latents.groups())


def structure_group(structure, layer: str) -> str:
    return structure.slots_of(layer, "out")[0][0].name
