"""One optimizer step of impl.gd against the torch.optim equivalent on a 10-million-parameter model
(two 2500 x 2000 weight tensors), fixed gradients."""

import pytest
import torch

from impl import gd

SHAPES = [(2500, 2000), (2500, 2000)]  # 10,000,000 parameters


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in SHAPES]


@pytest.fixture(scope="module")
def grads():
    return [g * 1e-3 for g in _params(1)]


TORCH = {
    "sgd": (torch.optim.SGD, dict(lr=0.01)),
    "momentum": (torch.optim.SGD, dict(lr=0.01, momentum=0.9)),
    "nesterov": (torch.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.01, eps=1e-10)),
    "rmsprop": (torch.optim.RMSprop, dict(lr=0.01, alpha=0.99, eps=1e-8)),
    "adam": (torch.optim.Adam, dict(lr=0.01)),
}


@pytest.mark.parametrize("name", list(TORCH))
def test_step_torch(measure, grads, name):
    ps = [p.requires_grad_(True) for p in _params(0)]
    for p, g in zip(ps, grads):
        p.grad = g
    cls, kw = TORCH[name]
    opt = cls(ps, **kw)
    measure(opt.step, group=f"gd.{name}-step", role="reference")


@pytest.mark.parametrize("name", list(TORCH))
def test_step_notes(measure, grads, name):
    ps = _params(0)
    state = [[torch.zeros_like(p) for p in ps] for _ in range(2)]
    t = [0]

    def adam():
        t[0] += 1
        gd.adam_step(ps, grads, state[0], state[1], t[0], lr=0.01)

    step = {
        "sgd": lambda: gd.sgd_step(ps, grads, lr=0.01),
        "momentum": lambda: gd.momentum_step(ps, grads, state[0], lr=0.01, alpha=0.9),
        "nesterov": lambda: gd.nesterov_step(ps, state[0], lambda _: grads, lr=0.01, alpha=0.9),
        "adagrad": lambda: gd.adagrad_step(ps, grads, state[0], lr=0.01, delta=1e-10),
        "rmsprop": lambda: gd.rmsprop_step(ps, grads, state[0], lr=0.01, rho=0.99, delta=1e-8),
        "adam": adam,
    }[name]
    measure(step, group=f"gd.{name}-step")
