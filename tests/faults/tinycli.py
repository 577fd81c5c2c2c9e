"""`python tests/faults/tinycli.py <command> [overrides]`: the prunebench CLI in a fresh process
with the tests' tiny `test_*` models registered, so fault probes run real commands in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parents[2])]

import conftest  # noqa: E402, F401  (registers test_resnet, test_depthwise, test_concat)

from harness.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
