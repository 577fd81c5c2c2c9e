"""Numeric checks behind results/baselines_fidelity.md, on digits / ResNet-20 (BatchNorm, residual).

Trains ResNet-20 briefly (so the weights are not an initialisation), then measures:

1. Taylor: how well each variant's global ranking agrees between an fp32 and an fp64 copy of the
   same model on the same minibatches (train mode), and |Σ g·w| / Σ |g·w| on conv→BN layers.
2. Allocation: the largest change of any group's kept count when every score of every scoring
   method is multiplied by c (0 = the plan is unchanged).
3. DepGraph: parameters after sparsity-learning steps with SGD momentum 0.9, ours vs
   Torch-Pruning's GroupNormPruner.regularize; scores vs its GroupMagnitudeImportance.
4. Slimming: Σ|γ| after one epoch at the default λ with and without the penalty.

Usage: PYTHONPATH=. python benchmarks/baselines_fidelity.py [--out results/benchmarks/...txt]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import platform
import sys
from pathlib import Path

import torch
from torch import nn

from harness.config import compose
from harness.method import PruneContext, SearchMethod
from harness.registry import METHODS, TASKS
from harness.runtime.device import pick_runtime
from harness.runtime.plugins import load_configured
from harness.runtime.provenance import git_state, hardware
from harness.structure import CostModel, allocate, build_structure, score_groups
from harness.train import LoopState, fit

SEED = 0


def provenance() -> str:
    sha, dirty = git_state()
    state = {True: "dirty", False: "clean", None: "state unknown"}[dirty]
    hw = hardware()
    return (
        f"git {sha} ({state}), {hw['cores']} CPUs ({hw['cpu']}), {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, python {platform.python_version()}, seed {SEED}"
    )


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.double().argsort().argsort().double()
    rb = b.double().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def setup():
    cfg = compose(["data=digits", "model.name=resnet20", f"seed={SEED}"])
    load_configured(cfg)
    torch.manual_seed(SEED)
    task = TASKS.get(cfg.task.name)(cfg.task)
    model = task.build_model(cfg.model, cfg.data)
    data = task.build_data(cfg.data, seed=SEED)
    runtime = pick_runtime("cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(model, task, data.train, epochs=2, optimizer=opt, runtime=runtime)
    example = next(iter(data.train))[0][:1]
    structure = build_structure(model, example)
    return cfg, task, model, data, runtime, structure


def ctx_for(cfg, task, model, data, runtime, structure, target=0.5) -> PruneContext:
    return PruneContext(
        model=model,
        structure=structure,
        cost=CostModel(structure),
        task=task,
        data=data,
        runtime=runtime,
        target=target,
        seed=SEED,
        fit=None,
    )


def taylor_rows(cfg, task, model, data, runtime, structure) -> list[str]:
    from methods.taylor import Taylor, behind_batchnorm

    rows = []
    batches = list(itertools.islice(data.train, 8))
    for variant in ("weight", "weight_sq", "auto"):
        scores, plans = [], []
        for dtype in (torch.float32, torch.float64):
            m = copy.deepcopy(model).to(dtype)
            typed = [(x.to(dtype), y) for x, y in batches]
            ctx = ctx_for(cfg, task, m, data, runtime, structure)
            ctx.data = type(data)(typed, typed, typed)
            method = Taylor(batches=8, variant=variant)
            ctx.structure = structure if variant != "weight" else None  # 'weight' is refused
            method.prepare(ctx)
            s = score_groups(m, structure, method.score, grads=True)
            scores.append(torch.cat([s[g] for g in sorted(s)]))
            plans.append(
                allocate(CostModel(structure), s, 0.5, allocation="global", normalize=False).kept
            )
        rows.append(
            f"taylor variant={variant:<9} spearman(fp32, fp64) of the global ranking "
            f"{spearman(*scores):.4f}; same plan at 0.5: {plans[0] == plans[1]}"
        )
    # how close to zero Σ g·w is on the conv→BN layers (why variant=weight is refused)
    m = copy.deepcopy(model).train()
    x, y = batches[0]
    task.loss(m, (x, y))["loss"].backward()
    mods = dict(m.named_modules())
    ratios = []
    for name in behind_batchnorm(m, structure):
        gw = (mods[name].weight.detach() * mods[name].weight.grad).flatten(1)
        ratios.append(float((gw.sum(1).abs() / gw.abs().sum(1).clamp_min(1e-30)).median()))
    ratios.sort()
    rows.append(
        f"conv→BN layers ({len(ratios)}): median per layer of |Σ g·w| / Σ |g·w| per filter: "
        f"min {ratios[0]:.1e}, median {ratios[len(ratios) // 2]:.1e}, max {ratios[-1]:.1e}"
    )
    return rows


def allocation_rows(cfg, task, model, data, runtime, structure) -> list[str]:
    rows = []
    cost = CostModel(structure)
    for name in sorted(METHODS.names()):
        cls = METHODS.get(name)
        if issubclass(cls, SearchMethod):
            continue
        m = copy.deepcopy(model)
        method = cls()
        method.prepare(ctx_for(cfg, task, m, data, runtime, structure))
        s = score_groups(m, structure, method.score, grads=method.needs.grads)
        opts = dict(allocation="global", normalize=method.normalize_scores, floor=0.05)
        base = allocate(cost, s, 0.3, **opts).kept
        worst = 0
        for c in (1e-6, 1e-3, 1e2, 1e6):
            kept = allocate(cost, {g: v * c for g, v in s.items()}, 0.3, **opts).kept
            worst = max(worst, *(abs(len(kept[g]) - len(base[g])) for g in base))
        rows.append(
            f"{name:<9} global, normalize={method.normalize_scores!s:<5} mean |score| "
            f"{float(torch.cat(list(s.values())).abs().mean()):.1e}: largest change of a "
            f"group's kept count for c in (1e-6, 1e-3, 1e2, 1e6): {worst}"
        )
    return rows


def depgraph_rows(cfg, task, model, data, runtime, structure) -> list[str]:
    import torch_pruning as tp

    from methods.depgraph import DepGraph, GroupNormHook

    lam, alpha, steps = 5e-4, 4.0, 20
    batches = list(itertools.islice(data.train, steps))

    def run(m: nn.Module, regularize) -> nn.Module:
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        m.train()
        for x, y in batches:
            opt.zero_grad()
            task.loss(m, (x, y))["loss"].backward()
            regularize(m)
            opt.step()
        return m

    ref = copy.deepcopy(model)
    imp = tp.importance.GroupMagnitudeImportance(p=2, normalizer="max")
    example = batches[0][0][:1]
    pruner = tp.pruner.GroupNormPruner(
        ref, example, importance=imp, reg=lam, ignored_layers=[ref.fc]
    )
    run(ref, lambda m: pruner.regularize(m, alpha=2**alpha))
    ours = copy.deepcopy(model)
    hook = GroupNormHook(structure, lam, alpha)
    s = LoopState(ours, None, None, epochs=1, steps_per_epoch=1)
    hook.before_fit(s)
    run(ours, lambda m: hook.after_backward(s))
    plain = run(copy.deepcopy(model), lambda m: None)

    def largest(a: nn.Module, b: nn.Module) -> float:
        pairs = zip(a.parameters(), b.parameters(), strict=True)
        return max(float((p - q).detach().abs().max()) for p, q in pairs)

    diff, moved = largest(ours, ref), largest(ours, plain)
    rows = [
        f"depgraph λ={lam} α={alpha}, {steps} SGD steps (lr 0.01, momentum 0.9): largest "
        f"|ours − Torch-Pruning| over all parameters {diff:.1e}; largest effect of the "
        f"regulariser (vs plain SGD) {moved:.1e}"
    ]
    method = DepGraph()
    ctx = ctx_for(cfg, task, ours, data, runtime, structure)
    method.prepare(ctx)
    scores = score_groups(ours, structure, method.score)
    names = {m: n for n, m in ref.named_modules()}
    worst = 0.0
    checked = 0
    for group in pruner.DG.get_all_groups(ignored_layers=[ref.fc]):
        root = names[group[0].dep.target.module]
        g = next((g for g in structure.prunable if root in [p.module for p in g.producers]), None)
        if g is None:
            continue
        tp_imp = pruner.importance(group).double()
        worst = max(worst, float((scores[g.name].double() - tp_imp).abs().max()))
        checked += 1
    rows.append(
        f"depgraph scores vs GroupMagnitudeImportance(p=2, normalizer='max') on {checked} "
        f"Torch-Pruning groups: largest |difference| {worst:.1e} (scores in [0, 1])"
    )
    return rows


def slimming_rows(cfg, task, model, data, runtime, structure) -> list[str]:
    from methods.slimming import BNSparsityHook, paper_lambda

    lam = paper_lambda("resnet20")
    out = {}
    for value in (0.0, lam):
        m = copy.deepcopy(model)
        torch.manual_seed(SEED)
        hook = BNSparsityHook(value)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        train = data.train.fork(SEED)  # the same minibatches for both runs
        fit(m, task, train, epochs=1, optimizer=opt, runtime=runtime, hooks=[hook])
        out[value] = hook.stats
    pulled = out[0.0]["gamma_l1_after"] - out[lam]["gamma_l1_after"]
    n = sum(mod.num_features for mod in model.modules() if isinstance(mod, nn.BatchNorm2d))
    return [
        f"slimming λ={lam} (ResNet), 1 epoch ({len(data.train)} steps, lr 0.01, momentum 0.9): "
        f"Σ|γ| {out[lam]['gamma_l1_before']:.3f} → {out[lam]['gamma_l1_after']:.3f} "
        f"(shrink {out[lam]['gamma_l1_shrink']:+.4f}); the penalty's own pull vs λ=0: "
        f"{pulled:.4f} over {n} γ"
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="also write the lines here")
    args = p.parse_args()
    parts = setup()
    lines = [
        f"# PYTHONPATH=. python {' '.join(sys.argv)}",
        f"# {provenance()}",
        "# digits / ResNet-20 after 2 epochs of SGD (lr 0.05, momentum 0.9); shared 2-core machine",
    ]
    for section in (taylor_rows, allocation_rows, depgraph_rows, slimming_rows):
        lines += section(*parts)
    print("\n".join(lines), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
