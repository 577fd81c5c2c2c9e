"""The training loop's per-epoch record: the LR it reports is the one the epoch trained with."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from harness.data import TensorBatches
from harness.runtime.device import pick_runtime
from harness.train.loop import fit
from harness.train.optim import build_optimizer, build_scheduler


class SquaredError:
    metric = "neg_mse"

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": (model(x) - y).pow(2).mean()}


@pytest.mark.parametrize("epochs", [1, 3])
def test_logged_lr_is_the_epochs_starting_lr_not_the_annealed_end(epochs, caplog):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(32, 4)
    train = TensorBatches((x, x.sum(1, keepdim=True)), 8, shuffle=True)
    cfg = OmegaConf.create({"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0})
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, epochs=epochs, steps_per_epoch=len(train))
    with caplog.at_level(logging.INFO, logger="harness.train.loop"):
        result = fit(
            model,
            SquaredError(),
            train,
            epochs=epochs,
            optimizer=optimizer,
            scheduler=scheduler,
            runtime=pick_runtime("cpu"),
        )
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(0.05)  # a one-epoch cosine used to report 0.00e+00 here
    assert all(a > b > 0 for a, b in zip(lrs, lrs[1:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0
    assert "5.00e-02" in caplog.text and "0.00e+00" not in caplog.text
