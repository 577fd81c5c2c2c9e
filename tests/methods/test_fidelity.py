"""Every baseline against an independent implementation of its paper's rule (the authors'
formula, written out here without the harness's scoring code) on a residual network WITH
BatchNorm, and the allocation's invariance to the scale of the scores.

The groups of `TinyResNet` are written out by hand below, so the checks do not lean on the
structure engine they are checking through.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from harness.data import TensorBatches
from harness.errors import IncompatibleMethodError
from harness.method import OneShotMethod, PruneContext, SearchMethod
from harness.registry import METHODS
from harness.runtime.device import pick_runtime
from harness.structure import AllocationPolicy, CostModel, allocate, build_structure, score_groups
from harness.task import DataSplits
from methods.taylor import Taylor
from tasks.classification.task import ClassificationTask
from tests.conftest import TinyResNet, randomize_bn

# TinyResNet's channel groups, by hand: the stem and b2 feed the same residual sum, as do proj
# and c2; b1 and c1 are inner channels. Conv producers, then their BatchNorms.
GROUPS = {
    "res1": (["stem.0", "b2.0"], ["stem.1", "b2.1"]),
    "b1": (["b1.0"], ["b1.1"]),
    "c1": (["c1.0"], ["c1.1"]),
    "res2": (["proj.0", "c2.0"], ["proj.1", "c2.1"]),
}


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(TinyResNet(in_chans=3, num_classes=5), seed)


def _batches(seed: int = 0, n: int = 24) -> TensorBatches:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    return TensorBatches((x, y), batch_size=8)


def _ctx(model: nn.Module, structure=None, target: float = 0.5) -> PruneContext:
    batches = _batches()
    structure = structure or build_structure(model, torch.randn(1, 3, 8, 8))
    return PruneContext(
        model=model,
        structure=structure,
        cost=CostModel(structure),
        policy=AllocationPolicy(CostModel(structure)),
        task=ClassificationTask(OmegaConf.create({})),
        data=DataSplits(batches, batches, batches),
        runtime=pick_runtime("cpu"),
        target=target,
        seed=0,
        fit=None,
    )


def _group_of(structure, conv: str) -> str:
    """The harness group whose producers include `conv` (to compare with GROUPS by layer)."""
    return next(g.name for g in structure.prunable if conv in [s.module for s in g.producers])


def _harness_scores(method: OneShotMethod, model: nn.Module) -> tuple[dict[str, Tensor], object]:
    ctx = _ctx(model)
    method.prepare(ctx)
    scores = score_groups(model, ctx.structure, method.score, grads=method.needs.grads)
    return {k: scores[_group_of(ctx.structure, convs[0])] for k, (convs, _) in GROUPS.items()}, ctx


def _assert_same(ours: dict[str, Tensor], reference: dict[str, Tensor]) -> None:
    for k, ref in reference.items():
        torch.testing.assert_close(ours[k].double(), ref.double(), rtol=1e-5, atol=0.0, msg=k)


# --- allocation: the plan does not depend on the scale of the scores ---------------------------

SCORED = sorted(n for n in METHODS.names() if not issubclass(METHODS.get(n), SearchMethod))


def test_every_registered_scoring_method_is_checked():
    # a new method must join the scale-invariance property below (DHP owns its search)
    assert set(SCORED) >= {"l1", "l2", "fpgm", "random", "slimming", "taylor", "sfp", "depgraph"}


@pytest.mark.parametrize("name", SCORED)
@pytest.mark.parametrize("target", [0.6, 0.3])
def test_plan_is_unchanged_when_every_score_is_multiplied_by_c(name, target):
    model = _net()
    method = METHODS.get(name)()
    ctx = _ctx(model, target=target)
    method.prepare(ctx)
    scores = score_groups(model, ctx.structure, method.score, grads=method.needs.grads)
    opts = dict(allocation=method.default_allocation, normalize=method.normalize_scores, floor=0.1)
    base = allocate(ctx.cost, scores, target, **opts).kept
    for c in (1e-6, 1e-3, 100.0, 1e6):
        scaled = {g: s * c for g, s in scores.items()}
        assert allocate(ctx.cost, scaled, target, **opts).kept == base, (name, c)
    # also with normalisation switched on/off against the method's default
    flipped = dict(opts, allocation="global", normalize=not method.normalize_scores)
    base = allocate(ctx.cost, scores, target, **flipped).kept
    tiny = {g: s * 1e-15 for g, s in scores.items()}  # Taylor-sized scores
    assert allocate(ctx.cost, tiny, target, **flipped).kept == base, name


def test_tiny_scores_are_normalised_per_group_like_large_ones():
    # two groups whose scores differ in scale by 1e3: normalised ranking interleaves them, at
    # 1e-17 as at 1 (the old absolute floor of 1e-12 left the tiny ones un-normalised)
    model = _net()
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    cost = CostModel(structure)
    gen = torch.Generator().manual_seed(0)
    scores = {
        g.name: torch.rand(g.size, generator=gen) * 10.0**i
        for i, g in enumerate(structure.prunable)
    }
    base = allocate(cost, scores, 0.5, allocation="global").kept
    tiny = {g: s * 1e-17 for g, s in scores.items()}
    assert allocate(cost, tiny, 0.5, allocation="global").kept == base


# --- Taylor: the gate after BatchNorm, on a residual net in train mode --------------------------


def _gate_importance(model: nn.Module, batches: TensorBatches, n: int = 8) -> dict[str, Tensor]:
    """The authors' "gate after BN" (method 22) written out: a gate of ones multiplies every
    BatchNorm's output; the score of a channel is (∂L/∂gate)² averaged over minibatches."""
    gates: dict[str, Tensor] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            gate = torch.ones(m.num_features, dtype=m.weight.dtype, requires_grad=True)
            gates[name] = gate
            handles.append(
                m.register_forward_hook(lambda _m, _i, y, g=gate: y * g.view(1, -1, 1, 1))
            )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    total = {k: torch.zeros_like(g) for k, g in gates.items()}
    model.train()
    count = 0
    for x, y in list(batches)[:n]:
        for g in gates.values():
            g.grad = None
        loss = nn.functional.cross_entropy(model(x.to(next(model.parameters()).dtype)), y)
        loss.backward()
        for k, g in gates.items():
            total[k] += g.grad.detach() ** 2
        count += 1
    for h in handles:
        h.remove()
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    per_bn = {k: t / count for k, t in total.items()}
    # a residual group's score is the mean over its BatchNorms (the authors' skip-gate fix divides
    # the accumulated gate criterion by the number of blocks sharing it)
    return {k: sum(per_bn[b] for b in bns) / len(bns) for k, (_, bns) in GROUPS.items()}


def test_taylor_default_equals_the_gate_after_batchnorm_on_a_residual_net():
    model = _net()
    ours, _ = _harness_scores(Taylor(batches=3), model)
    _assert_same(ours, _gate_importance(_net(), _batches(), n=3))


def test_taylor_default_ranking_agrees_in_fp32_and_fp64():
    # the plan (a ranking decision over all groups) is the same in both precisions
    plans = []
    structure = build_structure(_net(), torch.randn(1, 3, 8, 8))  # names only: dtype-free
    for dtype in (torch.float32, torch.float64):
        model = _net().to(dtype)
        ctx = _ctx(model, structure)
        ctx.data = DataSplits(*([_typed(_batches(), dtype)] * 3))
        method = Taylor(batches=3)
        method.prepare(ctx)
        scores = score_groups(model, ctx.structure, method.score, grads=True)
        plans.append(allocate(ctx.cost, scores, 0.5, allocation="global", normalize=False).kept)
    assert plans[0] == plans[1]


def _typed(batches: TensorBatches, dtype: torch.dtype) -> TensorBatches:
    x, y = batches.tensors
    return TensorBatches((x.to(dtype), y), batch_size=8)


def test_taylor_weight_variant_is_refused_on_a_conv_feeding_batchnorm():
    model = _net()
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(IncompatibleMethodError, match="variant=auto"):
        Taylor(variant="weight").check_structure(model, structure)
    Taylor().check_structure(model, structure)  # the default is accepted


def test_taylor_weight_sq_is_the_authors_per_weight_estimate():
    # method 0 of the authors' code: Σ_s (g_s·w_s)² over the filter, averaged over minibatches
    model = _net()
    ours, _ = _harness_scores(Taylor(batches=2, variant="weight_sq"), model)
    ref_model = _net()
    total: dict[str, Tensor] = {}
    for x, y in list(_batches())[:2]:
        ref_model.zero_grad()
        nn.functional.cross_entropy(ref_model.train()(x), y).backward()
        for k, (convs, _) in GROUPS.items():
            mods = dict(ref_model.named_modules())
            s = sum(((mods[c].weight * mods[c].weight.grad) ** 2).sum((1, 2, 3)) for c in convs)
            total[k] = total.get(k, 0) + s.detach() / len(convs)
    _assert_same(ours, {k: v / 2 for k, v in total.items()})


# --- network slimming: the paper's λ per family, and γ shrinks at the default -------------------


def test_slimming_lambda_follows_the_paper_per_model_family():
    from methods.slimming import Slimming

    assert Slimming.resolve_config({"lam": None}, model="vgg16", task=None)["lam"] == 1e-4
    assert Slimming.resolve_config({"lam": None}, model="resnet56", task=None)["lam"] == 1e-5
    assert Slimming.resolve_config({"lam": None}, model="densenet40", task=None)["lam"] == 1e-5
    assert Slimming.resolve_config({"lam": 3e-3}, model="vgg16", task=None)["lam"] == 3e-3
    paper = Slimming.resolve_config({"schedule": "paper", "epochs": None}, model="vgg16", task=None)
    assert paper["epochs"] == 160


def _slim(lam: float, *, from_scratch: bool = False, momentum: float = 0.9):
    from harness.train import fit
    from methods.slimming import BNSparsityHook

    torch.manual_seed(0)
    model = _net()
    ctx = _ctx(model)
    hook = BNSparsityHook(lam, from_scratch=from_scratch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    fit(model, ctx.task, _batches(), epochs=2, optimizer=opt, runtime=ctx.runtime, hooks=[hook])
    return model, hook.stats


def test_slimming_default_lambda_really_shrinks_gamma_and_reports_it():
    from methods.slimming import paper_lambda

    lam = paper_lambda("resnet20")  # the default for the residual nets: 1e-5
    model, stats = _slim(lam)
    _, plain = _slim(0.0)
    # the same run without the penalty ends with larger Σ|γ|: the difference is the penalty's pull,
    # ≈ λ·lr·Σ_{t=1..6} (1 + m + … + m^{t-1}) = λ·lr·17.8 per γ over 6 steps with momentum 0.9
    # (3 minibatches × 2 epochs), for each of the 60 γ
    pulled = plain["gamma_l1_after"] - stats["gamma_l1_after"]
    expected = 60 * lam * 0.1 * sum(sum(0.9**i for i in range(t)) for t in range(1, 7))
    assert 0.5 * expected < pulled < 2.0 * expected
    assert stats["gamma_l1_shrink"] == pytest.approx(
        stats["gamma_l1_before"] - stats["gamma_l1_after"]
    )


def test_slimming_paper_schedule_starts_from_fresh_weights():
    _, stats = _slim(1e-4, from_scratch=True)
    assert stats["gamma_l1_before"] == 60.0  # every γ re-initialised to 1 (60 BN channels)


def test_slimming_run_record_reports_the_gamma_shrink(tmp_path):
    from tests.methods.test_contract import run_tiny

    _, record = run_tiny("slimming", "test_resnet", tmp_path)
    assert record["search_gamma_l1_shrink"] == pytest.approx(
        record["search_gamma_l1_before"] - record["search_gamma_l1_after"]
    )


# --- DepGraph: Torch-Pruning's GroupNormPruner, with SGD momentum -------------------------------


def _tp_pruner(model: nn.Module, lam: float, normalizer: str = "max"):
    tp = pytest.importorskip("torch_pruning")
    imp = tp.importance.GroupMagnitudeImportance(p=2, normalizer=normalizer)
    return tp.pruner.GroupNormPruner(
        model, torch.randn(1, 3, 8, 8), importance=imp, reg=lam, ignored_layers=[model.fc]
    )


def _sparsity_steps(model: nn.Module, regularize, steps: int = 4) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = list(_batches())
    model.train()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        regularize(model)
        opt.step()
    return model


@pytest.mark.parametrize("alpha", [0.0, 4.0])
def test_depgraph_training_matches_torch_pruning_group_norm_pruner_with_momentum(alpha):
    from harness.train import LoopState
    from methods.depgraph import GroupNormHook

    lam = 0.05  # large, so the regulariser dominates the difference the steps make
    reference = _net()
    pruner = _tp_pruner(reference, lam)
    _sparsity_steps(reference, lambda m: pruner.regularize(m, alpha=2**alpha))

    ours = _net()
    hook = GroupNormHook(build_structure(ours, torch.randn(1, 3, 8, 8)), lam, alpha)
    s = LoopState(ours, None, None, epochs=1, steps_per_epoch=1)
    hook.before_fit(s)
    _sparsity_steps(ours, lambda m: hook.after_backward(s))
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    # and the regulariser mattered: plain SGD ends elsewhere
    plain = _sparsity_steps(_net(), lambda m: None)
    assert not torch.allclose(plain.b1[0].weight, ours.b1[0].weight, atol=1e-4)


def test_depgraph_momentum_multiplies_the_pull_as_documented():
    # with only the regulariser acting (no loss gradient), θ after t steps of SGD with momentum m
    # follows θ_{t+1} = θ_t − lr·v_{t+1}, v_{t+1} = m v_t + λ θ_t: the per-step shrink approaches
    # lr·λ/(1 − m), 10× the momentum-free lr·λ at m = 0.9 (α = 0: γ_k = 1)
    from harness.train import LoopState
    from methods.depgraph import GroupNormHook

    lam, lr, m, steps = 1e-2, 0.1, 0.9, 200
    net = _net()
    w0 = net.b1[1].weight.detach().clone()  # b1's BN γ: in one group only (a conv weight is
    # in two, its rows' group and its columns' group, and is pulled by both: 2λ)
    hook = GroupNormHook(build_structure(net, torch.randn(1, 3, 8, 8)), lam, 0.0)
    s = LoopState(net, None, None, epochs=1, steps_per_epoch=1)
    hook.before_fit(s)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=m)
    for _ in range(steps):
        opt.zero_grad()
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        hook.after_backward(s)
        opt.step()
    ratio = float(net.b1[1].weight.detach().norm() / w0.norm())
    theta, v = 1.0, 0.0  # the same recurrence, by hand
    for _ in range(steps):
        v = m * v + lam * theta
        theta -= lr * v
    assert ratio == pytest.approx(theta, rel=1e-4)
    # ≈ exp(−steps·lr·λ/(1 − m)) once momentum has built up, far below exp(−steps·lr·λ)
    assert ratio < 0.5 * (1 - lr * lam) ** steps


def test_depgraph_scores_equal_torch_pruning_group_magnitude_importance():
    model = _net()
    ours, ctx = _harness_scores(METHODS.get("depgraph")(), model)
    pruner = _tp_pruner(_net(), 0.0)
    reference_modules = {m: n for n, m in pruner.model.named_modules()}
    seen = set()
    for group in pruner.DG.get_all_groups(ignored_layers=[pruner.model.fc]):
        root = reference_modules[group[0].dep.target.module]
        key = next((k for k, (convs, _) in GROUPS.items() if root in convs), None)
        if key is None or key in seen:
            continue
        seen.add(key)
        torch.testing.assert_close(
            ours[key].double(), pruner.importance(group).double(), rtol=1e-5, atol=1e-7, msg=key
        )
    assert seen == set(GROUPS)


# --- magnitude criteria and FPGM: the authors' formulas on the residual net ---------------------


def _per_conv(model: nn.Module, rule) -> dict[str, Tensor]:
    """Group → mean over its producer convs of rule(weight [C_out, d]) (a residual group's convs
    all score the same unit; the harness averages over the layers that score)."""
    mods = dict(model.named_modules())
    out = {}
    for k, (convs, _) in GROUPS.items():
        rows = [mods[c].weight.detach().double().flatten(1) for c in convs]
        out[k] = sum(rule(w) for w in rows) / len(rows)
    return out


def _pairwise_distance_sum(w: Tensor) -> Tensor:
    # the authors' get_filter_similar: Σ over the row of the euclidean distance matrix, by loops
    return torch.stack(
        [sum(torch.sqrt(((w[j] - w[k]) ** 2).sum()) for k in range(len(w))) for j in range(len(w))]
    )


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("l1", lambda w: w.abs().sum(1)),  # Li et al.: Σ |W_j|
        ("l2", lambda w: (w**2).sum(1).sqrt()),  # ‖W_j‖₂
        ("sfp", lambda w: (w**2).sum(1).sqrt()),  # SFP's ℓ2 criterion
        ("fpgm", _pairwise_distance_sum),  # He et al. (FPGM), p = 2
    ],
)
def test_filter_criteria_equal_the_papers_formulas_on_a_residual_batchnorm_net(name, rule):
    model = _net()
    ours, _ = _harness_scores(METHODS.get(name)(), model)
    _assert_same(ours, _per_conv(_net(), rule))


def test_slimming_scores_equal_abs_gamma_averaged_over_the_groups_batchnorms():
    model = _net()
    ours, _ = _harness_scores(METHODS.get("slimming")(), model)
    mods = dict(_net().named_modules())
    ref = {
        k: sum(mods[b].weight.detach().abs() for b in bns) / len(bns)
        for k, (_, bns) in GROUPS.items()
    }
    _assert_same(ours, ref)


def test_fpgm_default_is_the_soft_schedule_of_sfp():
    from methods.fpgm import FPGM
    from methods.sfp import SFP

    assert FPGM().epochs == SFP().epochs > 0  # same soft schedule: the criteria differ only
    assert FPGM.default_allocation == SFP.default_allocation == "uniform"


def test_fpgm_soft_schedule_zeroes_the_geometric_median_filters_and_cuts_exactly_them():
    from harness.train import LoopState

    model = _net()
    method = METHODS.get("fpgm")()
    ctx = _ctx(model, target=0.5)
    (hook,) = method.hooks(ctx)
    ref = _per_conv(_net(), _pairwise_distance_sum)  # before zeroing
    hook.after_epoch(LoopState(model, None, None, epochs=1, steps_per_epoch=1))
    removed = hook.removed
    for k, (convs, _) in GROUPS.items():
        g = _group_of(ctx.structure, convs[0])
        n = int(removed[g].sum())
        # uniform allocation: each group's n lowest summed distances are the zeroed ones
        assert set(ref[k].argsort()[:n].tolist()) == set(removed[g].nonzero().flatten().tolist())
        for c in convs:
            assert dict(model.named_modules())[c].weight[removed[g]].abs().sum() == 0
    method.prepare(ctx)
    scores = score_groups(model, ctx.structure, method.score)
    plan = allocate(ctx.cost, scores, 0.5, allocation="uniform")
    assert {g: m.tolist() for g, m in plan.removed(ctx.structure).items()} == {
        g: m.tolist() for g, m in removed.items()
    }


def test_taylor_iterative_schedule_gates_units_progressively_and_the_cut_removes_them():
    from harness.train import fit

    model = _net()
    method = Taylor(schedule="iterative", epochs=2, frequency=1, momentum=0.9)
    ctx = _ctx(model, target=0.5)
    (hook,) = method.hooks(ctx)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(model, ctx.task, _batches(), epochs=2, optimizer=opt, runtime=ctx.runtime, hooks=[hook])
    # 3 minibatches × 2 epochs at frequency 1: 6 pruning iterations towards 0.5^(i/6)
    assert len(hook.history) == 6
    assert all(b <= a for a, b in zip(hook.history, hook.history[1:], strict=False))
    assert hook.history[0] < 1.0 and hook.history[-1] <= 0.5
    mods = dict(model.named_modules())
    for g, mask in hook.removed.items():  # gated: every producer output of a removed unit is 0
        for slot in ctx.structure.groups[g].producers:
            chans = slot.channels[mask[slot.units]]
            assert mods[slot.module].weight.detach()[chans].abs().sum() == 0
    stats = method.train_stats()
    assert stats["pruning_iterations"] == 6 and stats["gated_ratio"] == hook.history[-1]
    method.prepare(ctx)  # the final cut ranks the momentum-averaged importance, gated units at 0
    scores = score_groups(model, ctx.structure, method.score, grads=True)
    plan = allocate(ctx.cost, scores, 0.5, allocation="global", normalize=False)
    removed = plan.removed(ctx.structure)
    assert {g: m.tolist() for g, m in removed.items()} == {
        g: m.tolist() for g, m in hook.removed.items()
    }


def test_taylor_epochs_apply_to_the_iterative_schedule_only():
    from harness.errors import ConfigError

    assert Taylor().epochs == 0 and Taylor(schedule="iterative").epochs == 3
    with pytest.raises(ConfigError, match="schedule=iterative only"):
        Taylor(epochs=2)


def test_taylor_iterative_schedule_runs_through_the_pipeline(tmp_path):
    from harness.config import compose
    from harness.run.pipeline import run

    cfg = compose([
        "data=digits", "model.name=test_resnet", "~model.shortcut", "method=taylor",
        "method.schedule=iterative", "method.epochs=1", "method.frequency=2", "target=0.5",
        "train.epochs=1", "finetune.epochs=0", "prune.floor=0.25", "measure.latency=false",
        "tracking.enabled=false", f"outputs={tmp_path}",
    ])  # fmt: skip
    record = run(cfg)
    assert record["macs_ratio"] <= 0.5
    assert record["search_pruning_iterations"] >= 1 and record["search_gated_ratio"] <= 0.5


@pytest.mark.parametrize("name", ["l1", "l2", "fpgm", "sfp", "slimming", "taylor", "depgraph"])
def test_show_states_the_remaining_difference_of_the_default(name, capsys):
    import json

    from harness.cli.main import main

    assert main(["show", f"method={name}"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["fidelity"] == METHODS.get(name).fidelity
    assert "differs from the paper by default" in captured.err


def test_slimming_paper_schedule_runs_from_scratch_through_the_pipeline(tmp_path):
    from harness.config import compose
    from harness.run.pipeline import run

    cfg = compose([
        "data=digits", "model.name=test_resnet", "~model.shortcut", "method=slimming",
        "method.schedule=paper", "method.epochs=1", "target=0.5", "train.epochs=1",
        "finetune.epochs=0", "prune.floor=0.25", "measure.latency=false",
        "tracking.enabled=false", f"outputs={tmp_path}",
    ])  # fmt: skip
    record = run(cfg)
    # re-initialised before the sparsity training: every γ starts at 1 (60 BatchNorm channels)
    assert record["search_gamma_l1_before"] == 60.0
    assert record["macs_ratio"] <= 0.5
