"""Pruning against the scratch control on real data, sized for two CPU cores: CIFAR-10 (the JPEG
q75 copy in ../shared, decoded), ResNet-20, l1, fpgm, taylor, random and DHP against Scratch-B
of l1 and the uniformly thinner network, seeds 0, 1, 2, equal budgets, one trial per study at MAC
target 0.5 (the configured values).

    PYTHONPATH=. python benchmarks/controls_cifar10.py [--data .data/cifar10.npz] \
        [--outputs outputs/controls_cifar10] [--results results/controls_cifar10_resnet20] \
        [--methods l1,random] [--seeds 0,1] [extra overrides ...]

`--data` is the decoded archive (`python ../shared/tools/cifar10_decode.py .data/cifar10.npz`);
when it is missing and PRUNEBENCH_SHARED_DATA names ../shared/data, it is decoded there first.
A 6,000-image stratified subset (5,400 train / 600 validation, the full 10,000-image test set),
15 baseline epochs and 6 fine-tuning epochs plus FPGM's 3 soft epochs (9 epochs per trial for every
method that starts from the baseline; DHP searches from scratch for at most the baseline's 15
epochs and gets the rest of the same total as fine-tuning) keep it near an hour on 2 cores. It is
the digits comparison's machinery (`controls_digits.py`: same studies, same report) on real images
at a budget where the baseline is far from converged: it shows whether a method beats training its
small network from scratch *at this budget*, not at the papers' 300 epochs. Studies resume: a second
call only runs what is missing, then compares (`--compare-only`: only the report).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.controls_digits import run_all
from harness.config import compose
from harness.runtime.plugins import load_configured

METHODS = ("l1", "fpgm", "taylor", "random", "dhp")
#: Scratch-B of the uniformly allocated l1 and the uniformly width-scaled network
CONTROLS = ("scratch_b@l1", "uniform")
SEEDS = (0, 1, 2)
#: DHP searches from scratch: at most the baseline's epochs (train.epochs below)
METHOD_OVERRIDES = {"dhp": ["method.epochs=15"]}


def base(data: Path, methods: tuple[str, ...], seeds: tuple[int, ...]) -> list[str]:
    """The overrides every study and the comparison share."""
    return [
        "task=classification",
        "data=npz",
        f"data.path={data}",
        "data.train_subset=6000",
        "model=resnet20",
        "train.epochs=15",
        "finetune.epochs=6",
        "target=0.5",
        "measure.latency=false",
        "tracking.experiment=controls_cifar10",
        "study.n_trials=1",
        "study.target=null",
        "compare.methods=[" + ",".join(methods) + "]",
        "compare.controls=[" + ",".join(CONTROLS) + "]",
        "compare.seeds=[" + ",".join(map(str, seeds)) + "]",
        "compare.targets=[0.5]",
    ]


def decoded_cifar10(path: Path) -> Path:
    """`path`, decoded from ../shared's JPEG archive first if it is missing and the shared data
    is configured; otherwise a one-line error saying how to make it."""
    if path.exists():
        return path
    shared = os.environ.get("PRUNEBENCH_SHARED_DATA")
    tool = Path(shared).parent / "tools" / "cifar10_decode.py" if shared else None
    if tool is None or not tool.exists():
        raise SystemExit(
            f"controls_cifar10: {path} not found; decode it with `python ../shared/tools/"
            f"cifar10_decode.py {path}` or set PRUNEBENCH_SHARED_DATA=../shared/data"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"decoding CIFAR-10 into {path} ({tool})", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(tool), str(path)], check=True)
    return path


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """`--data`: the decoded archive, by default <PRUNEBENCH_DATA_ROOT or .data>/cifar10.npz."""
    root = os.environ.get("PRUNEBENCH_DATA_ROOT", ".data")
    parser.add_argument(
        "--data", type=Path, default=Path(root) / "cifar10.npz",
        help="decoded CIFAR-10 (.npz); decoded from ../shared when missing",
    )  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--outputs", default="outputs/controls_cifar10")
    parser.add_argument("--results", default="results/controls_cifar10_resnet20")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument(
        "--compare-only", action="store_true", help="only redo the report from the studies there"
    )
    args, extra = parser.parse_known_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    seeds = tuple(int(s) for s in args.seeds.split(",") if s)
    data = decoded_cifar10(args.data.expanduser().resolve())
    shared = [*base(data, methods, seeds), f"outputs={args.outputs}", *extra]
    load_configured(compose(shared))
    labels = (*methods, *CONTROLS)
    report = run_all(
        shared, labels, () if args.compare_only else seeds, METHOD_OVERRIDES, args.results
    )
    print(report["table_md"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
