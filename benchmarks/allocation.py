"""Allocation at scale: the incremental allocator against the original one (whole-cost recount
after every removed unit, kept in benchmarks/reference_allocate.py), on torchvision's zoo.

    PYTHONPATH=. python benchmarks/allocation.py [--models resnet18 resnet50 ...] [--size 64]
        [--allocation uniform] [--target 0.5] [--no-reference] [--out results/benchmarks/x.txt]

Per model (random weights, seed 0, batch-of-one input 3×size×size; ViTs at their fixed 224):
build_structure → l1 scores (score_groups) → allocate to `--target` MACs, timed with
time.perf_counter around allocate() alone, for the new and the reference allocator on the same
CostModel and scores; `same` says whether the two plans are identical. Wall times on a shared
machine are inflated by the load; the ratio measured within one run is what compares.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torchvision

from benchmarks.reference_allocate import allocate as reference_allocate
from harness.runtime.provenance import git_state, hardware
from harness.structure import CostModel, allocate, build_structure, score_groups

MODELS = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "densenet121",
    "inception_v3",
    "efficientnet_v2_s",
    "convnext_base",
    "vit_b_16",
    "resnext50_32x4d",
    "regnet_x_400mf",
    "shufflenet_v2_x1_0",
)
#: models that cannot run at --size: torchvision's smallest input for each
FIXED_SIZE = {"inception_v3": 75, **dict.fromkeys(("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32",
                                                  "vit_h_14"), 224)}  # fmt: skip


def provenance() -> str:
    sha, dirty = git_state()
    state = {True: "dirty", False: "clean", None: "state unknown"}[dirty]
    hw = hardware()
    return (
        f"git {sha} ({state}), {hw['cores']} CPUs ({hw['cpu']}), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, python {platform.python_version()}"
    )


def l1_score(view):
    if view.kind not in ("conv", "linear"):
        return None
    return view.weight.flatten(1).abs().sum(dim=1)


def bench(name: str, args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    size = FIXED_SIZE.get(name, args.size)
    try:
        model = torchvision.models.get_model(name, weights=None).eval()
        structure = build_structure(model, torch.randn(1, 3, size, size))
    except Exception as e:  # a row per model, whatever happens
        return f"{name:<20} {size:>4}  failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    cost = CostModel(structure)
    scores = score_groups(model, structure, l1_score)
    units = sum(len(s) for s in scores.values())
    opts = dict(allocation=args.allocation, floor=0.0, min_channels=1)
    start = time.perf_counter()
    plan = allocate(cost, scores, args.target, **opts)
    new_s = time.perf_counter() - start
    ratio = cost.ratio(plan.removed(structure))
    old, same, speedup = "-", "-", "-"
    if args.reference:
        start = time.perf_counter()
        ref = reference_allocate(cost, scores, args.target, **opts)
        old_s = time.perf_counter() - start
        old, same, speedup = f"{old_s:.2f}", str(ref.kept == plan.kept), f"{old_s / new_s:.0f}×"
    return (
        f"{name:<20} {size:>4} {len(scores):>6} {units:>8,} {ratio:>6.3f} "
        f"{old:>8} {new_s:>8.3f} {speedup:>8} {same:>5}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--allocation", choices=("uniform", "global"), default="uniform")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--no-reference", dest="reference", action="store_false")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args()
    lines = [
        f"# PYTHONPATH=. python {' '.join(sys.argv)}",
        f"# {provenance()}",
        f"# l1 scores of random weights (seed 0), {args.allocation} allocation to "
        f"{args.target} MACs, floor 0, min_channels 1; seconds of allocate() alone",
        "# shared machine: wall times are inflated by other jobs; compare within a row",
        f"{'model':<20} {'size':>4} {'groups':>6} {'units':>8} {'ratio':>6} "
        f"{'old s':>8} {'new s':>8} {'speedup':>8} {'same':>5}",
    ]
    print("\n".join(lines), flush=True)
    for name in args.models:
        lines.append(bench(name, args))
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
