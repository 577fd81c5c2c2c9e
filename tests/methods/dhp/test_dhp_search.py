"""DHP's search: proximal operator, masks and floor, stop rule, γ, resume, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dhp_helpers import build, conv_bn, dhp, make_ctx
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import parametrize

from harness.errors import CheckpointError, ConfigError, SearchDivergedError
from harness.registry import MODELS
from harness.run.pipeline import build_method
from harness.structure import CostModel, build_structure
from harness.train import LoopState
from methods.dhp import DHP, build_search_net, cut_to_target
from methods.dhp.search import (
    DHPSearch,
    GammaController,
    SearchCheckpoint,
    keep_masks,
    proximal_step,
    shrink_prior,
)

CONF = Path(__file__).resolve().parents[3] / "conf" / "method" / "dhp.yaml"


def soft(z: torch.Tensor, lam: float) -> torch.Tensor:
    return torch.sign(z) * torch.clamp(z.abs() - lam, min=0)


def test_proximal_step_is_the_soft_threshold_and_respects_the_floor():
    g = torch.Generator().manual_seed(0)
    free = torch.randn(12, generator=g)  # many entries ≥ T: shrunk
    at_floor = torch.tensor([1.0, -0.5, 0.2, -0.1, 1e-3, -2e-3, 0.0])  # 4 entries ≥ T: skipped
    # 5 entries ≥ T, but 2 within the shrink of T: one step would leave 3 ≥ T, so it is skipped
    crowded = torch.tensor([1.0, -0.9, 0.8, 0.0055, -0.0052, 1e-4])
    params = [free.clone(), at_floor.clone(), crowded.clone()]
    proximal_step(params, 0.05, threshold=5e-3, min_channels=4)
    torch.testing.assert_close(params[0], soft(free, 0.05))
    assert torch.equal(params[1], at_floor)
    assert torch.equal(params[2], crowded)
    proximal_step(params, 0.0, threshold=5e-3)  # a zero shrink changes nothing
    torch.testing.assert_close(params[0], soft(free, 0.05))


def test_min_channels_floor_holds_under_any_shrink():
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(n, generator=g) for n in (3, 4, 5, 16, 64)]
    for _ in range(80):
        proximal_step(params, 0.031, threshold=5e-3, min_channels=4)
    for p in params:
        assert int((p.abs() >= 5e-3).sum()) >= min(4, p.numel())
    keep = keep_masks({str(i): p for i, p in enumerate(params)}, threshold=5e-3)
    assert [int(k.sum()) for k in keep.values()] == [3, 4, 4, 4, 4]


def test_keep_masks_rule():
    z = torch.tensor([0.5, -0.004, 0.006, 0.0, -0.2, 0.01, 1e-5])
    assert keep_masks({"g": z}, threshold=5e-3)["g"].tolist() == [
        True, False, True, False, True, True, False,
    ]  # fmt: skip
    # all below T: the k = 4 largest survive (threshold min(T, 4th largest |z|))
    z = torch.tensor([1e-3, -4e-3, 2e-3, 3e-4, -1e-4, 0.0])
    assert keep_masks({"g": z}, threshold=5e-3)["g"].tolist() == [
        True, True, True, True, False, False,
    ]  # fmt: skip
    assert keep_masks({"g": torch.zeros(3)}, threshold=5e-3)["g"].all()  # size < 4: all kept


class ScriptedCost:
    """A cost model whose ratio follows a script, to pin the stop rule."""

    def __init__(self, ratios):
        self.ratios = iter(ratios)

    def ratio(self, removed):
        return next(self.ratios)


def run_checks(ratios, target=0.5, stop_limit=0.01):
    model = build("resnet_proj")
    ctx = make_ctx(model)
    net = build_search_net(model, ctx.structure)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    s = LoopState(net, opt, sched, epochs=10, steps_per_epoch=len(ratios))
    hook = DHPSearch(
        net, [g.name for g in ctx.structure.prunable], ScriptedCost([1.0, *ratios]),  # 1.0: init
        GammaController("paper", 1e-4, target), target=target, threshold=5e-3,
        stop_limit=stop_limit, check_every=1,
    )  # fmt: skip
    hook.before_fit(s)
    seen = []
    while s.stop_reason is None and len(seen) < len(ratios):
        s.step += 1
        hook.after_step(s)
        seen.append(hook.ratio)
    return seen, s.stop_reason


def test_stop_rule_is_one_sided():
    # 0.515 is within 0.02 of the target but above target + stop_limit: the search goes on
    seen, reason = run_checks([0.9, 0.7, 0.515, 0.509, 0.3])
    assert seen == [0.9, 0.7, 0.515, 0.509] and reason == "macs_ratio<=target+0.01"
    # an overshoot below the target also stops at once
    seen, reason = run_checks([0.9, 0.55, 0.42, 0.3])
    assert seen == [0.9, 0.55, 0.42] and reason is not None


def test_a_nan_latent_is_a_clear_divergence_error_not_an_empty_group():
    model = build("resnet_proj")
    ctx = make_ctx(model)
    net = build_search_net(model, ctx.structure)
    groups = [g.name for g in ctx.structure.prunable]
    hook = DHPSearch(
        net, groups, ScriptedCost([0.9]), GammaController("paper", 1e-4, 0.5), target=0.5,
        threshold=5e-3, stop_limit=0.01, check_every=1,
    )  # fmt: skip
    assert not any(r.any() for r in hook.masks().values())
    with torch.no_grad():
        hook.latents[groups[0]][1] = float("nan")
    with pytest.raises(SearchDivergedError, match=rf"diverged at step 7.*{groups[0]}.*search_lr"):
        hook.masks(step=7)


def test_budget_gamma_starts_from_the_prior_and_follows_the_trajectory():
    c = GammaController("budget", 2e-4, 0.5, aim=0.5)
    c.setup(lambda t: 0.1, 1000)  # Σ lr over the first 500 steps = 50
    assert c.gamma == pytest.approx(shrink_prior(0.5) / 50.0)
    assert shrink_prior(0.5) == pytest.approx(0.5)
    assert shrink_prior(0.3) > shrink_prior(0.5) > shrink_prior(0.7) > 0
    g0 = c.gamma
    # nothing pruned yet although a third of the aim has gone: γ rises
    for step in range(10, 170, 10):
        c.update(step, step * 0.1 * c.gamma * 0.1, 1.0, 10)
    assert c.gamma > g0
    # far ahead of schedule (ratio near the target early): γ falls
    fast = GammaController("budget", 2e-4, 0.5, aim=0.5)
    fast.setup(lambda t: 0.1, 1000)
    shrink = 0.0
    for step in range(10, 110, 10):
        shrink += 10 * 0.1 * fast.gamma
        fast.update(step, shrink, 1.0 - 0.45 * step / 100, 10)
    assert fast.gamma < g0
    paper = GammaController("paper", 2e-4, 0.5)
    paper.setup(lambda t: 0.1, 1000)
    paper.update(500, 0.01, 1.0, 10)
    assert paper.gamma == 2e-4
    with pytest.raises(ConfigError, match="known: budget, paper"):
        GammaController("adaptive", 2e-4, 0.5)


def test_conf_file_builds_the_method_and_resolves_paper_defaults():
    cfg = OmegaConf.load(CONF)
    method = build_method(cfg, model="resnet56", task="classification")
    assert isinstance(method, DHP) and method.needs.pretrained is False
    ctx = make_ctx(build("resnet_proj"), model_name="resnet56")
    train = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "nesterov": True,
             "momentum": 0.9, "epochs": 30, "schedule": "cosine"}  # fmt: skip
    loader = method.search_loader(ctx.data.train, "classification")
    assert loader.batch_size == 64 and len(loader) == 1  # the paper's batch over 64 toy samples
    st = method.settings(model="resnet56", task="classification", train=train, loader=loader)
    assert st.gamma == 3e-4 and st.threshold == 5e-3 and st.freeze_last_stream
    assert st.optim["lr"] == 0.1 and st.optim["weight_decay"] == 1e-4
    assert st.optim["nesterov"] is False and st.optim["schedule"] == "step"
    assert st.epochs == 100 and st.optim["milestones"] == [20, 50]
    assert st.gamma_mode == "budget"  # 1 step per epoch is far from CIFAR's 782
    method = build_method(cfg, model="mobilenetv2", task="classification")
    st = method.settings(model="mobilenetv2", task="classification", train=train, loader=loader)
    assert st.threshold == 1e-3 and st.gamma == 1e-4 and not st.freeze_last_stream
    assert st.optim["milestones"] == [50]


def test_explicit_values_win_over_the_per_model_maps_for_every_registered_model():
    """Issue 12: `method.gamma=0.019 model=resnet20` searched with 2e-4 and `method.threshold`
    did nothing on MobileNetV2. Every key of the search space must reach the method."""
    cfg = OmegaConf.load(CONF)
    picked = {"gamma": 0.019, "threshold": 0.0123, "aim": 0.5, "stop_limit": 0.02,
              "search_lr": 0.05}  # fmt: skip
    assert set(picked) == set(cfg.search_space)
    for key, value in picked.items():
        cfg[key] = value
    seen = set()
    for model in MODELS:
        task = MODELS.info(model).get("task", "classification")
        for t in {task, "classification"}:
            method = build_method(cfg, model=model, task=t)
            assert (method.gamma, method.threshold, method.aim) == (0.019, 0.0123, 0.5), model
            assert method.stop_limit == 0.02 and method.search_cfg["lr"] == 0.05, model
        seen.add(model)
    assert {"resnet20", "resnet56", "mobilenetv2", "edsr_paper", "srresnet", "dncnn"} <= seen


def wide_proj(width: int = 32):
    """ResNetProj at 4× the channels: one unit is ≤ 1.5 % of the MACs, so landing can be held
    to the acceptance's 0.02 (the 8-channel toy's units are several % each)."""
    from dhp_helpers import ResNetProj

    torch.manual_seed(0)
    net = ResNetProj()
    net.stem, net.a1, net.a2 = conv_bn(3, width), conv_bn(width, width), conv_bn(width, width)
    net.b1, net.b2 = conv_bn(width, 48, stride=2), conv_bn(48, 48)
    net.proj, net.fc = conv_bn(width, 48, k=1, stride=2), nn.Linear(48, 4)
    return net


@pytest.mark.parametrize(
    ("name", "target"), [("wide_proj", 0.5), ("wide_proj", 0.3), ("inverted_residual", 0.6)]
)
def test_search_lands_at_or_below_the_target_and_returns_a_plain_compact_cnn(name, target):
    log: list = []
    model = wide_proj() if name == "wide_proj" else build(name)
    ctx = make_ctx(model, target=target, log=log)
    result = dhp(12, checks_per_epoch=4).search(ctx)  # a check after every step
    stats = result.stats
    assert stats["stop_reason"] == "macs_ratio<=target+0.01" and stats["forced"] == 0.0
    ratios = [m["dhp/macs_ratio"] for _, m in log]
    assert len(ratios) == stats["checks"] and ratios[-1] == stats["macs_ratio_at_stop"]
    assert all(r > target + 0.01 for r in ratios[:-1])  # stopped at the first check below
    # lands in [target − 0.02, target] (land_within), whatever the last check interval removed
    assert target - 0.02 <= stats["macs_ratio"] <= target
    if stats["macs_ratio_at_stop"] > target:
        assert stats["trimmed_units"] >= 1 and stats["stepped_back"] == 0.0
    elif stats["macs_ratio_at_stop"] >= target - 0.02:
        assert stats["trimmed_units"] == 0 and stats["macs_ratio"] == stats["macs_ratio_at_stop"]
    else:  # overshot: back to the last check above the stop band, then cut to the band
        assert stats["stepped_back"] == 1.0
        assert stats["macs_ratio_stepped_back"] > target + 0.01
        assert len(ratios) == 1 or stats["macs_ratio_stepped_back"] == ratios[-2]
    assert stats["macs_ratio"] == pytest.approx(ctx.cost.ratio(result.plan.removed(ctx.structure)))
    assert {"dhp/loss", "dhp/gamma"} <= set(log[0][1])
    assert any(k.startswith("dhp/units/") for k in log[0][1])
    model = result.model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    for group, kept in result.plan.kept.items():  # the floor: ≥ 4 units per group
        assert len(kept) >= min(4, ctx.structure.groups[group].size)


def test_trim_false_keeps_the_papers_one_sided_stop():
    ctx = make_ctx(wide_proj(), target=0.5)
    result = dhp(12, checks_per_epoch=4, trim=False).search(ctx)
    stats = result.stats
    assert stats["trimmed_units"] == 0
    assert stats["macs_ratio"] == stats["macs_ratio_at_stop"] <= 0.51


def test_cut_to_target_removes_smallest_z_first_and_respects_the_floor():
    ctx = make_ctx(build("resnet_proj"), target=0.5)
    groups = [g.name for g in ctx.structure.prunable]
    g0 = groups[0]
    scores = {g: torch.arange(ctx.structure.groups[g].size, dtype=torch.float) + 1 for g in groups}
    scores[g0] = scores[g0] * 1e-3  # g0's units are the smallest: cut first
    none = {g: torch.zeros(ctx.structure.groups[g].size, dtype=torch.bool) for g in groups}
    removed, n = cut_to_target(ctx.cost, scores, none, 0.999, min_channels=4)
    assert n == 1 and removed[g0].tolist() == [True] + [False] * (len(removed[g0]) - 1)
    removed, n = cut_to_target(ctx.cost, scores, none, 0.05, min_channels=4)
    assert all(int((~r).sum()) == min(4, len(r)) for r in removed.values())  # floor, then stop
    assert ctx.cost.ratio(removed) > 0.05


@pytest.mark.parametrize("first", ["expand.0", "stem.0"])
def test_cut_to_target_lands_in_the_band_on_units_coarser_than_it(first):
    """Issue 23: one unit of test_grouped is up to 24 % of the MACs; cutting by |z| alone lands
    at 0.29 or 0.37 for target 0.5. With the band's floor it lands in [0.48, 0.5], each group
    still losing its smallest-|z| units first."""
    model = MODELS.get("test_grouped")(in_chans=1, num_classes=10)
    structure = build_structure(model, torch.randn(1, 1, 8, 8))
    cost = CostModel(structure)
    assert {g.name for g in structure.prunable} == {"stem.0", "expand.0"}
    scores = {
        g.name: torch.arange(g.size, dtype=torch.float) + (0 if g.name == first else 10)
        for g in structure.prunable
    }
    none = {g.name: torch.zeros(g.size, dtype=torch.bool) for g in structure.prunable}
    plain, _ = cut_to_target(cost, scores, none, 0.5, min_channels=1)
    assert cost.ratio(plain) < 0.48  # the plain ranking overshoots the band
    removed, n = cut_to_target(cost, scores, none, 0.5, min_channels=1, floor=0.48)
    assert 0.48 <= cost.ratio(removed) <= 0.5
    assert n == sum(int(r.sum()) for r in removed.values())
    for g, r in removed.items():  # within a group, the smallest |z| go first
        k = int(r.sum())
        assert r.tolist() == [True] * k + [False] * (len(r) - k), g


def test_an_overshooting_last_interval_steps_back_and_lands_in_the_band():
    """A check interval that carries the ratio under target − land_within: the latents go back
    to the last check above the stop band and the cut lands in the band; trim=false keeps the
    paper's stop wherever it fell."""
    log: list = []
    ctx = make_ctx(wide_proj(), target=0.5, log=log)
    net_latents: dict = {}
    real_step_back = DHPSearch.step_back

    def step_back(self):
        out = real_step_back(self)
        net_latents.update({g: self.latents[g].detach().clone() for g in self.prunable})
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DHPSearch, "step_back", step_back)
        # γ = 1 and a first check after 8 steps: that one interval cuts to ≈ 0.15 on any machine
        result = dhp(12, gamma_mode="paper", gamma=1.0, check_every=8).search(ctx)
    stats = result.stats
    ratios = [m["dhp/macs_ratio"] for _, m in log]
    assert stats["macs_ratio_at_stop"] == ratios[-1] < 0.4 and stats["stepped_back"] == 1.0
    assert len(ratios) == 1 and stats["macs_ratio_stepped_back"] > 0.9  # the initial latents
    assert 0.48 <= stats["macs_ratio"] <= 0.5 and stats["trimmed_units"] >= 1
    # the compact model was cut from the stepped-back latents: they keep every kept unit ≥ T
    for group, kept in result.plan.kept.items():
        if group in net_latents:
            assert bool((net_latents[group][kept].abs() >= 5e-3).all()), group
    paper = dhp(12, gamma_mode="paper", gamma=1.0, check_every=8, trim=False).search(
        make_ctx(wide_proj(), target=0.5)
    )
    assert paper.stats["macs_ratio"] == paper.stats["macs_ratio_at_stop"] == ratios[-1]
    assert paper.stats["stepped_back"] == 0.0


def test_epoch_cap_without_reaching_the_target_is_forced_and_recorded():
    ctx = make_ctx(build("resnet_proj"), target=0.5)
    result = dhp(2, gamma_mode="paper", gamma=1e-9).search(ctx)
    assert result.stats["stop_reason"] == "epochs" and result.stats["forced"] == 1.0
    assert result.stats["macs_ratio_at_stop"] > 0.9
    assert result.stats["macs_ratio"] <= 0.5
    ctx = make_ctx(build("resnet_proj"), target=0.5)
    result = dhp(2, gamma_mode="paper", gamma=1e-9, force_target=False).search(ctx)
    assert result.stats["macs_ratio"] > 0.9 and result.stats["forced"] == 0.0


class Interrupt(Exception):
    pass


def test_search_resumes_the_same_from_a_checkpoint(tmp_path, monkeypatch):
    """Save everything at an epoch end, crash, resume: same latents, plan, ratio and weights."""
    method_args = {"epochs": 10, "aim": 0.9}  # for dhp()
    ref_ctx = make_ctx(build("resnet_proj"), target=0.5)
    ref = dhp(checkpoint_dir=str(tmp_path / "ref"), **method_args).search(ref_ctx)
    assert ref.stats["epochs"] > 3  # the interruption below happens mid-search

    real_after_epoch = SearchCheckpoint.after_epoch

    def crash_after_epoch_2(self, s):
        real_after_epoch(self, s)
        if s.epoch == 2:
            raise Interrupt

    monkeypatch.setattr(SearchCheckpoint, "after_epoch", crash_after_epoch_2)
    with pytest.raises(Interrupt):
        dhp(checkpoint_dir=str(tmp_path / "run"), **method_args).search(
            make_ctx(build("resnet_proj"), target=0.5)
        )
    monkeypatch.setattr(SearchCheckpoint, "after_epoch", real_after_epoch)
    ckpt = torch.load(tmp_path / "run" / "dhp_search.pt", weights_only=True)
    assert ckpt["loop"]["epoch"] == 2 and any(k.startswith("latents.z.") for k in ckpt["model"])

    resumed = dhp(checkpoint_dir=str(tmp_path / "run"), **method_args).search(
        make_ctx(build("resnet_proj"), target=0.5)
    )
    assert resumed.plan.to_dict() == ref.plan.to_dict()
    for key in ("iterations", "epochs", "macs_ratio", "final_gamma", "stop_reason"):
        assert resumed.stats[key] == ref.stats[key], key
    ref_state, res_state = ref.model.state_dict(), resumed.model.state_dict()
    for k, v in ref_state.items():
        torch.testing.assert_close(res_state[k], v, rtol=0, atol=0, msg=k)
    final = torch.load(tmp_path / "run" / "dhp_search.pt", weights_only=True)["model"]
    ref_final = torch.load(tmp_path / "ref" / "dhp_search.pt", weights_only=True)["model"]
    for k in (k for k in ref_final if k.startswith("latents.")):
        assert torch.equal(final[k], ref_final[k]), k
    # a checkpoint of another search is refused with both descriptions
    with pytest.raises(CheckpointError, match="not for this search"):
        dhp(checkpoint_dir=str(tmp_path / "run"), **method_args).search(
            make_ctx(build("resnet_proj"), target=0.6)
        )
    # one that lacks a part of the fit's state (an older layout) is refused, not half-resumed
    del ckpt["batches"]
    torch.save(ckpt, tmp_path / "run" / "dhp_search.pt")
    with pytest.raises(CheckpointError, match="dhp_search.pt is incomplete.*batches"):
        dhp(checkpoint_dir=str(tmp_path / "run"), **method_args).search(
            make_ctx(build("resnet_proj"), target=0.5)
        )


def test_frozen_and_input_latents_are_never_thresholded():
    model = build("resnet_proj")
    ctx = make_ctx(model)
    net = build_search_net(model, ctx.structure)
    prunable = [g.name for g in ctx.structure.prunable][:1]
    before = {k: v.detach().clone() for k, v in net.latents.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    s = LoopState(net, opt, sched, epochs=1, steps_per_epoch=100)
    hook = DHPSearch(
        net, prunable, ctx.cost, GammaController("paper", 0.01, 0.5), target=0.5,
        threshold=5e-3, stop_limit=0.01, check_every=1000,
    )  # fmt: skip
    hook.before_fit(s)
    s.step = 1
    hook.after_step(s)
    after = net.latents.state_dict()
    key = "z." + prunable[0].replace(".", "/")
    torch.testing.assert_close(after[key], soft(before[key], 0.01))
    for k in before:
        if k != key:
            assert torch.equal(after[k], before[k]), k
    assert isinstance(net.latents.fixed["in:stem/0"], nn.Parameter)
