"""Normalizing flows: change of variables, coupling, squeeze, ActNorm, 1x1 convolutions, SRFlow,
C-Flow, multi-scale flow. Every log-determinant is compared with the log-determinant of the full
Jacobian from torch.func in float64; every inverse must round-trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import distributions as D
from torch import nn

from impl import flows
from spec.testing import count_flops, fit_exponent, generator, randn, seeds, tol

F64 = torch.float64


def perturb(module: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    """Random weights (the zero-initialised last layers would make every coupling the identity)."""
    g = generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))
    return module


def jac_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """Independent reference: log|det| of the full Jacobian of fn at each sample of x (B, ...)."""
    def one(v):
        return fn(v.unsqueeze(0))[0].reshape(-1)
    j = torch.func.vmap(torch.func.jacrev(one))(x)
    n = x[0].numel()
    return torch.linalg.slogdet(j.reshape(x.shape[0], n, n)).logabsdet


def full_jacobian(fn, v: torch.Tensor) -> torch.Tensor:
    """Jacobian (n, n) of fn at one sample v (shape of one sample)."""
    j = torch.func.jacrev(lambda u: fn(u.unsqueeze(0))[0].reshape(-1))(v)
    return j.reshape(v.numel(), v.numel())


# ---------------------------------------------------------------------------- change of variables

@pytest.mark.claim("flows.change-of-variables")
@given(seed=seeds())
@settings(max_examples=4)
def test_change_of_variables_both_forms_match_mvn(seed):
    # x = A z + b with z ~ N(0, I) is N(b, A A^T): torch.distributions is the reference.
    g = generator(seed)
    a = torch.randn(3, 3, generator=g, dtype=F64) + 3 * torch.eye(3, dtype=F64)
    b = torch.randn(3, generator=g, dtype=F64)
    z = torch.randn(7, 3, generator=g, dtype=F64)
    x = z @ a.T + b
    log_pz = flows.standard_normal_log_prob
    inv = flows.log_density_inverse_form(lambda v: torch.linalg.solve(a, v - b), x, log_pz)
    fwd = flows.log_density_forward_form(lambda v: a @ v + b, z, log_pz)
    ref = D.MultivariateNormal(b, covariance_matrix=a @ a.T).log_prob(x)
    torch.testing.assert_close(inv, ref, **tol(F64))
    torch.testing.assert_close(fwd, ref, **tol(F64))


@pytest.mark.claim("flows.change-of-variables")
def test_change_of_variables_nonlinear_matches_transformed_distribution(record_property):
    # x = tanh(z) elementwise: torch.distributions.TransformedDistribution is the reference.
    z = randn(50, 2, seed=1) * 0.8
    x = torch.tanh(z)
    ref = D.TransformedDistribution(D.Independent(D.Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1),
                                    [D.TanhTransform()]).log_prob(x)
    inv = flows.log_density_inverse_form(torch.atanh, x, flows.standard_normal_log_prob)
    fwd = flows.log_density_forward_form(torch.tanh, z, flows.standard_normal_log_prob)
    torch.testing.assert_close(inv, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fwd, ref, rtol=1e-9, atol=1e-9)
    record_property("evidence", f"max |inverse form - forward form| {(inv - fwd).abs().max():.1e}")


# ------------------------------------------------------------------------------------ invertibility

@pytest.mark.claim("flows.invertible-map")
@given(seed=seeds())
@settings(max_examples=3)
def test_flows_round_trip_float64(seed):
    torch.manual_seed(seed)
    flow = perturb(flows.Flow(3, steps=3, hidden=8).double(), seed)
    x = randn(6, 3, seed=seed)
    z, _ = flow(x)
    torch.testing.assert_close(flow.inverse(z), x, **tol(F64))
    torch.testing.assert_close(flow(flow.inverse(z))[0], z, **tol(F64))
    glow = perturb(flows.Glow(1, levels=2, steps=1, hidden=4).double(), seed, 0.1)
    img = randn(2, 1, 4, 4, seed=seed + 1)
    torch.testing.assert_close(glow.inverse(glow(img)[0]), img, **tol(F64))


@pytest.mark.claim("flows.invertible-map")
def test_flows_round_trip_float32_on_device(device):
    torch.manual_seed(0)
    flow = perturb(flows.Flow(4, steps=3, hidden=8), 0).to(device)
    x = randn(16, 4, seed=2, dtype=torch.float32, device=device)
    z, logdet = flow(x)
    assert z.device == x.device and logdet.shape == (16,)
    # 3 steps of exp(+-3) scalings at most and a matrix inverse: float32 round-off ~1e-6 relative,
    # amplified by the conditioning of the stacked maps; 1e-4 leaves a margin of ~10.
    torch.testing.assert_close(flow.inverse(z), x, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ determinant costs

@pytest.mark.claim("flows.determinant-cost")
@given(seed=seeds(), n=st.integers(1, 12))
@settings(max_examples=10)
def test_triangular_determinant_is_product_of_diagonal(seed, n):
    a = torch.triu(torch.randn(n, n, generator=generator(seed), dtype=F64))
    torch.testing.assert_close(torch.prod(torch.diagonal(a)), torch.linalg.det(a), rtol=1e-9, atol=1e-12)


@pytest.mark.claim("flows.determinant-cost")
def test_coupling_logdet_flops_linear_jacobian_superlinear(record_property):
    # Counted work: the coupling's log-det is a by-product of one pass of beta (its MLP has width
    # proportional to n here, so each pass is O(n^2) FLOPs), while the autograd Jacobian needs n
    # such passes plus the determinant. The ratio is what the notes' argument is about.
    sizes = [8, 16, 32, 64]
    ratio = []
    for n in sizes:
        layer = flows.AffineCoupling(n, hidden=n).double()
        x = randn(1, n, seed=n)
        f_pass = count_flops(layer, x)
        f_jac = count_flops(lambda v: torch.func.jacrev(lambda u: layer(u[None])[0][0])(v[0]), x)
        ratio.append(f_jac / f_pass)
    p = fit_exponent(sizes, ratio)
    record_property("evidence", f"FLOPs(autograd Jacobian) / FLOPs(coupling log-det) ~ n^{p:.2f} "
                                f"(ratios {[round(r, 1) for r in ratio]}), before the O(n^3) det")
    assert 0.8 < p < 1.2


# ------------------------------------------------------------------------------------- coupling

class RankOneBeta(nn.Module):
    """A deliberately non-invertible beta: everything goes through one ReLU unit."""

    def __init__(self, cin, cout):
        super().__init__()
        self.a, self.b = nn.Linear(cin, 1), nn.Linear(1, cout)

    def forward(self, v):
        return self.b(torch.relu(self.a(v)))


@pytest.mark.claim("flows.coupling-inverse")
@given(seed=seeds(), additive=st.booleans(), c=st.integers(2, 7))
@settings(max_examples=12)
def test_coupling_inverse_exact_for_any_beta(seed, additive, c):
    torch.manual_seed(seed)
    layer = flows.AffineCoupling(c, additive=additive).double()
    layer.beta = RankOneBeta(c - c // 2, (1 if additive else 2) * (c // 2)).double()
    x = randn(9, c, seed=seed) * 3
    y, _ = layer(x)
    torch.testing.assert_close(y[:, c // 2:], x[:, c // 2:], rtol=0, atol=0)  # y^B = x^B exactly
    torch.testing.assert_close(layer.inverse(y), x, **tol(F64))


@pytest.mark.claim("flows.coupling-inverse")
def test_coupling_float32_on_device(device):
    torch.manual_seed(1)
    layer = perturb(flows.AffineCoupling(6, hidden=16, image=True), 1).to(device)
    x = randn(4, 6, 4, 4, seed=3, dtype=torch.float32, device=device)
    y, logdet = layer(x)
    # float32: exp(s) with |s| <= 3 scales values by <= 20; relative round-off ~1e-7 each way.
    torch.testing.assert_close(layer.inverse(y), x, rtol=1e-5, atol=1e-5)
    ref = jac_logdet(layer.double().cpu(), x.double().cpu())
    # log-det is a sum of 48 s values, each with float32 error ~1e-7 * 3.
    torch.testing.assert_close(logdet.double().cpu(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.claim("flows.coupling-jacobian")
@given(seed=seeds())
@settings(max_examples=8)
def test_coupling_jacobian_block_form(seed):
    torch.manual_seed(seed)
    c, ca = 5, 2
    layer = perturb(flows.AffineCoupling(c, hidden=8).double(), seed)
    v = randn(c, seed=seed)
    jac = full_jacobian(lambda u: layer(u)[0], v)
    xa, xb = v[:ca], v[ca:]
    s, t = (q[0] for q in layer.beta_st(xb[None]))
    # Blocks of J = [[h', h' beta'], [0, 1]] in the order (A, B).
    torch.testing.assert_close(jac[ca:, :ca], torch.zeros(c - ca, ca, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(jac[ca:, ca:], torch.eye(c - ca, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(jac[:ca, :ca], torch.diag(s.exp()), **tol(F64))
    # Top right: (dh/dbeta) (dbeta/dx^B), chain rule with beta = (s, t).
    dh_ds, dh_dt = torch.func.jacrev(flows.affine_h, argnums=(1, 2))(xa, s, t)
    ds_dxb, dt_dxb = torch.func.jacrev(lambda u: tuple(q[0] for q in layer.beta_st(u[None])))(xb)
    torch.testing.assert_close(jac[:ca, ca:], dh_ds @ ds_dxb + dh_dt @ dt_dxb, **tol(F64))
    _, logdet = layer(v[None])
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac).logabsdet, **tol(F64))
    torch.testing.assert_close(logdet[0], s.sum(), **tol(F64))


@pytest.mark.claim("flows.coupling-jacobian")
def test_coupling_logdet_image_matches_jacobian():
    torch.manual_seed(3)
    layer = perturb(flows.AffineCoupling(4, hidden=8, image=True).double(), 3)
    x = randn(3, 4, 3, 3, seed=4)
    torch.testing.assert_close(layer(x)[1], jac_logdet(layer, x), **tol(F64))


# ------------------------------------------------------------------------------------- stacking

def _two_couplings(seed):
    torch.manual_seed(seed)
    return [perturb(flows.AffineCoupling(2, hidden=8).double(), seed, 0.8), flows.Reverse(),
            perturb(flows.AffineCoupling(2, hidden=8).double(), seed + 1, 0.8)]


@pytest.mark.claim("flows.stacking-logdet", role="refutes")
def test_stacking_logdet_at_x_is_wrong(record_property):
    layers = _two_couplings(5)
    x = randn(64, 2, seed=6) * 2
    as_written = sum(layer(x)[1] for layer in layers)          # every factor's Jacobian at x
    truth = jac_logdet(lambda v: flows.flow_forward(layers, v)[0], x)
    err = (as_written - truth).abs().max()
    record_property("evidence", f"x = {x[int((as_written - truth).abs().argmax())].tolist()}: "
                                f"sum of log-dets at x differs from the composite's by {err:.3f} nats")
    assert err > 1e-2


@pytest.mark.claim("flows.stacking-logdet", role="corrects")
@given(seed=seeds())
@settings(max_examples=8)
def test_stacking_logdet_at_intermediate_points(seed):
    layers = _two_couplings(seed % 1000)
    x = randn(16, 2, seed=seed) * 2
    z, logdet = flows.flow_forward(layers, x)
    torch.testing.assert_close(flows.flow_inverse(layers, z), x, **tol(F64))
    truth = jac_logdet(lambda v: flows.flow_forward(layers, v)[0], x)
    torch.testing.assert_close(logdet, truth, **tol(F64))
    # And the density: log p_z(h_0) + sum of the log-dets at h_k.
    ref = flows.standard_normal_log_prob(flows.flow_forward(layers, x)[0]) + truth
    torch.testing.assert_close(flows.flow_log_prob(layers, x), ref, **tol(F64))


# ------------------------------------------------------------------------------------- sampling

@pytest.mark.claim("flows.sampling")
def test_sampling_affine_flow_moments(record_property):
    torch.manual_seed(0)
    layers = [flows.ActNorm(3).double(), flows.Invertible1x1Conv(3).double()]
    perturb(layers[0], 7, 0.5)
    perturb(layers[1], 8, 0.5)
    layers[0].initialized.fill_(True)
    n = 20000
    z = randn(n, 3, seed=9)
    x = flows.flow_inverse(layers, z)
    # Independent description of the affine map f(z) = M z + c from its action on 0 and e_i.
    c = flows.flow_inverse(layers, torch.zeros(1, 3, dtype=F64))[0]
    m = (flows.flow_inverse(layers, torch.eye(3, dtype=F64)) - c).T
    cov = m @ m.T
    mean_se = torch.sqrt(torch.diagonal(cov) / n)
    cov_se = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov ** 2) / n)
    mean_err = (x.mean(0) - c).abs()
    cov_err = (torch.cov(x.T) - cov).abs()
    record_property("evidence", f"max mean error {float((mean_err / mean_se).max().detach()):.2f} SE, "
                                f"max covariance error {float((cov_err / cov_se).max().detach()):.2f} SE")
    assert (mean_err < 6 * mean_se).all() and (cov_err < 6 * cov_se).all()


@pytest.mark.claim("flows.sampling")
def test_sample_methods_reencode():
    torch.manual_seed(1)
    flow = perturb(flows.Flow(2, steps=2, hidden=8).double(), 1)
    for layer in flow.steps:
        layer.actnorm.initialized.fill_(True)
    x = flow.sample(5, generator=generator(3))
    z = torch.randn(5, 2, generator=generator(3), dtype=F64)
    torch.testing.assert_close(flow(x)[0], z, **tol(F64))
    glow = perturb(flows.Glow(1, levels=2, steps=1, hidden=4).double(), 2, 0.1)
    glow(randn(4, 1, 4, 4, seed=5))   # data-dependent ActNorm initialisation
    imgs = glow.sample(3, 4, 4, generator=generator(4))
    assert imgs.shape == (3, 1, 4, 4) and torch.isfinite(imgs).all()


# -------------------------------------------------------------------------------------- squeeze

@pytest.mark.claim("flows.squeeze")
@given(seed=seeds(), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3))
@settings(max_examples=10)
def test_squeeze_matches_pixel_unshuffle_and_inverts(seed, c, h, w):
    x = randn(2, c, 2 * h, 2 * w, seed=seed)
    y = flows.squeeze(x)
    assert y.shape == (2, 4 * c, h, w)
    torch.testing.assert_close(y, F.pixel_unshuffle(x, 2), rtol=0, atol=0)
    torch.testing.assert_close(flows.unsqueeze(y), x, rtol=0, atol=0)
    # A permutation of the entries: same multiset of values.
    torch.testing.assert_close(y.flatten().sort().values, x.flatten().sort().values, rtol=0, atol=0)


@pytest.mark.claim("flows.squeeze")
@pytest.mark.claim("flows.volume-preserving")
def test_squeeze_logdet_zero():
    x = randn(2, 1, 4, 4, seed=1)
    torch.testing.assert_close(jac_logdet(flows.squeeze, x), torch.zeros(2, dtype=F64), rtol=0, atol=1e-12)


# -------------------------------------------------------------------------------------- ActNorm

@pytest.mark.claim("flows.actnorm-init", role="refutes")
def test_actnorm_first_batch_output_not_identity_covariance(record_property):
    # Two strongly correlated channels: ActNorm standardises each one but cannot decorrelate
    # them, so the first minibatch's output covariance is their correlation matrix, not I.
    g = randn(256, 1, 4, 4, seed=11)
    x = torch.cat([g, 2 * g + 0.2 * randn(256, 1, 4, 4, seed=12) + 1], 1)
    layer = flows.ActNorm(2, eps=1e-12).double()
    y = layer(x)[0].detach()
    yf = y.permute(1, 0, 2, 3).reshape(2, -1)
    cov = (yf @ yf.T) / yf.shape[1]
    torch.testing.assert_close(torch.diagonal(cov), torch.ones(2, dtype=F64), rtol=1e-9, atol=0)
    record_property("evidence", f"first-minibatch output covariance off-diagonal {float(cov[0, 1]):.4f} (N(0, I) needs 0)")
    assert float(cov[0, 1]) > 0.9


@pytest.mark.claim("flows.actnorm-init", role="corrects")
def test_actnorm_uncorrelated_gaussian_first_batch_gives_identity_covariance():
    # Under the missing assumption (uncorrelated Gaussian channels) the standardised output has
    # covariance I up to sampling error: n = 4096 values per channel, SE of a correlation
    # ~ 1/sqrt(n) = 0.016, so 6 SE = 0.094.
    x = randn(256, 3, 4, 4, seed=13) * torch.tensor([0.5, 2.0, 9.0], dtype=F64).view(1, 3, 1, 1) - 4
    y = flows.ActNorm(3, eps=1e-12).double()(x)[0].detach()
    yf = y.permute(1, 0, 2, 3).reshape(3, -1)
    cov = (yf @ yf.T) / yf.shape[1]
    torch.testing.assert_close(cov, torch.eye(3, dtype=F64), rtol=0, atol=6 / math.sqrt(yf.shape[1]))


@pytest.mark.claim("flows.actnorm-init", role="corrects")
def test_actnorm_first_batch_standardised_like_batchnorm():
    x = randn(32, 3, 5, 5, seed=2) * torch.tensor([0.1, 2.0, 30.0], dtype=F64).view(1, 3, 1, 1) + 7
    layer = flows.ActNorm(3, eps=1e-12).double()
    y, _ = layer(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=F64), rtol=1e-9, atol=0)
    bn = nn.BatchNorm2d(3, eps=1e-12, affine=False).double().train()
    torch.testing.assert_close(y, bn(x), rtol=1e-9, atol=1e-9)
    # Afterwards a fixed affine map: a second batch with other statistics is not standardised,
    # where batchnorm (training mode) would standardise it again.
    x2 = x * 3 + 1
    y2, _ = layer(x2)
    s, b = layer.scale.view(1, 3, 1, 1), layer.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(y2, 3 * y + s - 2 * b, **tol(F64))   # s (3x + 1) + b
    assert not torch.allclose(y2, bn(x2))


@pytest.mark.claim("flows.actnorm-logdet")
@given(seed=seeds(), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3))
@settings(max_examples=8)
def test_actnorm_logdet_and_inverse(seed, c, h, w):
    layer = flows.ActNorm(c).double()
    layer.initialized.fill_(True)
    perturb(layer, seed, 1.0)
    x = randn(2, c, h, w, seed=seed)
    y, logdet = layer(x)
    torch.testing.assert_close(logdet, jac_logdet(layer, x), **tol(F64))
    torch.testing.assert_close(logdet[0], h * w * layer.scale.abs().log().sum(), **tol(F64))
    torch.testing.assert_close(layer.inverse(y), x, **tol(F64))


@pytest.mark.claim("flows.actnorm-logdet")
def test_actnorm_logdet_cost_linear_in_channels():
    # The log-det touches each of the C scales once: no FLOPs beyond the elementwise sum
    # (FlopCounterMode counts matrix products; there are none), for any C.
    for c in (4, 64, 1024):
        layer = flows.ActNorm(c)
        layer.initialized.fill_(True)
        assert count_flops(layer, torch.randn(1, c, 2, 2)) == 0


# --------------------------------------------------------------------------- invertible 1x1 conv

@pytest.mark.claim("flows.conv1x1-permutation")
def test_conv1x1_with_permutation_matrix_permutes_channels():
    perm = torch.tensor([2, 0, 3, 1])
    layer = flows.Invertible1x1Conv(4).double()
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4, dtype=F64)[perm])
    x = randn(2, 4, 3, 3, seed=3)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x[:, perm], rtol=0, atol=0)
    torch.testing.assert_close(logdet, torch.zeros(2, dtype=F64), rtol=0, atol=0)


@pytest.mark.claim("flows.conv1x1-init")
@given(seed=seeds(), c=st.integers(1, 24))
@settings(max_examples=20)
def test_conv1x1_init_is_rotation(seed, c):
    w = flows.random_rotation(c, generator=generator(seed), dtype=F64)
    torch.testing.assert_close(w.T @ w, torch.eye(c, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(w), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-10)
    layer = flows.Invertible1x1Conv(c, generator=generator(seed))
    assert abs(float(torch.linalg.det(layer.weight.detach().double())) - 1) < 1e-5  # float32 storage


@pytest.mark.claim("flows.conv1x1-logdet")
@given(seed=seeds(), c=st.integers(1, 4), h=st.integers(1, 3))
@settings(max_examples=8)
def test_conv1x1_logdet_matches_jacobian(seed, c, h):
    layer = perturb(flows.Invertible1x1Conv(c, generator=generator(seed)).double(), seed)
    x = randn(2, c, h, h + 1, seed=seed)
    y, logdet = layer(x)
    torch.testing.assert_close(logdet, jac_logdet(layer, x), **tol(F64))
    torch.testing.assert_close(logdet[0], h * (h + 1) * torch.linalg.det(layer.weight).abs().log(), **tol(F64))
    torch.testing.assert_close(layer.inverse(y), x, **tol(F64))


@pytest.mark.claim("flows.conv1x1-logdet")
def test_conv1x1_einsum_matches_fused_conv2d(device, dtype):
    x = randn(3, 5, 4, 6, seed=1, dtype=dtype, device=device)
    w = randn(5, 5, seed=2, dtype=dtype, device=device)
    # float32: a 5-term dot product per output, well inside tol(float32).
    torch.testing.assert_close(flows.conv1x1(x, w), flows.conv1x1_reference(x, w), **tol(dtype))


@pytest.mark.claim("flows.conv1x1-lu")
def test_lu_parametrisation_structure_and_fixed_permutation():
    torch.manual_seed(0)
    layer = flows.Invertible1x1ConvLU(5).double()
    perm0 = layer.perm.clone()
    assert all(p is not layer.perm for p in layer.parameters())
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = randn(4, 5, 3, 3, seed=2)
    loss = (layer(x)[0] * torch.linspace(-1, 1, 5, dtype=F64).view(1, 5, 1, 1)).pow(2).mean() - layer(x)[1].mean()
    loss.backward()
    opt.step()
    torch.testing.assert_close(layer.perm, perm0, rtol=0, atol=0)     # P stays fixed
    p, lower, upper, s = layer.factors()
    # The trained factors keep their structure (gradients reach the masked entries of the raw
    # parameters, the masks keep them out of W).
    torch.testing.assert_close(lower, torch.tril(lower), rtol=0, atol=0)
    torch.testing.assert_close(torch.diagonal(lower), torch.ones(5, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(upper, torch.triu(upper, 1), rtol=0, atol=0)
    torch.testing.assert_close(p @ p.T, torch.eye(5, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(layer.weight(), p @ lower @ (upper + torch.diag(s)), **tol(F64))
    # Any invertible W has such a factorisation: torch.linalg.lu gives P, unit-lower L and an
    # upper factor whose diagonal is s.
    a = randn(5, 5, seed=9)
    pa, la, ua = torch.linalg.lu(a)
    torch.testing.assert_close(pa @ la @ (torch.triu(ua, 1) + torch.diag(torch.diagonal(ua))), a, **tol(F64))
    y, _ = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, **tol(F64))


@pytest.mark.claim("flows.conv1x1-lu-logdet", role="refutes")
def test_lu_logdet_sum_log_s_is_not_layer_logdet(record_property):
    torch.manual_seed(1)
    layer = perturb(flows.Invertible1x1ConvLU(3).double(), 1, 0.5)
    x = randn(1, 3, 2, 2, seed=5)
    as_written = layer.s.abs().log().sum()
    truth = jac_logdet(layer, x)[0]
    record_property("evidence", f"H = W = 2: sum log|s_i| = {float(as_written):.4f}, "
                                f"layer log|det J| = {float(truth):.4f} = 4 * sum log|s_i|")
    assert abs(float(as_written - truth)) > 1e-3


@pytest.mark.claim("flows.conv1x1-lu-logdet", role="corrects")
@given(seed=seeds(), h=st.integers(1, 3))
@settings(max_examples=8)
def test_lu_logdet_corrected(seed, h):
    layer = perturb(flows.Invertible1x1ConvLU(3, generator=generator(seed)).double(), seed, 0.5)
    x = randn(2, 3, h, 2, seed=seed)
    _, logdet = layer(x)
    sum_log_s = layer.s.abs().log().sum()
    torch.testing.assert_close(sum_log_s, torch.linalg.slogdet(layer.weight()).logabsdet, **tol(F64))
    torch.testing.assert_close(logdet, jac_logdet(layer, x), **tol(F64))
    torch.testing.assert_close(logdet[0], 2 * h * sum_log_s, **tol(F64))


# --------------------------------------------------------------------------------- conditional

def _grid(lim=7.0, n=241, dtype=F64):
    t = torch.linspace(-lim, lim, n, dtype=dtype)
    gx, gy = torch.meshgrid(t, t, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], 1), (t[1] - t[0]) ** 2


@pytest.mark.claim("flows.conditional-coupling")
def test_conditional_coupling_inverse_logdet_per_condition():
    torch.manual_seed(4)
    layer = perturb(flows.AffineCoupling(4, hidden=8, cond_channels=2).double(), 4)
    x = randn(5, 4, seed=1)
    outs = []
    for w in (randn(5, 2, seed=2), randn(5, 2, seed=3) * 3):
        y, logdet = layer(x, w)
        outs.append(y)
        torch.testing.assert_close(layer.inverse(y, w), x, **tol(F64))
        ref = torch.stack([torch.linalg.slogdet(full_jacobian(lambda u, i=i: layer(u, w[i:i + 1])[0], x[i])).logabsdet
                           for i in range(5)])
        torch.testing.assert_close(logdet, ref, **tol(F64))
    assert not torch.allclose(outs[0], outs[1])     # w does change the map


@pytest.mark.claim("flows.conditional-coupling")
@pytest.mark.claim("flows.glow-exact-likelihood")
def test_flow_density_integrates_to_one_on_grid(record_property):
    torch.manual_seed(5)
    flow = perturb(flows.Flow(2, steps=2, hidden=8, cond_channels=1).double(), 5, 0.25)
    for layer in flow.steps:
        layer.actnorm.initialized.fill_(True)
    pts, cell = _grid()
    masses = []
    for w in (-1.0, 2.0):
        cond = torch.full((pts.shape[0], 1), w, dtype=F64)
        masses.append(float(flow.log_prob(pts, cond).exp().sum() * cell))
    record_property("evidence", f"Riemann sum of p(x | w) on [-7, 7]^2: {masses}")
    # Riemann sum on a 241^2 grid of a smooth density with Gaussian-like tails: error << 1e-3.
    assert all(abs(m - 1) < 2e-3 for m in masses)


# ------------------------------------------------------------------------------------- SRFlow

@pytest.mark.claim("flows.affine-injector")
@given(seed=seeds())
@settings(max_examples=8)
def test_affine_injector(seed):
    torch.manual_seed(seed)
    inj = perturb(flows.AffineInjector(2, 3, hidden=4).double(), seed)
    h = randn(2, 2, 3, 3, seed=seed)
    u = randn(2, 3, 3, 3, seed=seed + 1)
    h1, logdet = inj(h, u)
    torch.testing.assert_close(inj.inverse(h1, u), h, **tol(F64))
    ref = torch.stack([torch.linalg.slogdet(full_jacobian(lambda v, i=i: inj(v, u[i:i + 1])[0], h[i])).logabsdet
                       for i in range(2)])
    torch.testing.assert_close(logdet, ref, **tol(F64))
    # The Jacobian is diagonal (elementwise scaling by exp(beta_s(u))) and independent of h.
    jac = full_jacobian(lambda v: inj(v, u[:1])[0], h[0])
    torch.testing.assert_close(jac, torch.diag(torch.diagonal(jac)), rtol=0, atol=0)
    h_other = randn(1, 2, 3, 3, seed=seed + 2) * 5
    torch.testing.assert_close(inj(h_other, u[:1])[1], logdet[:1], **tol(F64))


@pytest.mark.claim("flows.srflow")
def test_srflow_step_many_outputs_for_one_low_res():
    torch.manual_seed(6)
    step = perturb(flows.SRFlowStep(4, 3, hidden=4).double(), 6)
    step.actnorm.initialized.fill_(True)
    u = randn(1, 3, 2, 2, seed=1).expand(3, 3, 2, 2)     # one low-res conditioning for all
    z = randn(3, 4, 2, 2, seed=2)
    hi = step.inverse(z, u)
    assert not torch.allclose(hi[0], hi[1]) and not torch.allclose(hi[1], hi[2])
    h, logdet = step(hi, u)
    torch.testing.assert_close(h, z, **tol(F64))
    ref = torch.stack([torch.linalg.slogdet(full_jacobian(lambda v: step(v, u[:1])[0], hi[i])).logabsdet
                       for i in range(3)])
    torch.testing.assert_close(logdet, ref, **tol(F64))


# ------------------------------------------------------------------------------------- C-Flow

@pytest.mark.claim("flows.cflow")
def test_cflow_transfer_and_exact_joint_density():
    torch.manual_seed(7)
    model = perturb(flows.CFlow(2, 3, steps=2, hidden=8).double(), 7, 0.3)
    for fl in (model.g, model.f):
        for layer in fl.steps:
            layer.actnorm.initialized.fill_(True)
    xa1, xb1, xa2 = randn(4, 2, seed=1), randn(4, 3, seed=2), randn(4, 2, seed=3)
    torch.testing.assert_close(model.transfer(xb1, xa1, xa1), xb1, **tol(F64))
    xb2 = model.transfer(xb1, xa1, xa2)
    assert not torch.allclose(xb2, xb1)
    # The new image keeps x_B^1's latent under the new condition.
    torch.testing.assert_close(model.encode_b(xb2, xa2), model.encode_b(xb1, xa1), **tol(F64))
    # Joint density: the map (x_A, x_B) -> (z_A, z_B) and its full 5x5 Jacobian.
    x = torch.cat([xa1, xb1], 1)

    def joint(v):
        za = model.encode_a(v[:, :2])
        return torch.cat([za, model.f(v[:, 2:], za)[0]], 1)
    ref = flows.standard_normal_log_prob(joint(x)) + jac_logdet(joint, x)
    torch.testing.assert_close(model.log_prob(xa1, xb1), ref, **tol(F64))


# --------------------------------------------------------------------------- non-Gaussian base

def laplace_log_prob(z):
    return D.Laplace(torch.zeros((), dtype=z.dtype), torch.ones((), dtype=z.dtype)).log_prob(z).reshape(z.shape[0], -1).sum(1)


@pytest.mark.claim("flows.non-gaussian-base")
def test_laplace_base_matches_transformed_distribution():
    layer = flows.ActNorm(3).double()
    layer.initialized.fill_(True)
    perturb(layer, 3, 0.7)
    x = randn(10, 3, seed=4) * 2
    ours = flows.flow_log_prob([layer], x, laplace_log_prob)
    s, b = layer.scale.detach(), layer.bias.detach()
    # z = s x + b  <=>  x = (z - b) / s: the generative transform for torch.distributions.
    ref = D.TransformedDistribution(D.Independent(D.Laplace(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)), 1),
                                    [D.AffineTransform(-b / s, 1 / s, event_dim=1)]).log_prob(x)
    torch.testing.assert_close(ours, ref, **tol(F64))


@pytest.mark.claim("flows.non-gaussian-base")
def test_laplace_base_density_normalised(record_property):
    torch.manual_seed(8)
    flow = perturb(flows.Flow(2, steps=2, hidden=8).double(), 8, 0.25)
    for layer in flow.steps:
        layer.actnorm.initialized.fill_(True)
    pts, cell = _grid(lim=14.0, n=401)
    mass = float(flows.flow_log_prob(flow.steps, pts, laplace_log_prob).exp().sum() * cell)
    record_property("evidence", f"Riemann sum of the Laplace-base flow density on [-14, 14]^2: {mass:.5f}")
    # Laplace tails beyond 14 and the Laplace kink on a 0.07 grid: error well under 1e-2.
    assert abs(mass - 1) < 1e-2


# ------------------------------------------------------------------------------- multi-scale flow

@pytest.mark.claim("flows.glow-exact-likelihood")
def test_glow_logdet_matches_full_jacobian():
    torch.manual_seed(9)
    glow = perturb(flows.Glow(1, levels=2, steps=1, hidden=4).double(), 9, 0.1)
    x = randn(2, 1, 4, 4, seed=1)
    glow(x)   # ActNorm's data-dependent initialisation
    zs, logdet = glow(x)
    assert [tuple(z.shape[1:]) for z in zs] == glow.latent_shapes(4, 4) == [(2, 2, 2), (8, 1, 1)]

    def encode(v):
        return torch.cat([z.reshape(v.shape[0], -1) for z in glow(v)[0]], 1)
    torch.testing.assert_close(logdet, jac_logdet(encode, x), **tol(F64))
    ref = flows.standard_normal_log_prob(encode(x)) + jac_logdet(encode, x)
    torch.testing.assert_close(glow.log_prob(x), ref, **tol(F64))


def two_moons(n, seed):
    g = generator(seed)
    t = torch.rand(n, generator=g, dtype=F64) * math.pi
    which = torch.rand(n, generator=g) < 0.5
    x = torch.where(which[:, None], torch.stack([t.cos(), t.sin()], 1), torch.stack([1 - t.cos(), 0.5 - t.sin()], 1))
    return (x + 0.08 * torch.randn(n, 2, generator=g, dtype=F64)).float()


@pytest.mark.slow
@pytest.mark.claim("flows.glow-exact-likelihood")
def test_train_flow_on_two_moons(record_property, save_figure):
    import matplotlib.pyplot as plt
    torch.manual_seed(0)
    data = two_moons(4000, 0)
    flow = flows.Flow(2, steps=6, hidden=64)
    losses = flows.train_flow(flow, data, steps=700, batch=256, lr=3e-3, generator=generator(1))
    test = two_moons(2000, 1)
    with torch.no_grad():
        nll = float(-flow.log_prob(test).mean())
    # Best Gaussian fit to the same data: the flow must beat it clearly.
    gauss = D.MultivariateNormal(data.mean(0), covariance_matrix=torch.cov(data.T))
    nll_gauss = float(-gauss.log_prob(test).mean())
    pts, cell = _grid(lim=4.0, n=201, dtype=torch.float32)
    with torch.no_grad():
        dens = flow.log_prob(pts + torch.tensor([0.5, 0.25])).exp()
    mass = float(dens.sum() * cell)
    record_property("evidence", f"test NLL {nll:.3f} vs Gaussian fit {nll_gauss:.3f} nats; "
                                f"density mass on grid {mass:.3f}")
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.6))
    ext = [-3.5, 4.5, -3.75, 4.25]
    ax[0].imshow(dens.reshape(201, 201).numpy(), origin="lower", extent=ext, cmap="viridis")
    ax[0].set_title("trained flow density p_x")
    ax[1].scatter(*test[:1000].T.numpy(), s=2)
    ax[1].set_xlim(ext[:2])
    ax[1].set_ylim(ext[2:])
    ax[1].set_title("data (two moons)")
    save_figure(fig, "flows-2d-density.png")
    assert nll < nll_gauss - 0.5
    assert losses[-1] < losses[0]
    assert abs(mass - 1) < 0.05   # most mass inside the plotted window


@pytest.mark.claim("flows.glow-exact-likelihood")
def test_train_flow_lowers_the_nll():
    # Maximum likelihood: a few Adam steps on a shifted, stretched Gaussian must lower the mean
    # negative log-likelihood of the data (the loss train_flow reports is that NLL).
    torch.manual_seed(0)
    data = randn(512, 2, seed=1) * torch.tensor([0.5, 2.0], dtype=F64) + torch.tensor([3.0, -2.0], dtype=F64)
    flow = flows.Flow(2, steps=1, hidden=8).double()
    with torch.no_grad():
        flow.log_prob(data)                      # data-dependent ActNorm initialisation
        perturb(flow, 2, 0.3)                    # leave the standardised starting point
        nll0 = float(-flow.log_prob(data).mean())
    losses = flows.train_flow(flow, data, steps=40, batch=512, lr=1e-2, generator=generator(3))
    with torch.no_grad():
        nll1 = float(-flow.log_prob(data).mean())
    assert nll1 < nll0 - 0.05 and losses[-1] < losses[0]


def bars(n, seed):
    """Tiny 8x8 images: a random horizontal or vertical bar plus noise, in [-1, 1]-ish."""
    g = generator(seed)
    pos = torch.randint(0, 8, (n,), generator=g)
    vert = torch.rand(n, generator=g) < 0.5
    img = -torch.ones(n, 1, 8, 8)
    idx = torch.arange(8)
    hmask = idx.view(1, 8, 1) == pos.view(n, 1, 1)
    vmask = idx.view(1, 1, 8) == pos.view(n, 1, 1)
    img[:, 0] = torch.where(torch.where(vert.view(n, 1, 1), vmask, hmask), 1.0, -1.0)
    return img + 0.1 * torch.randn(img.shape, generator=g)


@pytest.mark.slow
@pytest.mark.claim("flows.glow-exact-likelihood")
def test_train_glow_on_tiny_images(record_property):
    torch.manual_seed(0)
    data = bars(2000, 0)
    glow = flows.Glow(1, levels=2, steps=2, hidden=16)
    with torch.no_grad():
        glow(data[:256])
        nll0 = float(-glow.log_prob(data[:512]).mean())
    flows.train_flow(glow, data, steps=150, batch=64, lr=2e-3, generator=generator(1))
    test = bars(512, 1)
    with torch.no_grad():
        nll = float(-glow.log_prob(test).mean())
        samples = glow.sample(8, 8, 8, generator=generator(2))
    bpd = lambda v: v / (64 * math.log(2))   # noqa: E731
    record_property("evidence", f"NLL per dim {bpd(nll0):.3f} -> {bpd(nll):.3f} bits after 150 steps")
    assert nll < nll0 - 64 * 0.5 and samples.shape == (8, 1, 8, 8) and torch.isfinite(samples).all()


# --------------------------------------------------------------------------- volume preserving

@pytest.mark.claim("flows.volume-preserving")
def test_additive_coupling_is_volume_preserving(record_property):
    torch.manual_seed(10)
    layer = perturb(flows.AffineCoupling(2, hidden=8, additive=True).double(), 10, 1.0)
    x = randn(8, 2, seed=1)
    torch.testing.assert_close(jac_logdet(layer, x), torch.zeros(8, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(flows.flow_log_prob([layer], x), flows.standard_normal_log_prob(layer(x)[0]), **tol(F64))
    # The image of the unit square has area 1 (shoelace formula on its mapped boundary);
    # a non-volume-preserving affine coupling changes it.
    t = torch.linspace(0, 1, 2001, dtype=F64)[:-1]
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    boundary = torch.cat([torch.stack(p, 1) for p in ((t, zero), (one, t), (1 - t, one), (zero, 1 - t))])

    def area(layer):
        p = layer(boundary)[0].detach()
        return float(0.5 * (p[:, 0] * p[:, 1].roll(-1) - p[:, 1] * p[:, 0].roll(-1)).sum().abs())
    affine = perturb(flows.AffineCoupling(2, hidden=8).double(), 11, 1.0)
    a_add, a_aff = area(layer), area(affine)
    record_property("evidence", f"area of the image of [0, 1]^2: additive {a_add:.6f}, affine {a_aff:.4f}")
    assert abs(a_add - 1) < 1e-6 and abs(a_aff - 1) > 1e-2


# ------------------------------------------------------------------------------------ bad input

@pytest.mark.claim("flows.invertible-map")
def test_bad_inputs_are_rejected():
    x = torch.randn(2, 4)
    cases = [
        (lambda: flows.standard_normal_log_prob([1.0]), TypeError, "z"),
        (lambda: flows.log_density_inverse_form(lambda v: v, torch.randn(3), flows.standard_normal_log_prob), ValueError, "x"),
        (lambda: flows.log_density_inverse_form(3, x, flows.standard_normal_log_prob), TypeError, "f_inv"),
        (lambda: flows.log_density_forward_form(lambda v: v, x, None), TypeError, "log_pz"),
        (lambda: flows.squeeze(torch.randn(1, 1, 3, 4)), ValueError, "x"),
        (lambda: flows.squeeze(torch.randn(1, 1, 4, 3)), ValueError, "x"),
        (lambda: flows.unsqueeze(torch.randn(1, 3, 2, 2)), ValueError, "y"),
        (lambda: flows.ActNorm(0), ValueError, "channels"),
        (lambda: flows.ActNorm(3)(x), ValueError, "x"),
        (lambda: flows.ActNorm(4)(torch.zeros(2, 4, dtype=torch.int64)), TypeError, "x"),
        (lambda: flows.conv1x1(x, torch.randn(3, 3)), ValueError, "weight"),
        (lambda: flows.conv1x1(x, torch.randn(4, 4, dtype=F64)), TypeError, "weight"),
        (lambda: flows.random_rotation(2.0), TypeError, "channels"),
        (lambda: flows.AffineCoupling(1), ValueError, "channels"),
        (lambda: flows.AffineCoupling(4, cond_channels=2)(x), ValueError, "cond"),
        (lambda: flows.AffineCoupling(4)(x, torch.randn(2, 2)), ValueError, "cond"),
        (lambda: flows.AffineCoupling(4, cond_channels=2)(x, torch.randn(2, 3)), ValueError, "cond"),
        (lambda: flows.AffineInjector(2, 3)(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)), ValueError, "u"),
        (lambda: flows.AffineInjector(2, 3)(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)), ValueError, "h"),
        (lambda: flows.flow_log_prob([], x, log_pz=5), TypeError, "log_pz"),
        (lambda: flows.Glow(1, levels=2)(torch.randn(1, 1, 6, 6)), ValueError, "x"),
        (lambda: flows.Glow(1, levels=2).inverse([torch.randn(1, 2, 2, 2)]), ValueError, "zs"),
        (lambda: flows.Flow(2, steps=0), ValueError, "steps"),
        (lambda: flows.Glow(1, levels=2).sample(2, 6, 8), ValueError, "height"),
        (lambda: flows.flow_forward([nn.ReLU()], x), TypeError, "layers"),
        (lambda: flows.Flow(2).sample(0), ValueError, "n"),
        (lambda: flows.train_flow(flows.Flow(2), torch.randn(4, 2), steps=0), ValueError, "steps"),
        (lambda: flows.train_flow(flows.Flow(2), torch.randn(4, 2), lr=-1.0), ValueError, "lr"),
        (lambda: flows.CFlow(2, 3).encode_b(torch.randn(3), torch.randn(1, 2)), ValueError, "x_b"),
    ]
    for fn, exc, name in cases:
        with pytest.raises(exc, match=name):
            fn()


@pytest.mark.claim("flows.coupling-jacobian")
def test_extreme_inputs_stay_finite():
    torch.manual_seed(12)
    layer = perturb(flows.AffineCoupling(4, hidden=8).double(), 12, 5.0)
    x = randn(3, 4, seed=1) * 1e6
    y, logdet = layer(x)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    assert (logdet.abs() <= 3.0 * 2 + 1e-9).all()   # |s| <= max_log_scale per transformed entry
