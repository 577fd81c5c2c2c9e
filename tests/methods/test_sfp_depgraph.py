"""SFP's and DepGraph's paper rules on hand-made nets whose answer is worked out in the comments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import ConfigError
from harness.method import PruneContext
from harness.structure import (
    CostModel,
    allocate,
    allocation_policy,
    build_structure,
    score_groups,
)
from harness.train import LoopState
from methods.depgraph import DepGraph, GroupNormHook
from methods.sfp import SFP, SoftFilterHook
from tests.conftest import TINY_MODELS, randomize_bn


def ctx_for(model: nn.Module, example: torch.Tensor, target: float = 0.5, **prune) -> PruneContext:
    structure = build_structure(model, example)
    cost = CostModel(structure)
    return PruneContext(
        model=model,
        structure=structure,
        cost=cost,
        # the run's policy as the pipeline resolves it for SFP (the hooks here allocate by it)
        policy=allocation_policy(prune, SFP, cost),
        task=None,
        data=None,
        runtime=None,
        target=target,
        seed=0,
        fit=None,
    )


def state(model: nn.Module, optimizer=None) -> LoopState:
    return LoopState(model, optimizer, None, epochs=1, steps_per_epoch=1)


def set_(p: torch.Tensor, values) -> None:
    with torch.no_grad():
        p.copy_(torch.tensor(values, dtype=p.dtype).view_as(p))


# --- SFP ---------------------------------------------------------------------------------------

# conv0: Conv2d(1 → 4, 2×2) on a 3×3 input (2×2 out), conv1: 1×1 4 → 4, conv2: 1×1 4 → 2 (output).
# MACs = 16·o0 + 4·o0·o1 + 8·o1 = 160 unpruned. Uniform allocation removes from the group with the
# highest kept fraction (ties: the earlier group): (3,4) 128, (3,3) 108, (2,3) 80, (2,2) 64 — so
# target 0.45 (72 MACs) removes 2 units of each group.
# conv0 filters:  f0 (3,0,0,0)  f1 (1,1,1,1)  f2 (0,−1,0,0)  f3 (−2,1.5,0,0)
#   ℓ2:           3             2             1              2.5      → zero f2, f1
#   ℓ1:           3             4             1              3.5      (would zero f2, f0)
# conv1 rows ℓ2:  4, 1, 3, 0.5                                        → zero rows 3, 1
# (the kept rows 0 and 2 read every input, so each zeroed conv0 filter still gets a gradient)
CONV0 = [[3, 0, 0, 0], [1, 1, 1, 1], [0, -1, 0, 0], [-2, 1.5, 0, 0]]
CONV1 = [[2, 2, 2, 2], [0, 1, 0, 0], [1.5, 1.5, 1.5, 1.5], [0, 0, 0, 0.5]]


def sfp_net() -> nn.Sequential:
    # no nonlinearity between the convs: a zeroed filter's gradient only needs the next layer
    net = nn.Sequential(nn.Conv2d(1, 4, 2), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1))
    set_(net[0].weight, CONV0)
    set_(net[0].bias, [0.1, 0.2, 0.3, 0.4])
    set_(net[1].weight, CONV1)
    set_(net[1].bias, [0.5, 0.6, 0.7, 0.8])
    set_(net[2].weight, [[1, -1, 1, -1], [0.5, 0.5, 0.5, 0.5]])
    return net


def sfp_hook(net: nn.Module, target: float = 0.45, **prune) -> tuple[SoftFilterHook, PruneContext]:
    ctx = ctx_for(net, torch.zeros(1, 1, 3, 3), target, **prune)
    assert ctx.cost.base_macs == 16 * 4 + 4 * 4 * 4 + 8 * 4
    (hook,) = SFP(epochs=1).hooks(ctx)
    return hook, ctx


def test_sfp_zeroes_the_smallest_l2_filters_of_every_layer_at_epoch_end():
    net = sfp_net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    hook, _ = sfp_hook(net)
    s = state(net)
    hook.after_epoch(s)
    zeroed = {"0": [1, 2], "1": [1, 3]}
    for layer, rows in zeroed.items():
        w, b = net.get_submodule(layer).weight, net.get_submodule(layer).bias
        keep = [i for i in range(4) if i not in rows]
        assert bool((w[rows] == 0).all()) and bool((b[rows] == 0).all())
        assert torch.equal(w[keep], before[f"{layer}.weight"][keep])
        assert torch.equal(b[keep], before[f"{layer}.bias"][keep])
    # filters only: conv1's input columns of the zeroed conv0 units and the output layer stay
    assert torch.equal(net[1].weight[[0, 2]][:, [1, 2]], before["1.weight"][[0, 2]][:, [1, 2]])
    assert torch.equal(net[2].weight, before["2.weight"])
    assert s.metrics["sfp_zeroed"] == 4.0


def test_sfp_final_cut_removes_exactly_the_zeroed_filters():
    net = sfp_net()
    hook, ctx = sfp_hook(net)
    hook.after_epoch(state(net))
    # what the pipeline does after the last epoch: score with the method, allocate, cut
    scores = score_groups(net, ctx.structure, SFP().score)
    plan = allocate(ctx.cost, scores, ctx.target)
    assert plan.kept == {"0": [0, 3], "1": [0, 2]}
    assert {g: m.nonzero().flatten().tolist() for g, m in hook.removed.items()} == {
        "0": [1, 2],
        "1": [1, 3],
    }


@pytest.mark.parametrize("prune", [{"round_to": 2}, {"allocation": "global", "floor": 0.5}])
def test_sfp_zeroes_what_the_run_policy_cuts(prune):
    # the hook and the final cut allocate through the one policy of the run, so rounding and
    # global ranking change both alike (target 0.6: uniform keeps (2, 3) without rounding)
    net = sfp_net()
    hook, ctx = sfp_hook(net, target=0.6, **prune)
    hook.after_epoch(state(net))
    plan = ctx.policy.allocate(score_groups(net, ctx.structure, SFP().score), ctx.target)
    removed = {g: m.nonzero().flatten().tolist() for g, m in plan.removed(ctx.structure).items()}
    assert removed == {g: m.nonzero().flatten().tolist() for g, m in hook.removed.items()}
    if "round_to" in prune:
        assert all(len(k) % 2 == 0 for k in plan.kept.values())


def test_sfp_zeroed_filters_keep_training_and_recover():
    net = sfp_net()
    hook, _ = sfp_hook(net)
    opt = torch.optim.SGD(net.parameters(), lr=1.0e-3)
    s = state(net, opt)
    hook.after_epoch(s)
    # one ordinary step: nothing masks the zeroed filters' gradients, so they move off zero
    opt.zero_grad()
    net(torch.ones(2, 1, 3, 3)).sum().backward()
    opt.step()
    assert bool((net[0].weight[1] != 0).any()) and bool((net[0].weight[2] != 0).any())
    # f1 grows past its peers (ℓ2 10 > 3 > 2.5 > |f2|): the next epoch end keeps it, zeroes f3
    set_(net[0].weight[1], [10, 0, 0, 0])
    hook.after_epoch(s)
    assert float(net[0].weight[1].detach().norm()) == pytest.approx(10.0)
    assert bool((net[0].weight[[2, 3]] == 0).all())
    assert s.metrics["sfp_recovered_units"] == 1.0  # f1 of group "0"; conv1 re-zeroes rows 1, 3


def test_sfp_hook_uses_the_run_prune_settings():
    hook, ctx = sfp_hook(
        sfp_net(), floor=0.75, min_channels=2, allocation="global", normalize=False, round_to=2
    )
    assert hook.policy is ctx.policy  # the run's one policy, not a copy resolved again
    p = hook.policy
    assert (p.allocation, p.normalize, p.floor, p.min_channels, p.round_to) == (
        "global",
        False,
        0.75,
        2,
        2,
    )
    hook, _ = sfp_hook(sfp_net(), allocation=None, normalize=None)
    p = hook.policy
    assert (p.allocation, p.normalize, p.floor, p.min_channels, p.round_to) == (
        "uniform",
        True,
        0.0,
        1,
        1,
    )


def sfp_hook_for(net: nn.Module, example: torch.Tensor) -> tuple[SoftFilterHook, PruneContext]:
    ctx = ctx_for(net, example, 0.5)
    return SFP(epochs=1).hooks(ctx)[0], ctx


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_sfp_zeroes_every_producer_filter_of_a_cut_unit_on_tiny_nets(name):
    # residual adds (several producers per group), depthwise, concat and a transposed conv
    torch.manual_seed(0)
    in_chans = 1 if name == "concat" else 3
    net = randomize_bn(TINY_MODELS[name](in_chans=in_chans))
    hook, ctx = sfp_hook_for(net, torch.zeros(1, in_chans, 8, 8))
    hook.after_epoch(state(net))
    modules = dict(net.named_modules())
    assert hook.removed
    for group, mask in hook.removed.items():
        assert bool(mask.any())
        for slot in ctx.structure.groups[group].producers:
            m = modules[slot.module]
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                w = m.weight.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else m.weight
                rows = w[slot.channels[mask[slot.units]]]
                assert bool((rows == 0).all()), (group, slot.module)
                kept = w[slot.channels[~mask[slot.units]]].flatten(1)
                assert bool((kept != 0).any(dim=1).all())
    plan = allocate(ctx.cost, score_groups(net, ctx.structure, SFP().score), ctx.target)
    assert all(torch.equal(plan.removed(ctx.structure)[g], m) for g, m in hook.removed.items())


def test_fpgm_soft_schedule_holds_zeroed_filters_at_zero_until_the_next_epoch_end():
    # FPGM's code zeroes the masked filters' gradients before every step (Mask.do_grad_mask);
    # without it a zeroed filter behind BatchNorm trains back within an epoch and the next epoch
    # end zeroes trained filters instead (the collapse measured on digits / ResNet-20)
    from methods.fpgm import FPGM

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 2), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    set_(net[1].bias, [0.5] * 4)  # β > 0: a zeroed channel's β passes the ReLU, so a gradient
    ctx = ctx_for(net, torch.zeros(1, 1, 3, 3), 0.5)  # reaches its filter (∝ γ/√eps)
    (hook,) = FPGM(epochs=1).hooks(ctx)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    s = state(net, opt)
    hook.after_epoch(s)
    zeroed = hook.removed[next(iter(hook.removed))]
    assert 0 < int(zeroed.sum()) < 4
    before = net[0].weight.detach().clone()
    for _ in range(3):  # what the loop does per step: backward, hooks' after_backward, step
        opt.zero_grad()
        net(torch.randn(8, 1, 3, 3)).square().sum().backward()
        hook.after_backward(s)
        opt.step()
    w, b = net[0].weight.detach(), net[0].bias.detach()
    assert bool((w[zeroed] == 0).all()) and bool((b[zeroed] == 0).all())
    assert not torch.equal(w[~zeroed], before[~zeroed])  # the others train
    # the next epoch end selects again among the trained filters; the frozen ones stay lowest
    hook.after_epoch(s)
    assert torch.equal(hook.removed[next(iter(hook.removed))], zeroed)
    # freeze=false is SFP's rule: the zeroed filters train back (γ/√eps-sized gradients)
    set_(net[1].bias, [0.5] * 4)  # the steps above may have pushed β below 0
    (soft,) = FPGM(epochs=1, freeze=False).hooks(ctx)
    soft.after_epoch(s)
    zeroed = soft.removed[next(iter(soft.removed))]
    opt.zero_grad()
    net(torch.randn(8, 1, 3, 3)).square().sum().backward()
    soft.after_backward(s)
    opt.step()
    assert bool((net[0].weight.detach()[zeroed] != 0).any())


def test_sfp_freeze_holds_its_zeroed_filters_as_fpgm_does():
    net = sfp_net()
    ctx = ctx_for(net, torch.zeros(1, 1, 3, 3), 0.45)
    (hook,) = SFP(epochs=1, freeze=True).hooks(ctx)
    opt = torch.optim.SGD(net.parameters(), lr=1.0e-3)
    s = state(net, opt)
    hook.after_epoch(s)
    opt.zero_grad()
    net(torch.ones(2, 1, 3, 3)).sum().backward()
    hook.after_backward(s)
    opt.step()  # without freeze f1 and f2 move off zero (test_sfp_zeroed_filters_keep_training…)
    assert bool((net[0].weight[[1, 2]] == 0).all()) and bool((net[0].bias[[1, 2]] == 0).all())
    assert not SFP().freeze  # the default is SFP's own rule


@pytest.mark.parametrize("method", ["fpgm", "sfp"])
@pytest.mark.parametrize("freeze", [1, "yes", None])
def test_soft_methods_reject_a_freeze_that_is_not_a_bool(method, freeze):
    from methods.fpgm import FPGM

    cls = {"fpgm": FPGM, "sfp": SFP}[method]
    with pytest.raises(ConfigError, match=rf"{method} freeze=.*true or false"):
        cls(freeze=freeze)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_sfp_rejects_epochs_outside_the_allowed_range(epochs):
    with pytest.raises(ConfigError, match=r"sfp epochs=.*integer >= 1"):
        SFP(epochs=epochs)


# --- DepGraph ----------------------------------------------------------------------------------

# conv0: Conv2d(1 → 4, 1×1, bias) → BN(4) → ReLU → conv3: Conv2d(4 → 2, 1×1, bias) (model output).
# Group "0" = conv0 rows, BN γ, conv3 input columns (weights only: biases and β are neither
# regularised nor scored, as Torch-Pruning's default bias=False).
#   unit:      W0   γ    conv3[:, k]    ‖θ‖² = I_k        ‖θ‖    score I_k / max I
#   0          1    2    (2, 0)         1 + 4 + 4  = 9     3      0.36
#   1          0    1    (0, 0)         1                  1      0.04
#   2          0    3    (4, 0)         9 + 16     = 25    5      1
#   3          0    0    (0, 0)         0                  0      0
# Producers alone (W0, γ) would give I = (5, 1, 9, 0): the consumer columns change the ranking.
W0, B0, GAMMA, BETA = [1, 0, 0, 0], [0, 0, 1, 0], [2, 1, 3, 0], [0, 1, 0, 0]
W3 = [[2, 0, 4, 0], [0, 0, 0, 0]]
SCORES = [0.36, 0.04, 1.0, 0.0]


def dg_net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    for p, v in ((net[0].weight, W0), (net[0].bias, B0), (net[1].weight, GAMMA)):
        set_(p, v)
    set_(net[1].bias, BETA)
    set_(net[3].weight, W3)
    set_(net[3].bias, [7.0, -7.0])
    return net


def dg_ctx(net: nn.Module) -> PruneContext:
    ctx = ctx_for(net, torch.zeros(1, 1, 2, 2))
    assert [g.name for g in ctx.structure.prunable] == ["0"]
    return ctx


def test_depgraph_group_score_is_max_normalised_squared_norm_over_rows_gamma_and_columns():
    net = dg_net()
    ctx = dg_ctx(net)
    method = DepGraph()
    method.prepare(ctx)
    scores = score_groups(net, ctx.structure, method.score)
    torch.testing.assert_close(scores["0"], torch.tensor(SCORES))
    # the global cut at half the prunable units removes units 3 and 1
    assert scores["0"].argsort()[:2].tolist() == [3, 1]
    # already normalised per group (by its max): ranked raw, globally
    assert DepGraph.default_allocation == "global" and not DepGraph.normalize_scores


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_depgraph_group_score_matches_a_per_channel_reference_on_tiny_nets(name):
    torch.manual_seed(0)
    in_chans = 1 if name == "concat" else 3
    net = randomize_bn(TINY_MODELS[name](in_chans=in_chans))
    ctx = ctx_for(net, torch.zeros(1, in_chans, 8, 8))
    method = DepGraph()
    method.prepare(ctx)
    scores = score_groups(net, ctx.structure, method.score)
    modules = dict(net.named_modules())
    for g in ctx.structure.prunable:
        expected = torch.zeros(g.size, dtype=torch.float64)
        for slot in g.slots:
            m = modules[slot.module]
            for u, c in zip(slot.units.tolist(), slot.channels.tolist(), strict=True):
                if slot.side == "out":
                    if isinstance(m, nn.ConvTranspose2d):
                        parts = [m.weight[:, c]]
                    elif isinstance(m, nn.PReLU):
                        continue  # slopes, like biases, are not part of θ
                    else:
                        parts = [m.weight[c]]
                elif isinstance(m, nn.Conv2d) and m.groups > 1:
                    continue  # a depthwise filter is its output row, already counted
                elif isinstance(m, nn.ConvTranspose2d):
                    parts = [m.weight[c]]
                else:
                    parts = [m.weight[:, c]]
                expected[u] += sum(float(p.detach().double().square().sum()) for p in parts)
        expected = expected / expected.max()
        torch.testing.assert_close(scores[g.name].double(), expected, rtol=1e-5, atol=1e-6)


def test_depgraph_regulariser_adds_lambda_theta_to_every_weight_of_a_unit():
    net = dg_net()
    ctx = dg_ctx(net)
    lam = 0.1
    (hook,) = DepGraph(lam=lam, alpha=0.0).hooks(ctx)
    assert isinstance(hook, GroupNormHook)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    hook.before_fit(state(net))
    hook.after_backward(state(net))
    # ∂((λ/2) Σ_k ‖θ_k‖²)/∂θ_k = λ θ_k on conv0's rows, γ and conv3's columns
    for p, values in ((net[0].weight, W0), (net[1].weight, GAMMA)):
        torch.testing.assert_close(p.grad.flatten(), lam * torch.tensor(values, dtype=torch.float))
    torch.testing.assert_close(net[3].weight.grad.view(2, 4), lam * torch.tensor(W3).float())
    for p in (net[0].bias, net[1].bias, net[3].bias):  # biases and β: untouched
        assert torch.equal(p.grad, torch.zeros_like(p))


def test_depgraph_alpha_shrinks_the_least_important_units_hardest():
    # ‖θ_k‖ = (3, 1, 5, 0): γ_k = 2^{α (5 − ‖θ_k‖)/5}; with α = 2: unit 2 (the most important)
    # gets γ = 1, unit 1 2^{1.6}, unit 0 2^{0.8}; unit 3 is zero and stays 0
    net = dg_net()
    (hook,) = DepGraph(lam=1.0, alpha=2.0).hooks(dg_ctx(net))
    net[1].weight.grad = torch.zeros(4)
    net[1].bias.grad = torch.zeros(4)
    hook.before_fit(state(net))
    hook.after_backward(state(net))
    gamma = torch.tensor([2**0.8, 2**1.6, 1.0, 4.0])
    torch.testing.assert_close(net[1].weight.grad, torch.tensor(GAMMA).float() * gamma)
    assert torch.equal(net[1].bias.grad, torch.zeros(4))
    assert net[0].weight.grad is None  # parameters without a gradient are skipped


def test_depgraph_scores_need_prepare():
    with pytest.raises(RuntimeError, match="prepare"):
        DepGraph().score(None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": -1.0e-3}, r"lam=-0.001; use lam >= 0"),
        ({"alpha": -1.0}, r"alpha=-1.0; use 0 <= alpha <= 10"),
        ({"alpha": 11.0}, r"alpha=11.0; use 0 <= alpha <= 10"),
        ({"epochs": -1}, r"epochs=-1; use an integer >= 0"),
        ({"epochs": 2.5}, r"epochs=2.5; use an integer >= 0"),
    ],
)
def test_depgraph_rejects_arguments_outside_the_allowed_range(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DepGraph(**kwargs)


def test_depgraph_regulariser_reads_nothing_back_to_the_host():
    # meta tensors carry shapes but no data: any .item(), bool() or .cpu() in the hook would raise
    net = TINY_MODELS["resnet"]()
    ctx = ctx_for(net, torch.zeros(1, 3, 8, 8))
    net = net.to("meta")
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    (hook,) = DepGraph(lam=1.0e-3, alpha=2.0).hooks(ctx)
    s = state(net)
    hook.before_fit(s)
    hook.after_backward(s)
    with pytest.raises(RuntimeError, match="meta"):
        bool(next(net.parameters()).grad.sum())  # the trap is armed


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_depgraph_regulariser_does_not_sync_with_the_host():
    torch.manual_seed(0)
    net = TINY_MODELS["resnet"]()
    ctx = ctx_for(net, torch.zeros(1, 3, 8, 8))
    net = net.cuda()
    (hook,) = DepGraph(lam=1.0e-3, alpha=2.0).hooks(ctx)
    s = state(net)
    hook.before_fit(s)
    net(torch.randn(4, 3, 8, 8, device="cuda")).sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        hook.after_backward(s)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
