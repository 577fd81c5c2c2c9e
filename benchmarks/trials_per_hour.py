"""Study throughput: finished trials per hour with 1, 2, 4 workers of one study on one device.

    PYTHONPATH=. python benchmarks/trials_per_hour.py [--workers 1 2 4] [--trials 8]
        [--outputs DIR] [overrides ...]

Each worker count runs its own fresh study (`study.name=tph-w<N>`, Journal-file storage in
`--outputs`) to `--trials` finished trials with `study.workers=N` and
`study.workers_per_device=N` (all workers packed on the one visible GPU, or on the CPU), after one
untimed baseline training shared by all of them (the cache). Prints one table row per worker count:
wall seconds and trials per hour (= trials / wall × 3600).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness.cli.main import compose
from harness.run.pipeline import ensure_baseline
from harness.study import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--outputs", default=None, help="default: a temporary folder")
    parser.add_argument("overrides", nargs="*", help="config overrides (model=…, data=…)")
    args = parser.parse_args()
    outputs = args.outputs or tempfile.mkdtemp(prefix="prunebench-tph-")
    base = [*args.overrides, f"outputs={outputs}", "tracking.enabled=false"]
    ensure_baseline(compose(base))  # not part of any timing
    print("| workers | trials | wall s | trials/hour |")
    print("|---:|---:|---:|---:|")
    for n in args.workers:
        cfg = compose([*base, f"study.workers={n}", f"study.workers_per_device={n}",
                       f"study.n_trials={args.trials}", f"study.name=tph-w{n}-{time.time_ns()}",
                       "study.storage=journal"])  # fmt: skip
        t0 = time.perf_counter()
        summary = run_study(cfg)
        wall = time.perf_counter() - t0
        done = summary["n_complete"] + summary["n_pruned"]
        print(f"| {n} | {done} | {wall:.1f} | {done / wall * 3600:.0f} |", flush=True)
    print(f"\noutputs: {Path(outputs).resolve()}")


if __name__ == "__main__":
    main()
