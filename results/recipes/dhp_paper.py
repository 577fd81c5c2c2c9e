"""The DHP paper's headline runs as `prunebench run` commands, ready for a GPU.

DHP-50 and DHP-38 on ResNet-56 / CIFAR-10, DHP-40 on DnCNN / σ = 70 (Train400 → BSD68), with the
paper's schedules (../../shared/REFERENCE.md, "DHP in one page"): search from scratch (SGD 0.1,
batch 64, γ = 3e-4, LR ×0.1 at epochs 20/50 or 25/50; Adam 1e-4, γ = 0.1, step at 40 of 60 for
denoising), fine-tune (CIFAR 300 epochs, steps at 150/225; denoising 60, step at 40), and the
paper's stop rule without trimming (`method.trim=false`). `dhp_paper.md` beside this file lists
the same commands with the numbers to expect and the estimated device time.

usage (from the repository root, with the shared venv's `prunebench` on PATH):
    python results/recipes/dhp_paper.py list                # print every command
    python results/recipes/dhp_paper.py run [NAME ...]      # run them, one JSON line each
    python results/recipes/dhp_paper.py run --tiny NAME     # the same command, CPU smoke size

The tiny mode appends `TINY[task]` (1 epoch per stage, CPU) to the unchanged command, so a test
runs every recipe end to end (tests/methods/dhp/test_dhp_recipe.py) and the commands cannot rot.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

__all__ = ["RECIPES", "TINY", "Recipe", "command", "merge_overrides"]

#: CIFAR-10 as `python ../shared/tools/cifar10_decode.py .data/cifar10.npz` writes it (the JPEG
#: q75 copy in shared/data; `data=cifar10` reads torchvision's pickles instead)
CIFAR10 = ["task=classification", "data=npz", "data.path=.data/cifar10.npz", "device=cuda"]
#: the paper's CIFAR schedule for the baseline and the fine-tuning: 300 epochs, batch 64,
#: SGD 0.1 momentum 0.9 (no Nesterov), weight decay 1e-4, LR ×0.1 at 150 and 225
CIFAR_SCHEDULE = [
    "task.batch_size=64",
    *(
        f"++{stage}.{k}"  # ++: set or add (classification's train has no milestones key)
        for stage in ("train", "finetune")
        for k in (
            "epochs=300", "optimizer=sgd", "lr=0.1", "momentum=0.9", "nesterov=false",
            "weight_decay=1.0e-4", "schedule=step", "milestones=[150,225]", "gamma=0.1",
            "warmup_epochs=0",
        )
    ),
]  # fmt: skip
#: the paper's DHP search on CIFAR, spelled out although they are the method's resolved
#: defaults for resnet56 (auto picks paper mode at 703 steps/epoch)
CIFAR_SEARCH = [
    "method=dhp", "method.gamma_mode=paper", "method.gamma=3.0e-4", "method.threshold=5.0e-3",
    "method.search_batch=64", "method.epochs=100", "method.search_lr=0.1", "method.trim=false",
]  # fmt: skip
#: DnCNN σ = 70: Train400 patches → BSD68; the task's defaults are the paper's (Adam 1e-4,
#: 60 epochs, step at 40) for baseline, search and fine-tuning
DNCNN70 = [
    "task=denoise", "model=dncnn", "data=denoise_folders", "data.root=../shared/data",
    "data.sigma=70", "device=cuda", "method=dhp", "method.gamma_mode=paper", "method.gamma=0.1",
    "method.epochs=60", "method.trim=false",
]  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """One paper run: its overrides, the paper's numbers and our estimate of its device time."""

    name: str
    task: str
    overrides: list[str]
    paper: str  # what the paper reports (REFERENCE.md), its MAC convention included
    device_hours: str  # estimate, one H200-class GPU; not measured (no GPU in this session)
    notes: list[str] = field(default_factory=list)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "dhp50-resnet56-cifar10",
            "classification",
            [
                *CIFAR10,
                "model=resnet56",
                "target=0.5",
                "seed=0",
                *CIFAR_SCHEDULE,
                *CIFAR_SEARCH,
                "method.milestone_fractions=[0.2,0.5]",
            ],  # fmt: skip
            "DHP-50: top-1 error 6.42 % (baseline 7.05 %), 50.96 % MACs kept, 58.42 % params",
            "≈ 1.5–2.5 h (baseline 300 epochs ≈ 0.5 h, search ≤ 100 epochs ≈ 0.5–1 h, "
            "fine-tune 300 epochs ≈ 0.5 h); the baseline is cached and shared with DHP-38",
        ),
        Recipe(
            "dhp38-resnet56-cifar10",
            "classification",
            [
                *CIFAR10,
                "model=resnet56",
                "target=0.38",
                "seed=0",
                *CIFAR_SCHEDULE,
                *CIFAR_SEARCH,
                "method.milestone_fractions=[0.25,0.5]",
            ],  # fmt: skip
            "DHP-38: top-1 error 7.06 % (baseline 7.05 %), 39.07 % MACs kept, 41.1 % params",
            "≈ 1–2 h after DHP-50 (search + fine-tune; the baseline is cached)",
        ),
        Recipe(
            "dhp40-dncnn-sigma70",
            "denoise",
            [*DNCNN70, "target=0.4", "seed=0"],
            "DHP-40: BSD68 PSNR 24.89 dB (baseline 24.93), 3.83 G MACs of 9.13 G at 128×128 "
            "(DHP counter: conv + BN + ReLU; conv only: 9.08 G, so ≈ 3.6 G at our 0.4)",
            "≈ 0.5–1 h (3 stages × 60 epochs × 1000 steps of 16 patches of 64²)",
        ),
    ]
}

#: appended to a recipe by `--tiny` (later values win): CPU, one short epoch per stage
TINY: dict[str, list[str]] = {
    "classification": [
        "device=cpu", "task.batch_size=16", "method.search_batch=16", "train.epochs=1",
        "finetune.epochs=1", "method.epochs=1", "++train.milestones=[1]",
        "++finetune.milestones=[1]", "measure.latency=false",
    ],
    "denoise": [
        "device=cpu", "data.patch_size=16", "data.batch_size=4", "data.patches_per_epoch=8",
        "data.val_crop=32", "train.epochs=1", "finetune.epochs=1", "method.epochs=1",
        "measure.latency=false",
    ],
}  # fmt: skip


def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """`base` with each `key=value` of `extra` replacing the same key (Hydra refuses a key
    given twice; `+`/`++` prefixes do not count), new keys appended."""

    def key(o: str) -> str:
        return o.split("=", 1)[0].lstrip("+~")

    keys = {key(o): o for o in extra}
    out = [keys.pop(key(o), o) for o in base]
    return out + list(keys.values())


def command(name: str, *, tiny: bool = False, extra: list[str] | None = None) -> list[str]:
    """The `prunebench run` argument list of recipe `name` (tiny: + TINY, then + extra)."""
    recipe = RECIPES[name]
    overrides = recipe.overrides
    if tiny:
        overrides = merge_overrides(overrides, TINY[recipe.task])
    return ["prunebench", "run", *merge_overrides(overrides, extra or [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["list", "run"])
    parser.add_argument("names", nargs="*", help=f"recipes (default: all): {', '.join(RECIPES)}")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke size (see TINY)")
    args = parser.parse_args(argv)
    names = args.names or list(RECIPES)
    for name in names:
        if name not in RECIPES:
            parser.error(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    for name in names:
        cmd = command(name, tiny=args.tiny)
        if args.action == "list":
            print(f"# {name}: {RECIPES[name].paper}\n{shlex.join(cmd)}\n")
            continue
        code = subprocess.run(cmd, check=False).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
