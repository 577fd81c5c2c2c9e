"""`python -m harness.cli …` runs the `prunebench` command."""

import sys

from harness.cli.main import main

sys.exit(main())
