"""The run configuration: conf/ composed with command-line overrides (Hydra's compose API).

Its own module so the CLI, the demo and scripts share one composer without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.runtime.secrets import mask_secrets, remember_secrets

__all__ = [
    "CONFIG_GROUPS",
    "compose",
    "config_dir",
    "method_label",
    "model_label",
    "parse_method_label",
    "to_plain",
]

#: config groups whose values are file names under conf/<group>/
CONFIG_GROUPS = ("task", "data", "model", "method", "study")


def config_dir() -> Path:
    """The conf/ package directory (works from a checkout and from an installed wheel)."""
    import conf

    return Path(conf.__file__).parent


def method_label(method_cfg: Mapping[str, Any]) -> str:
    """The method's name in study names and comparison rows: `<name>`, or `<name>@<source>` for
    a control built from another method's results (`method.source`: a method name)."""
    source = method_cfg.get("source")
    name = str(method_cfg["name"])
    if isinstance(source, str) and source.replace("_", "").isalnum() and source.islower():
        return f"{name}@{source}"
    return name


def parse_method_label(label: str) -> dict[str, str]:
    """`scratch_b@l1` → {"name": "scratch_b", "source": "l1"}; a plain name → {"name": name}."""
    name, _, source = str(label).partition("@")
    return {"name": name, "source": source} if source else {"name": name}


def to_plain(value: Any) -> Any:
    """OmegaConf containers → Python dicts/lists (resolved), so constructors see ordinary values;
    anything else is returned as is."""
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the run config from conf/ with Hydra's compose API (no working-dir changes)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.errors import ConfigError, UnknownNameError
    from harness.runtime.plugins import plugin_overrides

    overrides = plugin_overrides(overrides, config_dir())
    for override in overrides:  # `model=resnet57` → the registry's error, not Hydra's
        key, _, value = override.partition("=")
        group = config_dir() / key
        if key in CONFIG_GROUPS and value and not (group / f"{value}.yaml").exists():
            raise UnknownNameError(key, value, [p.stem for p in group.glob("*.yaml")])
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"bad configuration: {mask_secrets(' '.join(str(e).split()))}") from e
    try:  # every interpolation resolves now (an unset ${oc.env:VAR}: one line, before any work)
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad configuration: {_interpolation_problem(e)}") from e
    remember_secrets(resolved)  # before anything is logged
    return cfg


def _interpolation_problem(e: Exception) -> str:
    """OmegaConf's interpolation error in one line, with what to do for the usual causes."""
    text = mask_secrets(" ".join(str(e).split()))
    text = text.split(" full_key:", 1)[0]
    env = re.search(r"Environment variable '([^']+)' not found", text)
    if env:
        return (
            f"environment variable {env[1]} is not set (an ${{oc.env:{env[1]}}} in the config); "
            f"export it, or give a default: ${{oc.env:{env[1]},default}}"
        )
    if "Unsupported interpolation type" in text:
        return f"{text}; known resolvers: oc.env, oc.select, oc.decode, oc.create and the like"
    return text


def model_label(model: Mapping[str, Any]) -> str:
    """The model as run, study and report names show it: `resnet20`, `torchvision.resnet18`,
    `python.mylab.nets.build_net`, so two outside models never share a default study name."""
    name = str(model["name"])
    chosen = model.get("arch") or model.get("factory")
    return f"{name}.{str(chosen).replace(':', '.')}" if chosen else name
