"""DHP's hypernetwork: the per-element chain, its init, the parametrization, and slicing."""

from __future__ import annotations

import math

import pytest
import torch
from dhp_helpers import NETS, build
from torch import nn
from torch.nn.utils import parametrize

from harness.structure import Plan, apply_plan, build_structure
from methods.dhp import build_search_net, generate_sliced, materialise
from methods.dhp.hyper import ConvHyper, hyper_parameter_count


def reference_chain(h: ConvHyper, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's steps 1–4 written literally in the [c, n, ...] order, for a Conv2d weight."""
    c, n = len(a), len(b)
    kh, kw = h.kernel
    b0 = h.b0.T  # stored [rows=n, cols=c]
    w1, b1 = h.w1.permute(2, 1, 0), h.b1.permute(2, 1, 0)  # [c, n, m]
    w2, b2 = h.w2.permute(3, 2, 1, 0), h.b2.permute(2, 1, 0)  # [c, n, k², m], [c, n, k²]
    z = torch.outer(a, b) + b0  # 1. [c, n]
    e = z[..., None] * w1 + b1  # 2. [c, n, m]
    o = (w2 @ e[..., None]).squeeze(-1) + b2  # 3. [c, n, k²]
    return o.reshape(c, n, kh, kw).permute(1, 0, 2, 3)  # 4. [n, c, kh, kw]


def test_chain_matches_the_papers_equations():
    g = torch.Generator().manual_seed(0)
    h = ConvHyper(5, 3, (3, 3), fan_in_channels=3, generator=g)
    with torch.no_grad():
        for p in h.parameters():
            p.add_(torch.randn(p.shape, generator=g))  # non-zero biases too
    a, b = torch.randn(3, generator=g), torch.randn(5, generator=g)
    torch.testing.assert_close(h(torch.outer(b, a)), reference_chain(h, a, b))


@pytest.mark.parametrize(("c", "k"), [(64, 3), (48, 1), (1, 5)])
def test_init_variance_is_one_over_fan_in(c, k):
    """Var(w) = E[Z²]/(c·k²); with unit latent products exactly 1/(c·k²) in expectation."""
    g = torch.Generator().manual_seed(0)
    n = 64 if c > 1 else 2048
    h = ConvHyper(n, c, (k, k), fan_in_channels=c, generator=g)
    assert h.w1.abs().max() <= math.sqrt(3) and h.w2.abs().max() <= math.sqrt(3 / (8 * c * k * k))
    assert all(int(torch.count_nonzero(b.detach())) == 0 for b in (h.b0, h.b1, h.b2))
    w = h(torch.ones(n, c))
    # w is a sum of m = 8 products of uniforms: the variance estimate's relative std is ~1.5/√N
    tol = 6 * 1.5 / math.sqrt(w.numel())
    assert float(w.detach().var()) * c * k * k == pytest.approx(1.0, rel=tol)
    # with N(0, 1) latents the variance is E[Z²]/(c·k²) given the drawn latents
    a, b = torch.randn(c, generator=g), torch.randn(n, generator=g)
    z = torch.outer(b, a)
    w = h(z)
    expected = float(z.pow(2).mean()) / (c * k * k)
    assert float(w.detach().pow(2).mean()) == pytest.approx(expected, rel=0.1)


def test_generated_shapes_for_every_conv_kind():
    """Conv2d k×k, 1×1, depthwise, grouped and ConvTranspose2d keep their weight shapes."""

    class Kinds(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c3 = nn.Conv2d(3, 8, 3, padding=1)
            self.c1 = nn.Conv2d(8, 12, 1)
            self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
            self.gr = nn.Conv2d(12, 8, 3, padding=1, groups=4)
            self.ct = nn.ConvTranspose2d(8, 6, 2, stride=2)
            self.rect = nn.Conv2d(6, 4, (1, 3), padding=(0, 1))

        def forward(self, x):
            return self.rect(self.ct(self.gr(self.dw(self.c1(self.c3(x))))))

    model = Kinds()
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if hasattr(m, "weight")}
    x = torch.randn(2, 3, 8, 8)
    structure = build_structure(model, x[:1])
    net = build_search_net(model, structure, seed=0)
    assert set(net.generators()) == set(shapes)
    for name, m in net.net.named_modules():
        if name in shapes:
            assert tuple(m.weight.shape) == shapes[name], name
            assert m.parametrizations.weight.original.numel() == 0  # no dead copy
    assert net(x).shape == (2, 4, 16, 16)
    dw = net.net.dw.parametrizations.weight[0]
    assert dw.wiring.cols == 1 and net.latents.fixed["dw:dw"].numel() == 1


def test_generated_weights_train_the_hypernetwork_and_latents():
    model = build("resnet_proj")
    x = torch.randn(4, 3, 8, 8)
    net = build_search_net(model, build_structure(model, x[:1]), seed=0)
    net(x).sum().backward()
    hyper = [p for n, p in net.named_parameters() if ".parametrizations.weight.0.hyper." in n]
    assert hyper and all(p.grad is not None for p in hyper)
    assert all(p.grad is not None for p in net.latents.parameters())
    assert all(not p.requires_grad for n, p in net.named_parameters() if n.endswith(".original"))
    # BN, the classifier and its bias stay ordinary parameters of the backbone
    assert not parametrize.is_parametrized(net.net.fc) and net.net.fc.weight.grad is not None
    weights = sum(m.weight.numel() for m in net.net.modules() if isinstance(m, nn.Conv2d))
    assert hyper_parameter_count(net) > 9 * weights  # 8+8+8k²+k²+1 per element


@pytest.mark.parametrize("name", sorted(NETS))
def test_generate_then_slice_equals_slice_then_generate(name):
    """Output channel i depends on z^l_i only, input j on z^{l-1}_j only: slicing the
    generated weight equals generating from sliced latents and hypernetwork parameters."""
    model = build(name)
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    net = build_search_net(model, structure, seed=1)
    g = torch.Generator().manual_seed(2)
    removed = {}
    for group in structure.prunable:
        r = torch.rand(group.size, generator=g) < 0.4
        r[0] = False
        removed[group.name] = r
    plan = Plan.from_removed(removed)
    full_shapes = {
        n: tuple(m.weight.shape) for n, m in net.net.named_modules() if n in net.generators()
    }
    sliced = {n: generate_sliced(net, structure, plan, n) for n in net.generators()}
    compact = dict(apply_plan(materialise(net), structure, plan).named_modules())
    assert any(tuple(w.shape) != full_shapes[n] for n, w in sliced.items())  # channels went
    for n, w in sliced.items():
        torch.testing.assert_close(compact[n].weight, w, rtol=1e-5, atol=1e-6)
