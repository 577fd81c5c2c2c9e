"""MLflow tracking: one run per pipeline run (child runs of a study's parent run later).

The tracking URI is always explicit (`sqlite:///<outputs>/mlflow.db` by default: MLflow 3's plain
file store is deprecated), and credentials in any logged value are masked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import StoreError
from harness.runtime.processes import process_token
from harness.runtime.retry import Retrying
from harness.runtime.secrets import MASK, SECRET_NAME, mask_secrets

__all__ = [
    "Tracker",
    "artifact_location",
    "default_tracking_uri",
    "flatten",
    "log_metric_batch",
    "log_params",
    "mask_secrets",
    "mlflow_client",
]

log = logging.getLogger(__name__)

#: the `host:pid:start` of the process that runs an MLflow run (harness/runtime/processes.py)
OWNER_TAG = "owner"


def mlflow_client(uri: str) -> Any:
    """An MLflow client of the store at `uri`: every MLflow read and write of the harness goes
    through this module (a run's through `Tracker`, the rest through this client), so a change
    of MLflow API or store handling is made here."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def log_metric_batch(client: Any, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log `metrics` to `run_id` in one batch, stamped now."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → {"a.b.c": value}; lists stay as their string form."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def log_params(
    client: Any, run_id: str, params: Mapping[str, Any], *, skip: tuple[str, ...] = ()
) -> None:
    """Log a nested mapping as flattened, masked params in batches (MLflow caps a batch)."""
    from mlflow.entities import Param

    items = []
    for k, v in flatten(params).items():
        if k in skip:
            continue
        value = MASK if SECRET_NAME.search(k) and v else mask_secrets(v)
        items.append(Param(k, value[:6000]))
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def mark_dead_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this experiment whose process is gone (SIGKILL, a crash,
    a lost machine's runs stay as they are: `is_alive` does not judge other hosts)."""
    from harness.runtime.processes import is_alive

    dead = []
    runs = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in runs:
        owner = run.data.tags.get(OWNER_TAG)
        if owner and not is_alive(owner):
            try:
                client.set_tag(run.info.run_id, "error", f"process {owner} died mid-run")
                client.set_terminated(run.info.run_id, status="KILLED")
                dead.append(run.info.run_id)
                log.warning("MLflow run %s: process %s died mid-run; marked KILLED",
                            run.info.run_id, owner)  # fmt: skip
            except Exception as e:  # noqa: BLE001 - marking is best effort, never fatal
                log.warning("could not mark MLflow run %s KILLED: %s", run.info.run_id, e)
    return dead


def artifact_location(uri: str, outputs: str | Path) -> str | None:
    """Where a new experiment keeps artifacts: <outputs>/mlartifacts for a local store; for a
    tracking server (http/https), None: the server's own artifact root, which every machine
    reaches through the server (a local path of one machine would be wrong on the others)."""
    if uri.split(":", 1)[0] in ("http", "https", "databricks"):
        return None
    return (Path(outputs).resolve() / "mlartifacts").as_uri()


def default_tracking_uri(outputs: str | Path) -> str:
    path = Path(outputs).resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class Tracker:
    """A thin MLflow run: params, tags, metrics and artifacts; a no-op when disabled."""

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        *,
        outputs: str | Path,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.uri = uri or default_tracking_uri(outputs)
        self.experiment = experiment
        self.artifact_root = artifact_location(self.uri, outputs)
        self.run_name, self.tags, self.parent_run_id = run_name, dict(tags or {}), parent_run_id
        self.run_id: str | None = None
        self._client = None

    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        self._client = Retrying(mlflow_client(self.uri))  # a briefly locked store is waited for
        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                exp_id = self._client.create_experiment(
                    self.experiment, artifact_location=self.artifact_root
                )
            except Exception:  # created concurrently by another worker
                exp_id = self._client.get_experiment_by_name(self.experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        mark_dead_runs(self._client, exp_id)
        tags = {k: mask_secrets(v) for k, v in self.tags.items()}
        tags[OWNER_TAG] = process_token()
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self._client.create_run(exp_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        log.info("MLflow run %s at %s", self.run_id, mask_secrets(self.uri))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled or self.run_id is None:
            return
        from harness.errors import RunStopped

        if exc_type is None:
            status = "FINISHED"
        elif isinstance(exc, RunStopped | KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        try:
            if exc is not None:
                self.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
            self._client.set_terminated(self.run_id, status=status)
        except Exception as e:
            reason = mask_secrets(" ".join(str(e).split())[:300])
            if exc is None:  # the run's work is done but its store will not record it
                raise StoreError(
                    f"MLflow run {self.run_id} finished but {mask_secrets(self.uri)} could not "
                    f"record it ({type(e).__name__}: {reason}); its results are in the run's "
                    "folder under outputs/runs, rerun to record them"
                ) from e
            log.error("could not mark MLflow run %s %s (%s: %s)", self.run_id, status,
                      type(e).__name__, reason)  # fmt: skip

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.enabled:
            log_params(self._client, self.run_id, params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled:
            for k, v in tags.items():
                self._client.set_tag(self.run_id, k, mask_secrets(v))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.enabled:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if items:
            self._client.log_batch(self.run_id, metrics=items)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        """Copy `directory` into the run's artifacts; a failed copy (disk full) leaves no
        truncated file behind there and is one line (StoreError)."""
        if not self.enabled:
            return
        try:
            self._client.log_artifacts(self.run_id, str(directory), artifact_path)
        except Exception as e:
            removed = self._drop_partial_artifacts(artifact_path)
            reason = mask_secrets(" ".join(str(e).split())[:300])
            raise StoreError(
                f"could not store the artifacts of MLflow run {self.run_id} "
                f"({type(e).__name__}: {reason}); "
                + ("the partial copy was removed" if removed else "check the artifact store")
            ) from e

    def _drop_partial_artifacts(self, artifact_path: str | None) -> bool:
        """Remove what a failed copy left in a local artifact store (a truncated model.pt)."""
        import shutil
        from urllib.parse import unquote, urlsplit

        try:
            uri = self._client.get_run(self.run_id).info.artifact_uri
        except Exception:  # noqa: BLE001 - the store itself is failing: nothing to clean here
            return False
        parts = urlsplit(uri)
        if parts.scheme not in ("", "file"):
            return False
        target = Path(unquote(parts.path))
        target = target / artifact_path if artifact_path else target
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        return not target.exists()
