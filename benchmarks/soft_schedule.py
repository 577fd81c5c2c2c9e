"""What the soft schedule (SFP, FPGM) zeroes, epoch by epoch, with and without `freeze`.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/soft_schedule.py \
        [--outputs /tmp/soft] [--out results/benchmarks/soft_schedule_cpu.txt]

Digits / ResNet-20 at the demo's budgets (20 baseline epochs, 3 soft epochs, equal budget of 9
epochs per trial), MAC target 0.3, seed 0: sfp and fpgm each with `freeze` false (SFP's rule: the
zeroed filters train on) and true (FPGM's code: their gradients are zeroed until the next epoch
end), and l1 one-shot as the reference. At every epoch end after the first it reports, for the
units zeroed at the previous end: the median ℓ2 norm their filters trained back to (beside the
kept filters'), their median rank in the criterion (0 lowest: about to be zeroed again, 1 highest:
kept), how many are zeroed again, and the validation top-1 of that epoch; then each run's
validation right after the cut and after fine-tuning, and test top-1. The per-epoch numbers are
read by wrapping `SoftFilterHook.after_epoch` in this process (instrumentation only: the wrapper
calls the hook unchanged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config import compose
from harness.runtime.plugins import load_configured
from harness.runtime.provenance import provenance, provenance_lines
from harness.structure import score_groups

BASE = [
    "task=classification",
    "data=digits",
    "model=resnet20",
    "train.epochs=20",
    "finetune.epochs=6",
    "target=0.3",
    "seed=0",
    "measure.latency=false",
    "tracking.experiment=soft_schedule",
    "compare.methods=[dhp,l1,random,fpgm]",  # the demo's: sets the equal budget (3 + 6 epochs)
]
RUNS = [
    ("sfp", ["method=sfp"]),
    ("sfp freeze", ["method=sfp", "method.freeze=true"]),
    ("fpgm no freeze", ["method=fpgm", "method.freeze=false"]),
    ("fpgm", ["method=fpgm"]),
    ("l1", ["method=l1"]),
]


def _filter_norms(model: nn.Module, structure: Any, removed: dict[str, torch.Tensor]):
    """ℓ2 norms of the producer conv filters of the removed units and of the kept ones."""
    mods = dict(model.named_modules())
    zeroed, kept = [], []
    for g, mask in removed.items():
        for slot in structure.groups[g].producers:
            m = mods[slot.module]
            if isinstance(m, nn.Conv2d):
                n = m.weight.detach().flatten(1).norm(dim=1)[slot.channels]
                zeroed.append(n[mask[slot.units]])
                kept.append(n[~mask[slot.units]])
    return torch.cat(zeroed), torch.cat(kept)


def instrument(rows: list[str], label: list[str]) -> None:
    """Wrap SoftFilterHook.after_epoch to append one line per epoch end to `rows`."""
    import methods.sfp as sfp

    inner = sfp.SoftFilterHook.after_epoch

    def after_epoch(self, s) -> None:  # noqa: ANN001 - the hook's own signature
        prev = {g: m.clone() for g, m in self.removed.items()}
        if prev:
            zeroed, kept = _filter_norms(s.model, self.structure, prev)
            scores = score_groups(s.model, self.structure, self.score)
            ranks = []
            for g, m in prev.items():
                sc = scores[g][0] if isinstance(scores[g], tuple) else scores[g]
                ranks.append((sc.argsort().argsort().float() / max(1, len(sc) - 1))[m])
            rank = float(torch.cat(ranks).median())
        inner(self, s)
        if prev:
            again = sum(int((prev[g] & self.removed[g]).sum()) for g in prev)
            total = sum(int(m.sum()) for m in prev.values())
            rows.append(
                f"{label[0]:<15} {s.epoch:>5} {float(zeroed.median()):>12.3g} "
                f"{float(zeroed.max()):>9.3g} {float(kept.median()):>10.3g} {rank:>9.2f} "
                f"{again:>4}/{total:<4} {s.metrics.get('val_top1', float('nan')):>8.1f}"
            )

    sfp.SoftFilterHook.after_epoch = after_epoch


def main(argv: list[str]) -> int:
    from harness.run.pipeline import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default="outputs/soft_schedule")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    epochs: list[str] = []
    finals: list[str] = []
    label = [""]
    instrument(epochs, label)
    for name, own in RUNS:
        label[0] = name
        cfg = compose([*BASE, f"outputs={args.outputs}", *own])
        load_configured(cfg)
        r = run(cfg)
        finals.append(
            f"{name:<15} {r['macs_ratio']:>6.3f} {r['val_metric_pruned']:>10.1f} "
            f"{r['val_metric']:>8.1f} {r['test_metric']:>8.1f} {int(r['cost_train_images']):>8}"
        )
    prov = provenance(seeds=[0], argv=["python", "benchmarks/soft_schedule.py", *argv])
    lines = [
        "# Soft schedule on digits / ResNet-20, target 0.3 (benchmarks/soft_schedule.py)",
        *provenance_lines(prov),
        "- machine shared with other jobs (2 cores, load 5-10): no timings here",
        "",
        "Per epoch end, for the units zeroed at the previous end (norms: producer conv filters):",
        "run             epoch  zeroed-norm  zero-max  kept-norm  rank-pct  again      val",
        *epochs,
        "",
        "run             MACs   val-pruned  val-ft   test     images",
        *finals,
    ]
    print("\n".join(lines), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
