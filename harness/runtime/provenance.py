"""Where a result came from: command, code version, seeds, hardware and library versions.

Every report (compare.md, summary.csv, results/*.md) stamps this, so a number that does not
reproduce can be traced to the code and machine that produced it. A dirty tree is said so.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["git_state", "hardware", "provenance", "provenance_lines", "versions"]

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPO, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> tuple[str, bool | None]:
    """(short SHA or "unknown", whether tracked files differ from it; None when unknown)."""
    sha = _git("rev-parse", "--short", "HEAD")
    if not sha:
        return "unknown", None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return sha, None if status is None else bool(status)


def git_label() -> str:
    """`abc1234` or `abc1234 (dirty)`: one string for tags and footers."""
    sha, dirty = git_state()
    return f"{sha} (dirty)" if dirty else sha


@cache
def hardware() -> dict[str, Any]:
    """CPU model and cores, and the GPU name when CUDA is visible."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA setup is "no GPU" for the stamp
        gpu = None
    return {"cpu": cpu, "cores": int(cores or 0), "gpu": gpu or "none"}


def versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour changes the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("torch", "torch-pruning", "optuna"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def provenance(seeds: Iterable[int] = (), argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything a reader needs to rerun a result (flat, so it fits CSV columns)."""
    sha, dirty = git_state()
    hw = hardware()
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("/prunebench", "prunebench")):
        argv[0] = "prunebench"
    return {
        "command": shlex.join(argv),
        "git_sha": sha,
        "git_dirty": dirty,
        "seeds": " ".join(str(s) for s in sorted(set(seeds))),
        "cpu": hw["cpu"],
        "cores": hw["cores"],
        "gpu": hw["gpu"],
        **{f"version_{k.replace('-', '_')}": v for k, v in versions().items()},
    }


def provenance_lines(prov: dict[str, Any]) -> list[str]:
    """The Markdown footer of a report."""
    dirty = {True: "dirty", False: "clean", None: "dirty flag unknown"}[prov["git_dirty"]]
    libs = ", ".join(
        f"{k.removeprefix('version_').replace('_', '-')} {v}"
        for k, v in prov.items()
        if k.startswith("version_")
    )
    return [
        f"- command: `{prov['command']}`",
        f"- git: {prov['git_sha']} ({dirty})",
        f"- seeds: {prov['seeds'] or 'none recorded'}",
        f"- hardware: {prov['cpu']}, {prov['cores']} cores; GPU: {prov['gpu']}",
        f"- versions: {libs}",
    ]
