"""Why slimming and Taylor collapse at the controls budget (digits / ResNet-20, 600 training
images, 10 baseline epochs, equal 8-epoch budget, MAC target 0.3): a few variants per seed.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/slim_taylor_diag.py [--outputs /tmp/diag] \
        [--seeds 0,1,2] [--out results/slim_taylor_diag.md]

Per variant: val top-1 right before the cut (after slimming's sparsity phase), right after the
cut, after fine-tuning, and test top-1; slimming's Σ|γ| shrink and the per-stage |γ| spread before
the cut; the kept widths per channel group (stage residual groups and block-internal groups).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

import harness.run.pipeline as pipeline
from benchmarks.controls_digits import METHODS, base
from harness.config import compose
from harness.runtime.plugins import load_configured
from harness.runtime.provenance import git_label, hardware
from harness.train import evaluate

#: (label, overrides) run in order; all share controls_digits' settings (budget.mode=equal, 8 ep)
VARIANTS: tuple[tuple[str, list[str]], ...] = (
    ("l1", ["method=l1"]),
    ("l1, 3 fine-tuning epochs", ["method=l1", "budget.epochs=3"]),
    ("slimming λ=1e-5 (default)", ["method=slimming"]),
    ("slimming λ=0 (5 plain epochs)", ["method=slimming", "method.lam=0"]),
    ("slimming λ=1e-4", ["method=slimming", "method.lam=1e-4"]),
    ("slimming 0 sparsity epochs (abs γ only)", ["method=slimming", "method.epochs=0"]),
    ("random_widths@slimming (8 ft epochs)", ["method=random_widths", "method.source={slimming}"]),
    (
        "random_widths@slimming, 3 ft epochs",
        ["method=random_widths", "method.source={slimming}", "budget.epochs=3"],
    ),
    ("taylor (global, raw)", ["method=taylor"]),
    ("random_widths@taylor (8 ft epochs)", ["method=random_widths", "method.source={taylor}"]),
    ("taylor, prune.normalize=true", ["method=taylor", "prune.normalize=true"]),
    ("taylor, uniform allocation", ["method=taylor", "prune.allocation=uniform"]),
)

STATE: dict[str, object] = {}
#: method → the run folder of its first variant (the source of `random_widths`)
SOURCES: dict[str, str] = {}


def _gamma_by_stage(model: nn.Module) -> str:
    """Median and min |γ| of each stage's BatchNorms (and the share of |γ| < 1e-2)."""
    out = []
    for stage in ("layer1", "layer2", "layer3"):
        g = torch.cat(
            [
                m.weight.detach().abs().flatten()
                for n, m in model.named_modules()
                if n.startswith(stage) and isinstance(m, nn.BatchNorm2d)
            ]
        )
        out.append(
            f"{stage} med {g.median():.3f} min {g.min():.3f} <1e-2 {(g < 1e-2).float().mean():.0%}"
        )
    return "; ".join(out)


def _install_probe() -> None:
    """Wrap the pipeline's one-shot cut: evaluate val before it and note |γ| per stage."""
    original, setup = pipeline._prune_one_shot, pipeline._setup

    def setup_probed(cfg):
        parts, model = setup(cfg)
        STATE["parts"] = parts
        return parts, model

    def probed(method, ctx, cfg, *args, **kwargs):
        parts = STATE["parts"]
        val = evaluate(parts.task, ctx.model, parts.data.val, parts.runtime)
        STATE["val_before_cut"] = val[parts.task.metric]
        STATE["gamma"] = _gamma_by_stage(ctx.model)
        return original(method, ctx, cfg, *args, **kwargs)

    pipeline._prune_one_shot, pipeline._setup = probed, setup_probed


def _shrink(rec: dict) -> str:
    shrink = rec.get("search_gamma_l1_shrink")
    return "—" if shrink is None else f"{shrink:.3g} of {rec['search_gamma_l1_before']:.1f}"


def _widths(art: str) -> str:
    """Kept output channels of the stem, one block-internal conv per stage, and the fc input."""
    import json

    ch = json.loads((Path(art) / "plan.json").read_text())["channels"]
    pick = ["conv1", "layer1.0.conv1", "layer2.0.conv1", "layer2.2.conv1", "layer3.0.conv1",
            "layer3.2.conv1"]  # fmt: skip
    inner = " ".join(
        f"{k.replace('layer', 'L').replace('.conv1', '')}:{ch[k]['out']}" for k in pick
    )
    res = f"res {ch['conv1']['out']}/{ch['layer2.0.conv2']['out']}/{ch['fc']['in']}"
    return f"{res}; {inner}"


def _row(seed: int, label: str, own: list[str], shared: list[str]) -> str:
    """Run one variant through the pipeline and format its table row."""
    own = [o.format(**SOURCES) for o in own]  # {slimming}: that variant's run folder
    cfg = compose([*shared, *own])
    load_configured(cfg)
    STATE.clear()
    rec = pipeline.run(cfg)
    SOURCES.setdefault(str(cfg.method.name), rec["artifacts"])
    return (
        f"| {seed} | {label} | {rec.get('cost_search_epochs', 0):.0f}+"
        f"{rec.get('cost_finetune_epochs', 0):.0f} "
        f"| {STATE.get('val_before_cut', float('nan')):.1f} | {rec['val_metric_pruned']:.1f} "
        f"| {rec['val_metric']:.1f} | {rec['test_metric']:.1f} | {rec['macs_ratio']:.3f} "
        f"| {_shrink(rec)} | {_widths(rec['artifacts'])} | {STATE.get('gamma', '')} |"
    )


def _summary(rows: list[str]) -> str:
    """Mean ± std of test top-1 over the seeds, per variant (own + fine-tuning epochs beside)."""
    by: dict[str, tuple[str, list[float]]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        by.setdefault(cells[1], (cells[2], []))[1].append(float(cells[6]))
    out = [
        "| variant | own+ft epochs | test top-1 (mean ± std over seeds) | n |",
        "|---|---|---|---|",
    ]
    for label, (epochs, tests) in by.items():
        sd = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        out.append(
            f"| {label} | {epochs} | {statistics.mean(tests):.1f} ± {sd:.1f} | {len(tests)} |"
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outputs", default="/tmp/slim_taylor_diag")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("--only", default=None, help="comma-separated variant indices")
    args = p.parse_args(argv)
    _install_probe()
    picked = [int(i) for i in args.only.split(",")] if args.only else range(len(VARIANTS))
    seeds = [int(x) for x in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        SOURCES.clear()
        shared = [*base(METHODS), f"outputs={args.outputs}", f"seed={seed}",
                  "tracking.experiment=diag"]  # fmt: skip
        for i in picked:
            rows.append(_row(seed, *VARIANTS[i], shared))
            print(rows[-1], file=sys.stderr, flush=True)
    head = (
        "| seed | variant | own+ft epochs | val before cut | val after cut | val after ft | test "
        "| MAC ratio | Σ abs(γ): shrink of total | widths (residual stem/stage2/stage3; internal) "
        "| abs(γ) per stage before the cut |\n" + "|---" * 11 + "|"
    )
    table = "\n".join([head, *rows]) + "\n\n" + _summary(rows)
    prov = (
        f"Command: `PYTHONPATH=. python benchmarks/slim_taylor_diag.py --seeds {args.seeds}` "
        f"(controls_digits settings), git {git_label()}, seeds {args.seeds}, "
        f"hardware {hardware()}, "
        f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores at the end."
    )
    print(table + "\n\n" + prov)
    if args.out:
        Path(args.out).write_text(table + "\n\n" + prov + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
