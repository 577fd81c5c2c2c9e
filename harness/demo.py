"""`prunebench demo`: compare methods at several MAC targets on the embedded digits data, offline.

Targets are low and budgets short on purpose: at a 0.5 MAC ratio every method keeps > 99 % on
digits, so the demo goes where the methods differ. All runs share one cached baseline.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.registry import METHODS

__all__ = ["DEMO_OVERRIDES", "run_demo"]

log = logging.getLogger(__name__)

DEMO_OVERRIDES = [
    "task=classification",
    "data=digits",
    "model=resnet20",
    "train.epochs=15",
    "finetune.epochs=3",
    "measure.latency_repeats=5",
    "tracking.experiment=demo",
]
DEMO_METHODS = ("random", "l1", "fpgm", "dhp")
DEMO_TARGETS = (0.3, 0.15, 0.08)


def run_demo(overrides: Sequence[str] = ()) -> dict:
    from harness.cli import compose
    from harness.pipeline import _register_all, run
    from harness.report import results_frame, summary_table, write_table

    _register_all()
    methods = [m for m in DEMO_METHODS if m in METHODS]
    records = []
    for target in DEMO_TARGETS:
        for method in methods:
            cfg = compose([*DEMO_OVERRIDES, f"method={method}", f"target={target}", *overrides])
            log.info("demo: %s at target %.2f", method, target)
            records.append(run(cfg))
    frame = results_frame(records)
    out = Path(cfg.outputs) / "demo"
    csv, md = write_table(frame, out, "demo")
    print(summary_table(frame).to_markdown(index=False), file=sys.stderr)
    return {
        "methods": methods,
        "targets": list(DEMO_TARGETS),
        "table_csv": str(csv),
        "table_md": str(md),
        "tracking_uri": records[-1]["tracking_uri"],
    }
