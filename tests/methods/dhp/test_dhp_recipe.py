"""The paper recipe (results/recipes/dhp_paper.py): its GPU commands resolve to the paper's search,
and the same commands run end to end on CPU in tiny mode, so they cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dhp_config import cifar_sized_loader

import methods  # noqa: F401
import tasks  # noqa: F401
from harness.cli import main
from harness.config import compose
from harness.pipeline import build_method

SCRIPT = Path(__file__).resolve().parents[3] / "results" / "recipes" / "dhp_paper.py"


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


@pytest.mark.parametrize(
    ("name", "milestones", "gamma"),
    [
        ("dhp50-resnet56-cifar10", [20, 50], 3e-4),
        ("dhp38-resnet56-cifar10", [25, 50], 3e-4),
        ("dhp40-dncnn-sigma70", [40], 0.1),
    ],
)
def test_gpu_commands_resolve_to_the_papers_search(name, milestones, gamma):
    recipes = load_recipes()
    args = recipes.command(name)
    assert args[:2] == ["prunebench", "run"]
    cfg = compose(args[2:])
    method = build_method(cfg.method, model=cfg.model.name, task=cfg.task.name)
    if cfg.task.name == "classification":
        loader = method.search_loader(
            cifar_sized_loader(int(cfg.task.batch_size)), "classification"
        )
        assert loader.batch_size == 64 and cfg.finetune.epochs == 300
        assert list(cfg.finetune.milestones) == [150, 225] and cfg.finetune.lr == 0.1
    else:
        steps = int(cfg.data.patches_per_epoch) // int(cfg.data.batch_size)
        loader = method.search_loader(PatchEpoch(steps), "denoise")
        assert cfg.data.sigma == 70 and cfg.finetune.epochs == 60
    st = method.settings(model=cfg.model.name, task=cfg.task.name, train=cfg.train, loader=loader)
    assert st.gamma_mode == "paper" and st.gamma == gamma
    assert st.optim["milestones"] == milestones
    assert not method.trim  # the paper's stop rule, for reproduction
    assert str(cfg.device) == "cuda"


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


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["dhp50-resnet56-cifar10", "dhp38-resnet56-cifar10", "dhp40-dncnn-sigma70"]
)
def test_recipe_runs_end_to_end_in_tiny_mode(name, tmp_path, capsys):
    recipes = load_recipes()
    data = (
        [f"data.path={cifar_like_npz(tmp_path / 'cifar.npz')}"]
        if "cifar" in name
        else [f"data.root={gray_folders(tmp_path / 'data')}", "data.val_holdout=2"]
    )
    extra = [*data, f"outputs={tmp_path / 'out'}", "tracking.enabled=false"]
    args = recipes.command(name, tiny=True, extra=extra)
    assert main(args[1:]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    target = recipes.RECIPES[name].overrides
    assert f"target={record['target']}" in target
    assert record["method"] == "dhp" and record["device"] == "cpu"
    assert record["search_paper_gamma"] == 1.0
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
