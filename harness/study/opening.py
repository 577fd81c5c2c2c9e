"""Create, resume or join a study in its storage.

A study is created once, for one identity (task, data, model, method, seed, objectives) and one
set of trial settings (fingerprint.trial_settings); a resume with anything else is refused before
it changes anything. Launcher jobs of one study (`study.job`) race to create the storage; job 0
prepares the study (first trials, baseline, parent run) and marks it ready, the others wait.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, DataNotFoundError
from harness.study.fingerprint import differing_keys
from harness.study.settings import StudySettings
from harness.study.storage import StorageSpec

if TYPE_CHECKING:
    import optuna

__all__ = [
    "READY_ATTR",
    "SETTINGS_ATTR",
    "load_existing_study",
    "open_storage",
    "open_study",
    "wait_ready",
]

log = logging.getLogger(__name__)

#: study user attribute holding fingerprint.trial_settings of its creation
SETTINGS_ATTR = "trial_settings"
#: study attribute set once the study, its first trials, baseline and parent run exist
READY_ATTR = "ready"


def open_storage(
    spec: StorageSpec, settings: StudySettings, on_stale: Any
) -> optuna.storages.BaseStorage:
    """Open (and on first use create) the storage. Launcher jobs of one study start together and
    may race to create its tables (PostgreSQL: a unique violation); the loser retries."""
    for _ in range(9 if settings.job is not None else 0):
        try:
            return spec.open(heartbeat_s=settings.heartbeat_s, on_stale=on_stale)
        except ConfigError as e:
            log.info("study.job=%s: storage not ready (%s); retrying", settings.job, e)
            time.sleep(3.0)
    return spec.open(heartbeat_s=settings.heartbeat_s, on_stale=on_stale)


def wait_ready(
    settings: StudySettings, storage: optuna.storages.BaseStorage, timeout_s: float = 1800.0
) -> None:
    """Launcher job ≥ 1 of a study: wait until job 0 created it, enqueued its first trials,
    trained the baseline and opened the MLflow parent run (so none of that happens twice)."""
    import optuna

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name=settings.name, storage=storage)
            if study.user_attrs.get(READY_ATTR):
                return
        except KeyError:
            pass
        time.sleep(2.0)
    raise ConfigError(
        f"study.job={settings.job}: study '{settings.name}' was not prepared by study.job=0 "
        f"within {timeout_s:g} s; launch job 0 too, with the same study.storage"
    )


def open_study(
    settings: StudySettings,
    spec: StorageSpec,
    storage: optuna.storages.BaseStorage,
    ident: Mapping[str, Any],
    meaning: Mapping[str, str],
) -> optuna.Study:
    """Create the study, or load it after checking it was made for the same thing (identity)
    with the same trial settings (fingerprint.trial_settings); a refused resume changes nothing."""
    import optuna

    try:
        study = optuna.load_study(study_name=settings.name, storage=storage)
    except KeyError:
        try:
            study = optuna.create_study(
                study_name=settings.name, storage=storage, directions=settings.directions
            )
            for k, v in ident.items():
                study.set_user_attr(k, v)
            study.set_user_attr(SETTINGS_ATTR, dict(meaning))
            _name_metrics(study, settings)
            return study
        except optuna.exceptions.DuplicatedStudyError:  # created concurrently
            study = optuna.load_study(study_name=settings.name, storage=storage)
    have = study.user_attrs.get("objectives")
    directions = [d.name.lower() for d in study.directions]
    if have != list(settings.objectives) or directions != settings.directions:
        raise ConfigError(
            f"study '{settings.name}' in {spec.masked} exists with objectives "
            f"{have or directions}, not {list(settings.objectives)}; pick another study.name "
            "or delete that study"
        )
    if study.metric_names is None:  # made before the names were recorded
        _name_metrics(study, settings)
    for key, value in ident.items():
        if key != "objectives" and study.user_attrs.get(key, value) != value:
            raise ConfigError(
                f"study '{settings.name}' in {spec.masked} was created for {key}="
                f"{study.user_attrs[key]}, not {value}; pick another study.name"
            )
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:  # made before settings were recorded: record them now
        study.set_user_attr(SETTINGS_ATTR, dict(meaning))
    elif differ := differing_keys(stored, meaning):
        shown = ", ".join(
            f"{k}={stored.get(k, '<unset>')}→{meaning.get(k, '<unset>')}" for k in differ[:8]
        ) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ConfigError(
            f"study '{settings.name}' in {spec.masked} was made with other trial settings: "
            f"{shown}; restore them, or pick another study.name (or outputs) for the new settings"
        )
    return study


def _name_metrics(study: optuna.Study, settings: StudySettings) -> None:
    """Objective names in the storage, so optuna-dashboard labels the axes (quality, macs_ratio)
    instead of "Objective 0/1"."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(settings.objectives))


def load_existing_study(study_cfg: Any, missing: str) -> tuple[optuna.Study, StudySettings]:
    """The study `study_cfg` (a resolved run config whose `study.name` is derived) names, for
    reading only; a DataNotFoundError when it does not exist, `missing` saying what to run."""
    import optuna

    settings = StudySettings.from_cfg(study_cfg)
    spec = settings.storage(study_cfg)
    try:
        return optuna.load_study(study_name=settings.name, storage=spec.open()), settings
    except KeyError as e:
        raise DataNotFoundError(f"no study '{settings.name}' in {spec.masked}{missing}") from e
