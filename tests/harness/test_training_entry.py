"""The run's one training entry (`Trainer`, a method's `ctx.fit`): per-stage batch streams from
the seed helper, the caller's parameters / param groups and stream, and resume from a checkpoint
that continues the fit exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.config import compose
from harness.data import TensorBatches
from harness.run.pipeline import METHOD_STREAM, run
from harness.runtime.device import pick_runtime
from harness.runtime.seeds import derive_seed
from harness.task import DataSplits
from harness.train import FitCheckpoint, Hook, LoopState, Trainer
from methods.taylor import Taylor
from tests.conftest import TINY_RUN

SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine"}


class SquaredError:
    metric = "neg_mse"

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": (model(x) - y).pow(2).mean()}

    def evaluate(self, model: nn.Module, batches: TensorBatches) -> dict[str, float]:
        return {"neg_mse": -sum(float(self.loss(model, b)["loss"]) for b in batches)}


def trainer(seed: int = 3) -> Trainer:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    train = TensorBatches((x, x.sum(1, keepdim=True)), 8, shuffle=True, seed=seed)
    held = TensorBatches((x[:8], x[:8].sum(1, keepdim=True)), 8)
    data = DataSplits(train=train, val=held, test=held)
    return Trainer(SquaredError(), data, pick_runtime("cpu"), seed)


def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 1)


class StreamOf(Hook):
    """Keeps the batch stream the fit trained on."""

    def before_fit(self, s: LoopState) -> None:
        self.stream = s.batches


def test_each_stage_draws_its_own_stream_seeded_by_the_run_seed_and_its_name():
    fit = trainer()
    before = fit.data.train.generator.get_state()
    seen = {}
    for name in ("a", "b", "a"):
        hook = StreamOf()
        fit(linear(), epochs=1, optim=SGD, hooks=[hook], name=name)
        seen.setdefault(name, []).append(hook.stream)
    a1, b, a2 = seen["a"][0], seen["b"][0], seen["a"][1]
    assert torch.equal(a1.generator.get_state(), a2.generator.get_state())  # same stage, same draws
    assert not torch.equal(a1.generator.get_state(), b.generator.get_state())
    assert torch.equal(fit.data.train.generator.get_state(), before)  # the run's stream untouched
    ref = fit.data.train.fork(derive_seed(3, "a"))
    list(ref)  # one epoch
    assert torch.equal(ref.generator.get_state(), a1.generator.get_state())


def test_a_caller_passes_its_own_stream_and_param_groups():
    fit = trainer()
    model = linear()
    model.bias.requires_grad_(False)  # frozen: left out of the optimizer
    big = fit.data.train.rebatch(16)
    seen = StreamOf()

    class Groups(Hook):
        def before_fit(self, s: LoopState) -> None:
            self.groups = [(g["lr"], len(g["params"])) for g in s.optimizer.param_groups]

    groups = Groups()
    result = fit(
        model,
        epochs=2,
        optim={**SGD, "schedule": "constant"},
        params=[{"params": [model.weight], "lr": 0.01}, {"params": [model.bias]}],
        batches=big,
        hooks=[seen, groups],
        name="search",
    )
    assert result.steps == 2 * 3  # 48 images at the caller's batch 16
    assert groups.groups == [(0.01, 1), (0.05, 0)]
    assert seen.stream is not big  # forked, seeded by the stage name like any stage
    ref = big.fork(derive_seed(3, "search"))
    list(ref), list(ref)
    assert torch.equal(ref.generator.get_state(), seen.stream.generator.get_state())


class Interrupt(Exception):
    pass


class SaveAt(Hook):
    """Writes a FitCheckpoint at the end of epoch `epoch` (through a weights-only file), then
    stops the process the way a kill would."""

    def __init__(self, path, epoch: int) -> None:
        self.path, self.epoch = path, epoch

    def after_epoch(self, s: LoopState) -> None:
        if s.epoch == self.epoch:
            torch.save(FitCheckpoint.of(s).to_dict(), self.path)
            raise Interrupt


def test_a_fit_resumed_from_a_checkpoint_is_the_fit_that_never_stopped(tmp_path):
    fit = trainer()
    ref = linear()
    straight = fit(ref, epochs=4, optim=SGD, name="stage")
    try:
        fit(linear(), epochs=4, optim=SGD, hooks=[SaveAt(tmp_path / "c.pt", 2)], name="stage")
    except Interrupt:
        pass
    at = FitCheckpoint.from_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert (at.epoch, at.step) == (2, 12)
    model = nn.Linear(4, 1)  # fresh weights: the checkpoint brings them
    resumed = fit(model, epochs=4, optim=SGD, name="stage", resume=at)
    assert (resumed.epochs_run, resumed.steps) == (straight.epochs_run, straight.steps)
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


class Seen(Exception):
    pass


def test_a_methods_own_stream_is_a_stage_of_the_run_seeded_by_the_seed_helper(
    tmp_path, monkeypatch
):
    """`ctx.data.train` (Taylor's calibration batches, a search's data) is forked with
    derive_seed(run seed, "method"), like every training stage's stream."""

    def spy(self, ctx):
        raise Seen(ctx.data.train.generator.initial_seed())

    monkeypatch.setattr(Taylor, "prepare", spy)
    cfg = [*TINY_RUN, "method=taylor", "method.epochs=0", "train.epochs=0", "seed=5"]
    with pytest.raises(Seen) as seen:
        run(compose([*cfg, f"outputs={tmp_path}"]))
    assert seen.value.args[0] == derive_seed(5, METHOD_STREAM)
