"""`make test` runs everything; `make test-fast` leaves out only markers pyproject.toml declares (a
misspelt marker in `-m` would select nothing out, silently)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def recipe(target: str) -> list[str]:
    """pytest's arguments on the pytest line of a Makefile target's recipe."""
    text = (REPO / "Makefile").read_text()
    body = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert body, f"Makefile has no target {target!r}"
    line = next(ln for ln in body.group(1).splitlines() if "pytest" in ln)
    words = shlex.split(line.strip())
    return words[words.index("pytest") + 1 :]


def declared_markers() -> set[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {m.split(":")[0].strip() for m in cfg["tool"]["pytest"]["ini_options"]["markers"]}


def test_make_test_selects_no_marker_out():
    words = recipe("test")
    assert "-m" not in words and "-k" not in words


def test_make_test_fast_leaves_out_the_heavy_markers_and_only_declared_ones():
    words = recipe("test-fast")
    expression = words[words.index("-m") + 1]
    names = set(re.findall(r"[A-Za-z_]\w*", expression)) - {"not", "and", "or"}
    assert names <= declared_markers(), names - declared_markers()
    assert {"slow", "postgres", "slurm", "gpu"} <= names
    assert all(f"not {name}" in expression for name in names) and " or " not in expression
