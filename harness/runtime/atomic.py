"""Atomic file writes whose leftovers can be told apart and cleaned.

A write goes to a temp file beside the target, named after the writing process
(`.<name>.tmp.<host>:<pid>:<start>.<random>`), then `os.replace`s the target: readers see the old
file or the new one, never half of one. A process killed mid-write leaves its temp file behind;
`clean_stale_temps` removes the ones whose writer is gone (and legacy random-named ones once they
are old), so two writers never share a temp name and nothing live is ever removed.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from harness.runtime.processes import is_alive, process_token

__all__ = ["atomic_write", "atomic_write_text", "clean_stale_temps", "temp_path"]

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<owner>[^/]+:\d+:[^.]+)\.[0-9a-f]{8}$")
#: temp files written before owners were part of the name (`tempfile.mkstemp` suffixes)
_LEGACY = re.compile(r"^\.(?P<name>.+\.(?:pt|json|csv|md))(?:\.tmp|\.[\w]{8})$")
LEGACY_AGE_S = 3600.0


def temp_path(path: Path) -> Path:
    """A temp name beside `path` that no other writer (process or call) will ever use."""
    owner = process_token().replace("/", "_")
    return path.with_name(f".{path.name}.tmp.{owner}.{secrets.token_hex(4)}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` then rename onto `path`; the temp file never outlives a failed write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def clean_stale_temps(directory: str | Path) -> list[Path]:
    """Remove temp files in `directory` left by writers that died (see the module doc)."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    now = time.time()
    for p in directory.iterdir():
        m = _TEMP.match(p.name)
        try:
            if m:
                stale = not is_alive(m["owner"])
            elif _LEGACY.match(p.name):
                stale = now - p.stat().st_mtime > LEGACY_AGE_S
            else:
                continue
            if stale and p.is_file():
                p.unlink()
                removed.append(p)
                log.info("removed %s, left by a writer that died mid-write", p)
        except OSError:  # removed concurrently, or not ours to remove
            continue
    return removed
