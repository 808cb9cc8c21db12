"""Flows: the coupling layer's log-determinant against the log-determinant of the autograd
Jacobian (dimensions 8..1024), the LU-parametrised 1x1 convolution's log-determinant against the
full matrix's (C = 16..1024), and a triangular against a general determinant."""

import pytest
import torch

from impl import flows

QUICK_DIMS, DIMS = [8, 32, 128], [8, 32, 128, 512, 1024]
QUICK_CHANNELS, CHANNELS = [16, 64, 256], [16, 64, 256, 1024]


def _coupling(n):
    torch.manual_seed(n)
    layer = flows.AffineCoupling(n, hidden=64)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer, torch.randn(1, n)


@torch.no_grad()
def coupling_logdet(layer, x):
    return layer(x)[1]


def jacobian_logdet(layer, x):
    jac = torch.func.jacrev(lambda v: layer(v[None])[0][0])(x[0])
    return torch.linalg.slogdet(jac).logabsdet


@pytest.mark.parametrize("n", DIMS)
def test_coupling_logdet_autograd_jacobian(measure, quick, n):
    if quick and n not in QUICK_DIMS:
        pytest.skip("quick mode: smaller sizes")
    measure(jacobian_logdet, *_coupling(n), group=f"flows.coupling-logdet-{n}",
            role="reference", size=n, sweep="flows.coupling-logdet")


@pytest.mark.parametrize("n", DIMS)
def test_coupling_logdet_triangular(measure, quick, n):
    if quick and n not in QUICK_DIMS:
        pytest.skip("quick mode: smaller sizes")
    measure(coupling_logdet, *_coupling(n), group=f"flows.coupling-logdet-{n}",
            role="kernel", size=n, sweep="flows.coupling-logdet")


def _conv_layers(c):
    g = torch.Generator().manual_seed(c)
    return flows.Invertible1x1Conv(c, generator=g), flows.Invertible1x1ConvLU(c, generator=g)


@torch.no_grad()
def full_logdet(layer, hw):
    return hw * torch.linalg.slogdet(layer.weight).logabsdet


@torch.no_grad()
def lu_logdet(layer, hw):
    return hw * layer.log_abs_s.sum()


@pytest.mark.parametrize("c", CHANNELS)
def test_conv1x1_logdet_full(measure, quick, c):
    if quick and c not in QUICK_CHANNELS:
        pytest.skip("quick mode: smaller sizes")
    measure(full_logdet, _conv_layers(c)[0], 64, group=f"flows.conv1x1-logdet-{c}",
            role="reference", size=c, sweep="flows.conv1x1-logdet")


@pytest.mark.parametrize("c", CHANNELS)
def test_conv1x1_logdet_lu(measure, quick, c):
    if quick and c not in QUICK_CHANNELS:
        pytest.skip("quick mode: smaller sizes")
    measure(lu_logdet, _conv_layers(c)[1], 64, group=f"flows.conv1x1-logdet-{c}",
            role="kernel", size=c, sweep="flows.conv1x1-logdet")
