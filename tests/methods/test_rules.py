"""Each baseline's paper rule on hand-made tensors whose answer is worked out in the comments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from harness.data import TensorBatches
from harness.errors import ConfigError, IncompatibleMethodError
from harness.method import PruneContext
from harness.registry import METHODS
from harness.run.pipeline import METHOD_META_KEYS, method_arguments
from harness.runtime.device import pick_runtime
from harness.structure import LayerView
from harness.task import DataSplits, Task
from harness.train import LoopState
from methods.fpgm import FPGM
from methods.l1 import L1Norm
from methods.l2 import L2Norm
from methods.random_prune import RandomPrune
from methods.slimming import BNSparsityHook, Slimming
from methods.taylor import Taylor

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"


def view_of(name: str, m: nn.Module, channels: Tensor | None = None) -> LayerView:
    """A LayerView as the harness builds it (out-channel-first weight) over `channels`."""
    if isinstance(m, nn.ConvTranspose2d):
        w, kind = m.weight.transpose(0, 1), "conv"
    elif isinstance(m, nn.Conv2d):
        w, kind = m.weight, "conv"
    elif isinstance(m, nn.Linear):
        w, kind = m.weight, "linear"
    else:
        w, kind = m.weight, "bn"
    if channels is None:
        channels = torch.arange(w.shape[0])
    bias = getattr(m, "bias", None)
    return LayerView(
        name,
        m,
        kind,
        channels,
        w.detach()[channels],
        None if bias is None else bias.detach()[channels],
        None,
    )


def conv_with_filters(filters: list[list[float]]) -> nn.Conv2d:
    """A bias-free Conv2d(1, len(filters), 2×2) whose filter j holds filters[j] (4 numbers)."""
    conv = nn.Conv2d(1, len(filters), 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(filters).view(len(filters), 1, 2, 2))
    return conv


class SumTask(Task):
    """loss = sum of the model output: for a bias-free linear layer Σ g·w = Σ output."""

    metric = "neg_loss"

    def input_shape(self, data_cfg):
        return (2,)

    def build_data(self, data_cfg, *, seed):
        raise NotImplementedError

    def build_model(self, model_cfg, data_cfg):
        raise NotImplementedError

    def loss(self, model, batch):
        return {"loss": model(batch[0]).sum()}

    def evaluate(self, model, batches):
        return {"neg_loss": 0.0}


def make_ctx(model: nn.Module, xs: Tensor | None = None, seed: int = 0) -> PruneContext:
    xs = torch.zeros(1, 1) if xs is None else xs
    batches = TensorBatches((xs,), batch_size=1)
    return PruneContext(
        model=model,
        structure=None,
        cost=None,
        task=SumTask(OmegaConf.create({})),
        data=DataSplits(batches, batches, batches),
        runtime=pick_runtime("cpu"),
        target=0.5,
        seed=seed,
        fit=None,
    )


# filter:      f0           f1            f2            f3
# ℓ1:          3            4             1             3.5
# ℓ2:          3            2             1             2.5
NORM_FILTERS = [[3, 0, 0, 0], [1, 1, 1, 1], [0, -1, 0, 0], [-2, 1.5, 0, 0]]


def test_l1_scores_absolute_weight_sum_per_filter():
    conv = conv_with_filters(NORM_FILTERS)
    s = L1Norm().score(view_of("conv", conv))
    torch.testing.assert_close(s, torch.tensor([3.0, 4.0, 1.0, 3.5]))
    assert s.argsort().tolist() == [2, 0, 3, 1]


def test_l2_scores_euclidean_norm_and_ranks_differently_from_l1():
    conv = conv_with_filters(NORM_FILTERS)
    s = L2Norm().score(view_of("conv", conv))
    torch.testing.assert_close(s, torch.tensor([3.0, 2.0, 1.0, 2.5]))
    assert s.argsort().tolist() == [2, 1, 3, 0]  # l1 keeps f1 first; l2 removes it second


def test_norms_score_linear_rows_and_bn_abstains():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 2.0], [0.0, 0.0, -4.0]]))
    torch.testing.assert_close(L1Norm().score(view_of("fc", lin)), torch.tensor([5.0, 4.0]))
    torch.testing.assert_close(L2Norm().score(view_of("fc", lin)), torch.tensor([3.0, 4.0]))
    bn = nn.BatchNorm2d(2)
    for method in (L1Norm(), L2Norm(), FPGM(), Taylor()):
        if isinstance(method, Taylor):
            method._importance = {}
        assert method.score(view_of("bn", bn)) is None


# Five scalar filters at −1, 0, 0.5, 1, 5. Summed distance to the others:
#   −1: 1 + 1.5 + 2 + 6 = 10.5     0: 1 + .5 + 1 + 5 = 7.5     0.5: 1.5 + .5 + .5 + 4.5 = 7
#    1: 2 + 1 + .5 + 4 = 7.5       5: 6 + 5 + 4.5 + 4 = 19.5
# so FPGM removes 0.5 first (the median), l1 removes 0 first (the smallest), and squared distances
# (whose minimiser is the mean 1.1) would remove 1 first.
POINTS = [-1.0, 0.0, 0.5, 1.0, 5.0]


def test_fpgm_scores_summed_distance_to_peers_and_removes_the_median():
    conv = nn.Conv2d(1, 5, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(POINTS).view(5, 1, 1, 1))
    s = FPGM().score(view_of("conv", conv))
    torch.testing.assert_close(s, torch.tensor([10.5, 7.5, 7.0, 7.5, 19.5]))
    assert int(s.argmin()) == 2
    assert int(L1Norm().score(view_of("conv", conv)).argmin()) == 1


def test_fpgm_uses_the_whole_layer_when_the_view_holds_some_channels():
    conv = nn.Conv2d(1, 5, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(POINTS).view(5, 1, 1, 1))
    s = FPGM().score(view_of("conv", conv, torch.tensor([4, 2])))
    torch.testing.assert_close(s, torch.tensor([19.5, 7.0]))


def test_fpgm_reads_transposed_conv_filters_per_output_channel():
    # ConvTranspose2d(2 → 3, 1×1) weight is [in, out, 1, 1]; output filter c is the column w[:, c]
    convt = nn.ConvTranspose2d(2, 3, 1, bias=False)
    with torch.no_grad():
        convt.weight.copy_(torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 4.0]]).view(2, 3, 1, 1))
    # filters (0,0), (3,0), (0,4): sums 3+4=7, 3+5=8, 4+5=9
    s = FPGM().score(view_of("up", convt))
    torch.testing.assert_close(s, torch.tensor([7.0, 8.0, 9.0]))


def test_fpgm_rejects_a_nonpositive_norm():
    with pytest.raises(ConfigError, match="p > 0"):
        FPGM(p=0.0)


def test_random_is_uniform_reproducible_per_seed_and_differs_across_seeds():
    conv = nn.Conv2d(1, 64, 1)
    scores = {}
    for seed in (0, 0, 1):
        method = RandomPrune()
        method.prepare(make_ctx(conv, seed=seed))
        scores.setdefault(seed, []).append(method.score(view_of("conv", conv)))
    a, b = scores[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, scores[1][0])
    assert a.shape == (64,) and bool(((a >= 0) & (a < 1)).all())
    # scoring order does not matter: a subset view gets the same channels' draws
    method = RandomPrune()
    method.prepare(make_ctx(conv, seed=0))
    torch.testing.assert_close(method.score(view_of("conv", conv, torch.tensor([5, 3]))), a[[5, 3]])


def test_random_refuses_to_score_before_prepare():
    with pytest.raises(RuntimeError, match="prepare"):
        RandomPrune().score(view_of("conv", nn.Conv2d(1, 2, 1)))


def bn_net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.5, -2.0, 0.0]))
    return net


def test_slimming_hook_adds_lambda_sign_gamma_to_bn_grads_only():
    net = bn_net()
    net(torch.randn(4, 1, 3, 3)).square().sum().backward()
    before = {n: p.grad.clone() for n, p in net.named_parameters()}
    lam = 1.0e-2
    hooks = Slimming(lam=lam).hooks(make_ctx(net))
    assert len(hooks) == 1 and isinstance(hooks[0], BNSparsityHook)
    hooks[0].after_backward(LoopState(net, None, None, epochs=1, steps_per_epoch=1))
    # sign(0.5, −2, 0) = (1, −1, 0): the subgradient of λ|γ| at γ = 0 is taken as 0
    expected = before["1.weight"] + lam * torch.tensor([1.0, -1.0, 0.0])
    assert torch.equal(net[1].weight.grad, expected)
    for name in ("0.weight", "0.bias", "1.bias"):
        assert torch.equal(dict(net.named_parameters())[name].grad, before[name])


def test_slimming_scores_abs_gamma_and_conv_abstains():
    net = bn_net()
    method = Slimming()
    torch.testing.assert_close(method.score(view_of("1", net[1])), torch.tensor([0.5, 2.0, 0.0]))
    assert method.score(view_of("0", net[0])) is None
    assert method.needs.batchnorm and method.needs.training
    assert Slimming.default_allocation == "global"


def test_slimming_is_refused_on_a_model_without_batchnorm():
    with pytest.raises(IncompatibleMethodError, match="no BatchNorm"):
        Slimming().check(nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU()), "classification")


def test_taylor_importance_is_squared_sum_of_grad_times_weight_averaged_over_batches():
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]]))
    net = nn.Sequential(lin)
    # loss = Σ y, so ∂L/∂W[o, i] = x_i and Σ_i g·w = Σ_i W[o, i] x_i = y_o:
    #   x = (1, 1): y = (3, −0.5, 3)  → (9, 0.25, 9)
    #   x = (2, 0): y = (2, −2, 0)    → (4, 4, 0)          mean: (6.5, 2.125, 4.5)
    xs = torch.tensor([[1.0, 1.0], [2.0, 0.0], [100.0, 100.0]])  # the third batch is not read
    method = Taylor(batches=2, variant="weight")
    method.prepare(make_ctx(net, xs))
    torch.testing.assert_close(method.score(view_of("0", lin)), torch.tensor([6.5, 2.125, 4.5]))
    torch.testing.assert_close(
        method.score(view_of("0", lin, torch.tensor([2]))), torch.tensor([4.5])
    )
    assert lin.weight.grad is None  # gradients are left cleared


def test_taylor_indexes_transposed_conv_importance_by_output_channel():
    # one bias-free layer with loss Σ output: Σ_{in,k} g·w of output channel c = Σ out[:, c]
    torch.manual_seed(0)
    convt = nn.ConvTranspose2d(2, 3, 2, stride=2, bias=False)
    net = nn.Sequential(convt)
    xs = torch.randn(2, 2, 3, 3)
    method = Taylor(batches=2, variant="weight")
    method.prepare(make_ctx(net, xs))
    with torch.no_grad():
        expected = torch.stack([convt(x[None]).sum(dim=(0, 2, 3)) ** 2 for x in xs]).mean(0)
    torch.testing.assert_close(method.score(view_of("0", convt)), expected)


def test_taylor_bn_variant_scores_gamma_and_beta_gates():
    # train-mode BN, loss Σ y: ∂L/∂γ = Σ x̂ = 0 and ∂L/∂β = N (elements per channel), so the
    # gate importance is (β·N)² — here N = 1 sample × 2×2 pixels = 4
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 1.0, -1.0]))
        bn.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    net = nn.Sequential(bn)
    xs = torch.randn(2, 3, 2, 2)
    method = Taylor(batches=2, variant="bn")
    method.prepare(make_ctx(net, xs))
    torch.testing.assert_close(
        method.score(view_of("0", bn)), torch.tensor([16.0, 64.0, 4.0]), atol=1e-4, rtol=1e-4
    )


def test_taylor_restores_mode_and_batchnorm_statistics():
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3)).eval()
    stats = {n: b.clone() for n, b in net.named_buffers()}
    Taylor(batches=2).prepare(make_ctx(net, torch.randn(2, 1, 4, 4) * 5 + 3))
    assert not net.training
    for n, b in net.named_buffers():
        assert torch.equal(b, stats[n]), n
    assert all(p.grad is None for p in net.parameters())


def test_taylor_rejects_unknown_variant():
    with pytest.raises(ConfigError, match="known: auto, bn, weight_sq, weight"):
        Taylor(variant="gate")


@pytest.mark.parametrize(
    "name", ["random", "l1", "l2", "fpgm", "slimming", "taylor", "sfp", "depgraph"]
)
def test_config_builds_the_registered_method(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg.name == name
    # as the pipeline builds it: meta keys dropped, per-model defaults resolved (slimming's λ)
    args = method_arguments(cfg, model="resnet20", task="classification")
    assert not set(args) & set(METHOD_META_KEYS)
    method = METHODS.get(cfg.name)(**args)
    for k, v in args.items():
        assert getattr(method, k) == v
    for spec in cfg.search_space.values():
        assert spec.type in ("float", "int", "categorical")
