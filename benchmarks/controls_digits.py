"""Every registered pruning method against the three controls, sized for two busy CPU cores:
digits / ResNet-20, seeds 0, 1, 2, equal budgets (`budget.mode=equal`), one trial per study at MAC
target 0.3 (the configured values).

    PYTHONPATH=. python benchmarks/controls_digits.py [--outputs /tmp/ctl] \
        [--results results/controls_digits_resnet20] [--methods l1,random] [extra overrides ...]

Methods: random, l1, l2, fpgm, sfp, slimming, taylor, depgraph and dhp (the script refuses to run
when a registered method is missing from its list, so a new method joins the comparison). Controls:
Scratch-B of every method (`scratch_b@<method>`: its architecture trained from scratch for the same
compute; a method whose advantage over it is not significant gets ‡), the uniformly width-scaled
network (`uniform`), and random channels within the widths of each globally ranked method
(`random_widths@<method>`; for the uniformly allocated ones it would be the `random` method).

Every study runs in this process (one baseline per seed, shared); `compare` then writes its
report (Holm-corrected paired tests, effects with CIs, the seeds-needed line, control rows and
the ‡ mark) with its provenance into --results. A 600-image training subset, 10 baseline epochs
and 3 fine-tuning epochs plus the longest method phase (slimming's 5: 8 epochs per trial for
every method) keep it to about an hour: it shows the machinery and the order of the verdicts, not
paper-grade numbers. DHP searches from scratch for at most the baseline's 10 epochs
(`method.epochs=10`) and gets what is left of the same total as fine-tuning. Studies resume: a
second call only runs what is missing, then compares (`--compare-only`: only the report).
"""

from __future__ import annotations

import argparse
import sys
import time

from harness.config import compose
from harness.registry import METHODS as METHODS_REGISTRY
from harness.runtime.plugins import load_configured

METHODS = ("random", "l1", "l2", "fpgm", "sfp", "slimming", "taylor", "depgraph", "dhp")
#: methods that rank globally (their own widths): the ones random_widths has something to test on
GLOBAL = ("slimming", "taylor", "depgraph", "dhp")
SEEDS = (0, 1, 2)
#: DHP searches from scratch: at most the baseline's epochs (train.epochs below)
METHOD_OVERRIDES = {"dhp": ["method.epochs=10"]}


def controls(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Scratch-B of every method, the uniform network, random channels in global widths."""
    return (
        *(f"scratch_b@{m}" for m in methods),
        "uniform",
        *(f"random_widths@{m}" for m in methods if m in GLOBAL),
    )


def base(methods: tuple[str, ...]) -> list[str]:
    """The overrides every study and the comparison share."""
    return [
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
        "compare.methods=[" + ",".join(methods) + "]",
        "compare.controls=[" + ",".join(controls(methods)) + "]",
        "compare.seeds=[" + ",".join(map(str, SEEDS)) + "]",
        "compare.targets=[0.3]",
    ]


def run_all(
    shared: list[str],
    labels: tuple[str, ...],
    seeds: tuple[int, ...],
    method_overrides: dict[str, list[str]],
    results: str,
) -> dict:
    """Every study of `labels` (methods, then controls) for each seed, then `compare` into
    `results`; finished studies are skipped on a second call, so a killed run resumes."""
    from harness.report.compare import run_compare
    from harness.study import run_study

    for seed in seeds:  # seed-major: one baseline at a time
        for label in labels:  # sources before their controls
            name, _, source = label.partition("@")
            own = [f"method={name}", f"seed={seed}", *([f"method.source={source}"] * bool(source))]
            cfg = compose([*shared, *own, *method_overrides.get(name, ())])
            load_configured(cfg)
            t0 = time.perf_counter()
            summary = run_study(cfg)
            print(
                f"{time.strftime('%H:%M:%S')} {label} seed {seed}: {summary['n_complete']} "
                f"trial(s), {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return run_compare(compose([*shared, f"compare.results_dir={results}"]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default="outputs/controls_digits")
    parser.add_argument("--results", default="results/controls_digits_resnet20")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument(
        "--compare-only", action="store_true", help="only redo the report from the studies there"
    )
    args, extra = parser.parse_known_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    load_configured(compose(["data=digits"]))
    missing = sorted(n for n in METHODS_REGISTRY if not METHODS_REGISTRY.info(n).get("control"))
    missing = [n for n in missing if n not in METHODS]
    if missing and args.methods == ",".join(METHODS):
        raise SystemExit(f"controls_digits: registered methods not in METHODS: {missing}")
    shared = [*base(methods), f"outputs={args.outputs}", *extra]
    seeds = () if args.compare_only else SEEDS
    report = run_all(shared, (*methods, *controls(methods)), seeds, METHOD_OVERRIDES, args.results)
    print(report["table_md"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
