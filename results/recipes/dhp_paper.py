"""The DHP paper's headline runs as `prunebench run` commands, ready for a GPU.

DHP-50 on ResNet-20, DHP-50 and DHP-38 on ResNet-56 / CIFAR-10, DHP-40 on DnCNN / σ = 70
(Train400 → BSD68) and DHP-40 on EDSR and SRResNet ×4 (T91 → Set5/Set14/B100), with the schedules
of the authors' scripts (ofsoundof/dhp, classification/scripts/dhp_camera_ready and
restoration/scripts/dhp; ../../shared/REFERENCE.md): fp32 (`amp=false`), the search from scratch
with the authors' batch, steps per epoch, LR steps and stop limit, the fine-tuning, and the
paper's stop rule without trimming (`method.trim=false`). `dhp_paper.md` beside this file lists
every setting beside the authors' value, where it still differs, the numbers to expect and the
estimated device time.

usage (the project installed, or only its dependencies on PYTHONPATH, as on a lent GPU):
    python results/recipes/dhp_paper.py list                # print every command
    python results/recipes/dhp_paper.py run [NAME ...]      # run them, one JSON line each
    python results/recipes/dhp_paper.py run --tiny NAME     # the same command, CPU smoke size
    python results/recipes/dhp_paper.py run --first NAME    # a ≤ 10-minute first GPU check
    python results/recipes/dhp_paper.py run --first NAME data.train_subset=2000  # + overrides

`run` starts the CLI as `python -m harness.cli` of this checkout, so it needs no installed
`prunebench` script.

The tiny mode appends `TINY[task]` (1 epoch per stage, CPU) to the unchanged command, so a test
runs every recipe end to end (tests/methods/dhp/test_dhp_recipe.py) and the commands cannot rot.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AUTHORS", "FIRST", "RECIPES", "TINY", "Recipe", "command", "merge_overrides"]

#: the authors' search per run, from their scripts (not from this project's config), for the
#: tests and the table: steps per epoch, batch, γ, search LR, LR steps (epochs) × factor, stop
#: limit; every script checks the MAC ratio every 100 steps (`--compression_check_frequency`)
AUTHORS: dict[str, dict[str, object]] = {
    "dhp50-resnet20-cifar10": {
        "steps_per_epoch": 782, "batch": 64, "gamma": 2e-4, "lr": 0.1, "milestones": [50],
        "lr_factor": 0.1, "stop_limit": 0.02, "epochs": 100,
    },
    "dhp50-resnet56-cifar10": {
        "steps_per_epoch": 782, "batch": 64, "gamma": 3e-4, "lr": 0.1, "milestones": [20, 50],
        "lr_factor": 0.1, "stop_limit": 0.01, "epochs": 100,
    },
    "dhp38-resnet56-cifar10": {
        "steps_per_epoch": 782, "batch": 64, "gamma": 3e-4, "lr": 0.1, "milestones": [25, 50],
        "lr_factor": 0.1, "stop_limit": 0.02, "epochs": 100,
    },
    "dhp40-dncnn-sigma70": {  # --test_every 10000 --batch_size 64 --lr_decay_step 10+40
        "steps_per_epoch": 10000, "batch": 64, "gamma": 0.1, "lr": 1e-4,
        "milestones": [10, 20, 30, 40, 50], "lr_factor": 0.1, "stop_limit": 0.02, "epochs": 60,
    },
    "dhp40-edsr-x4": {  # test_every default 2000, --batch_size 16 --lr_decay_step 40+200
        "steps_per_epoch": 2000, "batch": 16, "gamma": 0.1, "lr": 1e-4, "milestones": [40],
        "lr_factor": 0.1, "stop_limit": 0.02, "epochs": 60,
    },
    "dhp40-srresnet-x4": {
        "steps_per_epoch": 2000, "batch": 16, "gamma": 0.1, "lr": 1e-4, "milestones": [40],
        "lr_factor": 0.1, "stop_limit": 0.02, "epochs": 60,
    },
}  # fmt: skip

#: as published: fp32 (the CUDA default here is bf16 autocast, `amp: null`) and each stage's own
#: schedule (`budget.mode=paper`: under the default equal budgets a search that outlasts the
#: baseline would be paid for out of the fine-tuning, which `--first`'s short baseline shows)
AS_PUBLISHED = ["amp=false", "budget.mode=paper"]
#: CIFAR-10 as `python ../shared/tools/cifar10_decode.py .data/cifar10.npz` writes it (the JPEG
#: q75 copy in shared/data; `data=cifar10` reads torchvision's pickles instead)
CIFAR10 = [
    "task=classification", "data=npz", "data.path=.data/cifar10.npz", "device=cuda", *AS_PUBLISHED,
]  # fmt: skip
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
#: the paper's DHP search on CIFAR. γ is left to the per-model paper value (2e-4 ResNet-20,
#: 3e-4 ResNet-56), which paper mode scales by 782 / 703 (the validation split leaves 45 000
#: images): the paper's shrink per epoch (`method.match_paper_epoch`, recorded as gamma_scale)
CIFAR_SEARCH = [
    "method=dhp", "method.gamma_mode=paper", "method.threshold=5.0e-3", "method.search_batch=64",
    "method.epochs=100", "method.search_lr=0.1", "method.trim=false", "method.check_every=100",
]  # fmt: skip
#: the restoration search of the authors' scripts: Adam 1e-4, γ = 0.1 (by_task), T = 5e-3,
#: stop limit 0.02, ≤ 60 epochs, LR ×0.1 at the script's steps; fine-tuning LR steps ×0.1 too
RESTORATION_SEARCH = [
    "method=dhp", "method.gamma_mode=paper", "method.threshold=5.0e-3", "method.epochs=60",
    "method.search_lr=1.0e-4", "method.stop_limit=0.02", "method.trim=false",
    "++method.search.restoration.gamma=0.1", "method.check_every=100",
]  # fmt: skip
#: DnCNN σ = 70: Train400 patches → BSD68, the authors' batch 64 of 64² patches and 10 000
#: steps per epoch for every stage; search LR ×0.1 every 10 epochs; fine-tuning step at 40
DNCNN70 = [
    "task=denoise", "model=dncnn", "data=denoise_folders", "data.root=../shared/data",
    "data.sigma=70", "data.patch_size=64", "data.batch_size=64", "data.patches_per_epoch=640000",
    "device=cuda", *AS_PUBLISHED, *RESTORATION_SEARCH,
    "++method.search.restoration.milestones=[10,20,30,40,50]",
    "finetune.milestones=[40]", "finetune.gamma=0.1",
]  # fmt: skip


def sr_recipe(model: str, hr_patch: int) -> list[str]:
    """EDSR / SRResNet ×4 as the authors' scripts: batch 16 of `hr_patch`² HR patches (LR
    `hr_patch`/4), 2000 steps per epoch, search LR ×0.1 at 40, fine-tuning 300 epochs stepped
    ×0.1 at 200; T91 stands in for DIV2K (the data this project has)."""
    return [
        "task=sr", f"model={model}", "data=sr_folders", "data.root=../shared/data",
        "data.train=[T91]", "data.test=[Set5,Set14,B100]", f"data.patch_size={hr_patch // 4}",
        "data.batch_size=16", "data.patches_per_epoch=32000", "device=cuda", *AS_PUBLISHED,
        *RESTORATION_SEARCH, "++method.search.restoration.milestones=[40]",
        "finetune.epochs=300", "finetune.milestones=[200]", "finetune.gamma=0.1",
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
            "dhp50-resnet20-cifar10",
            "classification",
            [
                *CIFAR10,
                "model=resnet20",
                "target=0.5",
                "seed=0",
                *CIFAR_SCHEDULE,
                *CIFAR_SEARCH,
                "method.milestone_fractions=[0.5]",
                "method.stop_limit=0.02",
            ],  # fmt: skip
            "DHP-50: top-1 error 8.46 % (baseline 7.46 %), 51.8 % MACs kept, 56.1 % params",
            "≈ 1–1.5 h (baseline 300 epochs, search ≤ 100 epochs, fine-tune 300 epochs)",
        ),
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
                "method.stop_limit=0.01",
            ],  # fmt: skip
            "DHP-50: top-1 error 6.42 % (baseline 7.05 %), 50.96 % MACs kept, 58.42 % params",
            "≈ 1.5–2.5 h (baseline 300 epochs ≈ 0.5 h, search ≤ 100 epochs ≈ 0.5–1 h, "
            "fine-tune 300 epochs ≈ 0.5 h; fp32 is slower than bf16); the baseline is cached "
            "and shared with DHP-38",
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
                "method.stop_limit=0.02",
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
            "many hours: 3 stages × 60 epochs × 10 000 steps of 64 patches of 64² in fp32 "
            "(the authors' schedule); not measured",
        ),
        Recipe(
            "dhp40-edsr-x4",
            "sr",
            [*sr_recipe("edsr_paper", 192), "target=0.4", "seed=0"],
            "DHP-40: Set5/Set14/B100 PSNR 32.01/28.49/27.52 dB (baseline 32.10/28.55/27.55), "
            "37.77 G of 90.37 G MACs at 128×128 LR",
            "many hours: 300 + ≤ 60 + 300 epochs × 2000 steps of 16 patches of 48² LR in fp32; "
            "not measured",
        ),
        Recipe(
            "dhp40-srresnet-x4",
            "sr",
            [*sr_recipe("srresnet", 96), "target=0.4", "seed=0"],
            "DHP-40: Set5 PSNR 31.90 dB (baseline 32.03), 13.71 G of 32.83 G MACs at 128×128 LR",
            "several hours: 300 + ≤ 60 + 300 epochs × 2000 steps of 16 patches of 24² LR in "
            "fp32; not measured",
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
    "sr": [
        "device=cpu", "data.patch_size=8", "data.batch_size=4", "data.patches_per_epoch=8",
        "data.val_crop=32", "train.epochs=1", "finetune.epochs=1", "method.epochs=1",
        "measure.latency=false", "task.measure_size=16", "model.n_blocks=1", "model.n_feats=8",
    ],
}  # fmt: skip


#: appended by `--first` (later values win): a first GPU check of a recipe in ≤ 10 minutes on one
#: H100/H200 (estimated): the recipe's device, precision and search, a few short epochs per stage;
#: it shows the search's steps per second, γ (gamma_scale) and the MAC ratio falling, not a result
FIRST: dict[str, list[str]] = {
    "classification": [
        "train.epochs=2", "method.epochs=3", "finetune.epochs=1", "++train.milestones=[1]",
        "++finetune.milestones=[1]",
    ],
    "denoise": [
        "data.patches_per_epoch=64000", "train.epochs=1", "method.epochs=2", "finetune.epochs=1",
    ],
    "sr": [
        "data.patches_per_epoch=16000", "train.epochs=1", "method.epochs=2", "finetune.epochs=1",
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


def command(
    name: str, *, tiny: bool = False, first: bool = False, extra: list[str] | None = None
) -> list[str]:
    """The `prunebench run` argument list of recipe `name` (first: + FIRST; tiny: + TINY; then
    + extra)."""
    recipe = RECIPES[name]
    overrides = recipe.overrides
    if first:
        overrides = merge_overrides(overrides, FIRST[recipe.task])
    if tiny:
        overrides = merge_overrides(overrides, TINY[recipe.task])
    return ["prunebench", "run", *merge_overrides(overrides, extra or [])]


ROOT = Path(__file__).resolve().parents[2]


def _with_root(pythonpath: str | None) -> str:
    """PYTHONPATH with this checkout in it, after what the caller put first (carried wheels)."""
    parts = [p for p in (pythonpath or "").split(os.pathsep) if p]
    return os.pathsep.join([*parts, str(ROOT)] if str(ROOT) not in parts else parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["list", "run"])
    parser.add_argument(
        "names", nargs="*",
        help=f"recipes (default: all): {', '.join(RECIPES)}; key=value words override settings",
    )  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="CPU smoke size (see TINY)")
    parser.add_argument(
        "--first", action="store_true", help="a ≤ 10-minute first GPU check (see FIRST)"
    )
    args = parser.parse_intermixed_args(argv)  # `run --first NAME` as documented
    extra = [n for n in args.names if "=" in n]  # `key=value` words: overrides for every recipe
    names = [n for n in args.names if "=" not in n] or list(RECIPES)
    for name in names:
        if name not in RECIPES:
            parser.error(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    for name in names:
        cmd = command(name, tiny=args.tiny, first=args.first, extra=extra)
        if args.action == "list":
            print(f"# {name}: {RECIPES[name].paper}\n{shlex.join(cmd)}\n")
            continue
        # the CLI as a module of this checkout: on a lent GPU the project is not pip-installed
        # (its dependencies come as wheels on PYTHONPATH), so there is no `prunebench` script
        env = {**os.environ, "PYTHONPATH": _with_root(os.environ.get("PYTHONPATH"))}
        module = [sys.executable, "-m", "harness.cli", *cmd[1:]]
        code = subprocess.run(module, check=False, cwd=ROOT, env=env).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
