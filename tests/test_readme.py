"""The README's commands stay true: every `prunebench …` line composes against conf/."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from harness.cli.main import compose

README = Path(__file__).resolve().parents[1] / "README.md"
TIMED = re.compile(r"^(prunebench (run|study|demo)\b|make (demo|test)\b)")
DURATION = re.compile(r"\d+(\.\d+)?\s*(s|min|minutes?|h|hours?)\b|\bhours?\b|\bdays?\b")
NOT_RUNNABLE = re.compile(r"…|\[[a-z ]+\]")  # elided fragments and synopses


def shell_lines(text: str) -> list[str]:
    """Logical lines (backslash continuations joined) of the README's ```bash blocks."""
    lines, block, pending = [], False, ""
    for raw in text.splitlines():
        if raw.startswith("```"):
            block = raw.strip() == "```bash"
            continue
        if not block:
            continue
        pending += raw.strip() if pending else raw
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        lines.append(pending.strip())
        pending = ""
    return lines


def split_comment(line: str) -> tuple[str, str]:
    code, _, comment = line.partition(" #")
    return code.strip(), comment.strip()


def readme_commands() -> list[str]:
    return [ln for ln in shell_lines(README.read_text()) if ln.startswith(("prunebench", "make"))]


def test_the_readme_has_commands_to_check():
    commands = readme_commands()
    assert sum(c.startswith("prunebench run") for c in commands) >= 3
    assert any("data.train_subset=" in c for c in commands)


@pytest.mark.parametrize("line", [c for c in readme_commands() if c.startswith("prunebench")])
def test_readme_prunebench_command_composes(line):
    code, _ = split_comment(line)
    words = shlex.split(code)
    command = words[1]
    assert command in {"run", "measure", "list", "study", "compare", "demo"}, line
    if command in {"list", "demo"}:
        return
    overrides = [w for w in words[2:] if "=" in w]  # `…` elides others; flags are not overrides
    if "-m" in words or "--multirun" in words:  # a sweep: every job's values must compose
        overrides = [o for o in overrides if not o.startswith("hydra")]  # launcher settings
        swept = [o for o in overrides if "," in o.split("=", 1)[1]]
        fixed = [o for o in overrides if o not in swept]
        for o in swept:
            key, values = o.split("=", 1)
            for value in values.split(","):
                compose([*fixed, f"{key}={value}"])
        return
    compose(overrides)  # raises ConfigError on an unknown key, group or value


@pytest.mark.parametrize("line", [c for c in readme_commands() if TIMED.match(c)])
def test_readme_training_command_states_its_time(line):
    if NOT_RUNNABLE.search(line):
        return
    _, comment = split_comment(line)
    assert DURATION.search(comment), (
        f"README command without its expected time: {line!r}; end it with a comment such as"
        " '# ~40 s on 2 cores' (measure it) or make it CPU-sized"
    )
