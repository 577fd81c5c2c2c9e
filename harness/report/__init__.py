"""Reports: Pareto-front arithmetic (pareto.py) and the cross-method comparison of studies
(compare.py, `prunebench compare`)."""

from harness.report.pareto import (
    at_target,
    coverage,
    hypervolume_2d,
    pareto_front,
)

__all__ = ["at_target", "coverage", "hypervolume_2d", "pareto_front"]
