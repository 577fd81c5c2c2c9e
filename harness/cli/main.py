"""`prunebench <run|measure|list|study|compare|demo> [hydra overrides]`.

stdout carries exactly one final JSON line; logs and progress go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from harness import exit_codes
from harness.cli.commands import COMMANDS, SWEEPABLE, dispatch
from harness.cli.demo import DEMO_METHODS
from harness.cli.launch import wants_hydra
from harness.config import compose, config_dir
from harness.errors import PruneBenchError
from harness.run.preflight import check_settings
from harness.runtime.secrets import mask_secrets, mask_tree, remember_secrets
from harness.runtime.signals import Terminated
from harness.runtime.startup import start_process

__all__ = ["main"]

log = logging.getLogger("prunebench")

USAGE = f"""usage: prunebench <command> [key=value ...]

commands:
  run       baseline → prune → fine-tune → evaluate → measure → MLflow
  measure   MACs and parameters of an unpruned model at the task's input shape
  list      registered methods, tasks, models and datasets with their capabilities
  show      one config group's options, e.g. `show method=dhp`: hyperparameters, defaults, space
  study     an Optuna study (quality vs MACs) of one method; resumes where it stopped
  compare   the studies of several methods on one task/model: fronts, hypervolume, dominance
  demo      a small study of {", ".join(DEMO_METHODS)} on the embedded digits data, then compare

examples:
  prunebench run task=classification data=digits model=resnet20 method=fpgm target=0.5
  prunebench measure task=classification model=resnet56
  prunebench study data=digits model=resnet20 method=l1 study.n_trials=6 train.epochs=5
  prunebench compare data=digits model=resnet20 compare.methods=[dhp,l1,random]

grids (Hydra multirun; one JSON line per job; any launcher plug-in):
  prunebench study -m method=l1,random seed=0,1 data=digits hydra/launcher=joblib
  prunebench compare compare.sweep=latest        # the studies the newest sweep created
  prunebench run --help | study --help           # config groups and most-used keys
  prunebench study --cfg job method=dhp          # the resolved config, nothing run
"""


def _list() -> dict:
    from harness.registry import DATASETS, METHODS, MODELS, TASKS

    methods = {}
    for name in METHODS:
        cls = METHODS.get(name)
        needs = cls.needs
        kind = next(k.__name__ for k in cls.__mro__[1:] if k.__name__.endswith("Method"))
        kind = "control" if METHODS.info(name).get("control") else kind
        methods[name] = {
            "kind": kind,
            "needs": {k: v for k, v in vars(needs).items() if v not in (False, None)},
        }
    return {
        "methods": methods,
        "tasks": {n: {"metric": TASKS.get(n).metric} for n in TASKS},
        "models": {n: MODELS.info(n) for n in MODELS},
        "datasets": {n: DATASETS.info(n) for n in DATASETS},
    }


def _print_list(listing: dict) -> None:
    err = sys.stderr
    print("methods:", file=err)
    for name, m in listing["methods"].items():
        needs = ", ".join(f"{k}={v}" if v is not True else k for k, v in m["needs"].items())
        print(f"  {name:12s} {m['kind']:16s} needs: {needs or '-'}", file=err)
    for kind in ("tasks", "models", "datasets"):
        print(f"{kind}:", file=err)
        for name, info in listing[kind].items():
            extra = ", ".join(f"{k}={v}" for k, v in info.items())
            print(f"  {name:12s} {extra}", file=err)


def _log_to_stderr(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _emit(record: dict) -> None:
    print(json.dumps(record, default=str), flush=True)


def _drop_launcher(overrides: Sequence[str]) -> list[str]:
    """Hydra settings only matter to sweeps (-m); a single run ignores them, saying so."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra/", "hydra."))]
    if len(kept) != len(overrides):
        print("prunebench: hydra/… and hydra.… settings apply to sweeps (-m); ignored",
              file=sys.stderr)  # fmt: skip
    return kept


def _unexpected(command: str, e: Exception) -> int:
    """An error no check foresaw: one line naming it; PRUNEBENCH_DEBUG=1 adds the traceback."""
    import traceback

    if os.environ.get("PRUNEBENCH_DEBUG", "") not in ("", "0"):
        sys.stderr.write(mask_secrets("".join(traceback.format_exception(e))))
    first = " ".join(str(e).split())[:500] or "(no message)"
    print(f"prunebench: error: {command} failed: {type(e).__name__}: {mask_secrets(first)} "
          "(PRUNEBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)  # fmt: skip
    return exit_codes.ERROR


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stderr)
        return exit_codes.OK if argv else exit_codes.USAGE
    command, overrides = argv[0], argv[1:]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    start_process(signals=True)  # SIGTERM → Terminated from here on; log records masked
    # MLflow prints "View run … at: http://…" on stdout for a tracking server; stdout is ours
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        remember_secrets(overrides)
        if command in SWEEPABLE and wants_hydra(overrides):
            from harness.cli.launch import hydra_main

            _log_to_stderr("INFO")
            start_process()  # the log filter on the handler just made
            return hydra_main(command, overrides, config_dir(), compose, _emit)
        if command == "show":
            from harness.cli.show import show

            print(json.dumps(show(compose, overrides), default=str))
            return exit_codes.OK
        overrides = _drop_launcher(overrides)
        cfg = compose([o for o in overrides if command != "demo"])
        check_settings(cfg)  # seed, log level, device, sizes, budgets: one line, before any work
        if command != "list":  # the listing is printed, not logged
            _log_to_stderr(cfg.get("log_level", "INFO"))
        start_process(cfg)  # plug-ins, the config's credentials, the filter on the new handler
        if command == "list":
            listing = _list()
            _print_list(listing)
            print(json.dumps(listing, default=str))
            return exit_codes.OK
        if command not in COMMANDS:
            print(f"unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
            return exit_codes.USAGE
        record = dispatch(command, cfg, overrides, compose)
    except PruneBenchError as e:
        print(f"prunebench: error: {mask_secrets(e)}", file=sys.stderr)
        return exit_codes.ERROR
    except KeyboardInterrupt as e:  # runs are marked KILLED, studies resume where they stopped
        if isinstance(e, Terminated):
            print(f"prunebench: {command} terminated (SIGTERM)", file=sys.stderr)
            return exit_codes.TERMINATED
        print(f"prunebench: {command} interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except Exception as e:  # noqa: BLE001 - anything unforeseen: one line (its MLflow run is FAILED)
        return _unexpected(command, e)
    print(json.dumps(mask_tree(record), default=str))
    code = int(record.get("exit_code") or 0)  # a study that did not meet its budget
    if code:
        print(f"prunebench: {command}: {mask_secrets(record['exit_reason'])}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
