"""`prunebench demo`: a small real AutoML comparison on the embedded digits data, offline.

One Optuna study per method (DHP and three baselines), the same trial budget for each: the
configured values at MAC target 0.3, then the same at 0.15 and 0.08 (`study.enqueue`), then three
trials the sampler draws (target and fine-tuning LR/weight decay). Targets are low on purpose: at a
0.5 MAC ratio every method keeps > 99 % on digits, so the demo goes where the methods differ.
`prunebench compare` then reports the fronts, hypervolumes and dominance. All trials share one
cached baseline; studies resume, so a second `make demo` only redoes the comparison.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from harness.registry import METHODS

__all__ = ["DEMO_METHODS", "DEMO_OVERRIDES", "DEMO_TARGETS", "run_demo"]

log = logging.getLogger(__name__)

DEMO_METHODS = ("dhp", "l1", "random", "fpgm")
DEMO_TARGETS = (0.3, 0.15, 0.08)
DEMO_OVERRIDES = [
    "task=classification",
    "data=digits",
    "model=resnet20",
    "train.epochs=30",
    "finetune.epochs=8",
    "measure.latency_repeats=5",
    "tracking.experiment=demo",
    f"target={DEMO_TARGETS[0]}",
    "study.n_trials=6",
    "study.target={type:float,low:0.05,high:0.5}",
    "study.enqueue=[" + ",".join(f"{{target:{t}}}" for t in DEMO_TARGETS[1:]) + "]",
    "compare.methods=[" + ",".join(DEMO_METHODS) + "]",
    "compare.targets=[" + ",".join(map(str, DEMO_TARGETS)) + "]",
]
#: DHP searches from scratch instead of starting from the baseline: its search may take as many
#: epochs as the baseline's training (it stops earlier, once the target is met)
METHOD_OVERRIDES = {"dhp": ["method.epochs=30"]}


def run_demo(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume) each method's study, then compare them; returns the report's paths."""
    from harness.cli import compose
    from harness.pipeline import _register_all
    from harness.report.compare import run_compare
    from harness.study import run_study

    _register_all()
    methods = [m for m in DEMO_METHODS if m in METHODS]
    studies = {}
    for method in methods:
        cfg = compose(
            [*DEMO_OVERRIDES, f"method={method}", *METHOD_OVERRIDES.get(method, ()), *overrides]
        )
        log.info("demo: study of %s (%d trials)", method, cfg.study.n_trials)
        summary = run_study(cfg)
        studies[method] = {k: summary[k] for k in ("study_name", "n_complete", "pareto")}
    cfg = compose([*DEMO_OVERRIDES, f"compare.methods=[{','.join(methods)}]", *overrides])
    report = run_compare(cfg)
    with open(report["table_md"]) as f:
        print(f.read(), file=sys.stderr)
    print(f"Pareto plot: {report['plot']}", file=sys.stderr)
    return {
        "methods": methods,
        "targets": list(DEMO_TARGETS),
        "studies": studies,
        "storage": summary["storage"],
        **{k: report[k] for k in ("table_md", "summary_csv", "points_csv", "plot")},
        "hypervolume": report["hypervolume"],
        "tracking_uri": report["tracking_uri"],
    }
