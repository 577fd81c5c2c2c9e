"""The import rules of the layout (the project's rule: plug-ins are reached only through their
registries, dependencies point one way, private names stay in their module), checked on the source
so a change that breaks one fails here instead of in review: harness/ never imports methods/ or
tasks/ (they are plugins, loaded by the entry points); no import cycle among the project's modules;
no `_private` name imported from another module. Every import counts, also those inside functions:
a lazy import that closes a cycle is still a cycle, it only fails later."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "tasks", "conf")
SCRIPTS = ("results", "benchmarks")  # top-level scripts: may import anything, but no cycles


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    files = {}
    for top in (*PACKAGES, *SCRIPTS):
        for path in sorted((ROOT / top).rglob("*.py")):
            files[module_name(path)] = path
    return files


FILES = project_files()


def is_project(name: str) -> bool:
    return name.split(".")[0] in (*PACKAGES, *SCRIPTS)


def imports_of(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in FILES:  # `from pkg import module`
                    found.append((sub, None, node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return [f for f in found if is_project(f[0])]


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in FILES}
    for module, path in FILES.items():
        for target, _, _ in imports_of(module, path):
            if target in FILES and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scan_sees_the_project():
    assert {"harness.run.pipeline", "harness.cli.main", "methods.l1", "tasks.sr.task"} <= set(FILES)
    assert ("harness.errors", "ConfigError") in {
        (m, n) for m, n, _ in imports_of("harness.config", FILES["harness.config"])
    }


@pytest.mark.parametrize("module", [m for m in FILES if m.startswith("harness")])
def test_harness_never_imports_methods_or_tasks(module):
    upward = [
        f"{FILES[module].relative_to(ROOT)}:{line} imports {target}"
        for target, _, line in imports_of(module, FILES[module])
        if target.split(".")[0] in ("methods", "tasks")
    ]
    assert not upward, "harness/ reaches plugins only through registries: " + "; ".join(upward)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (move the shared part into its own module): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules():
    private = [
        f"{FILES[module].relative_to(ROOT)}:{line} imports {name} from {target}"
        for module, path in FILES.items()
        for target, name, line in imports_of(module, path)
        if name and name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert not private, "make the name public or keep it in its module: " + "; ".join(private)


def calls_of(path: Path, name: str) -> list[tuple[str, int]]:
    """(enclosing top-level function or "<module>", line) of every call to `name` in the file."""
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for top in tree.body:
        scope = top.name if isinstance(top, ast.FunctionDef | ast.ClassDef) else "<module>"
        for node in ast.walk(top):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if called == name:
                    found.append((scope, node.lineno))
    return found


def test_the_allocation_policy_is_constructed_in_one_place():
    """The run's allocation policy (normalisation, uniform/global, floors, rounding, cost model)
    is built by `allocation_policy` only, once in the run's setup; methods and hooks take it from
    the context instead of resolving `prune.*` again (which is how two resolutions drift)."""
    built = {
        f"{FILES[m].relative_to(ROOT)}:{line} ({scope})": m
        for m in FILES
        for scope, line in calls_of(FILES[m], "AllocationPolicy")
    }
    assert set(built.values()) == {"harness.structure.policy"}, (
        "construct AllocationPolicy only in harness/structure/policy.py: " + ", ".join(built)
    )
    callers = sorted(
        (m, scope)
        for m in FILES
        for scope, _ in calls_of(FILES[m], "allocation_policy")
        if m != "harness.structure.policy" and m.split(".")[0] in PACKAGES
    )  # scripts (benchmarks/, results/) prune outside a run and build their own
    assert callers == [("harness.run.pipeline", "_setup")], (
        f"allocation_policy is called once per run, in the run's setup; found {callers}"
    )


def test_no_method_reads_the_run_config():
    """A method reads its constructor arguments and the context's plain fields: the context
    carries no DictConfig, and no module under methods/ reaches for a `cfg` on it (what a method
    needs of the run becomes a typed context field, so every method sees the same values)."""
    from dataclasses import fields

    from harness.method import PruneContext

    assert not [f.name for f in fields(PruneContext) if "Config" in str(f.type)]
    reads = [
        f"{FILES[m].relative_to(ROOT)}:{node.lineno}"
        for m in FILES
        if m.startswith("methods")
        for node in ast.walk(ast.parse(FILES[m].read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "cfg"
    ]
    assert not reads, "methods read the run config; add a PruneContext field instead: " + ", ".join(
        reads
    )


def test_only_the_tracking_front_imports_mlflow():
    """Every MLflow read and write goes through harness/tracking.py (`Tracker` for a run,
    `mlflow_client` for the rest), as every Optuna storage goes through one interface."""
    found = []
    for module, path in FILES.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if module != "harness.tracking" and any(n.split(".")[0] == "mlflow" for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "import mlflow only in harness/tracking.py: " + ", ".join(found)


def test_methods_train_only_through_the_training_entry():
    """A method trains through `ctx.fit` (the run's one `Trainer`, harness/train/entry.py): it
    passes parameters, optimiser settings, its batch stream and resume state there, and never
    builds an optimizer or schedule or runs the loop itself, so every stage gets the same loop,
    optimizer family, schedule rules and per-stage seeding."""
    internals = {"fit", "build_optimizer", "build_scheduler"}
    found = [
        f"{FILES[m].relative_to(ROOT)}:{line} imports {name or target}"
        for m in FILES
        if m.startswith("methods")
        for target, name, line in imports_of(m, FILES[m])
        if target in ("harness.train.loop", "harness.train.optim")
        or (target == "harness.train" and name in internals)
    ]
    found += [
        f"{FILES[m].relative_to(ROOT)}:{node.lineno} calls {node.func.id}"
        for m in FILES
        if m.startswith("methods")
        for node in ast.walk(ast.parse(FILES[m].read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in internals
    ]
    assert not found, "train through ctx.fit (harness.train.Trainer): " + ", ".join(found)
