"""Plug-ins: a real `pip install` of the example plug-in package into a temporary directory, its
method and model run from the CLI, the contract suite on its method, and one-line errors for
duplicate names and bad plug-in modules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import methods  # noqa: F401
from harness.errors import ConfigError, UnknownNameError
from harness.registry import METHODS, Registry
from harness.runtime.plugins import _load_entry_point, load_configured, load_plugins

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plug-in, pip-installed (no network, no build isolation) into a fresh dir."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(ROOT / "examples" / "plugin", tmp / "src")
    site = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
         "--no-index", "--target", str(site), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (site / "pb_example" / "methods.py").exists()
    return site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_installed_plugin_method_and_model_run_from_the_cli(plugin_site, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "run", "data=digits", "model=example_cnn",
         "+model.width=8", "method=linf", "target=0.5", "train.epochs=1", "finetune.epochs=1",
         "measure.latency=false", "tracking.enabled=false", f"outputs={tmp_path}"],
        capture_output=True, text=True, env=_env(plugin_site), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["method"] == "linf" and record["model"] == "example_cnn"
    assert 0.4 < record["macs_ratio"] <= 0.5 + 1e-9


@pytest.mark.slow
def test_contract_suite_runs_on_the_plugin_method(plugin_site, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "methods" / "test_contract.py"), "-k", "linf"],
        capture_output=True, text=True, env=_env(plugin_site), cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "linf" not in out.stdout.split("passed")[0].split("\n")[-1]
    assert "deselected" in out.stdout  # the built-in methods ran too, only the plug-in selected


def test_plugin_registering_an_existing_name_fails_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "dup_ext.py").write_text(
        "from harness.registry import METHODS\n@METHODS.register('l1')\nclass Other:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_plugins(["dup_ext"])
    assert "dup_ext" in str(e.value) and "'l1'" in str(e.value) and "\n" not in str(e.value)
    ep = EntryPoint(name="l2", value="methods.l1:L1Norm", group="prunebench.methods")
    with pytest.raises(
        ConfigError, match=r"entry point 'l2 = methods.l1:L1Norm'.*registered twice"
    ):
        _load_entry_point("prunebench.methods", ep, METHODS)


def test_plugins_config_module_that_does_not_import():
    with pytest.raises(ConfigError, match="plugins entry 'no_such_pkg.ext' does not import"):
        load_plugins(["no_such_pkg.ext"])


def test_an_empty_registry_says_the_plugins_are_not_loaded():
    with pytest.raises(UnknownNameError, match=r"known: none \(load the plugins first"):
        Registry("method").get("l1")


def test_an_unknown_builtin_package_names_itself():
    with pytest.raises(ConfigError, match="builtin_plugins entry 'no_such_builtin'"):
        load_configured({"builtin_plugins": ["no_such_builtin"], "plugins": []})


def test_the_cli_entry_point_registers_the_builtins_in_a_fresh_process():
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"l1", "dhp", "fpgm"} <= set(listing["methods"])
    assert "classification" in listing["tasks"]
