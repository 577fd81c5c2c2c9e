"""What every PruneBench process does before its work, in one place: the CLI, a study's runner
and its worker processes, and a run all start through `start_process`, so a new start-up step
(another secret source, another signal) is added once instead of at each level."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.runtime.plugins import load_configured
from harness.runtime.secrets import install_log_filter, remember_secrets
from harness.runtime.signals import install_sigterm_handler

__all__ = ["start_process", "use_compile_cache"]


def start_process(
    cfg: DictConfig | Mapping[str, Any] | None = None, *, signals: bool = False
) -> None:
    """With `signals`, SIGTERM raises `Terminated` (a CLI's or worker's main thread); the plug-ins
    `cfg` names are registered and the credentials in it remembered for masking; every log
    handler masks them. Idempotent: call it again once logging is configured or a library has
    added its own handler (the filter attaches to the handlers that exist). Compile caches go
    under the config's `cache_dir` from here on."""
    if signals:
        install_sigterm_handler()
    if cfg is not None:
        load_configured(cfg)
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        remember_secrets(plain)
        use_compile_cache(plain.get("cache_dir"))
    install_log_filter()


def use_compile_cache(cache_dir: str | None) -> None:
    """Inductor's and Triton's on-disk caches under the run's cache folder, so the trials of a
    study reuse compiled kernels; inductor writes cache entries atomically (temp file + rename),
    so concurrent workers can share the folder. A directory the user set is kept. Inductor pins
    its default (/tmp/torchinductor_<user>) the first time anything asks for it, which tracing a
    model for its structure already does, so `start_process` calls this before any work (and
    `harness.train.compile` again at each first compile, for callers that start no process)."""
    if not cache_dir:
        return
    root = Path(cache_dir) / "inductor"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
