"""The paper recipe (results/recipes/dhp_paper.py): its GPU commands resolve to the paper's search,
and the same commands run end to end on CPU in tiny mode, so they cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from test_dhp_config import cifar_sized_loader

import methods  # noqa: F401
import tasks  # noqa: F401
from harness.cli.main import main
from harness.config import compose
from harness.run.pipeline import build_method
from harness.train import build_optimizer, build_scheduler
from methods.dhp.search import lr_schedule

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "results" / "recipes" / "dhp_paper.py"


def load_recipes():
    spec = importlib.util.spec_from_file_location("dhp_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dhp_paper"] = module
    spec.loader.exec_module(module)
    return module


class PatchEpoch:
    """A stand-in for the denoising patch loader: only its epoch length matters here."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return self.steps


NAMES = list(load_recipes().RECIPES)


def shrink_per_epoch(st) -> list[float]:
    """Σ lr·γ per epoch of the search `st` describes: its own optimiser and LR schedule, read
    through the DHP hook's LR table (`lr_schedule`), no training."""
    param = torch.nn.Parameter(torch.zeros(1))
    optim_cfg = OmegaConf.create(dict(st.optim))
    opt = build_optimizer([param], optim_cfg)
    sched = build_scheduler(opt, optim_cfg, epochs=st.epochs, steps_per_epoch=st.steps_per_epoch)
    lr_at = lr_schedule(SimpleNamespace(scheduler=sched, lr=st.optim["lr"]))
    spe = st.steps_per_epoch
    return [sum(lr_at(e * spe + i) for i in range(spe)) * st.gamma for e in range(st.epochs)]


def authors_shrink_per_epoch(a: dict) -> list[float]:
    """The same from the authors' scripts: steps × LR (×factor at each step epoch) × γ."""
    return [
        a["steps_per_epoch"] * a["lr"] * a["lr_factor"] ** sum(e >= m for m in a["milestones"])
        * a["gamma"]
        for e in range(a["epochs"])
    ]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_gpu_commands_resolve_to_the_authors_search(name):
    """Every recipe: fp32, paper γ mode, the authors' batch, steps per epoch, LR steps and stop
    limit, and Σ lr·γ per epoch within 1 % of the authors' in every epoch (issue 23: CIFAR's
    validation split left 703 steps per epoch, 10 % under the paper's shrink)."""
    recipes = load_recipes()
    authors = recipes.AUTHORS[name]
    args = recipes.command(name)
    assert args[:2] == ["prunebench", "run"]
    cfg = compose(args[2:])
    assert cfg.amp is False and str(cfg.device) == "cuda"
    method = build_method(cfg.method, model=cfg.model.name, task=cfg.task.name)
    if cfg.task.name == "classification":
        loader = method.search_loader(
            cifar_sized_loader(int(cfg.task.batch_size)), "classification"
        )
        assert loader.batch_size == authors["batch"] and cfg.finetune.epochs == 300
        assert list(cfg.finetune.milestones) == [150, 225] and cfg.finetune.lr == 0.1
    else:
        assert int(cfg.data.batch_size) == authors["batch"]
        loader = method.search_loader(
            PatchEpoch(int(cfg.data.patches_per_epoch) // int(cfg.data.batch_size)), cfg.task.name
        )
        assert cfg.finetune.gamma == 0.1
    st = method.settings(model=cfg.model.name, task=cfg.task.name, train=cfg.train, loader=loader)
    assert st.gamma_mode == "paper" and method.stop_limit == authors["stop_limit"]
    assert st.optim["milestones"] == authors["milestones"]
    assert st.optim["gamma"] == authors["lr_factor"] and st.optim["lr"] == authors["lr"]
    assert st.epochs == authors["epochs"] and not method.trim  # the paper's stop rule
    assert method.check_every == 100  # the authors' --compression_check_frequency
    ours, theirs = shrink_per_epoch(st), authors_shrink_per_epoch(authors)
    assert len(ours) == len(theirs)
    for epoch, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == pytest.approx(b, rel=0.01), epoch


@pytest.mark.parametrize("name", NAMES)
def test_first_gpu_check_is_the_recipe_cut_short(name):
    """`--first`: the same device, precision, model and search settings, a few short epochs."""
    recipes = load_recipes()
    full, first = compose(recipes.command(name)[2:]), compose(recipes.command(name, first=True)[2:])
    assert first.amp is False and str(first.device) == "cuda"
    assert full.budget.mode == first.budget.mode == "paper"  # each stage's own schedule
    assert first.model == full.model and first.target == full.target
    assert first.method.stop_limit == full.method.stop_limit and first.method.epochs <= 3
    assert first.train.epochs <= 2 and first.finetune.epochs == 1


def test_paper_gamma_is_scaled_to_the_papers_epoch_and_recorded():
    """703 CIFAR steps per epoch: the per-model γ is scaled by 782 / 703 (recorded), so the
    shrink per epoch is the paper's; an explicit γ is not; match_paper_epoch=false keeps 3e-4."""
    cmd = load_recipes().command("dhp50-resnet56-cifar10")[2:]
    cfg = compose(cmd)
    method = build_method(cfg.method, model="resnet56", task="classification")
    loader = method.search_loader(cifar_sized_loader(64), "classification")
    st = method.settings(model="resnet56", task="classification", train=cfg.train, loader=loader)
    assert st.steps_per_epoch == 703 and st.gamma_scale == pytest.approx(782 / 703)
    assert st.gamma == pytest.approx(3e-4 * 782 / 703) and st.gamma_rule == "paper×782/703"
    for extra, gamma in (["method.gamma=3.0e-4"], 3e-4), (["method.match_paper_epoch=false"], 3e-4):
        cfg = compose([*cmd, *extra])
        method = build_method(cfg.method, model="resnet56", task="classification")
        st = method.settings(model="resnet56", task="classification", train=cfg.train,
                             loader=loader)  # fmt: skip
        assert st.gamma == gamma and st.gamma_scale == 1.0


def cifar_like_npz(path: Path) -> Path:
    g = np.random.default_rng(0)
    np.savez(
        path,
        x_train=g.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8),
        y_train=g.integers(0, 10, 96),
        x_test=g.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        y_test=g.integers(0, 10, 32),
    )
    return path


def gray_folders(root: Path) -> Path:
    g = np.random.default_rng(0)
    for folder, n in (("Train400", 6), ("BSD68", 2)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            pixels = g.integers(0, 256, (40, 40), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / folder / f"{i:03d}.png")
    return root


def rgb_folders(root: Path) -> Path:
    g = np.random.default_rng(0)
    for folder, n in (("T91", 6), ("Set5", 1), ("Set14", 1), ("B100", 1)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            pixels = g.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(root / folder / f"{i:03d}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_recipe_runs_end_to_end_in_tiny_mode(name, tmp_path, capsys):
    recipes = load_recipes()
    if "cifar" in name:
        data = [f"data.path={cifar_like_npz(tmp_path / 'cifar.npz')}"]
    elif recipes.RECIPES[name].task == "sr":
        data = [f"data.root={rgb_folders(tmp_path / 'data')}", "data.val_holdout=2"]
    else:
        data = [f"data.root={gray_folders(tmp_path / 'data')}", "data.val_holdout=2"]
    extra = [*data, f"outputs={tmp_path / 'out'}", "tracking.enabled=false"]
    args = recipes.command(name, tiny=True, extra=extra)
    assert main(args[1:]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    target = recipes.RECIPES[name].overrides
    assert f"target={record['target']}" in target
    assert record["method"] == "dhp" and record["device"] == "cpu"
    assert record["search_paper_gamma"] == 1.0
    if "cifar" in name:  # the per-model γ scaled to the paper's 782 steps per epoch, recorded
        spe = record["search_steps_per_epoch"]
        assert record["search_gamma_scale"] == pytest.approx(782 / spe)
        assert record["search_gamma_rule"] == f"paper×782/{spe:.0f}"
    else:
        assert record["search_gamma_scale"] == 1.0 and record["search_gamma"] == 0.1
    # one tiny epoch cannot reach the target with the paper's γ: the cut is forced and recorded
    assert record["search_stop_reason"] == "epochs" and record["search_forced"] == 1.0
    assert record["macs_ratio"] <= record["target"] + 1e-9


def test_list_prints_every_command():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "list"], capture_output=True, text=True, check=True
    ).stdout
    recipes = load_recipes()
    for name in recipes.RECIPES:
        assert f"# {name}:" in out
    assert out.count("prunebench run ") == len(recipes.RECIPES)


def test_run_starts_the_checkouts_cli_as_a_module_with_flags_names_and_overrides_in_any_order(
    monkeypatch,
):
    # on a lent GPU the project is not installed (its dependencies are wheels on PYTHONPATH):
    # `run` must not need a `prunebench` script, and `run --first NAME key=value` must parse
    recipes = load_recipes()
    calls = []

    def fake_run(cmd, check, cwd, env):
        calls.append((cmd, cwd, env["PYTHONPATH"]))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(recipes.subprocess, "run", fake_run)
    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    name = "dhp50-resnet56-cifar10"
    assert recipes.main(["run", "--first", name, "data.train_subset=1000", "device=cpu"]) == 0
    ((cmd, cwd, pythonpath),) = calls
    assert cmd[:4] == [sys.executable, "-m", "harness.cli", "run"]
    extra = ["data.train_subset=1000", "device=cpu"]
    assert cmd[4:] == recipes.command(name, first=True, extra=extra)[2:]
    assert "device=cpu" in cmd and "device=cuda" not in cmd  # an override replaces the recipe's
    assert cwd == ROOT and pythonpath.split(os.pathsep) == ["/tmp/site", str(ROOT)]
