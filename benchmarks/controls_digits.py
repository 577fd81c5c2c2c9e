"""A small comparison with controls, sized for two busy CPU cores: digits / ResNet-20, l1 and
random against Scratch-B (of l1), uniform width scaling and random channels within l1's widths,
seeds 0, 1, 2, equal budgets, one trial per study at MAC target 0.3 (the configured values).

    PYTHONPATH=. python benchmarks/controls_digits.py [--outputs /tmp/ctl] \
        [--results results/controls_digits_resnet20] [extra hydra overrides ...]

Every study runs in this process (one baseline per seed, shared); `compare` then writes its
report (Holm-corrected paired tests, effects with CIs, the seeds-needed line, control rows and
the ‡ mark) with its provenance into --results. A 600-image training subset, 10 baseline epochs
and 3 fine-tuning epochs keep it to minutes: it shows the machinery and the order of the
verdicts, not paper-grade numbers.
"""

from __future__ import annotations

import argparse
import sys

from harness.config import compose
from harness.runtime.plugins import load_configured

METHODS = ("l1", "random")
CONTROLS = ("scratch_b@l1", "uniform", "random_widths@l1")
SEEDS = (0, 1, 2)
BASE = [
    "task=classification",
    "data=digits",
    "data.train_subset=600",
    "model=resnet20",
    "train.epochs=10",
    "finetune.epochs=3",
    "target=0.3",
    "measure.latency=false",
    "tracking.experiment=controls",
    "study.n_trials=1",
    "study.target=null",
    "compare.methods=[" + ",".join(METHODS) + "]",
    "compare.controls=[" + ",".join(CONTROLS) + "]",
    "compare.seeds=[" + ",".join(map(str, SEEDS)) + "]",
    "compare.targets=[0.3]",
]


def main(argv: list[str]) -> int:
    from harness.report.compare import run_compare
    from harness.study import run_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default="outputs/controls_digits")
    parser.add_argument("--results", default="results/controls_digits_resnet20")
    args, extra = parser.parse_known_args(argv)
    base = [*BASE, f"outputs={args.outputs}", *extra]
    for seed in SEEDS:  # seed-major: one baseline at a time; sources before their controls
        for label in (*METHODS, *CONTROLS):
            name, _, source = label.partition("@")
            own = [f"method={name}", f"seed={seed}", *([f"method.source={source}"] * bool(source))]
            cfg = compose([*base, *own])
            load_configured(cfg)
            summary = run_study(cfg)
            print(f"{label} seed {seed}: {summary['n_complete']} trial(s)", file=sys.stderr)
    report = run_compare(compose([*base, f"compare.results_dir={args.results}"]))
    print(report["table_md"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
