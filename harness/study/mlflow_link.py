"""A study in MLflow: one parent run per study, a child run per trial, `pareto` tags kept current,
and the front on the parent as a table and as figures (PNG and interactive HTML).

The study and its parent run point at each other: the study's user attributes hold the parent's
run id and tracking URI; the parent's tags hold the study name and (masked) storage.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.tracking import log_metric_batch, mask_secrets, mlflow_client

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["ParentRun", "ParetoTagger", "front_frame", "kill_finished_run", "log_front", "mark_run"]

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
URI_ATTR = "mlflow_tracking_uri"


def _client(uri: str):
    return mlflow_client(uri)


class ParentRun:
    """The study's MLflow run: created with the study, reopened when the study resumes."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id

    @classmethod
    def open(
        cls,
        study: optuna.Study,
        *,
        uri: str,
        experiment: str,
        artifact_root: str | None,
        tags: Mapping[str, str],
    ) -> ParentRun:
        """Reuse the run recorded on the study if this tracking store has it, else create one."""
        client = _client(uri)
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id and study.user_attrs.get(URI_ATTR) == mask_secrets(uri):
            try:
                client.get_run(run_id)
                client.update_run(run_id, status="RUNNING")
                log.info("study %s resumes MLflow parent run %s", study.study_name, run_id)
                return cls(uri, run_id)
            except Exception:  # deleted, or another store: start a new parent
                log.warning("MLflow parent run %s of study %s is gone; new one", run_id, study)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(experiment, artifact_location=artifact_root)
            except Exception:  # created concurrently
                exp_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        run = client.create_run(
            exp_id,
            run_name=f"study-{study.study_name}",
            tags={k: mask_secrets(v) for k, v in tags.items()},
        )
        study.set_user_attr(PARENT_ATTR, run.info.run_id)
        study.set_user_attr(URI_ATTR, mask_secrets(uri))
        return cls(uri, run.info.run_id)

    def close(self, status: str = "FINISHED") -> None:
        _client(self.uri).set_terminated(self.run_id, status=status)


def kill_finished_run(uri: str, run_id: str, reason: str) -> None:
    """Mark KILLED a run that ended FINISHED although its trial then failed (an interrupt between
    the run's end and Optuna's record of the trial), so the two stores agree; a run in any other
    state is left as it is."""
    try:
        finished = _client(uri).get_run(run_id).info.status == "FINISHED"
    except Exception as e:  # noqa: BLE001 - best effort on the way out of an interrupt
        log.warning("could not read MLflow run %s: %s", run_id, e)
        return
    if finished:
        mark_run(uri, run_id, "KILLED", reason)


def mark_run(uri: str, run_id: str, status: str, reason: str) -> None:
    """End a child run left RUNNING by a dead worker (KILLED, with the reason as a tag)."""
    client = _client(uri)
    try:
        client.set_tag(run_id, "error", reason)
        client.set_terminated(run_id, status=status)
    except Exception as e:  # noqa: BLE001 - the run may never have been written
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, e)


class ParetoTagger:
    """Keeps each trial's child run tagged `pareto=true|false` as the front changes.

    Called after every trial (in the worker that ran it) and once more by the study at the end,
    so the tags match `study.best_trials` even when workers raced. Writes only changed tags.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._written: dict[str, str] = {}

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial | None = None) -> None:
        from optuna.trial import TrialState

        front = {t.number for t in study.best_trials}
        client = _client(self.uri)
        for t in study.get_trials(deepcopy=False):
            run_id = t.user_attrs.get("mlflow_run_id")
            if not run_id or t.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            value = "true" if t.number in front else "false"
            if self._written.get(run_id) != value:
                try:
                    client.set_tag(run_id, "pareto", value)
                    self._written[run_id] = value
                except Exception as e:  # noqa: BLE001 - tagging must never fail a trial
                    log.warning("could not tag run %s pareto=%s: %s", run_id, value, e)


def front_frame(study: optuna.Study, objective_names: Sequence[str]) -> pd.DataFrame:
    """Every finished trial as one row: state, objective values, params, pareto flag."""
    import pandas as pd
    from optuna.trial import TrialState

    front = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name,
            "pareto": t.number in front,
        }
        values = t.values or [None] * len(objective_names)
        for name, value in zip(objective_names, values, strict=True):
            row[name] = value
        for key in (
            "test_metric",
            "macs",
            "params",
            "mlflow_run_id",
            "fail_reason",
            "pruned_reason",
        ):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        row.update({f"param.{k}": v for k, v in t.params.items()})
        row["feasible"] = all(
            v <= 0 for k, v in t.user_attrs.items() if k.startswith("constraint.")
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _pareto_png(frame: pd.DataFrame, x: str, y: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[frame.state == "COMPLETE"]
    front = done[done.pareto].sort_values(x)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    ax.scatter(done[x], done[y], s=18, c="0.7", label="trials")
    ax.plot(front[x], front[y], "o-", c="C3", drawstyle="steps-post", label="Pareto front")
    for _, r in front.iterrows():
        ax.annotate(str(int(r.trial)), (r[x], r[y]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table_json(frame: pd.DataFrame) -> str:
    """MLflow's table layout ({"columns": [...], "data": [...]}), readable by mlflow.load_table."""
    return frame.to_json(orient="split", index=False, default_handler=str)


def log_front(
    study: optuna.Study,
    parent: ParentRun,
    objective_names: Sequence[str],
    *,
    metric_label: str,
) -> dict[str, str]:
    """Log trials and front on the parent run: tables, PNG and HTML figures, summary metrics."""
    import optuna as _optuna

    client = _client(parent.uri)
    frame = front_frame(study, objective_names)
    logged: dict[str, str] = {}
    if frame.empty:
        return logged
    # log_text replaces the file; log_table would download the old one and append to it on
    # every resume (duplicate rows, and MLflow's download progress bars on stderr)
    client.log_text(parent.run_id, _table_json(frame), "study/trials.json")
    front = frame[frame.pareto]
    if not front.empty:
        client.log_text(parent.run_id, _table_json(front), "study/pareto_front.json")
    logged["trials"] = "study/trials.json"
    with tempfile.TemporaryDirectory() as tmp:
        done = frame[frame.state == "COMPLETE"]
        if len(objective_names) >= 2 and not done.empty:
            png = Path(tmp) / "pareto_front.png"
            title = f"{study.study_name}: {metric_label} vs {objective_names[1]}"
            _pareto_png(frame, objective_names[1], objective_names[0], title, png)
            client.log_artifact(parent.run_id, str(png), "study")
            logged["png"] = "study/pareto_front.png"
            try:
                fig = _optuna.visualization.plot_pareto_front(
                    study, target_names=list(objective_names)
                )
                html = Path(tmp) / "pareto_front.html"
                fig.write_html(str(html), include_plotlyjs=True)  # self-contained: opens offline
                client.log_artifact(parent.run_id, str(html), "study")
                logged["html"] = "study/pareto_front.html"
            except ImportError as e:
                log.warning("no interactive Pareto plot (%s): pip install plotly", e)
    counts = frame.state.value_counts()
    metrics = {
        "n_complete": float(counts.get("COMPLETE", 0)),
        "n_failed": float(counts.get("FAIL", 0)),
        "n_pruned": float(counts.get("PRUNED", 0)),
        "n_pareto": float(len(front)),
    }
    if not front.empty:
        metrics[f"best_{objective_names[0]}"] = float(front[objective_names[0]].max())
    log_metric_batch(client, parent.run_id, metrics)
    return logged
