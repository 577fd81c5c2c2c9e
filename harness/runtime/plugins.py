"""Plug-ins: methods, models, datasets and tasks from packages outside the repository.

Two ways in, both loaded once per process before any registry lookup:
- entry points of an installed distribution, group `prunebench.methods` (`.models`, `.datasets`,
  `.tasks`): `name = "pkg.module:Object"` registers Object under `name`; `name = "pkg.module"`
  imports a module that registers its objects itself (with `@METHODS.register(...)`);
- the `plugins=[pkg.module, ...]` config list: modules imported at start-up, which register
  themselves the same way.

A plug-in that reuses a name already registered fails at load time, in one line naming it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.errors import ConfigError
from harness.registry import DATASETS, METHODS, MODELS, TASKS, Registry

__all__ = [
    "ENTRY_POINT_GROUPS",
    "load_configured",
    "load_entry_points",
    "load_plugins",
    "plugin_overrides",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUPS: dict[str, Registry[Any]] = {
    "prunebench.methods": METHODS,
    "prunebench.models": MODELS,
    "prunebench.datasets": DATASETS,
    "prunebench.tasks": TASKS,
}

_loaded: set[tuple[str, str, str]] = set()  # (group, name, value) of entry points already loaded


def _duplicate(source: str, error: ValueError) -> ConfigError:
    return ConfigError(f"plug-in {source} failed to register: {error}; rename it in the plug-in")


def _load_entry_point(group: str, ep: EntryPoint, registry: Registry[Any]) -> None:
    source = f"entry point '{ep.name} = {ep.value}' ({group})"
    try:
        obj = ep.load()
    except ValueError as e:  # a module's own @register hit an existing name
        raise _duplicate(source, e) from e
    except Exception as e:
        raise ConfigError(
            f"plug-in {source} does not import ({type(e).__name__}: {e}); "
            "reinstall the plug-in package or uninstall it"
        ) from e
    if isinstance(obj, ModuleType):
        return  # it registered its objects on import
    if ep.name in registry and registry.get(ep.name) is obj:
        return  # the module registered it itself under the same name
    try:
        registry.register(ep.name)(obj)
    except ValueError as e:
        raise _duplicate(source, e) from e


def load_entry_points() -> None:
    """Load every installed `prunebench.*` entry point (once per process)."""
    for group, registry in ENTRY_POINT_GROUPS.items():
        for ep in entry_points(group=group):
            key = (group, ep.name, ep.value)
            if key in _loaded:
                continue
            _loaded.add(key)
            _load_entry_point(group, ep, registry)
            log.debug("plug-in %s = %s loaded (%s)", ep.name, ep.value, group)


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Entry points, then the `plugins` config list (modules that register on import)."""
    load_entry_points()
    if isinstance(modules, str):
        modules = [modules]
    for name in modules or ():
        try:
            importlib.import_module(str(name))
        except ValueError as e:
            raise _duplicate(f"module '{name}' (plugins=)", e) from e
        except ImportError as e:
            raise ConfigError(
                f"plugins entry '{name}' does not import ({e}); install it or add its directory "
                "to PYTHONPATH"
            ) from e
        except SyntaxError as e:
            raise ConfigError(
                f"plugins entry '{name}' has a syntax error: {e.msg} ({e.filename}, line "
                f"{e.lineno}); fix the module or drop it from plugins="
            ) from e
        except Exception as e:  # its own code raised while it was imported
            raise ConfigError(
                f"plugins entry '{name}' raised {type(e).__name__} while importing: "
                f"{' '.join(str(e).split())[:300]}; fix the module or drop it from plugins="
            ) from e


def load_configured(cfg: Mapping[str, Any]) -> None:
    """Register everything `cfg` names: the repository's own packages (`builtin_plugins`:
    methods, tasks), installed entry points, then `plugins`. The harness never imports methods/
    or tasks/ itself; each entry point (the CLI, a study worker, a script) calls this first."""
    for name in cfg.get("builtin_plugins") or ():
        try:
            importlib.import_module(str(name))
        except ValueError as e:  # a plug-in loaded earlier took one of the built-in names
            raise ConfigError(
                f"a plug-in registered a built-in name ({e}); rename it in the plug-in"
            ) from e
        except ImportError as e:
            raise ConfigError(
                f"builtin_plugins entry '{name}' does not import ({e}); it lists this "
                "repository's packages, builtin_plugins=[methods,tasks]"
            ) from e
    load_plugins(cfg.get("plugins") or ())


def plugin_overrides(overrides: Sequence[str], config_dir: Path) -> list[str]:
    """`method=<plug-in method>` (or model/task) without a YAML in conf/ → `method.name=<name>`
    (a model: `model=plugin model.name=<name>`), so the registry finds the plug-in's object."""
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        registry = {"method": METHODS, "model": MODELS, "task": TASKS}.get(key)
        if (
            sep
            and registry is not None
            and value
            and not (config_dir / key / f"{value}.yaml").exists()
        ):
            load_plugins(_plugins_in(overrides))
            if value in registry:
                # a model keeps no option of the default model's config; a method or task keeps
                # its group's defaults (the search space, the training budgets)
                out += ["model=plugin"] if key == "model" else []
                out.append(f"{key}.name={value}")
                continue
        out.append(override)
    return out


def _plugins_in(overrides: Sequence[str]) -> list[str]:
    """The modules of a `plugins=[a.b,c.d]` override (Hydra's list syntax)."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "plugins":
            return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return []
