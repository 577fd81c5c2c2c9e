"""The `sr` and `denoise` tasks: config composition, model/data building, loss and evaluation
through the harness loop."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

import tasks  # noqa: F401  (registers tasks, datasets, models)
from harness.errors import ConfigError
from harness.registry import DATASETS, MODELS, TASKS
from harness.runtime.device import pick_runtime
from harness.train import build_optimizer, evaluate, fit
from tasks.restoration import ImageBatches

CONF = Path(__file__).resolve().parents[3] / "conf"
SHARED = Path(
    os.environ.get("PRUNEBENCH_SHARED_DATA", Path(__file__).resolve().parents[4] / "shared/data")
)


@pytest.fixture
def stub_conf(tmp_path: Path) -> Path:
    """Our task/data/model groups under a primary config whose defaults are something else,
    listed data → model → task as `task=sr` alone needs (Hydra applies a group override from a
    non-primary config only to groups listed before it)."""
    for group in ("task", "data", "model"):
        shutil.copytree(CONF / group, tmp_path / group)
        (tmp_path / group / "stub.yaml").write_text("name: stub\n")
    (tmp_path / "config.yaml").write_text(
        "defaults:\n  - data: stub\n  - model: stub\n  - task: stub\n  - _self_\nseed: 0\n"
    )
    return tmp_path


def _compose(conf: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(conf), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_task_alone_picks_offline_data_and_a_model(stub_conf: Path) -> None:
    cfg = _compose(stub_conf, ["task=sr"])
    assert (cfg.data.name, cfg.model.name, cfg.task.scale) == ("sr_embedded", "edsr", 4)
    assert cfg.train.optimizer == "adam" and cfg.train.lr == 1.0e-4 and cfg.train.gamma == 0.5
    cfg = _compose(stub_conf, ["task=denoise"])
    assert (cfg.data.name, cfg.model.name, cfg.data.sigma) == ("denoise_embedded", "dncnn", 50)
    assert cfg.finetune.epochs == 60 and list(cfg.finetune.milestones) == [40]


def test_scale_and_explicit_choices_override_the_task_defaults(stub_conf: Path) -> None:
    assert _compose(stub_conf, ["task=sr", "scale=3"]).task.scale == 3
    assert _compose(stub_conf, ["task=sr", "task.scale=2"]).task.scale == 2
    cfg = _compose(stub_conf, ["task=sr", "model=srresnet", "data=sr_folders"])
    assert (cfg.data.name, cfg.model.name) == ("sr_folders", "srresnet")


def test_the_project_config_composes_sr_and_denoise_runs() -> None:
    if not (CONF / "config.yaml").is_file():
        pytest.skip("no conf/config.yaml yet")
    cfg = _compose(CONF, ["task=sr", "data=sr_embedded", "model=edsr_paper", "task.scale=4"])
    task = TASKS.get(cfg.task.name)(cfg.task)
    assert task.input_shape(cfg.data) == (3, 128, 128)
    model = task.build_model(cfg.model, cfg.data)
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 16, 16)
    cfg = _compose(CONF, ["task=denoise", "data=denoise_embedded", "model=unet"])
    task = TASKS.get(cfg.task.name)(cfg.task)
    assert task.input_shape(cfg.data) == (1, 128, 128)


def test_task_alone_picks_its_data_and_model_in_the_project_config() -> None:
    """`prunebench measure task=sr model=edsr_paper scale=4` (docs/cli) composes: conf/config.yaml
    lists `task` after `data` and `model`, else Hydra rejects task/sr.yaml's `override /data`."""
    from harness.config import compose as cli_compose

    cfg = cli_compose(["task=sr", "model=edsr_paper", "scale=4"])
    assert (cfg.data.name, cfg.model.name, cfg.task.scale) == ("sr_embedded", "edsr_paper", 4)
    cfg = cli_compose(["task=denoise"])
    assert (cfg.data.name, cfg.model.name, cfg.train.optimizer) == (
        "denoise_embedded",
        "dncnn",
        "adam",
    )
    cfg = cli_compose(["data=digits"])  # the classification defaults are untouched
    assert (cfg.task.name, cfg.model.name, cfg.train.optimizer) == (
        "classification",
        "resnet20",
        "sgd",
    )


def _cfgs(task: str, data: str, model: str, **model_kw) -> tuple[DictConfig, ...]:
    t = OmegaConf.load(CONF / "task" / f"{task}.yaml")
    if task == "sr":
        t.task.scale = 2
    d = OmegaConf.load(CONF / "data" / f"{data}.yaml")
    d.merge_with({"patch_size": 16, "batch_size": 4, "patches_per_epoch": 8, "val_crop": 24})
    # the loop, not the data, is under test: few, small images
    if data == "sr_embedded":
        d.merge_with({"train_images": ["astronaut"], "test_images": ["chelsea"]})
    else:
        d.merge_with({"train_images": ["coins", "moon"], "test_images": ["page"]})
    m = OmegaConf.merge(OmegaConf.load(CONF / "model" / f"{model}.yaml"), model_kw)
    return t, d, m


@pytest.mark.parametrize(
    ("task_name", "data", "model", "kw"),
    [
        ("sr", "sr_embedded", "edsr", {"n_blocks": 1, "n_feats": 8}),
        ("denoise", "denoise_embedded", "dncnn", {"depth": 3, "n_feats": 8}),
        ("denoise", "denoise_embedded", "unet", {"depth": 2, "start_filts": 4}),
    ],
)
def test_tasks_train_and_evaluate_through_the_harness_loop(
    task_name: str, data: str, model: str, kw: dict
) -> None:
    torch.manual_seed(0)
    t, d, m = _cfgs(task_name, data, model, **kw)
    task = TASKS.get(task_name)(t.task)
    assert (task.metric, task.optimizer) == ("psnr", "adam")
    splits = task.build_data(d, seed=0)
    net = task.build_model(m, d)
    runtime = pick_runtime("cpu")
    opt = build_optimizer(net.parameters(), t.train)
    result = fit(net, task, splits.train, epochs=1, optimizer=opt, runtime=runtime, val=splits.val)
    assert math.isfinite(result.history[0]["loss"])
    assert math.isfinite(result.history[0]["val_psnr"])
    scores = evaluate(task, net, splits.test, runtime)
    assert set(scores) == {"psnr", "ssim"} and math.isfinite(scores["psnr"])
    out = task.loss(net, next(iter(splits.train)))
    assert out["loss"].ndim == 0 and "output" in out


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Bicubic(nn.Module):
    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # antialias=True selects torch's a = −0.5 kernel, MATLAB imresize's
        return F.interpolate(
            x, scale_factor=self.scale, mode="bicubic", align_corners=False, antialias=True
        )


@pytest.mark.skipif(not (SHARED / "Set5").is_dir(), reason="no shared data")
@pytest.mark.parametrize(("scale", "psnr", "ssim"), [(2, 33.66, 0.9299), (4, 28.42, 0.8104)])
def test_bicubic_baseline_on_set5_matches_the_published_tables(
    scale: int, psnr: float, ssim: float
) -> None:
    """Bicubic Set5 numbers of the SR literature (e.g. the EDSR/RCAN tables): this pins the
    degradation, the Y conversion, the shave and both metrics at once."""
    task = TASKS.get("sr")(OmegaConf.create({"name": "sr", "scale": scale}))
    d = OmegaConf.load(CONF / "data" / "sr_folders.yaml")
    d.merge_with({"root": str(SHARED), "train": "Set5", "val_holdout": 1, "test": ["Set5"]})
    scores = evaluate(task, _Bicubic(scale), task.build_data(d, seed=0).test, pick_runtime("cpu"))
    assert scores["psnr"] == pytest.approx(psnr, abs=0.05)
    assert scores["ssim"] == pytest.approx(ssim, abs=0.003)


def test_denoise_evaluation_of_the_noisy_input_is_about_20log_255_over_sigma() -> None:
    t, d, _ = _cfgs("denoise", "denoise_embedded", "dncnn")
    task = TASKS.get("denoise")(t.task)
    scores = evaluate(task, _Identity(), task.build_data(d, seed=0).test, pick_runtime("cpu"))
    # 20·log10(255/50) = 14.15 dB; quantising the output clips the tails, which helps a little
    assert 14.0 < scores["psnr"] < 15.5


def test_sr_evaluation_reports_each_benchmark_set() -> None:
    t, _, _ = _cfgs("sr", "sr_embedded", "edsr")
    task = TASKS.get("sr")(t.task)
    g = torch.Generator().manual_seed(0)
    hr = (torch.rand(3, 40, 40, generator=g) * 255).to(torch.uint8)
    lr = hr[:, ::2, ::2].contiguous()
    batches = ImageBatches([(lr, hr)] * 3, ["a", "b", "c"], ["Set5", "Set5", "B100"])
    scores = evaluate(task, _Bicubic(), batches, pick_runtime("cpu"))
    assert set(scores) == {"psnr", "ssim", "psnr_Set5", "ssim_Set5", "psnr_B100", "ssim_B100"}
    assert scores["psnr_Set5"] == pytest.approx(scores["psnr_B100"])


def test_wrong_model_dataset_or_loss_is_a_config_error() -> None:
    t, d, m = _cfgs("sr", "sr_embedded", "edsr")
    sr = TASKS.get("sr")(t.task)
    with pytest.raises(ConfigError, match="not 'sr'"):
        sr.build_model(OmegaConf.create({"name": "dncnn"}), d)
    with pytest.raises(ConfigError, match="not an SR dataset"):
        sr.build_data(OmegaConf.create({"name": "denoise_embedded"}), seed=0)
    bad = TASKS.get("sr")(OmegaConf.merge(t.task, {"loss": "huber"}))
    with pytest.raises(ConfigError, match="known: "):
        bad.loss(sr.build_model(m, d), (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 16, 16)))
    with pytest.raises(ConfigError, match="n_featz"):
        sr.build_model(OmegaConf.create({"name": "edsr", "n_featz": 8}), d)
    with pytest.raises(ConfigError, match="task.scale"):
        TASKS.get("sr")(OmegaConf.create({"name": "sr", "scale": 5})).scale  # noqa: B018


def test_our_configs_name_registered_things() -> None:
    for name, task in [
        ("sr_embedded", "sr"),
        ("sr_folders", "sr"),
        ("denoise_embedded", "denoise"),
        ("denoise_folders", "denoise"),
    ]:
        assert OmegaConf.load(CONF / "data" / f"{name}.yaml").name == name
        assert DATASETS.info(name)["task"] == task
    for name, task in [
        ("edsr", "sr"),
        ("edsr_paper", "sr"),
        ("srresnet", "sr"),
        ("dncnn", "denoise"),
        ("unet", "denoise"),
    ]:
        assert OmegaConf.load(CONF / "model" / f"{name}.yaml").name == name
        assert MODELS.info(name)["task"] == task
    for task in ("sr", "denoise"):
        assert OmegaConf.load(CONF / "task" / f"{task}.yaml").task.name == task in TASKS
