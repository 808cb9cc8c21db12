"""Flows: the coupling layer's log-determinant against the log-determinant of the autograd
Jacobian (dimensions 8..1024), the LU-parametrised 1x1 convolution's log-determinant against the
full matrix's (C = 16..1024), and our coupling layer and LU 1x1 convolution against normflows'
(same inputs, same weights: properties/test_flows.py checks that the outputs agree)."""

import functools

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


# ------------------------------------------------------------------------------ normflows (peer)

def _peer_pair(batch, channels, size):
    """Our coupling and LU 1x1 conv and normflows' with the same weights, and an input."""
    from properties.test_flows import normflows_conv1x1, normflows_coupling
    torch.manual_seed(0)
    coupling = flows.AffineCoupling(channels, hidden=64, image=True)
    with torch.no_grad():
        for p in coupling.parameters():
            p.add_(0.05 * torch.randn_like(p))
    conv = flows.Invertible1x1ConvLU(channels, generator=torch.Generator().manual_seed(1))
    x = torch.randn(batch, channels, size, size)
    return coupling, normflows_coupling(coupling), conv, normflows_conv1x1(conv), x


@functools.lru_cache(maxsize=None)
def _peers(quick):
    return _peer_pair(16, 16, 16) if quick else _peer_pair(64, 32, 32)


@torch.no_grad()
def ours_coupling(layer, x):
    return layer(x)


@torch.no_grad()
def peer_coupling(peer, x):
    half = x.shape[1] // 2
    # normflows takes the halves as a list and transforms the second: give it (x^B, x^A) and
    # concatenate its output back as ours does.
    (xb, ya), logdet = peer([x[:, half:], x[:, :half]])
    return torch.cat([ya, xb], 1), logdet


def test_coupling_normflows(measure, quick):
    _, peer, _, _, x = _peers(quick)
    measure(peer_coupling, peer, x, group="flows.coupling-normflows", role="reference")


def test_coupling_ours_vs_normflows(measure, quick):
    layer, _, _, _, x = _peers(quick)
    measure(ours_coupling, layer, x, group="flows.coupling-normflows")


@torch.no_grad()
def ours_conv(layer, x):
    return layer(x)


@torch.no_grad()
def peer_conv(peer, x):
    return peer.inverse(x)      # normflows' inverse is the data -> latent direction, our forward


def test_conv1x1_lu_normflows(measure, quick):
    _, _, _, peer, x = _peers(quick)
    measure(peer_conv, peer, x, group="flows.conv1x1-lu-normflows", role="reference")


def test_conv1x1_lu_ours_vs_normflows(measure, quick):
    _, _, conv, _, x = _peers(quick)
    measure(ours_conv, conv, x, group="flows.conv1x1-lu-normflows")
