"""`prunebench demo`: a small real AutoML comparison on the embedded digits data, offline.

One Optuna study per (method, seed) for DHP and three baselines, seeds 0, 1, 2, the same trial
budget for each: the configured values at MAC target 0.3, then the same at 0.15 and 0.08
(`study.enqueue`), then trials the sampler draws (target and fine-tuning LR/weight decay).
Targets are low on purpose: at a 0.5 MAC ratio every method keeps > 99 % on digits, so the demo
goes where the methods differ. `prunebench compare` then reports, per target, mean ± std over the
seeds, how many seeds reached it, paired tests against the best method, hypervolumes and cost.
Each seed has its own cached baseline, shared by every method; studies resume, so a second
`make demo` only redoes the comparison. Budgets are sized to finish in under 10 minutes on two
idle CPU cores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from harness.config import compose
from harness.registry import METHODS

__all__ = ["DEMO_METHODS", "DEMO_OVERRIDES", "DEMO_SEEDS", "DEMO_TARGETS", "run_demo"]

log = logging.getLogger(__name__)

DEMO_METHODS = ("dhp", "l1", "random", "fpgm")
DEMO_TARGETS = (0.3, 0.15, 0.08)
DEMO_SEEDS = (0, 1, 2)
DEMO_OVERRIDES = [
    "task=classification",
    "data=digits",
    "model=resnet20",
    "train.epochs=20",
    "finetune.epochs=6",
    "measure.latency_repeats=5",
    "tracking.experiment=demo",
    f"target={DEMO_TARGETS[0]}",
    "study.n_trials=5",
    "study.target={type:float,low:0.05,high:0.5}",
    "study.enqueue=[" + ",".join(f"{{target:{t}}}" for t in DEMO_TARGETS[1:]) + "]",
    "compare.methods=[" + ",".join(DEMO_METHODS) + "]",
    "compare.seeds=[" + ",".join(map(str, DEMO_SEEDS)) + "]",
    "compare.targets=[" + ",".join(map(str, DEMO_TARGETS)) + "]",
]
#: DHP searches from scratch instead of starting from the baseline: its search may take as many
#: epochs as the baseline's training (it stops earlier, once the target is met)
METHOD_OVERRIDES = {"dhp": ["method.epochs=20"]}


def run_demo(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume) each (method, seed) study, then compare them; returns the report's paths."""
    from harness.report.compare import run_compare
    from harness.runtime.progress import Ticker
    from harness.study import run_study

    methods = [m for m in DEMO_METHODS if m in METHODS]
    studies = {}
    jobs = [(m, s) for s in DEMO_SEEDS for m in methods]  # seed-major: one baseline at a time
    ticker = Ticker(len(jobs), "demo", unit="study")
    try:
        for i, (method, seed) in enumerate(jobs):
            cfg = compose([*DEMO_OVERRIDES, f"method={method}", f"seed={seed}",
                           *METHOD_OVERRIDES.get(method, ()), *overrides])  # fmt: skip
            ticker.update(i, f"now {method} seed {seed} ({cfg.study.n_trials} trials)")
            summary = run_study(cfg)
            studies[f"{method}-s{seed}"] = {
                k: summary[k] for k in ("study_name", "n_complete", "pareto")
            }
        ticker.update(len(jobs), "comparing")
    finally:
        ticker.close()
    cfg = compose([*DEMO_OVERRIDES, f"compare.methods=[{','.join(methods)}]", *overrides])
    report = run_compare(cfg)  # logs the table once; stderr gets nothing else of it
    return {
        "methods": methods,
        "seeds": list(DEMO_SEEDS),
        "targets": list(DEMO_TARGETS),
        "studies": studies,
        "storage": summary["storage"],
        **{k: report[k] for k in ("table_md", "summary_csv", "points_csv", "plot")},
        "hypervolume": report["hypervolume"],
        "tracking_uri": report["tracking_uri"],
    }
