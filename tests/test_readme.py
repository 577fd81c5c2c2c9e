"""The README's and docs/ pages' commands stay true: every `prunebench …` line composes against
conf/, every timed command says how long it takes, and every relative link points at a file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from harness.cli.main import compose

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")
TIMED = re.compile(r"^(prunebench (run|study|demo)\b|make (demo|test)\b)")
DURATION = re.compile(r"\d+(\.\d+)?\s*(s|min|minutes?|h|hours?)\b|\bhours?\b|\bdays?\b")
NOT_RUNNABLE = re.compile(r"…|\[[a-z ]+\]")  # elided fragments and synopses


def shell_lines(text: str) -> list[str]:
    """Logical lines (backslash continuations joined) of a page's ```bash blocks."""
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


def page_commands(page: Path) -> list[str]:
    return [ln for ln in shell_lines(page.read_text()) if ln.startswith(("prunebench", "make"))]


def readme_commands() -> list[str]:
    """The commands of README.md and every docs/*.md page it leads to."""
    return [c for page in PAGES for c in page_commands(page)]


def test_the_readme_has_commands_to_check():
    commands = readme_commands()
    assert sum(c.startswith("prunebench run") for c in commands) >= 3
    assert any("data.train_subset=" in c for c in commands)
    assert any(c.startswith("prunebench run") for c in page_commands(README))  # its one example
    assert {"make demo", "make test"} <= {c.split("#")[0].strip() for c in page_commands(README)}


def test_the_readme_links_every_docs_page():
    linked = {m.group(1) for m in LINK.finditer(README.read_text())}
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked]
    assert len(PAGES) > 1 and not missing, f"docs pages the README does not link: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_readme_and_docs_links_resolve(page):
    targets = [m.group(1) for m in LINK.finditer(page.read_text()) if "://" not in m.group(1)]
    broken = [t for t in targets if not (page.parent / t).exists()]
    assert targets and not broken, f"{page.name}: links to missing files {broken}"


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
        f"README/docs command without its expected time: {line!r}; end it with a comment such as"
        " '# ~40 s on 2 cores' (measure it) or make it CPU-sized"
    )
