"""Hydra's own entry point for `prunebench run|study|measure` sweeps, `--help` and `--cfg`.

Single runs keep the compose API (harness/cli/main.py): no working-directory change, nothing written
by Hydra. When Hydra's flags are given (`-m/--multirun`, `--cfg`, `--help`, `--info`), the
command goes through Hydra's runner so its sweepers and launcher plug-ins work
(`hydra/launcher=joblib|submitit_local|submitit_slurm`). A sweep:

- is checked before anything starts: unknown config-group values, unknown launchers, sweeps over
  keys that one sweep must share (its storage and tracking store), a Slurm launcher without a
  reachable controller: one line each;
- creates the shared SQLite stores once in this process (concurrent first opens race);
- returns every job's record here, so stdout carries one JSON line per job whatever the launcher
  (jobs never print), and `<sweep dir>/jobs.jsonl` keeps them for `prunebench compare
  compare.sweep=latest`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import exit_codes
from harness.cli.commands import SWEEPABLE, dispatch
from harness.cli.sweeps import STUDY_IDENTITY, write_manifest
from harness.config import model_label
from harness.errors import ConfigError, PruneBenchError, UnknownNameError
from harness.run.preflight import check_settings
from harness.runtime.atomic import atomic_write_text
from harness.tracking import mask_secrets, mlflow_client

__all__ = ["NON_SWEEPABLE", "hydra_main", "job_device", "scrub_secrets", "wants_hydra"]

log = logging.getLogger(__name__)

#: flags that only Hydra's runner understands (the compose API has no multirun, help or --cfg)
HYDRA_FLAGS = frozenset(
    "-m --multirun -c --cfg -h --help --hydra-help -i --info --resolve -p --package "
    "-sc --shell-completion".split()
)
#: keys one sweep shares: every job writes the same storage and tracking store, so the sweep's
#: studies and runs can be found and compared together
NON_SWEEPABLE = ("outputs", "cache_dir", "study.storage", "tracking.uri", "tracking.experiment")
LAUNCHERS_NEEDING_SLURM = ("submitit_slurm",)
GROUPS = ("task", "data", "model", "method", "study")


def wants_hydra(args: Sequence[str]) -> bool:
    """Whether these command-line arguments need Hydra's runner (a flag Hydra owns)."""
    return any(a.split("=", 1)[0] in HYDRA_FLAGS for a in args)


# ---------------------------------------------------------------------------- the jobs
def _job(command: str, cfg: DictConfig) -> dict[str, Any]:
    """One job of a sweep, in whatever process the launcher chose; never raises a
    PruneBenchError (the record says what failed, so one bad job does not hide the others)."""
    import warnings

    from hydra.core.hydra_config import HydraConfig

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    hc = HydraConfig.get()
    cfg = _absolute_outputs(cfg, Path(hc.runtime.cwd))
    parallel = int(OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1)
    if parallel != 1:  # joblib: jobs share this machine's cores instead of oversubscribing them
        import torch

        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // (cores if parallel < 0 else parallel)))
    device = job_device(int(hc.job.num), cfg)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    identity = {k: _name(cfg, k) for k in STUDY_IDENTITY}
    job = {"num": int(hc.job.num), "overrides": [mask_secrets(o) for o in hc.overrides.task],
           "output_dir": hc.runtime.output_dir, **identity}  # fmt: skip
    try:
        return {**dispatch(command, cfg), "hydra_job": job}
    except PruneBenchError as e:
        log.error("prunebench: error: %s", e)
        return {"error": str(e), "hydra_job": job}


def job_run(cfg: DictConfig) -> dict[str, Any]:
    return _job("run", cfg)


def job_study(cfg: DictConfig) -> dict[str, Any]:
    return _job("study", cfg)


def job_measure(cfg: DictConfig) -> dict[str, Any]:
    return _job("measure", cfg)


#: the job of each sweepable command: a module-level `job_<command>` (a launcher pickles it by
#: name), so a command the table marks sweepable without one fails here, at import
TASK_FUNCTIONS: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
    name: globals()[f"job_{name}"] for name in SWEEPABLE
}


def _name(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key)
    if key == "model":  # torchvision.resnet18 and torchvision.resnet50 are two models
        return model_label(node)
    return node.get("name") if isinstance(node, DictConfig) else node


def _absolute_outputs(cfg: DictConfig, cwd: Path) -> DictConfig:
    """A relative `outputs` is relative to where the sweep was started, not to the job's cwd
    (submitit and Slurm jobs may start elsewhere)."""
    if not Path(str(cfg.outputs)).is_absolute():
        OmegaConf.update(cfg, "outputs", str(cwd / str(cfg.outputs)))
    return cfg


def job_device(num: int, cfg: DictConfig, devices: Sequence[str] | None = None) -> str | None:
    """The GPU of sweep job `num` when several are visible and the device is `auto`: jobs go
    round-robin over the devices (a Slurm job gets its GPUs from Slurm and sees one)."""
    from harness.study.placement import visible_devices

    if str(cfg.get("device", "auto")) != "auto":
        return None
    devices = visible_devices() if devices is None else list(devices)
    if len(devices) < 2:
        return None
    return devices[num % len(devices)]


# ---------------------------------------------------------------------------- checks
def _check_overrides(overrides: Sequence[str], config_dir: Path) -> dict[str, list[str]]:
    """Validate the command line before anything starts; return swept key → values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(f"bad override: {' '.join(str(e).split())}") from e
    swept: dict[str, list[str]] = {}
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            if key in NON_SWEEPABLE:
                raise ConfigError(
                    f"cannot sweep {key}: one sweep shares one {key} so its studies and runs "
                    f"can be compared; give one value (sweepable: model, method, seed, target, "
                    "train.*, finetune.*, study.* except study.storage, …)"
                )
            try:
                values = [str(v) for v in o.sweep_string_iterator()]
            except HydraException:  # range/interval sweeps: Hydra checks them itself
                values = []
            swept[key] = values
        else:
            values = [o.get_value_string()] if o.value() is not None else []
        if key in GROUPS:
            group = config_dir / key
            known = [p.stem for p in group.glob("*.yaml")]
            for v in values:
                if v and not any(c in v for c in "*?[") and v not in known:
                    raise UnknownNameError(key, v, known)
    fixed_name = any(o.split("=", 1)[0] == "study.name" for o in overrides)
    if fixed_name and "study.name" not in swept and set(swept) & set(STUDY_IDENTITY):
        raise ConfigError(
            f"study.name is fixed while {', '.join(sorted(set(swept) & set(STUDY_IDENTITY)))} "
            "is swept: every job would write one study; drop study.name (each job gets "
            "<task>-<data>-<model>-<method>-s<seed>)"
        )
    return swept


def _check_launcher(hydra: Any, overrides: Sequence[str]) -> str:
    """The launcher asked for, after checking it exists (and, for Slurm, that it answers)."""
    launcher = "basic"
    for o in overrides:
        key, _, value = o.partition("=")
        if key in ("hydra/launcher", "override hydra/launcher"):
            launcher = value
    known = hydra.config_loader.get_group_options("hydra/launcher")
    if launcher not in known:
        raise UnknownNameError("launcher", launcher, known)
    if launcher in LAUNCHERS_NEEDING_SLURM:
        check_slurm()
    return launcher


def check_slurm(timeout: float = 10.0) -> None:
    """Refuse a Slurm launch whose controller does not answer (`scontrol ping`)."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        raise ConfigError(
            "hydra/launcher=submitit_slurm needs Slurm's client tools (scontrol, sbatch) on PATH; "
            "run on a cluster login node, or use hydra/launcher=submitit_local"
        )
    try:
        out = subprocess.run(
            [scontrol, "ping"], capture_output=True, text=True, timeout=timeout, check=False
        )
        ok = out.returncode == 0 and "is UP" in out.stdout
        detail = " ".join((out.stdout + out.stderr).split())[:200]
    except subprocess.TimeoutExpired:
        ok, detail = False, f"no answer in {timeout:g} s"
    if not ok:
        raise ConfigError(
            f"hydra/launcher=submitit_slurm: no reachable Slurm controller ({detail}); check "
            "SLURM_CONF / slurmctld, or use hydra/launcher=submitit_local"
        )


# ---------------------------------------------------------------------------- shared stores
def prepare_stores(command: str, cfg: DictConfig) -> None:
    """Create the default SQLite study DB and the MLflow DB once, before jobs open them
    concurrently (SQLite's first open creates the schema and races)."""
    if command == "measure":
        return
    from harness.tracking import default_tracking_uri

    Path(str(cfg.outputs)).mkdir(parents=True, exist_ok=True)
    if command == "study":
        from harness.study.storage import resolve_storage

        spec = resolve_storage(cfg.study.get("storage"), outputs=cfg.outputs, workers=1)
        if spec.kind == "sqlite":
            spec.open()
    if cfg.tracking.enabled:
        uri = cfg.tracking.uri or default_tracking_uri(cfg.outputs)
        if uri.startswith("sqlite:"):
            client = mlflow_client(uri)
            if client.get_experiment_by_name(cfg.tracking.experiment) is None:
                root = (Path(str(cfg.outputs)).resolve() / "mlartifacts").as_uri()
                client.create_experiment(cfg.tracking.experiment, artifact_location=root)


# ---------------------------------------------------------------------------- the runner
def hydra_main(
    command: str,
    args: Sequence[str],
    config_dir: Path,
    compose: Callable[[Sequence[str]], DictConfig],
    emit: Callable[[dict[str, Any]], None],
) -> int:
    """Run `command` through Hydra's runner; sweeps print one JSON line per job via `emit`."""
    import argparse

    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parser = get_args_parser()
    parser.prog = f"prunebench {command}"
    try:
        parsed = parser.parse_args(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    overrides = list(parsed.overrides)
    base = None
    if parsed.multirun:  # composed (and checked) before Hydra's runner takes the global state
        swept = _check_overrides(overrides, config_dir)
        fixed = [
            o
            for o in overrides
            if o.split("=", 1)[0] not in swept and not o.lstrip("+~").startswith("hydra")
        ]
        first = [f"{k}={v[0]}" for k, v in swept.items() if v]  # a whole job's config composes
        base = compose([*fixed, *first])
        check_settings(base)  # a bad seed, device, budget…: one line before any job starts
        if not Path(base.outputs).is_absolute():  # launcher workers (joblib's are reused) keep
            # the cwd they started in: pin `outputs` to the launching process's view of it
            outputs = Path(base.outputs).resolve()
            overrides = [o for o in overrides if not o.startswith("outputs=")]
            overrides.append(f"outputs={outputs}")
            fixed = [*(o for o in fixed if not o.startswith("outputs=")), f"outputs={outputs}"]
            base = compose([*fixed, *first])
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(
        task_name=command, config_search_path=create_config_search_path(str(config_dir))
    )
    try:
        if parsed.help:
            hydra.app_help(config_name="config", args_parser=parser, args=parsed)
            return exit_codes.OK
        if parsed.hydra_help:
            hydra.hydra_help(config_name="config", args_parser=parser, args=parsed)
            return exit_codes.OK
        if parsed.cfg:
            _check_overrides(overrides, config_dir)
            hydra.show_cfg(
                config_name="config",
                overrides=overrides,
                cfg_type=parsed.cfg,
                package=parsed.package,
                resolve=parsed.resolve,
            )
            return exit_codes.OK
        if parsed.info:
            hydra.show_info(parsed.info, config_name="config", overrides=overrides)
            return exit_codes.OK
        if not parsed.multirun:  # e.g. only --resolve
            raise ConfigError(f"prunebench {command}: use -m for a sweep, --cfg job, or --help")
        return _sweep(command, hydra, overrides, base, emit)
    except (HydraException, OmegaConfBaseException, argparse.ArgumentError) as e:
        raise ConfigError(f"bad configuration: {' '.join(str(e).split())}") from e
    finally:
        GlobalHydra.instance().clear()


def _sweep(
    command: str,
    hydra: Any,
    overrides: list[str],
    base: DictConfig,
    emit: Callable[[dict[str, Any]], None],
) -> int:
    launcher = _check_launcher(hydra, overrides)
    prepare_stores(command, base)
    if not any(o.startswith("hydra.sweep.dir=") for o in overrides):  # one time for every job
        stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        sweep_dir = Path(str(base.outputs)).resolve() / "multirun" / stamp
        overrides = [*overrides, f"hydra.sweep.dir={sweep_dir}"]
    else:
        sweep_dir = Path(next(o for o in overrides if o.startswith("hydra.sweep.dir=")).split(
            "=", 1)[1]).resolve()  # fmt: skip
    log.info("sweep with launcher %s into %s", launcher, sweep_dir)
    with _stdout_to_stderr():  # stdout is for the JSON lines alone
        batches = hydra.multirun(
            config_name="config",
            task_function=TASK_FUNCTIONS[command],
            overrides=[*overrides, "hydra.mode=MULTIRUN"],
        )
    lines = []
    for batch in batches:
        for ret in batch:
            try:
                record = ret.return_value
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - a job that crashed outside our errors
                record = {"error": f"{type(e).__name__}: {e}",
                          "hydra_job": {"overrides": list(ret.overrides or [])}}  # fmt: skip
            lines.append(record)
            emit(record)
    write_manifest(sweep_dir, command, launcher, lines)
    scrub_secrets(sweep_dir)
    failed = sum("error" in r for r in lines)
    if failed:
        log.error("%d of %d jobs failed (their JSON lines carry the error)", failed, len(lines))
    return exit_codes.ERROR if failed else exit_codes.OK


def scrub_secrets(sweep_dir: Path) -> list[Path]:
    """Mask the passwords Hydra wrote into a sweep's YAML files (`multirun.yaml` and each job's
    `.hydra/{config,hydra,overrides}.yaml` hold the overrides as typed); returns those changed.
    A secret passed as `${oc.env:VAR}` never gets there (Hydra keeps the interpolation)."""
    changed = []
    for path in sorted(Path(sweep_dir).rglob("*.yaml")):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        masked = mask_secrets(text)
        if masked != text:
            atomic_write_text(path, masked)
            changed.append(path)
    if changed:
        log.info("masked passwords in %d of Hydra's files under %s", len(changed), sweep_dir)
    return changed


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Launchers' own chatter (submitit's logger writes to stdout) goes to stderr meanwhile."""
    import sys

    def fix() -> None:
        for h in logging.getLogger("submitit").handlers:
            if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__):
                h.setStream(sys.stderr)

    fix()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        fix()  # a handler created during the sweep
