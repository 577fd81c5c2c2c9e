"""`python tests/faults/tinycli.py <command> [overrides]`: the prunebench CLI in a fresh process
with the tests' tiny `test_*` models registered, so fault probes run real commands in seconds.

`TINYCLI_HANG_AT_TRIAL=N` makes trial N of an in-process study hang once its model is pruned (its
MLflow run exists), so a probe can kill a study mid-trial without racing a trial that takes a
second: a tiny trial may otherwise finish between the probe's poll and its signal.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parents[2])]

import conftest  # noqa: E402, F401  (registers test_resnet, test_depthwise, test_concat)

from harness.cli.main import main  # noqa: E402


def _hang_at_trial(number: int) -> None:
    from harness.study import objective

    pruned = objective._TrialObserver.pruned

    def hang(self, metrics):  # noqa: ANN001, ANN202
        pruned(self, metrics)
        if self.trial.number == number:
            while True:  # until the probe's signal
                time.sleep(0.1)

    objective._TrialObserver.pruned = hang


if __name__ == "__main__":
    if os.environ.get("TINYCLI_HANG_AT_TRIAL"):
        _hang_at_trial(int(os.environ["TINYCLI_HANG_AT_TRIAL"]))
    sys.exit(main())
