"""DHP's configuration: paper mode on CIFAR, the search batch, and one-line errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dhp_helpers import build, make_ctx

import methods  # noqa: F401
import tasks  # noqa: F401
from harness.config import compose
from harness.data import TensorBatches
from harness.errors import ConfigError
from harness.run.pipeline import build_method
from harness.train import LoopState, build_optimizer, build_scheduler
from methods.dhp import DHP, build_search_net
from methods.dhp.search import DHPSearch, GammaController

CIFAR_TRAIN = 45_000  # CIFAR-10/100's 50 000 training images less the 10 % validation split


def cifar_sized_loader(batch: int = 128) -> TensorBatches:
    """The classification pipeline's training loader for CIFAR (batch 128, drop_last), from random
    tensors: one random image expanded to 45 000 (no data files, no memory)."""
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(CIFAR_TRAIN, -1, -1, -1)
    y = torch.randint(0, 10, (1,)).expand(CIFAR_TRAIN)
    return TensorBatches((x, y), batch, shuffle=True, drop_last=True)


def resolve(overrides: list[str]):
    """`prunebench run <overrides>` up to the search's settings: config only, no training."""
    cfg = compose(overrides)
    method = build_method(cfg.method, model=cfg.model.name, task=cfg.task.name)
    loader = method.search_loader(cifar_sized_loader(int(cfg.task.batch_size)), cfg.task.name)
    st = method.settings(model=cfg.model.name, task=cfg.task.name, train=cfg.train, loader=loader)
    return method, st


def shrink_per_epoch(st) -> list[float]:
    """Σ lr·γ the search's proximal step applies in each epoch, from the DHP hook itself."""
    model = build("resnet_proj")
    ctx = make_ctx(model)
    net = build_search_net(model, ctx.structure)
    optim = build_optimizer(net.parameters(), _omega(st.optim))
    sched = build_scheduler(
        optim, _omega(st.optim), epochs=st.epochs, steps_per_epoch=st.steps_per_epoch
    )
    s = LoopState(net, optim, sched, epochs=st.epochs, steps_per_epoch=st.steps_per_epoch)
    hook = DHPSearch(
        net, [], ctx.cost, GammaController(st.gamma_mode, st.gamma, 0.5), target=0.5,
        threshold=st.threshold, stop_limit=0.01, check_every=10**9,
    )  # fmt: skip
    hook.before_fit(s)
    per_epoch, last = [], 0.0
    for _ in range(st.epochs):  # the hook after every optimizer step (no training needed)
        for _ in range(st.steps_per_epoch):
            s.step += 1
            hook.after_step(s)
        per_epoch.append(hook.shrink - last)
        last = hook.shrink
    return per_epoch


def _omega(d):
    from omegaconf import OmegaConf

    return OmegaConf.create(dict(d))


@pytest.mark.parametrize("data", ["cifar10", "cifar100"])
def test_cifar_resnet56_resolves_to_the_paper_search(data):
    method, st = resolve([f"data={data}", "model=resnet56", "method=dhp"])
    assert st.batch == 64 and st.steps_per_epoch == CIFAR_TRAIN // 64 == 703
    # the per-model γ 3e-4 is per paper iteration (782 per epoch): scaled to 703 steps
    assert st.gamma_mode == "paper" and st.threshold == 5e-3
    assert st.gamma == pytest.approx(3e-4 * 782 / 703) and st.gamma_rule == "paper×782/703"
    assert st.epochs == 100 and st.optim["milestones"] == [20, 50]
    assert st.optim["lr"] == 0.1 and st.optim["optimizer"] == "sgd"
    assert st.optim["weight_decay"] == 1e-4 and st.optim["momentum"] == 0.9
    assert st.freeze_last_stream
    per_epoch = shrink_per_epoch(st)
    # Σ lr·γ per epoch, the paper's: 782 · 0.1 · 3e-4 before epoch 20, ×0.1 after 20 and 50
    assert per_epoch[0] == pytest.approx(782 * 0.1 * 3e-4)
    assert per_epoch[25] == pytest.approx(782 * 0.01 * 3e-4)
    assert per_epoch[60] == pytest.approx(782 * 0.001 * 3e-4)
    assert sum(per_epoch) == pytest.approx(782 * 3e-4 * (20 * 0.1 + 30 * 0.01 + 50 * 0.001))


def test_resnet20_paper_shrink_and_the_batch_128_trap():
    _, st = resolve(["data=cifar10", "model=resnet20", "method=dhp"])
    assert (st.gamma_mode, st.optim["milestones"]) == ("paper", [50])
    total = sum(shrink_per_epoch(st))
    assert total == pytest.approx(782 * 2e-4 * (50 * 0.1 + 50 * 0.01))  # ≈ 0.86, the paper's
    # at the training batch (128: 351 steps) auto refuses paper mode; forcing it still scales
    # the per-model γ to the paper's epoch (782 / 351), while an explicit γ halves the total
    _, st128 = resolve(["data=cifar10", "model=resnet20", "method=dhp", "method.search_batch=128"])
    assert st128.steps_per_epoch == 351 and st128.gamma_mode == "budget"
    base = ["data=cifar10", "model=resnet20", "method=dhp", "method.search_batch=128",
            "method.gamma_mode=paper"]  # fmt: skip
    _, forced = resolve(base)
    assert sum(shrink_per_epoch(forced)) == pytest.approx(total)
    _, explicit = resolve([*base, "method.gamma=2e-4"])
    assert sum(shrink_per_epoch(explicit)) == pytest.approx(total * 351 / 782)


def test_explicit_gamma_and_threshold_win_in_a_composed_run():
    _, st = resolve(
        ["data=cifar10", "model=resnet20", "method=dhp", "method.gamma_mode=paper",
         "method.gamma=0.019"]
    )  # fmt: skip
    assert st.gamma == 0.019
    _, st = resolve(["data=cifar10", "model=mobilenetv2", "method=dhp", "method.threshold=0.01"])
    assert st.threshold == 0.01 and st.gamma == pytest.approx(1e-4 * 782 / 703)  # per-model γ
    _, st = resolve(["data=cifar10", "model=mobilenetv2", "method=dhp"])
    assert st.threshold == 1e-3


def test_an_explicit_gamma_is_the_one_the_search_uses_in_every_mode():
    """Issue 23 item 4: `method.gamma=0.019 method.epochs=30` on CIFAR resolved to budget mode,
    searched with 3.6e-4 and still recorded 0.019."""
    _, st = resolve(["data=cifar10", "model=resnet20", "method=dhp", "method.gamma=0.019",
                     "method.epochs=30"])  # fmt: skip
    assert (st.gamma_mode, st.gamma) == ("paper", 0.019)  # auto keeps the explicit γ
    _, unset = resolve(["data=cifar10", "model=resnet20", "method=dhp", "method.epochs=30"])
    assert unset.gamma_mode == "budget"  # without one, the short search still sets γ itself
    with pytest.raises(ConfigError, match=r"method.gamma=0.019 is a fixed γ but .*budget"):
        resolve(["data=cifar10", "model=resnet20", "method=dhp", "method.gamma=0.019",
                 "method.gamma_mode=budget"])  # fmt: skip
    # end to end on a budget-sized search (4 steps per epoch): the record's γ is the γ applied
    log: list = []
    stats = (
        DHP(gamma=0.019, search={"epochs": 3, "batch": None})
        .search(make_ctx(build("resnet_proj"), log=log))
        .stats
    )
    assert stats["paper_gamma"] == 1.0 and stats["gamma"] == 0.019 == stats["final_gamma"]
    assert all(m["dhp/gamma"] == 0.019 for _, m in log)
    budget = DHP(search={"epochs": 3, "batch": None}).search(make_ctx(build("resnet_proj"))).stats
    assert budget["paper_gamma"] == 0.0 and budget["gamma"] != 2e-4  # the budget's own start
    assert budget["gamma"] == budget["initial_gamma"]


def test_the_search_trains_on_its_own_batch_not_the_runs_loader(monkeypatch):
    """Issue 23: reading ctx.data.train (batch 16 here) instead of the search loader passed every
    test. The search at batch 8 must see only 8-sample batches, 64 / 8 of them per epoch."""
    from dhp_helpers import ToyTask

    seen: list[int] = []
    real_loss = ToyTask.loss

    def loss(self, model, batch):
        seen.append(int(batch[0].shape[0]))
        return real_loss(self, model, batch)

    monkeypatch.setattr(ToyTask, "loss", loss)
    ctx = make_ctx(build("resnet_proj"))
    assert ctx.data.train.batch_size == 16
    stats = DHP(search={"epochs": 2, "batch": 8}, gamma_mode="paper", gamma=1e-9).search(ctx).stats
    assert stats["batch"] == 8.0 and stats["steps_per_epoch"] == 8.0 and stats["iterations"] == 16
    assert seen and set(seen) == {8}


def test_search_loader_keeps_data_and_shuffle_stream():
    loader = cifar_sized_loader(128)
    again = DHP().search_loader(loader, "classification")
    assert again.batch_size == 64 and again.tensors is loader.tensors and again.drop_last
    assert DHP(search={"batch": None}).search_loader(loader, "classification") is loader
    assert DHP().search_loader(loader, "sr") is loader  # restoration: the run's batch


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("method.search_batch=0", r"method.search_batch=0 must be a positive integer"),
        ("method.gamma=-0.001", r"method.gamma=-0.001 must be a positive number"),
        ("method.threshold=0", r"method.threshold=0 must be a positive number"),
        ("method.threshold=-1e-3", r"method.threshold=-0.001 must be a positive number"),
        ("method.gamma_mode=adaptive", r"method.gamma_mode='adaptive' is unknown"),
        ("+method.by_model.resnet20.lr=0.1", r"by_model.resnet20 sets lr; it may set only"),
    ],
)
def test_bad_input_is_one_line_config_error(override, match):
    cfg = compose(["data=digits", "model=resnet20", "method=dhp", override])
    with pytest.raises(ConfigError, match=match) as err:
        build_method(cfg.method, model="resnet20", task="classification")
    assert "\n" not in str(err.value)


def test_bad_input_through_the_cli_is_one_line(tmp_path, capsys):
    from harness.cli.main import main

    code = main(["run", "data=digits", "model=resnet20", "method=dhp", "method.search_batch=0",
                 f"outputs={tmp_path}", "tracking.enabled=false"])  # fmt: skip
    out = capsys.readouterr()
    assert code != 0 and out.out == ""
    lines = [line for line in out.err.splitlines() if "search_batch" in line]
    assert len(lines) == 1 and "positive integer" in lines[0]


def test_every_per_model_entry_names_a_configured_model():
    # a key no `model=` choice resolves to is a paper value that silently never applies
    models = {p.stem for p in (Path(__file__).parents[3] / "conf" / "model").glob("*.yaml")}
    names = {compose([f"model={m}"]).model.name for m in models}
    assert set(compose(["method=dhp"]).method.by_model) - names == set()
