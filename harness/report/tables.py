"""Result tables: one row per run, grouped into method × target with mean ± std over seeds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["results_frame", "summary_table", "write_table"]

COLUMNS = [
    "method",
    "target",
    "seed",
    "macs_ratio",
    "params_ratio",
    "val_metric_pruned",
    "val_metric",
    "test_metric",
    "base_test_metric",
    "latency_ms",
    "wall_prune_s",
]


def results_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{k: r.get(k) for k in COLUMNS} for r in records])


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Method × target rows; metrics as mean (± std when there are several seeds)."""

    def fmt(s: pd.Series, digits: int) -> str:
        if len(s) > 1:
            return f"{s.mean():.{digits}f} ± {s.std(ddof=1):.{digits}f}"
        return f"{s.mean():.{digits}f}"

    rows = []
    for (method, target), g in frame.groupby(["method", "target"], sort=False):
        rows.append(
            {
                "method": method,
                "target": target,
                "seeds": len(g),
                "macs_ratio": fmt(g.macs_ratio, 3),
                "params_ratio": fmt(g.params_ratio, 3),
                "val_before_ft": fmt(g.val_metric_pruned, 2),
                "val": fmt(g.val_metric, 2),
                "test": fmt(g.test_metric, 2),
                "test_delta": fmt(g.test_metric - g.base_test_metric, 2),
                "latency_ms": fmt(g.latency_ms, 3),
            }
        )
    return pd.DataFrame(rows).sort_values(["target", "method"], ascending=[False, True])


def write_table(frame: pd.DataFrame, directory: str | Path, stem: str) -> tuple[Path, Path]:
    """Write CSV (every run) and Markdown (summary) atomically enough for a results folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    csv, md = directory / f"{stem}.csv", directory / f"{stem}.md"
    frame.to_csv(csv.with_suffix(".csv.tmp"), index=False)
    csv.with_suffix(".csv.tmp").replace(csv)
    md.with_suffix(".md.tmp").write_text(summary_table(frame).to_markdown(index=False) + "\n")
    md.with_suffix(".md.tmp").replace(md)
    return csv, md
