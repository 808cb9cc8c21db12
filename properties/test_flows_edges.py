"""Edge cases and bad inputs of impl/flows.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/flows.py``: an input
check that names the wrong argument (every message is matched from its start) or lets a boundary
value through, and results changed on valid input. Expected values come from the definitions,
SciPy, ``torch.func`` Jacobians or brute-force loops.
"""

import math

import pytest
import scipy.stats
import torch

from impl import flows

F64 = torch.float64


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


def _jac_logdet(fn, x):
    """log|det d fn(x_b)/d x_b| per sample by brute force (the full Jacobian of the flattened map)."""
    out = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        J = torch.autograd.functional.jacobian(lambda v: fn(v.reshape(xb.shape)).reshape(-1), xb.reshape(-1))
        out.append(torch.linalg.slogdet(J).logabsdet)
    return torch.stack(out)


# ---- change of variables -----------------------------------------------------------------------

def test_standard_normal_log_prob():
    _raises(TypeError, r"^z: expected a torch.Tensor", flows.standard_normal_log_prob, [0.0])
    _raises(ValueError, r"^z: expected a batch axis", flows.standard_normal_log_prob, torch.tensor(0.0))
    z = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = torch.from_numpy(scipy.stats.norm.logpdf(z.numpy()).reshape(3, -1).sum(1))
    torch.testing.assert_close(flows.standard_normal_log_prob(z), ref)
    torch.testing.assert_close(flows.standard_normal_log_prob(z[:, 0, 0]),
                               torch.from_numpy(scipy.stats.norm.logpdf(z[:, 0, 0].numpy())))


def test_log_density_forms():
    A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=F64)
    f = lambda z: A @ z  # noqa: E731  x = A z
    f_inv = lambda x: torch.linalg.solve(A, x)  # noqa: E731
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = z @ A.T
    ref = flows.standard_normal_log_prob(z) - math.log(6.0)
    torch.testing.assert_close(flows.log_density_inverse_form(f_inv, x, flows.standard_normal_log_prob), ref)
    torch.testing.assert_close(flows.log_density_forward_form(f, z, flows.standard_normal_log_prob), ref)
    lp = flows.standard_normal_log_prob
    _raises(ValueError, r"^x: expected 2 dimensions", flows.log_density_inverse_form, f_inv, x[0], lp)
    _raises(TypeError, r"^f_inv: expected a callable", flows.log_density_inverse_form, None, x, lp)
    _raises(TypeError, r"^log_pz: expected a callable", flows.log_density_inverse_form, f_inv, x, None)
    _raises(ValueError, r"^z: expected 2 dimensions", flows.log_density_forward_form, f, z[0], lp)
    _raises(TypeError, r"^f: expected a callable", flows.log_density_forward_form, None, z, lp)
    _raises(TypeError, r"^log_pz: expected a callable", flows.log_density_forward_form, f, z, None)


# ---- squeeze -----------------------------------------------------------------------------------

def test_squeeze_against_a_loop():
    x = torch.arange(2 * 3 * 4 * 6, dtype=F64).reshape(2, 3, 4, 6)
    y = flows.squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    for b in range(2):
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    for h in range(2):
                        for w in range(3):
                            assert y[b, 4 * c + 2 * i + j, h, w] == x[b, c, 2 * h + i, 2 * w + j]
    torch.testing.assert_close(flows.unsqueeze(y), x)
    assert flows.squeeze(torch.zeros(1, 1, 2, 2, dtype=torch.long)).dtype == torch.long  # any dtype
    _raises(TypeError, r"^x: expected a torch.Tensor", flows.squeeze, x.tolist())
    _raises(ValueError, r"^x: expected 4 dimensions", flows.squeeze, x[0])
    _raises(ValueError, r"^x: height and width must be even", flows.squeeze, x[:, :, :3])
    _raises(ValueError, r"^x: height and width must be even", flows.squeeze, x[:, :, :, :5])
    _raises(TypeError, r"^y: expected a torch.Tensor", flows.unsqueeze, y.tolist())
    _raises(ValueError, r"^y: expected 4 dimensions", flows.unsqueeze, y[0])
    _raises(ValueError, r"^y: channels must be a multiple of 4", flows.unsqueeze, y[:, :6])


# ---- ActNorm -----------------------------------------------------------------------------------

def test_actnorm_initialisation_and_logdet():
    _raises(ValueError, r"^channels: must be >= 1", flows.ActNorm, 0)
    _raises(ValueError, r"^eps: must be > 0", flows.ActNorm, 2, 0.0)
    flows.ActNorm(1)
    g = torch.Generator().manual_seed(2)
    x = 3 + 2 * torch.randn(5, 2, 3, 4, generator=g, dtype=F64)
    layer = flows.ActNorm(2).double()
    assert layer.eps == 1e-6
    y, ld = layer(x)
    # the first batch comes out with zero mean and unit (biased) variance per channel
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(2, dtype=F64), atol=1e-5, rtol=0)
    torch.testing.assert_close(ld, _jac_logdet(lambda v: layer(v)[0], x))
    assert ld.shape == (5,)
    torch.testing.assert_close(layer.inverse(y), x)
    # a second call does not re-initialise
    y2, _ = layer(x + 1)
    torch.testing.assert_close(y2, y + layer.scale.view(1, -1, 1, 1))
    _raises(ValueError, r"^x: expected 2 channels on axis 1", layer, x[:, :1])
    _raises(ValueError, r"^x: expected 2 or 4 dimensions", layer, x[:, :, 0])
    _raises(ValueError, r"^y: expected 2 channels on axis 1", layer.inverse, x[:, :1])
    # vectors: log|det| = sum log s (no spatial factor)
    v = flows.ActNorm(3).double()
    xv = torch.randn(6, 3, generator=g, dtype=F64)
    _, ldv = v(xv)
    torch.testing.assert_close(ldv, _jac_logdet(lambda u: v(u)[0], xv))


def test_actnorm_state_dict_roundtrip():
    a = flows.ActNorm(2).double()
    a(torch.randn(4, 2, dtype=F64))
    b = flows.ActNorm(2).double()
    b.load_state_dict(a.state_dict())
    assert b.initialized is True
    c = flows.ActNorm(2).double()
    c.load_state_dict(flows.ActNorm(2).double().state_dict())
    assert c.initialized is False


# ---- invertible 1x1 convolutions ---------------------------------------------------------------

def test_random_rotation():
    _raises(ValueError, r"^channels: must be >= 1", flows.random_rotation, 0)
    _raises(TypeError, r"^generator: expected a torch.Generator", flows.random_rotation, 2, generator=1)
    for c in (1, 2, 5):
        q = flows.random_rotation(c, generator=torch.Generator().manual_seed(c), dtype=F64)
        assert q.dtype == F64 and q.shape == (c, c)
        torch.testing.assert_close(q.T @ q, torch.eye(c, dtype=F64))
        torch.testing.assert_close(torch.linalg.det(q), torch.tensor(1.0, dtype=F64))
    assert flows.random_rotation(3).dtype == torch.float32
    a = flows.random_rotation(3, generator=torch.Generator().manual_seed(7))
    b = flows.random_rotation(3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)


def test_conv1x1_against_conv2d_and_checks():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=F64)
    w = torch.randn(3, 3, generator=g, dtype=F64)
    ref = torch.nn.functional.conv2d(x, w[:, :, None, None])
    torch.testing.assert_close(flows.conv1x1(x, w), ref)
    torch.testing.assert_close(flows.conv1x1_reference(x, w), ref)
    torch.testing.assert_close(flows.conv1x1(x[:, :, 0, 0], w), x[:, :, 0, 0] @ w.T)
    _raises(ValueError, r"^x: expected 2 or 4 dimensions", flows.conv1x1, x[0], w)
    _raises(ValueError, r"^weight: expected shape \(3, 3\)", flows.conv1x1, x, w[:2])
    _raises(TypeError, r"^weight: dtype torch.float32 differs from x's", flows.conv1x1, x, w.float())
    _raises(ValueError, r"^x: expected 4 dimensions", flows.conv1x1_reference, x[:, :, 0], w)
    _raises(ValueError, r"^weight: expected shape \(3, 3\)", flows.conv1x1_reference, x, w[:, :2])


@pytest.mark.parametrize("cls", [flows.Invertible1x1Conv, flows.Invertible1x1ConvLU])
def test_invertible_conv_logdet(cls):
    g = torch.Generator().manual_seed(4)
    layer = cls(3, generator=torch.Generator().manual_seed(5)).double()
    with torch.no_grad():  # move off the rotation, so that log|det W| != 0
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    for x in (torch.randn(2, 3, 2, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)):
        y, ld = layer(x)
        assert ld.shape == (x.shape[0],)
        torch.testing.assert_close(ld, _jac_logdet(lambda v: layer(v)[0], x))
        torch.testing.assert_close(layer.inverse(y), x)
    _raises(ValueError, r"^x: expected 3 channels on axis 1", layer, torch.zeros(2, 2, dtype=F64))
    _raises(ValueError, r"^y: expected 3 channels on axis 1", layer.inverse, torch.zeros(2, 2, dtype=F64))


def test_lu_factors():
    _raises(ValueError, r"^channels: must be >= 1", flows.Invertible1x1ConvLU, 0)
    layer = flows.Invertible1x1ConvLU(4, generator=torch.Generator().manual_seed(6)).double()
    with torch.no_grad():
        layer.lower.add_(1.0)
        layer.upper.add_(1.0)
    P, L, U, s = layer.factors()
    torch.testing.assert_close(torch.diagonal(L), torch.ones(4, dtype=F64))
    assert bool((torch.triu(L, 1) == 0).all()) and bool((torch.tril(U) == 0).all())
    torch.testing.assert_close(layer.weight(), P @ L @ (U + torch.diag(s)))
    torch.testing.assert_close(torch.linalg.slogdet(layer.weight()).logabsdet, s.abs().log().sum())
    # at initialisation W is the rotation itself
    fresh = flows.Invertible1x1ConvLU(4, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(fresh.weight().double(),
                               flows.random_rotation(4, generator=torch.Generator().manual_seed(6), dtype=F64),
                               atol=1e-6, rtol=0)


# ---- coupling ----------------------------------------------------------------------------------

def test_affine_h_checks_and_values():
    g = torch.Generator().manual_seed(8)
    xa, s, t = (torch.randn(3, 2, generator=g, dtype=F64) for _ in range(3))
    torch.testing.assert_close(flows.affine_h(xa, s, t), xa * s.exp() + t)
    torch.testing.assert_close(flows.affine_h_inverse(flows.affine_h(xa, s, t), s, t), xa)
    for fn, first in [(flows.affine_h, "xa"), (flows.affine_h_inverse, "ya")]:
        _raises(TypeError, rf"^{first}: expected a torch.Tensor", fn, xa.tolist(), s, t)
        _raises(TypeError, r"^s: expected a torch.Tensor", fn, xa, s.tolist(), t)
        _raises(TypeError, r"^t: expected a torch.Tensor", fn, xa, s, t.tolist())
        _raises(TypeError, rf"^s: dtype torch.float32 differs from {first}'s", fn, xa, s.float(), t)
        _raises(TypeError, rf"^t: dtype torch.float32 differs from {first}'s", fn, xa, s, t.float())
        _raises(ValueError, rf"^s: shape \(1, 2\) differs from {first}'s", fn, xa, s[:1], t)
        _raises(ValueError, rf"^t: shape \(3, 1\) differs from {first}'s", fn, xa, s, t[:, :1])


def _randomise(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def test_coupling_constructor_checks():
    _raises(ValueError, r"^channels: must be >= 2", flows.AffineCoupling, 1)
    _raises(ValueError, r"^hidden: must be >= 1", flows.AffineCoupling, 2, hidden=0)
    _raises(ValueError, r"^cond_channels: must be >= 0", flows.AffineCoupling, 2, cond_channels=-1)
    _raises(ValueError, r"^max_log_scale: must be > 0", flows.AffineCoupling, 2, max_log_scale=0.0)
    c = flows.AffineCoupling(5, hidden=1)
    assert (c.ca, c.cb) == (2, 3)
    # starts as the identity (zero last layer)
    x = torch.randn(3, 5)
    y, ld = c(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ld, torch.zeros(3))


@pytest.mark.parametrize("image", [False, True])
@pytest.mark.parametrize("additive", [False, True])
def test_coupling_logdet_and_inverse(image, additive):
    c = _randomise(flows.AffineCoupling(5, hidden=4, image=image, additive=additive, max_log_scale=0.5), 9).double()
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 5, 2, 3, generator=g, dtype=F64) if image else torch.randn(3, 5, generator=g, dtype=F64)
    y, ld = c(x)
    torch.testing.assert_close(y[:, 2:], x[:, 2:])  # x^B passes through
    torch.testing.assert_close(ld, _jac_logdet(lambda v: c(v)[0], x))
    torch.testing.assert_close(c.inverse(y), x)
    s, t = c.beta_st(x[:, 2:])
    assert bool((s.abs() <= 0.5).all())  # the soft clamp bounds |s| by max_log_scale
    raw = c.beta(x[:, 2:])
    if additive:
        torch.testing.assert_close(s, torch.zeros_like(t))
        torch.testing.assert_close(t, raw)
    else:
        torch.testing.assert_close(s, 0.5 * torch.tanh(raw[:, :2] / 0.5))
        torch.testing.assert_close(t, raw[:, 2:])
    _raises(ValueError, r"^x: expected 5 channels on axis 1", c, x[:, :4])
    _raises(ValueError, r"^y: expected 5 channels on axis 1", c.inverse, x[:, :4])
    _raises(ValueError, r"^cond: this coupling is unconditional", c, x, x)


def test_conditional_coupling_checks():
    c = _randomise(flows.AffineCoupling(2, hidden=3, cond_channels=2), 11).double()
    x, w = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    y, ld = c(x, w)
    for b in range(4):  # the log-determinant of x -> y at fixed cond, sample by sample
        torch.testing.assert_close(ld[b:b + 1], _jac_logdet(lambda v: c(v, w[b:b + 1])[0], x[b:b + 1]))
    torch.testing.assert_close(c.inverse(y, w), x)
    _raises(ValueError, r"^cond: this coupling is conditional and needs cond", c, x)
    _raises(TypeError, r"^cond: expected a torch.Tensor", c, x, w.tolist())
    _raises(TypeError, r"^cond: dtype torch.float32 differs from x's", c, x, w.float())
    _raises(ValueError, r"^cond: expected shape \(4, 2, \)", c, x, w[:3])
    _raises(ValueError, r"^cond: expected shape \(4, 2, \)", c, x, w[:, :1])
    ci = flows.AffineCoupling(2, hidden=3, cond_channels=1, image=True).double()
    xi = torch.zeros(1, 2, 2, 2, dtype=F64)
    _raises(ValueError, r"^cond: expected shape \(1, 1, 2, 2\)", ci, xi, torch.zeros(1, 1, 2, 3, dtype=F64))


def test_reverse_layer():
    r = flows.Reverse()
    x = torch.arange(6, dtype=F64).reshape(2, 3)
    y, ld = r(x)
    torch.testing.assert_close(y, x[:, [2, 1, 0]])
    torch.testing.assert_close(ld, torch.zeros(2, dtype=F64))
    torch.testing.assert_close(r.inverse(y), x)
    _raises(ValueError, r"^x: expected 2 or 4 dimensions", r, x[0])
    _raises(ValueError, r"^y: expected 2 or 4 dimensions", r.inverse, x[0])


# ---- SRFlow's injector -------------------------------------------------------------------------

def test_affine_injector():
    _raises(ValueError, r"^channels: must be >= 1", flows.AffineInjector, 0, 1)
    _raises(ValueError, r"^cond_channels: must be >= 1", flows.AffineInjector, 1, 0)
    _raises(ValueError, r"^hidden: must be >= 1", flows.AffineInjector, 1, 1, 0)
    inj = _randomise(flows.AffineInjector(2, 3, hidden=4), 12).double()
    g = torch.Generator().manual_seed(13)
    h, u = torch.randn(2, 2, 3, 3, generator=g, dtype=F64), torch.randn(2, 3, 3, 3, generator=g, dtype=F64)
    y, ld = inj(h, u)
    for b in range(2):
        torch.testing.assert_close(ld[b:b + 1], _jac_logdet(lambda v: inj(v, u[b:b + 1])[0], h[b:b + 1]))
    out = inj.beta(u)
    s = 3.0 * torch.tanh(out[:, :2] / 3.0)
    torch.testing.assert_close(y, s.exp() * h + out[:, 2:])
    torch.testing.assert_close(ld, s.reshape(2, -1).sum(1))
    torch.testing.assert_close(inj.inverse(y, u), h)
    _raises(ValueError, r"^h: expected 4 dimensions", inj, h[0], u)
    _raises(ValueError, r"^u: expected 4 dimensions", inj, h, u[0])
    _raises(TypeError, r"^u: dtype torch.float32 differs from h's", inj, h, u.float())
    _raises(ValueError, r"^h: expected 2 channels", inj, h[:, :1], u)
    _raises(ValueError, r"^u: expected shape \(2, 3, 3, 3\)", inj, h, u[:, :2])
    _raises(ValueError, r"^u: expected shape \(2, 3, 3, 3\)", inj, h, u[:1])
    _raises(ValueError, r"^u: expected shape \(2, 3, 3, 3\)", inj, h, u[:, :, :2])
    # the batch size is named from h's axis 0 (here 1, unlike its 2 channels)
    _raises(ValueError, r"^u: expected shape \(1, 3, 3, 3\)", inj, h[:1], u[:1, :2])


# ---- stacking and the models -------------------------------------------------------------------

def test_flow_forward_inverse_log_prob():
    layers = [_randomise(flows.AffineCoupling(3, hidden=4), 14).double(), flows.Reverse(),
              _randomise(flows.AffineCoupling(3, hidden=4), 15).double()]
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(16), dtype=F64)
    z, ld = flows.flow_forward(layers, x)
    torch.testing.assert_close(ld, _jac_logdet(lambda v: flows.flow_forward(layers, v)[0], x))
    torch.testing.assert_close(flows.flow_inverse(layers, z), x)
    torch.testing.assert_close(flows.flow_log_prob(layers, x), flows.standard_normal_log_prob(z) + ld)
    torch.testing.assert_close(flows.flow_log_prob(layers, x, lambda v: v.sum(1)), z.sum(1) + ld)
    _raises(ValueError, r"^x: expected 2 or 4 dimensions", flows.flow_forward, layers, x[0])
    _raises(TypeError, r"^layers: expected invertible layers", flows.flow_forward, [torch.nn.Identity()], x)
    _raises(ValueError, r"^z: expected 2 or 4 dimensions", flows.flow_inverse, layers, x[0])
    _raises(TypeError, r"^log_pz: expected a callable", flows.flow_log_prob, layers, x, None)


def test_flow_model_and_sampling():
    _raises(ValueError, r"^steps: must be >= 1", flows.Flow, 2, 0)
    torch.manual_seed(0)
    m = flows.Flow(2, steps=2, hidden=4, generator=torch.Generator().manual_seed(1))
    for mod in m.modules():
        if isinstance(mod, flows.AffineCoupling):
            _randomise(mod, 17)
    m = m.double()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(18), dtype=F64)
    z, ld = m(x)
    torch.testing.assert_close(m.log_prob(x), flows.standard_normal_log_prob(z) + ld)
    torch.testing.assert_close(ld, _jac_logdet(lambda v: m(v)[0], x))
    torch.testing.assert_close(m.inverse(z), x)
    _raises(ValueError, r"^n: must be >= 1", m.sample, 0)
    _raises(TypeError, r"^generator: expected a torch.Generator", m.sample, 2, generator=3)
    s = m.sample(3, generator=torch.Generator().manual_seed(19))
    zz = torch.randn(3, 2, generator=torch.Generator().manual_seed(19), dtype=F64)
    assert s.shape == (3, 2) and s.dtype == F64
    torch.testing.assert_close(s, m.inverse(zz))


def test_glow_checks_and_shapes():
    _raises(ValueError, r"^channels: must be >= 1", flows.Glow, 0)
    _raises(ValueError, r"^levels: must be >= 1", flows.Glow, 1, 0)
    _raises(ValueError, r"^steps: must be >= 1", flows.Glow, 1, 1, 0)
    torch.manual_seed(0)
    glow = flows.Glow(1, levels=2, steps=1, hidden=4, generator=torch.Generator().manual_seed(2)).double()
    assert glow.latent_shapes(8, 4) == [(2, 4, 2), (8, 2, 1)]
    assert flows.Glow(2, levels=3, steps=1, hidden=2).latent_shapes(8, 8) == [(4, 4, 4), (8, 2, 2), (32, 1, 1)]
    x = torch.randn(2, 1, 8, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    zs, ld = glow(x)
    assert [tuple(z.shape[1:]) for z in zs] == glow.latent_shapes(8, 4)
    torch.testing.assert_close(glow.inverse(zs), x)
    torch.testing.assert_close(glow.log_prob(x), sum(flows.standard_normal_log_prob(z) for z in zs) + ld)
    _raises(ValueError, r"^x: expected 4 dimensions", glow, x[0])
    _raises(ValueError, r"^x: expected \(1 channels, H and W divisible by 4\)", glow, x[:, :, :6])
    _raises(ValueError, r"^x: expected \(1 channels, H and W divisible by 4\)", glow, x[:, :, :, :2])
    _raises(ValueError, r"^x: expected \(1 channels", glow, torch.zeros(1, 2, 4, 4, dtype=F64))
    _raises(ValueError, r"^zs: expected a list of 2 latents", glow.inverse, zs[:1])
    _raises(ValueError, r"^zs: expected a list of 2 latents", glow.inverse, zs[0])
    _raises(ValueError, r"^n: must be >= 1", glow.sample, 0, 4, 4)
    _raises(ValueError, r"^height: must be >= 1", glow.sample, 1, 0, 4)
    _raises(ValueError, r"^width: must be >= 1", glow.sample, 1, 4, 0)
    _raises(ValueError, r"^height: must be divisible by 4, got 6", glow.sample, 1, 6, 4)
    _raises(ValueError, r"^width: must be divisible by 4, got 2", glow.sample, 1, 4, 2)
    _raises(TypeError, r"^generator: expected a torch.Generator", glow.sample, 1, 4, 4, generator=1)
    s = glow.sample(2, 8, 4, generator=torch.Generator().manual_seed(4))
    assert s.shape == (2, 1, 8, 4) and s.dtype == F64


def test_cflow():
    torch.manual_seed(0)
    cf = flows.CFlow(2, 3, steps=1, hidden=4, generator=torch.Generator().manual_seed(5)).double()
    g = torch.Generator().manual_seed(6)
    xa, xb, xa2 = (torch.randn(4, c, generator=g, dtype=F64) for c in (2, 3, 2))
    za, lda = cf.g(xa)
    zb, ldb = cf.f(xb, za)
    torch.testing.assert_close(cf.encode_a(xa), za)
    torch.testing.assert_close(cf.encode_b(xb, xa), zb)
    torch.testing.assert_close(cf.decode_b(zb, za), xb)
    torch.testing.assert_close(cf.log_prob(xa, xb), flows.standard_normal_log_prob(za) + lda
                               + flows.standard_normal_log_prob(zb) + ldb)
    torch.testing.assert_close(cf.transfer(xb, xa, xa2), cf.f.inverse(zb, cf.g(xa2)[0]))
    _raises(ValueError, r"^x_b: expected 2 dimensions", cf.encode_b, xb[0], xa)
    _raises(ValueError, r"^z_b: expected 2 dimensions", cf.decode_b, zb[0], za)


def test_train_flow_checks_and_result():
    torch.manual_seed(0)
    m = flows.Flow(2, steps=1, hidden=4).double()
    data = torch.randn(8, 2, dtype=F64)
    _raises(TypeError, r"^data: expected a torch.Tensor", flows.train_flow, m, data.tolist())
    _raises(ValueError, r"^data: expected a batch of at least one sample", flows.train_flow, m, data[:0])
    _raises(ValueError, r"^data: expected a batch", flows.train_flow, m, torch.tensor(1.0, dtype=F64))
    _raises(ValueError, r"^steps: must be >= 1", flows.train_flow, m, data, steps=0)
    _raises(ValueError, r"^batch: must be >= 1", flows.train_flow, m, data, batch=0)
    _raises(ValueError, r"^lr: must be > 0", flows.train_flow, m, data, lr=0.0)
    _raises(TypeError, r"^generator: expected a torch.Generator", flows.train_flow, m, data, generator=1)
    res = flows.train_flow(m, data, steps=3, batch=100, generator=torch.Generator().manual_seed(1))
    assert res.model is m and res.losses.shape == (3,)
    # batch >= N: every step sees a full-size draw; the first loss is the NLL before any update
    torch.manual_seed(0)
    m2 = flows.Flow(2, steps=1, hidden=4).double()
    idx = torch.randint(0, 8, (8,), generator=torch.Generator().manual_seed(1))
    first = -m2.log_prob(data[idx]).mean()
    res2 = flows.train_flow(m2, data, steps=1, batch=100, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(res2.losses[0], first.detach())


# ---- degenerate inputs (sweep) -----------------------------------------------------------------

def _lin():
    A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=F64)
    return (lambda z: A @ z), (lambda x: torch.linalg.solve(A, x))


def test_empty_batches_give_empty_results():
    """reshape(B, -1) is ambiguous for B = 0 (a RuntimeError); every per-sample result is (0,) instead."""
    lp = flows.standard_normal_log_prob
    assert lp(torch.zeros(0, 3, dtype=F64)).shape == (0,)
    assert lp(torch.zeros(0, 0, dtype=F64)).shape == (0,)
    f, f_inv = _lin()
    assert flows.log_density_inverse_form(f_inv, torch.zeros(0, 2, dtype=F64), lp).shape == (0,)
    assert flows.log_density_forward_form(f, torch.zeros(0, 2, dtype=F64), lp).shape == (0,)
    for image in (False, True):
        c = flows.AffineCoupling(4, hidden=3, image=image).double()
        x = torch.zeros(0, 4, 3, 3, dtype=F64) if image else torch.zeros(0, 4, dtype=F64)
        y, ld = c(x)
        assert y.shape == x.shape and ld.shape == (0,)
    inj = flows.AffineInjector(2, 3, 4).double()
    h, ld = inj(torch.zeros(0, 2, 3, 3, dtype=F64), torch.zeros(0, 3, 3, 3, dtype=F64))
    assert h.shape == (0, 2, 3, 3) and ld.shape == (0,)
    flow = flows.Flow(2, steps=2, hidden=3, generator=torch.Generator().manual_seed(0)).double()
    flow(torch.randn(5, 2, dtype=F64))  # ActNorm initialised on a real batch
    assert flow.log_prob(torch.zeros(0, 2, dtype=F64)).shape == (0,)


def test_actnorm_refuses_to_initialise_on_no_sample():
    """The first (initialising) batch being empty set NaN scale and bias and marked the layer initialised."""
    layer = flows.ActNorm(3).double()
    _raises(ValueError, r"^x: ActNorm's data-dependent initialisation needs at least one sample", layer,
            torch.zeros(0, 3, dtype=F64))
    _raises(ValueError, r"^x: ActNorm's data-dependent", layer, torch.zeros(2, 3, 0, 4, dtype=F64))
    assert layer.initialized is False and torch.equal(layer.log_scale, torch.zeros(3, dtype=F64))
    _raises(TypeError, r"^x: expected a torch.Tensor", layer.initialize, [[1.0, 2.0, 3.0]])
    _raises(ValueError, r"^x: expected 3 channels", layer.initialize, torch.zeros(4, 5, dtype=F64))


def test_layers_name_inputs_that_do_not_match_their_parameters():
    """A float32 input to a float64 layer was silently promoted (ActNorm) or a RuntimeError inside beta's
    Linear/Conv (coupling, injector); another device a NotImplementedError or RuntimeError; the 1x1
    convolutions named their own 'weight' first, not the argument."""
    x = torch.randn(2, 4, dtype=F64)
    an = flows.ActNorm(4).double()
    _raises(TypeError, r"^x: dtype torch.float32 differs from log_scale's", an, x.float())
    _raises(ValueError, r"^x: on meta", an, x.to("meta"))
    _raises(TypeError, r"^y: dtype", an.inverse, x.float())
    for cls in (flows.Invertible1x1Conv, flows.Invertible1x1ConvLU):
        m = cls(4, generator=torch.Generator().manual_seed(0)).double()
        _raises(TypeError, r"^x: dtype torch.float32 differs from weight's", m, x.float())
        _raises(ValueError, r"^y: on meta", m.inverse, x.to("meta"))
    for image in (False, True):
        c = flows.AffineCoupling(4, hidden=3, image=image).double()
        xi = torch.randn(2, 4, 3, 3, dtype=F64) if image else x
        _raises(TypeError, r"^x: dtype torch.float32 differs from beta's", c, xi.float())
        _raises(ValueError, r"^x: on meta", c, xi.to("meta"))
        _raises(TypeError, r"^y: dtype", c.inverse, xi.float())
        _raises(ValueError, r"^xb: expected 2 channels", c.beta_st, xi[:, :1])
        _raises(TypeError, r"^xb: expected a torch.Tensor", c.beta_st, [[1.0]])
    inj = flows.AffineInjector(2, 3, 4).double()
    h, u = torch.randn(2, 2, 3, 3, dtype=F64), torch.randn(2, 3, 3, 3, dtype=F64)
    _raises(TypeError, r"^h: dtype torch.float32 differs from beta's", inj, h.float(), u.float())
    _raises(TypeError, r"^h_next: dtype", inj.inverse, h.float(), u.float())
    _raises(ValueError, r"^h_next: expected 2 channels", inj.inverse, h[:, :1], u)


def test_conditional_coupling_cond_without_channel_axis():
    """A 0-d or 1-d cond was an IndexError (its shape[1] read before any check)."""
    c = flows.AffineCoupling(4, hidden=3, cond_channels=2).double()
    x = torch.randn(2, 4, dtype=F64)
    _raises(ValueError, r"^cond: expected 2 dimensions", c, x, torch.randn(2, dtype=F64))
    _raises(ValueError, r"^cond: expected 2 dimensions", c, x, torch.tensor(1.0, dtype=F64))


def test_density_forms_check_their_callables():
    """log_pz returning (B, D) was a broadcasting RuntimeError and a scalar silently added its total to every
    sample; f / f_inv that is not (D,) -> (D,) failed inside slogdet."""
    f, f_inv = _lin()
    x = torch.randn(4, 2, dtype=F64)
    lp = flows.standard_normal_log_prob
    for bad in (lambda z: z, lambda z: lp(z).sum()):
        _raises(ValueError, r"^log_pz: expected one log-density per sample", flows.log_density_inverse_form, f_inv, x, bad)
        _raises(ValueError, r"^log_pz: expected one log-density per sample", flows.log_density_forward_form, f, x, bad)
        _raises(ValueError, r"^log_pz", flows.flow_log_prob, [flows.Reverse()], x, bad)
    _raises(ValueError, r"^f_inv: expected a map \(D,\) -> \(D,\)", flows.log_density_inverse_form, lambda v: v[:1], x, lp)
    _raises(ValueError, r"^f: expected a map \(D,\) -> \(D,\)", flows.log_density_forward_form, lambda v: v.sum(), x, lp)


def test_random_rotation_dtype_and_device_checked():
    """An integer dtype rounded the rotation's entries to 0 / +-1, a string dtype was torch's TypeError and a
    bad device a RuntimeError."""
    _raises(TypeError, r"^dtype", flows.random_rotation, 3, dtype=torch.long)
    _raises(TypeError, r"^dtype", flows.random_rotation, 3, dtype="float")
    _raises(ValueError, r"^device", flows.random_rotation, 3, device="nope")


def test_conv1x1_reference_checks_weight_against_x():
    """A float32 weight on float64 x was conv2d's RuntimeError; a weight on another device (meta) silently gave
    an uninitialised result."""
    x, w = torch.randn(2, 3, 2, 2, dtype=F64), torch.eye(3, dtype=F64)
    _raises(TypeError, r"^weight: dtype torch.float32 differs from x's", flows.conv1x1_reference, x, w.float())
    _raises(ValueError, r"^weight: on meta", flows.conv1x1_reference, x, w.to("meta"))


@pytest.mark.parametrize("cls", [flows.Invertible1x1Conv, flows.Invertible1x1ConvLU])
def test_singular_1x1_conv_inverse_names_the_weight(cls):
    """A singular W made inverse raise linalg's LinAlgError (a RuntimeError)."""
    m = cls(3, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        if cls is flows.Invertible1x1Conv:
            m.weight.zero_()
        else:
            m.log_abs_s.fill_(-1e4)  # s = exp(-1e4) = 0
    _raises(ValueError, r"^weight: is singular", m.inverse, torch.randn(2, 3, dtype=F64))


def test_flow_stacking_names_bad_layers():
    """A non-iterable was "'int' object is not iterable", a layer that does not return (y, logdet) "too many
    values to unpack", and flow_inverse through a layer without inverse an AttributeError."""
    x = torch.randn(3, 2, dtype=F64)

    class NoPair(torch.nn.Module):
        def forward(self, x):
            return x

        def inverse(self, y):
            return y

    _raises(TypeError, r"^layers: expected a sequence", flows.flow_forward, 5, x)
    _raises(TypeError, r"^layers: expected a sequence", flows.flow_inverse, 5, x)
    _raises(TypeError, r"^layers: layer 0 returned Tensor", flows.flow_forward, [NoPair()], x)
    _raises(TypeError, r"^layers: expected invertible layers", flows.flow_inverse, [lambda v: v], x)


def test_glow_checks_empty_images_latents_and_sizes():
    """H = 0 (divisible by 2^levels) was a RuntimeError of the 3x3 conv; latents of mismatched batch, dtype or
    shape were RuntimeErrors or named as an inner layer's 'y'; latent_shapes of sizes not divisible by
    2^levels silently gave (8, 0, 0), of a string a TypeError from '//'."""
    glow = flows.Glow(1, levels=2, steps=1, hidden=4, generator=torch.Generator().manual_seed(2)).double()
    _raises(ValueError, r"^x: expected a positive height and width", glow, torch.zeros(2, 1, 0, 4, dtype=F64))
    zs, _ = glow(torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64))
    _raises(ValueError, r"^zs\[1\]: expected shape \(2, 8, 1, 1\)", glow.inverse, [zs[0], zs[1][:1]])
    _raises(ValueError, r"^zs\[0\]: expected shape \(2, 2, 2, 2\)", glow.inverse, [zs[0][:, :1], zs[1]])
    _raises(TypeError, r"^zs\[0\]: dtype torch.float32 differs from the model's", glow.inverse, [z.float() for z in zs])
    _raises(TypeError, r"^zs\[0\]: expected a torch.Tensor", glow.inverse, [[1.0], zs[1]])
    _raises(ValueError, r"^height: must be divisible by 4", glow.latent_shapes, 3, 4)
    _raises(ValueError, r"^width: must be >= 1", glow.latent_shapes, 4, 0)
    _raises(TypeError, r"^height: expected an int", glow.latent_shapes, "4", 4)


def test_cflow_names_its_own_arguments():
    """Mismatches were reported by the inner flows as 'x', 'y' or 'cond'."""
    cf = flows.CFlow(2, 3, steps=1, hidden=4, generator=torch.Generator().manual_seed(5)).double()
    xa, xb = torch.randn(4, 2, dtype=F64), torch.randn(4, 3, dtype=F64)
    _raises(TypeError, r"^x_a: expected a torch.Tensor", cf.encode_a, xa.tolist())
    _raises(ValueError, r"^x_a: expected 2 channels", cf.encode_a, xb)
    _raises(ValueError, r"^x_b: batch of 4 differs from x_a's 3", cf.encode_b, xb, xa[:3])
    _raises(ValueError, r"^x_b: expected 3 channels", cf.encode_b, xa, xa)
    _raises(ValueError, r"^z_b: batch of 4 differs from z_a's 3", cf.decode_b, xb, xa[:3])
    _raises(TypeError, r"^z_a: expected a torch.Tensor", cf.decode_b, xb, xa.tolist())
    _raises(ValueError, r"^x_b: batch of 3 differs from x_a's 4", cf.log_prob, xa, xb[:3])
    _raises(ValueError, r"^x_a2: batch of 3 differs from x_a1's 4", cf.transfer, xb, xa, xa[:3])
    _raises(TypeError, r"^x_b: dtype torch.float32", cf.log_prob, xa, xb.float())


def test_train_flow_checks_model_and_data_against_it():
    """A non-module model was an AttributeError, one without parameters Adam's unnamed ValueError; data on
    another device a RuntimeError, in another dtype reported as an inner layer's 'x'."""
    m = flows.Flow(2, steps=1, hidden=4).double()
    data = torch.randn(8, 2, dtype=F64)
    _raises(TypeError, r"^model: expected an nn.Module", flows.train_flow, 3, data)
    _raises(ValueError, r"^model: has no parameters", flows.train_flow, torch.nn.Identity(), data)
    _raises(ValueError, r"^data: on meta", flows.train_flow, m, data.to("meta"))
    _raises(TypeError, r"^data: dtype torch.float32 differs from the model's", flows.train_flow, m, data.float())
