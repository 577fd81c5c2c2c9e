"""Reports: Pareto-front arithmetic (pareto.py) and the cross-method comparison of studies
(compare.py, `prunebench compare`)."""

from harness.report.pareto import (
    coverage,
    hypervolume_2d,
    pareto_front,
    quality_at,
)

__all__ = ["coverage", "hypervolume_2d", "pareto_front", "quality_at"]
