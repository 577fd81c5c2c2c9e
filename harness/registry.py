"""Name → object registries (timm style): the registered name is the config value, the CLI value,
the MLflow tag and the results-table row."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from harness.errors import UnknownNameError

__all__ = ["DATASETS", "METHODS", "MODELS", "TASKS", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A lowercase-name → object map with metadata; duplicates raise at import time."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator: `@MODELS.register("resnet56", task="classification")`."""
        if name != name.lower():
            raise ValueError(f"{self.kind} names are lowercase, got '{name}'")

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            self._info[name] = info
            if isinstance(obj, type):
                obj.registry_name = name  # the name error messages and results use
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(self.kind, name, self._items)
        return self._items[name]

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._info[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


METHODS: Registry[Any] = Registry("method")
MODELS: Registry[Any] = Registry("model")
TASKS: Registry[Any] = Registry("task")
DATASETS: Registry[Any] = Registry("dataset")
