"""Normalizing flows: change of variables, coupling, squeeze, ActNorm, 1x1 convolutions, SRFlow,
C-Flow, multi-scale flow. Every log-determinant is compared with the log-determinant of the full
Jacobian from torch.func in float64; every inverse must round-trip."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import distributions as D
from torch import nn

from impl import flows
from spec.testing import count_flops, count_host_syncs, fit_exponent, generator, perturb, randn, seeds, tol

F64 = torch.float64


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
@settings(max_examples=6)
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


@pytest.mark.claim("flows.coupling-jacobian", role="refutes")
def test_printed_top_right_block_uses_the_wrong_derivative(record_property):
    # One entry per half: h(x, beta) = x exp(beta) (elementwise, invertible in x), beta(x^B) =
    # sin(x^B). As printed the top-right block is h' beta' with h' = dh/dx^A = exp(beta); the
    # chain rule gives (dh/dbeta) beta' = x^A exp(beta) beta'.
    def layer(v):
        return torch.stack([v[0] * torch.exp(torch.sin(v[1])), v[1]])
    v = torch.tensor([2.5, 0.4], dtype=F64)
    jac = torch.func.jacrev(layer)(v)
    h_prime = torch.exp(torch.sin(v[1]))                      # dh/dx^A, the top-left block
    as_printed = h_prime * torch.cos(v[1])                    # h' beta'
    chain_rule = v[0] * torch.exp(torch.sin(v[1])) * torch.cos(v[1])
    torch.testing.assert_close(jac[0, 0], h_prime, **tol(F64))
    torch.testing.assert_close(jac[0, 1], chain_rule, **tol(F64))
    record_property("evidence", f"x = (2.5, 0.4): top-right entry {float(jac[0, 1]):.4f}, printed h' beta' = "
                                f"{float(as_printed):.4f}")
    assert abs(float(jac[0, 1] - as_printed)) > 0.5


@pytest.mark.claim("flows.coupling-jacobian", role="corrects")
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


@pytest.mark.claim("flows.coupling-jacobian", role="corrects")
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
    layers[0].initialized = True
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
        layer.actnorm.initialized = True
    x = flow.sample(5, generator=generator(3))
    z = torch.randn(5, 2, generator=generator(3), dtype=F64)
    torch.testing.assert_close(flow(x)[0], z, **tol(F64))
    glow = perturb(flows.Glow(1, levels=2, steps=1, hidden=4).double(), 2, 0.1)
    glow(randn(4, 1, 4, 4, seed=5))   # data-dependent ActNorm initialisation
    imgs = glow.sample(3, 4, 4, generator=generator(4))
    assert imgs.shape == (3, 1, 4, 4) and torch.isfinite(imgs).all()
    # and they re-encode to the latents drawn, level by level, from N(0, I) with the same generator
    g = generator(4)
    drawn = [torch.randn(3, *shape, generator=g, dtype=F64) for shape in [(2, 2, 2), (8, 1, 1)]]
    for z_back, z in zip(glow(imgs)[0], drawn, strict=True):
        torch.testing.assert_close(z_back, z, **tol(F64))


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
    layer.initialized = True
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
        layer.initialized = True
        assert count_flops(layer, torch.randn(1, c, 2, 2)) == 0


# --------------------------------------------------------------------------- invertible 1x1 conv

@pytest.mark.claim("flows.conv1x1-permutation", role="refutes")
def test_conv1x1_at_its_initialisation_is_not_a_permutation(record_property):
    # The notes' own initialisation, a random rotation: the output channels are mixtures of the
    # input channels, not a reordering (no output channel equals any input channel).
    layer = flows.Invertible1x1Conv(4, generator=generator(0)).double()
    x = randn(2, 4, 3, 3, seed=3)
    y = layer(x)[0].detach()
    dist = torch.stack([(y[:, i] - x[:, j]).abs().max() for i in range(4) for j in range(4)])
    w = layer.weight.detach()
    record_property("evidence", f"random rotation W: min over (i, j) of max |y_i - x_j| = {float(dist.min()):.3f}; "
                                f"largest |W_ij| per row {w.abs().max(1).values.numpy().round(3).tolist()} (a permutation has 1)")
    assert float(dist.min()) > 1e-2
    assert (w.abs().max(1).values < 0.999).all()


@pytest.mark.claim("flows.conv1x1-permutation", role="corrects")
def test_conv1x1_general_w_is_an_invertible_channel_mixing():
    # y_{:, i, j} = W x_{:, i, j} at every pixel, the same W everywhere (a per-pixel matrix product,
    # checked against an explicit loop over pixels), and invertible.
    layer = perturb(flows.Invertible1x1Conv(3, generator=generator(1)).double(), 1)
    x = randn(2, 3, 2, 3, seed=4)
    y, _ = layer(x)
    w = layer.weight.detach()
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(y[:, :, i, j], x[:, :, i, j] @ w.T, **tol(F64))
    torch.testing.assert_close(layer.inverse(y), x, **tol(F64))


@pytest.mark.claim("flows.conv1x1-permutation", role="corrects")
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
        layer.actnorm.initialized = True
    pts, cell = _grid()
    masses = []
    for w in (-1.0, 2.0):
        cond = torch.full((pts.shape[0], 1), w, dtype=F64)
        masses.append(float(flow.log_prob(pts, cond).exp().sum() * cell))
    record_property("evidence", f"Riemann sum of p(x | w) on [-7, 7]^2: {masses}")
    # Riemann sum on a 241^2 grid of a smooth density with Gaussian-like tails: error << 1e-3.
    assert all(abs(m - 1) < 2e-3 for m in masses)


# ------------------------------------------------------------------------------------- SRFlow

@pytest.mark.claim("flows.affine-injector", role="refutes")
def test_injector_logdet_with_beta_on_single_entries_is_wrong(record_property):
    # As printed, log det = sum_{ijk} beta_s(u_{ijk}): the network applied to single entries of u
    # (here: to the one-pixel image of u's channels at (i, j), so that the channel count fits).
    # beta is a 3x3 conv net: without the neighbourhood its output is another number.
    torch.manual_seed(0)
    inj = perturb(flows.AffineInjector(2, 3, hidden=4).double(), 0)
    h, u = randn(1, 2, 3, 3, seed=1), randn(1, 3, 3, 3, seed=2)
    _, logdet = inj(h, u)
    truth = torch.linalg.slogdet(full_jacobian(lambda v: inj(v, u)[0], h[0])).logabsdet
    pointwise = sum(inj(h[:, :, i:i + 1, j:j + 1], u[:, :, i:i + 1, j:j + 1])[1][0] for i in range(3) for j in range(3))
    record_property("evidence", f"log|det J| = {float(truth):.4f} = sum beta_s(u)_ijk = {float(logdet[0]):.4f}; "
                                f"sum of beta_s on single entries = {float(pointwise):.4f}")
    torch.testing.assert_close(logdet[0], truth, **tol(F64))
    assert abs(float(pointwise - truth)) > 1e-2


@pytest.mark.claim("flows.affine-injector", role="corrects")
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
    # The formula itself, from the network's own outputs: h^{n+1} = exp(beta_s(u)) h^n + beta_b(u)
    # with log det = sum beta_s(u), beta_s = 3 tanh(raw / 3) (the bounded scale).
    out = inj.beta(u)
    bs, bb = 3.0 * torch.tanh(out[:, :2] / 3.0), out[:, 2:]
    torch.testing.assert_close(h1, torch.exp(bs) * h + bb, **tol(F64))
    torch.testing.assert_close(logdet, bs.sum(dim=(1, 2, 3)), **tol(F64))


@pytest.mark.claim("flows.srflow")
def test_srflow_step_many_outputs_for_one_low_res():
    torch.manual_seed(6)
    step = perturb(flows.SRFlowStep(4, 3, hidden=4).double(), 6)
    step.actnorm.initialized = True
    u = randn(1, 3, 2, 2, seed=1).expand(3, 3, 2, 2)     # one low-res conditioning for all
    z = randn(3, 4, 2, 2, seed=2)
    hi = step.inverse(z, u)
    assert not torch.allclose(hi[0], hi[1]) and not torch.allclose(hi[1], hi[2])
    h, logdet = step(hi, u)
    torch.testing.assert_close(h, z, **tol(F64))
    ref = torch.stack([torch.linalg.slogdet(full_jacobian(lambda v: step(v, u[:1])[0], hi[i])).logabsdet
                       for i in range(3)])
    torch.testing.assert_close(logdet, ref, **tol(F64))


def _srflow_step(seed):
    torch.manual_seed(seed)
    step = perturb(flows.SRFlowStep(4, 3, hidden=4).double(), seed)
    step.actnorm.initialized = True
    return step


@pytest.mark.claim("flows.srflow")
def test_srflow_step_is_actnorm_conv_injector_coupling_in_that_order(record_property):
    # The step written out from its parts, in the notes' order; then the same parts in other
    # orders (injector before the 1x1 conv, injector after the coupling, no injector) give other
    # maps, so the comparison sees where the injector sits.
    step = _srflow_step(11)
    h, u = randn(2, 4, 3, 3, seed=1), randn(2, 3, 3, 3, seed=2)

    def compose(order):
        x, total = h, torch.zeros(2, dtype=F64)
        for name in order:
            x, ld = step.injector(x, u) if name == "injector" else \
                step.coupling(x, u) if name == "coupling" else getattr(step, name)(x)
            total = total + ld
        return x, total
    notes = ("actnorm", "conv", "injector", "coupling")
    y, logdet = step(h, u)
    y_ref, ld_ref = compose(notes)
    torch.testing.assert_close(y, y_ref, **tol(F64))
    torch.testing.assert_close(logdet, ld_ref, **tol(F64))
    gaps = {}
    for other in (("actnorm", "injector", "conv", "coupling"), ("actnorm", "conv", "coupling", "injector"),
                  ("actnorm", "conv", "coupling")):
        gaps[other] = float((compose(other)[0] - y).abs().max())
    record_property("evidence", "max |step - other order|: " + ", ".join(f"{'-'.join(k)} {v:.3f}" for k, v in gaps.items()))
    assert min(gaps.values()) > 1e-2
    # The inverse undoes the parts in reverse order: coupling^-1, injector^-1, conv^-1, actnorm^-1.
    z = randn(2, 4, 3, 3, seed=3)
    inv_ref = step.actnorm.inverse(step.conv.inverse(step.injector.inverse(step.coupling.inverse(z, u), u)))
    torch.testing.assert_close(step.inverse(z, u), inv_ref, **tol(F64))


@pytest.mark.claim("flows.srflow")
def test_srflow_output_depends_on_low_res_input_through_the_injector(record_property):
    # For a fixed latent, another low-res input gives another high-res output; and the injector
    # alone carries that dependence when the coupling's network ignores u (its weights on u's
    # channels set to zero): the step still depends on u, by exactly the injector's affine map.
    step = _srflow_step(12)
    z = randn(1, 4, 3, 3, seed=4).expand(2, 4, 3, 3)
    u = torch.cat([randn(1, 3, 3, 3, seed=5), randn(1, 3, 3, 3, seed=6)])
    hi = step.inverse(z, u)
    assert float((hi[0] - hi[1]).abs().max()) > 1e-2
    with torch.no_grad():
        step.coupling.beta[0].weight[:, step.coupling.cb:] = 0      # coupling blind to u
    h = randn(1, 4, 3, 3, seed=7).expand(2, 4, 3, 3)
    y, logdet = step(h, u)
    gap = float((y[0] - y[1]).abs().max())
    record_property("evidence", f"fixed latent, two low-res inputs: outputs differ by {gap:.3f} with the coupling blind to u")
    assert gap > 1e-2
    # With the injector's network zeroed too (s = b = 0, the identity) the dependence on u is gone.
    with torch.no_grad():
        for p in step.injector.beta[-1].parameters():
            p.zero_()
    y0, ld0 = step(h, u)
    torch.testing.assert_close(y0[0], y0[1], rtol=0, atol=0)
    torch.testing.assert_close(ld0[0], ld0[1], rtol=0, atol=0)


# ------------------------------------------------------------------------------------- C-Flow

@pytest.mark.claim("flows.cflow", role="refutes")
def test_cflow_as_printed_mixes_image_and_latent_conditions(record_property):
    # As printed: encode with f^{-1}(x_B^1 | x_A^1) (the image as condition), generate with
    # f(z_B^1 | z_A^2) (the latent as condition). Even with x_A^2 = x_A^1 it does not give x_B^1.
    torch.manual_seed(7)
    model = perturb(flows.CFlow(2, 3, steps=2, hidden=8).double(), 7, 0.3)
    for fl in (model.g, model.f):
        for layer in fl.steps:
            layer.actnorm.initialized = True
    xa1, xb1 = randn(4, 2, seed=1), randn(4, 3, seed=2)
    z_b1 = model.f(xb1, xa1)[0]                    # conditioned on the image x_A^1
    back = model.decode_b(z_b1, model.encode_a(xa1))   # generated conditioned on z_A^2 = g^{-1}(x_A^1)
    err = float((back - xb1).abs().max())
    record_property("evidence", f"x_A^2 = x_A^1: max |x_B^2 - x_B^1| = {err:.3f} as printed (0 when both condition on z_A)")
    assert err > 1e-2


@pytest.mark.claim("flows.cflow", role="corrects")
def test_cflow_transfer_and_exact_joint_density():
    torch.manual_seed(7)
    model = perturb(flows.CFlow(2, 3, steps=2, hidden=8).double(), 7, 0.3)
    for fl in (model.g, model.f):
        for layer in fl.steps:
            layer.actnorm.initialized = True
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
    layer.initialized = True
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
        layer.actnorm.initialized = True
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
    losses = flows.train_flow(flow, data, steps=700, batch=256, lr=3e-3, generator=generator(1)).losses
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
    save_figure(fig, "flows-2d-density.png",
                caption='Density of the trained flow (left, exact likelihood on a grid) against the two-moons data it was fitted to (right).')
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
    losses = flows.train_flow(flow, data, steps=40, batch=512, lr=1e-2, generator=generator(3)).losses
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


@pytest.mark.claim("flows.cost")
def test_flow_keeps_full_dimension_and_cost_grows_with_pixels(record_property):
    torch.manual_seed(0)
    glow = flows.Glow(1, levels=2, steps=1, hidden=8)
    sizes, work = [8, 16, 32], []
    for n in sizes:
        x = torch.randn(1, 1, n, n)
        with torch.no_grad():
            zs, _ = glow(x)
        assert sum(z.numel() for z in zs) == x.numel()          # no bottleneck
        work.append(count_flops(lambda v: glow(v)[1], x))
    p = fit_exponent([n * n for n in sizes], work)
    record_property("evidence", f"latent size = data size at 8^2, 16^2, 32^2; Glow forward FLOPs {work} ~ (HW)^{p:.2f}")
    assert 0.95 < p < 1.05


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


@pytest.mark.claim("flows.volume-preserving")
def test_permutations_are_volume_preserving():
    # Channel permutations, the fixed Reverse and a 1x1 conv whose W is a permutation matrix: the full
    # Jacobian's log|det| is 0 (|det| = 1), the layers report 0, and p_x(x) = p_z(f^{-1}(x)).
    x = randn(3, 4, 2, 2, seed=21)
    conv = flows.Invertible1x1Conv(4).double()
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4, dtype=F64)[torch.tensor([1, 3, 0, 2])])
    for layer in (flows.Reverse(), conv):
        torch.testing.assert_close(jac_logdet(layer, x), torch.zeros(3, dtype=F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(layer(x)[1], torch.zeros(3, dtype=F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(flows.flow_log_prob([layer], x), flows.standard_normal_log_prob(layer(x)[0]),
                                   **tol(F64))


# ------------------------------------------------------------------------------ normflows (peer)

class InterleavedBeta(nn.Module):
    """normflows' AffineCoupling reads (shift, scale) interleaved from its param_map (shift at even,
    scale at odd channels) and transforms the *second* half given the first: feed it our beta."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, xb):
        s, t = self.layer.beta_st(xb)
        return torch.stack([t, s], dim=2).flatten(1, 2)


def normflows_coupling(layer):
    import normflows as nf
    return nf.flows.AffineCoupling(InterleavedBeta(layer), scale=True, scale_map="exp")


def normflows_conv1x1(layer):
    """normflows' LU 1x1 conv with our factors (its ``inverse`` is the data -> latent direction,
    our ``forward``)."""
    import normflows as nf
    c = layer.perm.shape[0]
    peer = nf.flows.Invertible1x1Conv(c, use_lu=True).to(layer.lower.dtype)
    with torch.no_grad():
        peer.P.copy_(layer.perm)
        peer.L.copy_(layer.lower)
        peer.U.copy_(layer.upper)
        peer.log_S.copy_(layer.log_abs_s)
        peer.sign_S.copy_(layer.sign_s)
    return peer


@pytest.mark.claim("flows.coupling-inverse")
@pytest.mark.claim("flows.coupling-jacobian", role="corrects")
def test_coupling_matches_normflows():
    torch.manual_seed(0)
    layer = perturb(flows.AffineCoupling(6, hidden=8, image=True).double(), 0)
    peer = normflows_coupling(layer)
    x = randn(3, 6, 4, 4, seed=1)
    y, logdet = layer(x)
    (_, ya_peer), ld_peer = peer([x[:, 3:], x[:, :3]])
    torch.testing.assert_close(y[:, :3], ya_peer, **tol(F64))
    torch.testing.assert_close(logdet, ld_peer, **tol(F64))
    (_, xa_peer), _ = peer.inverse([y[:, 3:], y[:, :3]])
    torch.testing.assert_close(layer.inverse(y)[:, :3], xa_peer, **tol(F64))


@pytest.mark.claim("flows.conv1x1-lu")
@pytest.mark.claim("flows.conv1x1-lu-logdet", role="corrects")
def test_conv1x1_lu_matches_normflows():
    layer = perturb(flows.Invertible1x1ConvLU(5, generator=generator(2)).double(), 2, 0.2)
    peer = normflows_conv1x1(layer)
    x = randn(2, 5, 3, 4, seed=3)
    y, logdet = layer(x)
    y_peer, ld_peer = peer.inverse(x)
    torch.testing.assert_close(y, y_peer, **tol(F64))
    torch.testing.assert_close(logdet, ld_peer.expand(2), **tol(F64))
    x_peer, _ = peer(y)
    torch.testing.assert_close(layer.inverse(y), x_peer, **tol(F64))


# ------------------------------------------------------------------------------------ conventions

def _optimizer_steps_not_counted(monkeypatch):
    """torch.optim.Adam reads its step counter with .item(); that counter lives on the host (not
    capturable), so it is no device synchronisation, and it is torch's code, not ours."""
    orig = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        with torch._C.DisableTorchFunction():
            return orig(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", step)


def test_actnorm_forward_after_initialisation_makes_no_host_sync():
    layer = flows.ActNorm(3)
    x = torch.randn(8, 3, 2, 2)
    layer(x)
    assert layer.initialized is True
    with count_host_syncs() as syncs:
        for _ in range(3):
            layer(x)
    assert syncs.count == 0, syncs.where


def test_flow_models_round_trip_state_dict_with_actnorm_state():
    torch.manual_seed(0)
    flow = flows.Flow(2, steps=2, hidden=8)
    x = torch.randn(16, 2)
    flow(x)                                        # initialises every ActNorm
    state = flow.state_dict()
    assert all(state[f"steps.{i}.actnorm._extra_state"].item() is True for i in range(2))
    fresh = flows.Flow(2, steps=2, hidden=8)
    assert not fresh.steps[0].actnorm.initialized
    fresh.load_state_dict(state)
    assert all(step.actnorm.initialized for step in fresh.steps)
    other = torch.randn(5, 2) * 7 + 3             # would re-initialise an uninitialised ActNorm
    torch.testing.assert_close(fresh(other)[0], flow(other)[0], rtol=0, atol=0)
    torch.testing.assert_close(fresh(other)[1], flow(other)[1], rtol=0, atol=0)
    # And through torch.save / torch.load(weights_only=True).
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    again = flows.Flow(2, steps=2, hidden=8)
    again.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(again.log_prob(other), flow.log_prob(other), rtol=0, atol=0)
    # An uninitialised model's state keeps it uninitialised.
    blank = flows.Flow(2, steps=1, hidden=8)
    re = flows.Flow(2, steps=1, hidden=8)
    re.steps[0].actnorm.initialized = True
    re.load_state_dict(blank.state_dict())
    assert re.steps[0].actnorm.initialized is False
    glow = flows.Glow(1, levels=1, steps=1, hidden=4)
    glow(torch.randn(4, 1, 4, 4))
    g2 = flows.Glow(1, levels=1, steps=1, hidden=4)
    g2.load_state_dict(glow.state_dict())
    img = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(g2.log_prob(img), glow.log_prob(img), rtol=0, atol=0)


@pytest.mark.parametrize("make", [
    lambda: flows.AffineCoupling(4, hidden=8, image=True, cond_channels=2),
    lambda: flows.Invertible1x1Conv(4, generator=generator(0)),
    lambda: flows.Invertible1x1ConvLU(4, generator=generator(0)),
    lambda: flows.AffineInjector(4, 2, hidden=4),
    lambda: flows.SRFlowStep(4, 2, hidden=4, generator=generator(1)),
], ids=["coupling", "conv1x1", "conv1x1-lu", "injector", "srflow-step"])
def test_layers_round_trip_state_dict(make):
    torch.manual_seed(3)
    a, b = perturb(make().double(), 3), make().double()
    x, u = randn(2, 4, 2, 2, seed=1), randn(2, 2, 2, 2, seed=2)

    def run(m):
        if isinstance(m, (flows.Invertible1x1Conv, flows.Invertible1x1ConvLU)):
            return m(x)
        return m(x, u)
    b.load_state_dict(a.state_dict())
    for ya, yb in zip(run(a), run(b)):
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_cflow_round_trips_state_dict():
    torch.manual_seed(4)
    a, b = perturb(flows.CFlow(2, 3, steps=2, hidden=8).double(), 4), flows.CFlow(2, 3, steps=2, hidden=8).double()
    xa, xb = randn(6, 2, seed=1), randn(6, 3, seed=2)
    a.log_prob(xa, xb)                       # initialises the ActNorms
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.log_prob(xa * 3, xb - 1), a.log_prob(xa * 3, xb - 1), rtol=0, atol=0)


def test_constructors_use_their_arguments():
    # The generator decides the initial rotation; C-Flow's two flows get their own sizes; the
    # documented default widths (hidden 32 for SRFlow and C-Flow, 4 steps for C-Flow).
    w = flows.Invertible1x1Conv(5, generator=generator(3)).weight.detach()
    torch.testing.assert_close(w, flows.random_rotation(5, generator=generator(3)), rtol=0, atol=0)
    m = flows.CFlow(3, 2, steps=2, hidden=5, generator=generator(1))
    assert m.g.channels == 3 and m.f.channels == 2 and len(m.g.steps) == 2 and len(m.f.steps) == 2
    assert m.g.steps[0].coupling.beta[0].out_features == 5 and m.f.steps[0].coupling.beta[0].out_features == 5
    assert m.f.steps[0].coupling.cond_channels == 3
    m2, m3 = flows.CFlow(3, 2, steps=2, hidden=5, generator=generator(1)), flows.CFlow(3, 2, steps=2, hidden=5, generator=generator(2))
    # The generator draws the 1x1 convolutions' rotations (beta nets use torch's default init).
    def rotations(model):
        return [step.conv.weight() for fl in (model.g, model.f) for step in fl.steps]
    for a, b, c in zip(rotations(m), rotations(m2), rotations(m3)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.equal(a, c) or a.shape[0] == 1
    d = flows.CFlow(2, 2)
    assert len(d.g.steps) == 4 and d.g.steps[0].coupling.beta[0].out_features == 32
    sr = flows.SRFlowStep(4, 2)
    assert sr.injector.beta[0].out_channels == 32 and sr.coupling.beta[0].out_channels == 32
    assert flows.AffineInjector(4, 2).beta[0].out_channels == 32


def test_glow_latent_shapes_three_levels():
    torch.manual_seed(0)
    glow = flows.Glow(1, levels=3, steps=1, hidden=4)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        zs, _ = glow(x)
    assert [tuple(z.shape[1:]) for z in zs] == glow.latent_shapes(8, 8) == [(2, 4, 4), (4, 2, 2), (16, 1, 1)]


def test_extreme_but_valid_inputs():
    # A constant channel in ActNorm's first batch (std 0): eps keeps the scale finite.
    layer = flows.ActNorm(2)
    y, logdet = layer(torch.cat([torch.ones(4, 1, 2, 2), torch.randn(4, 1, 2, 2)], 1))
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    # NumPy and 0-d tensor integers where a count is expected.
    import numpy as np
    flow = flows.Flow(2, steps=1, hidden=4)
    flow(torch.randn(8, 2))
    assert flow.sample(np.int64(3)).shape == (3, 2) and flow.sample(torch.tensor(2)).shape == (2, 2)
    assert flows.random_rotation(np.int32(3)).shape == (3, 3)


def test_train_flow_makes_no_host_sync_per_step(monkeypatch):
    _optimizer_steps_not_counted(monkeypatch)
    counts = []
    for steps in (1, 4):
        torch.manual_seed(0)
        flow = flows.Flow(2, steps=1, hidden=4)
        data = torch.randn(32, 2)
        flow(data)
        with count_host_syncs() as syncs:
            res = flows.train_flow(flow, data, steps=steps, batch=8, generator=generator(0))
        counts.append(syncs.count)
        assert isinstance(res, flows.TrainResult) and res.model is flow
        assert res.losses.shape == (steps,) and not res.losses.requires_grad
    assert counts == [0, 0], counts


def test_train_flow_losses_are_the_nll_of_the_drawn_batches():
    # The recorded loss of step 1 is the NLL of the batch drawn with the caller's generator.
    torch.manual_seed(1)
    flow = flows.Flow(2, steps=1, hidden=4).double()
    data = randn(20, 2, seed=2)
    flow(data)
    ref = flows.Flow(2, steps=1, hidden=4).double()
    ref.load_state_dict(flow.state_dict())
    idx = torch.randint(0, 20, (6,), generator=generator(5))
    expected = -ref.log_prob(data[idx]).mean()
    res = flows.train_flow(flow, data, steps=2, batch=6, lr=1e-2, generator=generator(5))
    torch.testing.assert_close(res.losses[0], expected.detach(), **tol(F64))
    assert float(res.losses[1]) != float(res.losses[0])


def test_sampling_draws_on_the_model_device_with_its_generator(device):
    torch.manual_seed(0)
    flow = flows.Flow(2, steps=1, hidden=4).to(device)
    flow(torch.randn(8, 2, device=device))
    g = torch.Generator(device=device).manual_seed(3)
    x = flow.sample(4, generator=g)
    z = torch.randn(4, 2, generator=torch.Generator(device=device).manual_seed(3), device=device)
    assert x.device == flow.steps[0].actnorm.bias.device
    # float32: one flow step and its inverse, entries O(1): round-off ~1e-6.
    torch.testing.assert_close(flow(x)[0], z, rtol=1e-4, atol=1e-4)
    glow = flows.Glow(1, levels=1, steps=1, hidden=4).to(device)
    glow(torch.randn(4, 1, 4, 4, device=device))
    assert glow.sample(2, 4, 4, generator=torch.Generator(device=device).manual_seed(1)).device.type == device.type
    w = flows.random_rotation(3, generator=torch.Generator(device=device).manual_seed(0), device=device)
    assert w.device.type == device.type
    if device.type != "cpu":
        with pytest.raises(ValueError, match="generator"):
            flow.sample(2, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------ bad input

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
        (lambda: flows.affine_h(torch.randn(2, 3), torch.randn(2, 1), torch.randn(2, 3)), ValueError, "s"),
        (lambda: flows.affine_h(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3)), ValueError, "t"),
        (lambda: flows.affine_h(torch.randn(2, 3), torch.randn(2, 3, dtype=F64), torch.randn(2, 3)), TypeError, "s"),
        (lambda: flows.affine_h_inverse(torch.randn(2, 3), torch.randn(2, 3), torch.randn(1, 3)), ValueError, "t"),
        (lambda: flows.affine_h_inverse([1.0], torch.randn(1), torch.randn(1)), TypeError, "ya"),
        (lambda: flows.Flow(2).sample(3, generator=5), TypeError, "generator"),
        (lambda: flows.Glow(1, levels=1).sample(2, 4, 4, generator="cpu"), TypeError, "generator"),
        (lambda: flows.random_rotation(3, generator=1), TypeError, "generator"),
        (lambda: flows.train_flow(flows.Flow(2), torch.randn(4, 2), generator=torch.randn(2)), TypeError, "generator"),
        (lambda: flows.train_flow(flows.Flow(2), torch.randn(4, 2), batch=0), ValueError, "batch"),
        (lambda: flows.train_flow(flows.Flow(2), torch.randn(0, 2)), ValueError, "data"),
        (lambda: flows.train_flow(flows.Flow(2), [1.0]), TypeError, "data"),
        (lambda: flows.standard_normal_log_prob(torch.tensor(1.0)), ValueError, "z"),
        (lambda: flows.log_density_inverse_form(lambda v: v, x, None), TypeError, "log_pz"),
        (lambda: flows.log_density_forward_form(lambda v: v, torch.randn(3), flows.standard_normal_log_prob), ValueError, "z"),
        (lambda: flows.log_density_forward_form(None, x, flows.standard_normal_log_prob), TypeError, "f"),
        (lambda: flows.squeeze(torch.randn(1, 4, 4)), ValueError, "x"),
        (lambda: flows.unsqueeze(torch.randn(4, 2, 2)), ValueError, "y"),
        (lambda: flows.ActNorm(2, eps=0.0), ValueError, "eps"),
        (lambda: flows.ActNorm(4).inverse(torch.randn(2, 3)), ValueError, "y"),
        (lambda: flows.ActNorm(4)(torch.randn(2, 4, 3)), ValueError, "x"),
        (lambda: flows.random_rotation(0), ValueError, "channels"),
        (lambda: flows.conv1x1(torch.randn(2, 4, 3), torch.randn(4, 4)), ValueError, "x"),
        (lambda: flows.conv1x1(x, [1.0]), TypeError, "weight"),
        (lambda: flows.conv1x1_reference(x, torch.randn(4, 4)), ValueError, "x"),
        (lambda: flows.conv1x1_reference(torch.randn(1, 4, 2, 2), torch.randn(3, 3)), ValueError, "weight"),
        (lambda: flows.Invertible1x1Conv(0), ValueError, "channels"),
        (lambda: flows.Invertible1x1Conv(4)(torch.randn(2, 3)), ValueError, "x"),
        (lambda: flows.Invertible1x1ConvLU(0), ValueError, "channels"),
        (lambda: flows.Invertible1x1ConvLU(4)(torch.randn(2, 3, 2, 2)), ValueError, "x"),
        (lambda: flows.Invertible1x1ConvLU(4).inverse(torch.randn(2, 3, 2, 2)), ValueError, "y"),
        (lambda: flows.Invertible1x1Conv(4).inverse(torch.randn(2, 5)), ValueError, "y"),
        (lambda: flows.AffineCoupling(4, hidden=0), ValueError, "hidden"),
        (lambda: flows.AffineCoupling(4, cond_channels=-1), ValueError, "cond_channels"),
        (lambda: flows.AffineCoupling(4, max_log_scale=0.0), ValueError, "max_log_scale"),
        (lambda: flows.AffineCoupling(4)(torch.randn(2, 3)), ValueError, "x"),
        (lambda: flows.AffineCoupling(4).inverse(torch.randn(2, 5)), ValueError, "y"),
        (lambda: flows.AffineCoupling(4, cond_channels=2)(x, [1.0]), TypeError, "cond"),
        (lambda: flows.AffineCoupling(4, cond_channels=2)(x, torch.randn(2, 2, dtype=F64)), TypeError, "cond"),
        (lambda: flows.AffineCoupling(4, cond_channels=2)(x, torch.randn(3, 2)), ValueError, "cond"),
        (lambda: flows.AffineCoupling(4, cond_channels=2, image=True)(torch.randn(1, 4, 2, 2), torch.randn(1, 2, 3, 3)),
         ValueError, "cond"),
        (lambda: flows.Reverse()(torch.randn(3)), ValueError, "x"),
        (lambda: flows.Reverse().inverse(torch.randn(3)), ValueError, "y"),
        (lambda: flows.AffineInjector(0, 3), ValueError, "channels"),
        (lambda: flows.AffineInjector(2, 0), ValueError, "cond_channels"),
        (lambda: flows.AffineInjector(2, 3, hidden=0), ValueError, "hidden"),
        (lambda: flows.AffineInjector(2, 3)(torch.randn(1, 2, 2), torch.randn(1, 3, 2, 2)), ValueError, "h"),
        (lambda: flows.AffineInjector(2, 3)(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2)), ValueError, "u"),
        (lambda: flows.AffineInjector(2, 3)(torch.randn(1, 2, 2, 2), torch.randn(2, 3, 2, 2)), ValueError, "u"),
        (lambda: flows.AffineInjector(2, 3)(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 3, 2)), ValueError, "u"),
        (lambda: flows.AffineInjector(2, 3)(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2, 2, dtype=F64)), TypeError, "u"),
        (lambda: flows.AffineInjector(2, 3).inverse(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)), ValueError, "u"),
        (lambda: flows.flow_forward([], torch.randn(3)), ValueError, "x"),
        (lambda: flows.flow_inverse([], torch.randn(3)), ValueError, "z"),
        (lambda: flows.Glow(0), ValueError, "channels"),
        (lambda: flows.Glow(1, levels=0), ValueError, "levels"),
        (lambda: flows.Glow(1, steps=0), ValueError, "steps"),
        (lambda: flows.Glow(1, levels=1)(torch.randn(1, 2, 4, 4)), ValueError, "x"),
        (lambda: flows.Glow(1, levels=1)(torch.randn(1, 4, 4)), ValueError, "x"),
        (lambda: flows.Glow(1, levels=2).sample(0, 4, 4), ValueError, "n"),
        (lambda: flows.Glow(1, levels=2).sample(2, 4, 6), ValueError, "width"),
        (lambda: flows.Glow(1, levels=2).sample(2, 0, 4), ValueError, "height"),
        (lambda: flows.CFlow(2, 3).decode_b(torch.randn(3), torch.randn(1, 2)), ValueError, "z_b"),
    ]
    # The message starts with the argument's name: a check that names another argument fails.
    for fn, exc, name in cases:
        with pytest.raises(exc, match=rf"^{re.escape(name)}:"):
            fn()


def test_extreme_inputs_stay_finite():
    torch.manual_seed(12)
    layer = perturb(flows.AffineCoupling(4, hidden=8).double(), 12, 5.0)
    x = randn(3, 4, seed=1) * 1e6
    y, logdet = layer(x)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    assert (logdet.abs() <= 3.0 * 2 + 1e-9).all()   # |s| <= max_log_scale per transformed entry
