"""Where a run finds another run's outputs: the saved artifacts of a trial of a sibling study
(a control mirroring its source study trial by trial). Reads the run's config here, in the
harness, so a method gets a plain callable on its context (`PruneContext.study_artifacts`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.errors import DataNotFoundError

__all__ = ["study_trial_artifacts"]


def study_trial_artifacts(cfg: DictConfig, method: str, number: int) -> Path:
    """The artifacts folder of trial `number` of the study of `method` with this run's task,
    data, model, seed and storage."""
    import optuna

    from harness.study.opening import load_existing_study

    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    sub.method = {"name": method}
    sub.study.name = None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, settings = load_existing_study(
        sub,
        f" to take the architecture from; run `prunebench study method={method} "
        f"seed={cfg.seed} …` first",
    )
    found = [t for t in study.get_trials(deepcopy=False) if t.number == int(number)]
    artifacts = found[0].user_attrs.get("artifacts") if found else None
    if not artifacts:
        raise DataNotFoundError(
            f"study '{settings.name}' has no finished trial {number} with saved artifacts to "
            "take the architecture from (a control mirrors its source study trial by trial)"
        )
    return Path(artifacts)
