"""Reports: run tables (tables.py), Pareto-front arithmetic (pareto.py) and the cross-method
comparison of studies (compare.py)."""

from harness.report.pareto import (
    coverage,
    hypervolume_2d,
    pareto_front,
    quality_at,
)
from harness.report.tables import results_frame, summary_table, write_table

__all__ = [
    "coverage",
    "hypervolume_2d",
    "pareto_front",
    "quality_at",
    "results_frame",
    "summary_table",
    "write_table",
]
