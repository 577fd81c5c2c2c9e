"""The structure engine: groups, physical removal, the cost model, allocation, save/reload."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.errors import CheckpointError, ConfigError, ImpossibleTargetError
from harness.run.measure import count_macs
from harness.structure import (
    CostModel,
    Plan,
    allocate,
    apply_plan,
    build_structure,
    load_pruned,
    masked_copy,
    save_pruned,
)
from tests.conftest import TinyConcat, TinyResNet, randomize_bn


def random_scores(structure, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {grp.name: torch.rand(grp.size, generator=g) for grp in structure.prunable}


def test_residual_groups_tie_the_stream():
    st = build_structure(TinyResNet(), torch.randn(1, 3, 8, 8))
    stream = st.groups["stem.0"]
    layers = {(s.module, s.side) for s in stream.slots}
    # stem, both residual producers and every consumer of the 8-channel stream are one group
    assert {
        ("stem.0", "out"),
        ("b2.0", "out"),
        ("b1.0", "in"),
        ("c1.0", "in"),
        ("proj.0", "in"),
    } <= layers
    # the second stage's stream couples the projection with the block's last conv
    second = {(s.module, s.side) for s in st.groups["c2.0"].slots}
    assert {("proj.0", "out"), ("c2.0", "out"), ("proj.1", "out"), ("fc", "in")} <= second
    assert not st.groups["fc"].prunable and "output" in st.groups["fc"].reason


def test_concat_consumer_is_split_between_groups():
    st = build_structure(TinyConcat(), torch.randn(1, 1, 8, 8))
    owners = {g.name: s for g, s in st.slots_of("dec", "in")}
    assert set(owners) == {"up", "enc"}
    assert owners["up"].channels.tolist() == list(range(6))
    assert owners["enc"].channels.tolist() == list(range(6, 14))
    assert not st.groups["out"].prunable  # the global residual's output layer


@pytest.mark.parametrize("target", [0.7, 0.5, 0.3])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_compact_equals_masked_and_cost_matches_fvcore(tiny, target, allocation):
    name, model, x = tiny
    st = build_structure(model, x[:1])
    cost = CostModel(st)
    plan = allocate(cost, random_scores(st), target, allocation=allocation)
    ratio = cost.ratio(plan.removed(st))
    assert ratio <= target
    reference = masked_copy(model, st, plan)(x)
    apply_plan(model, st, plan)
    torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    # the analytic cost model is exactly fvcore's conv+linear count on the compact model
    assert count_macs(model, tuple(x.shape[1:])).macs == cost.macs(plan.removed(st))


def test_keeping_everything_changes_nothing(tiny):
    _, model, x = tiny
    st = build_structure(model, x[:1])
    before = model(x)
    apply_plan(model, st, Plan())
    torch.testing.assert_close(model(x), before)


def test_uniform_keeps_equal_fractions_global_does_not():
    st = build_structure(TinyResNet(), torch.randn(1, 3, 8, 8))
    cost = CostModel(st)
    # scores that make global allocation empty one group first
    scores = {g.name: torch.linspace(1.0, 2.0, g.size) for g in st.prunable}
    scores["b1.0"] = torch.tensor([1e-3] * 6 + [1.0, 1.0])
    uni = allocate(cost, scores, 0.6, allocation="uniform")
    fractions = [len(uni.kept[g.name]) / g.size for g in st.prunable]
    assert max(fractions) - min(fractions) <= 1 / 8 + 1e-9
    glob = allocate(cost, scores, 0.6, allocation="global", min_channels=2)
    assert glob.kept["b1.0"] == [6, 7]  # its six near-zero units go first, down to the floor


def test_floor_is_respected_and_impossible_target_is_named():
    st = build_structure(TinyResNet(), torch.randn(1, 3, 8, 8))
    cost = CostModel(st)
    plan = allocate(cost, random_scores(st), 0.2, allocation="global", floor=0.25)
    for g in st.prunable:
        assert len(plan.kept[g.name]) >= 2  # ceil(0.25 * 8)
    with pytest.raises(ImpossibleTargetError, match="floors allow"):
        allocate(cost, random_scores(st), 0.01, floor=0.5)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, float("nan")])
def test_target_outside_unit_interval(target):
    st = build_structure(TinyResNet(), torch.randn(1, 3, 8, 8))
    with pytest.raises(ImpossibleTargetError, match=r"\(0, 1\]"):
        allocate(CostModel(st), random_scores(st), target)


def test_unknown_allocation():
    st = build_structure(TinyResNet(), torch.randn(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="known: global, uniform"):
        allocate(CostModel(st), random_scores(st), 0.5, allocation="greedy")


def test_same_scores_same_plan():
    st = build_structure(TinyResNet(), torch.randn(1, 3, 8, 8))
    a = allocate(CostModel(st), random_scores(st, 3), 0.5)
    b = allocate(CostModel(st), random_scores(st, 3), 0.5)
    assert a.to_dict() == b.to_dict()


def test_save_reload_round_trip_without_pruning_code(tiny, tmp_path):
    name, model, x = tiny
    st = build_structure(model, x[:1])
    plan = allocate(CostModel(st), random_scores(st), 0.5)
    apply_plan(model, st, plan)
    save_pruned(tmp_path / "run", model, plan, meta={"model": name})
    fresh = type(model)(in_chans=x.shape[1]).eval()
    reloaded, doc = load_pruned(tmp_path / "run", fresh)
    torch.testing.assert_close(reloaded(x), model(x))
    assert doc["plan"] == plan.to_dict()


def test_reload_into_wrong_model_names_both(tmp_path):
    model = randomize_bn(TinyResNet()).eval()
    st = build_structure(model, torch.randn(1, 3, 8, 8))
    plan = allocate(CostModel(st), random_scores(st), 0.5)
    apply_plan(model, st, plan)
    save_pruned(tmp_path / "run", model, plan, meta={"model": "test_resnet"})
    with pytest.raises(CheckpointError, match="test_resnet"):
        load_pruned(tmp_path / "run", TinyConcat())
    (tmp_path / "run" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pruned(tmp_path / "run", TinyResNet())


def test_grouped_conv_merges_whole_groups_or_freezes():
    class Grouped(nn.Module):
        def __init__(self, shared: bool = False):
            super().__init__()
            self.shared = shared
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1, groups=2)
            self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=4)
            self.c = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            x = self.a(x)
            return self.c(self.b(x) + self.b2(x)) if self.shared else self.c(self.b(x))

    st = build_structure(Grouped(), torch.randn(1, 3, 8, 8))
    assert st.groups["a"].prunable and st.groups["a"].size == 2
    # one input feeding two grouped convs with different blocks: frozen, never mis-pruned
    st = build_structure(Grouped(shared=True), torch.randn(1, 3, 8, 8))
    assert not st.groups["a"].prunable and "not in whole blocks" in st.groups["a"].reason


def test_shape_changing_ops_torch_pruning_misreads_are_frozen_not_mispruned():
    """tp treats channel zero-padding as elementwise; that group must freeze."""

    class PadShortcut(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            short = nn.functional.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
            return self.fc((self.b(h) + short).mean((2, 3)))

    model = PadShortcut()
    st = build_structure(model, torch.randn(1, 3, 8, 8))
    assert any("inconsistent" in g.reason for g in st.groups.values())
    for g in st.prunable:  # whatever stays prunable must prune correctly
        pruned = apply_plan(copy.deepcopy(model), st, Plan({g.name: [0]}))
        pruned(torch.randn(1, 3, 8, 8))


def test_pixel_shuffle_unit_owns_its_r2_channels_and_prunes_exactly():
    """tp maps channel c before PixelShuffle(r) to channel c after it; the structure re-maps it
    (unit = c // r², as EDSR's upsampler needs) so the group is prunable and exact."""

    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Conv2d(3, 16, 3, padding=1)  # 4 features × 4 sub-pixels
            self.ps = nn.PixelShuffle(2)
            self.act = nn.PReLU(4)
            self.tail = nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, x):
            return self.tail(self.act(self.ps(self.up(x))))

    model = Shuffle().eval()
    x = torch.randn(2, 3, 8, 8)
    st = build_structure(model, x[:1])
    group = st.groups["up"]
    assert group.prunable and group.size == 4
    slots = {(s.module, s.side): s for s in group.slots}
    assert slots[("up", "out")].units.tolist() == [c // 4 for c in range(16)]
    assert slots[("act", "out")].channels.tolist() == [0, 1, 2, 3]
    assert slots[("tail", "in")].channels.tolist() == [0, 1, 2, 3]
    plan = Plan({"up": [0, 2]})
    cost = CostModel(st)
    reference = masked_copy(model, st, plan)(x)
    apply_plan(model, st, plan)
    assert (model.up.out_channels, model.act.num_parameters, model.tail.in_channels) == (8, 2, 2)
    torch.testing.assert_close(model(x), reference)
    assert count_macs(model, (3, 8, 8)).macs == cost.macs(plan.removed(st))


def test_grouped_conv_prunes_whole_channel_groups():
    from tests.conftest import TinyGrouped

    model = randomize_bn(TinyGrouped()).eval()
    x = torch.randn(2, 3, 8, 8)
    st = build_structure(model, x[:1])
    group = st.groups["expand.0"]
    assert group.prunable and group.size == 4  # one unit per channel group of the grouped conv
    owned = {(s.module, s.side): s.channels_per_unit(4).tolist() for s in group.slots}
    assert owned[("grouped.0", "in")] == [4] * 4 and owned[("grouped.0", "out")] == [6] * 4
    cost = CostModel(st)
    plan = allocate(cost, {"expand.0": torch.tensor([3.0, 0.0, 2.0, 1.0])}, 0.9)
    assert plan.kept["expand.0"] == [0, 2, 3]  # unit 1 = the second group of 4 in / 6 out
    reference = masked_copy(model, st, plan)(x)
    apply_plan(model, st, plan)
    assert model.grouped[0].groups == 3 and model.grouped[0].weight.shape == (18, 4, 3, 3)
    torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    assert count_macs(model, (3, 8, 8)).macs == cost.macs(plan.removed(st))
