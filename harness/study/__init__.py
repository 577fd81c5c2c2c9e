"""AutoML studies: Optuna-tuned, multi-objective (quality vs MACs) studies of one method each,
with their Pareto fronts in MLflow (harness/study/runner.py is the entry point)."""

from harness.study.runner import run_study
from harness.study.settings import OBJECTIVES, StudySettings, study_name
from harness.study.space import Param, SearchSpace
from harness.study.storage import StorageSpec, resolve_storage

__all__ = [
    "OBJECTIVES",
    "Param",
    "SearchSpace",
    "StorageSpec",
    "StudySettings",
    "resolve_storage",
    "run_study",
    "study_name",
]
