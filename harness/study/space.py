"""Search spaces from config, validated before any trial runs.

Each parameter is a mapping `{type: float|int|categorical, low, high, log, step, choices, when}`
keyed by the config path its value is written to. Three sources make up a study's space:

- `study.shared_space.<task>`: absolute paths shared by every method (fine-tuning LR, weight
  decay), per task because SGD on CIFAR and Adam on SR differ by orders of magnitude;
- `method.search_space`, with `method.search_space_by_task.<task>` merged over it entry by entry
  (`lam: {low: …}` changes only the bounds; `lam: null` drops it): paths relative to `method.`;
- `study.target`: the MAC target as a swept parameter (null keeps `target` fixed).

`when: {key: value-or-list}` samples a parameter only when those config values (relative to the
same section) match, e.g. DHP's γ only in `gamma_mode: paper`. The Optuna parameter name is the
full config path (`method.lam`, `finetune.lr`, `target`), so the dashboard reads like the config.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = ["Param", "SearchSpace"]

log = logging.getLogger(__name__)

KINDS = ("float", "int", "categorical")
_MISSING = object()


def _select(cfg: DictConfig, path: str) -> Any:
    return OmegaConf.select(cfg, path, default=_MISSING)


@dataclass(frozen=True)
class Param:
    """One tunable value: where it goes in the config and the distribution it is drawn from."""

    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # absolute path → values
    default: Any = None  # enqueued when the config value is null (e.g. DHP's search_lr)

    @classmethod
    def parse(cls, path: str, spec: Any, *, section: str = "") -> Param:
        """Validate one `search_space` entry; errors name the parameter and the fix."""
        where = f"search space entry '{path}'"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a mapping like {{type: float, low: …, high: …}}")
        spec = dict(spec)
        kind = spec.pop("type", "categorical" if "choices" in spec else "float")
        if kind not in KINDS:
            raise ConfigError(f"{where}: unknown type '{kind}'; known: {', '.join(KINDS)}")
        when = {
            (f"{section}.{k}" if section else k): _values(v)
            for k, v in (spec.pop("when", None) or {}).items()
        }
        default = spec.pop("default", None)
        if kind == "categorical":
            choices = tuple(spec.pop("choices", None) or ())
            if not choices:
                raise ConfigError(f"{where}: categorical parameters need a non-empty `choices`")
            _reject_unknown(where, spec)
            return cls(path, kind, choices=choices, when=when, default=default)
        try:
            low, high = float(spec.pop("low")), float(spec.pop("high"))
        except KeyError as e:
            raise ConfigError(f"{where}: {kind} parameters need `low` and `high`") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"{where}: low/high must be numbers (write floats with a dot: 1.0e-5): {e}"
            ) from e
        is_log = bool(spec.pop("log", False))
        step = spec.pop("step", None)
        _reject_unknown(where, spec)
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ConfigError(f"{where}: empty range low={low:g} ≥ high={high:g}; need low < high")
        if is_log and low <= 0:
            raise ConfigError(f"{where}: a log-scaled range needs low > 0, got low={low:g}")
        if step is not None and (float(step) <= 0 or is_log):
            raise ConfigError(f"{where}: `step` must be > 0 and cannot be combined with log")
        if kind == "int" and (low != int(low) or high != int(high)):
            raise ConfigError(f"{where}: int parameters need integer bounds, got {low}, {high}")
        step = None if step is None else float(step)
        return cls(path, kind, low, high, is_log, step, (), when, default)

    def is_active(self, cfg: DictConfig) -> bool:
        return all(_select(cfg, k) in allowed for k, allowed in self.when.items())

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        try:
            return self.low <= float(value) <= self.high
        except (TypeError, ValueError):
            return False

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.path, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)


SPEC_KEYS = ("type", "low", "high", "choices")


def _values(v: Any) -> tuple[Any, ...]:
    """A `when` value: one value or a list of them (YAML lists arrive as ListConfig)."""
    return tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else (v,)


def _entries(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested `{finetune: {lr: {type: …}}}` → [("finetune.lr", {type: …})]; a mapping with any
    of type/low/high/choices is a parameter, anything else a section."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and not any(k in value for k in SPEC_KEYS):
            out.extend(_entries(value, path + "."))
        else:
            out.append((path, value))
    return out


def _reject_unknown(where: str, rest: Mapping[str, Any]) -> None:
    if rest:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(rest)}; known: type, low, high, log, step, "
            "choices, when, default"
        )


class SearchSpace:
    """The parameters of one study, in a fixed order (shared, method, target)."""

    def __init__(self, params: list[Param]) -> None:
        self.params = params

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SearchSpace:
        """Collect and validate the space of `cfg` (see the module docstring)."""
        task = str(cfg.task.name)
        params: list[Param] = []
        shared = (cfg.study.get("shared_space") or {}).get(task) or {}
        for path, spec in _entries(shared):
            params.append(Param.parse(path, spec))
        own = dict(_entries(cfg.method.get("search_space") or {}))
        for key, spec in _entries((cfg.method.get("search_space_by_task") or {}).get(task) or {}):
            if spec is None:  # `key: null` drops the parameter for this task
                own.pop(key, None)
            elif isinstance(spec, Mapping) and isinstance(own.get(key), Mapping):
                own[key] = {**own[key], **spec}  # only the keys that differ per task
            else:
                own[key] = spec
        for key, spec in own.items():
            params.append(Param.parse(f"method.{key}", spec, section="method"))
        if cfg.study.get("target") is not None:
            params.append(Param.parse("target", cfg.study.target))
        seen: set[str] = set()
        for p in params:
            if p.path in seen:
                raise ConfigError(f"search space names '{p.path}' twice")
            seen.add(p.path)
            if _select(cfg, p.path) is _MISSING:
                section, _, key = p.path.rpartition(".")
                known = sorted(OmegaConf.select(cfg, section) or {}) if section else sorted(cfg)
                raise ConfigError(
                    f"search space entry '{p.path}' names no config value; "
                    f"keys of '{section or '<root>'}': {', '.join(map(str, known))}"
                )
        return cls(params)

    @property
    def names(self) -> list[str]:
        return [p.path for p in self.params]

    def suggest(self, trial: optuna.Trial, cfg: DictConfig) -> dict[str, Any]:
        """Draw the active parameters for `trial` and return {config path: value}."""
        cfg = copy.deepcopy(cfg)
        values: dict[str, Any] = {}
        for p in self.params:  # `when` sees the values drawn before it
            if p.is_active(cfg):
                values[p.path] = p.suggest(trial)
                OmegaConf.update(cfg, p.path, values[p.path], merge=False)
        return values

    def defaults(
        self, cfg: DictConfig, method_args: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The configured values of the active parameters: the paper's defaults, enqueued first.

        A `method.<key>` the config leaves null takes the method's resolved argument
        (`method_args`, e.g. DHP's per-model γ), so trial 0 is the paper's configuration.
        A default outside its range is left out (the sampler draws it instead), with a warning.
        """
        method_args = method_args or {}
        values = {}
        for p in self.params:
            if not p.is_active(cfg):
                continue
            value = _select(cfg, p.path)
            if value is None and p.path.startswith("method."):
                value = method_args.get(p.path.removeprefix("method."))
            if value is None:
                value = p.default
            if value is None or not p.contains(value):
                log.warning(
                    "default %s=%s lies outside its search range; not enqueued", p.path, value
                )
                continue
            values[p.path] = int(value) if p.kind == "int" else value
        return values

    def check_values(self, values: Mapping[str, Any], where: str) -> None:
        """Refuse fixed values (e.g. `study.enqueue` entries) that the space cannot hold."""
        by_path = {p.path: p for p in self.params}
        for path, value in values.items():
            p = by_path.get(path)
            if p is None:
                raise ConfigError(
                    f"{where}: '{path}' is not a parameter of this study's search space; "
                    f"parameters: {', '.join(by_path) or '(none)'}"
                )
            if not p.contains(value):
                span = p.choices if p.kind == "categorical" else f"[{p.low:g}, {p.high:g}]"
                raise ConfigError(f"{where}: {path}={value} lies outside its range {span}")

    def describe(self) -> dict[str, dict[str, Any]]:
        """A plain-data form for study attributes and MLflow."""
        out = {}
        for p in self.params:
            d: dict[str, Any] = {"type": p.kind}
            if p.kind == "categorical":
                d["choices"] = list(p.choices)
            else:
                d.update(low=p.low, high=p.high, log=p.log)
            if p.when:
                d["when"] = {k: list(v) for k, v in p.when.items()}
            out[p.path] = d
        return out
