"""Edge cases and bad inputs of impl/vae.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/vae.py --sample 60 --seed 1``:
an argument check that names the wrong argument (or none) or lets a bad size through, the VQ
quantiser and losses on latents with more than one batch axis. Expected values come from the
definitions (brute-force nearest neighbours, means of squared differences written out here).
"""

from __future__ import annotations

import pytest
import torch

from impl import vae

F64 = torch.float64


def _g(seed):
    return torch.Generator().manual_seed(seed)


# ---- messages name the offending argument and the one it is compared with -------------------------

def test_gaussian_log_prob_broadcast_errors_name_both_arguments():
    x = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match=r"^mu: shape \(3,\) does not broadcast against x's \(2,\)$"):
        vae.gaussian_log_prob(x, torch.zeros(3, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match=r"^logvar: shape \(4, 2\) would broadcast x's \(2,\) to \(4, 2\)$"):
        vae.gaussian_log_prob(x, torch.zeros(2, dtype=F64), torch.zeros(4, 2, dtype=F64))


def test_kl_gaussian_broadcast_error_names_mu_q():
    q = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"^mu_p: shape \(3,\) does not broadcast against mu_q's \(2, 2\)$"):
        vae.kl_gaussian(q, q, torch.zeros(3, dtype=F64), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("which", ["mu_p", "logvar_p"])
def test_kl_monte_carlo_prior_must_be_tensors(which):
    q = torch.zeros(2, dtype=F64)
    args = {"mu_p": q, "logvar_p": q, which: [0.0, 0.0]}
    with pytest.raises(TypeError, match=rf"^{which}: expected a torch.Tensor, got list$"):
        vae.kl_monte_carlo(q, q, args["mu_p"], args["logvar_p"], n=4, generator=_g(0))


def test_linear_gaussian_functions_name_W():
    x = torch.zeros(3, 4, dtype=F64)
    b = torch.zeros(4, dtype=F64)
    W_bad = torch.zeros(5, 2, dtype=F64)                 # 5 rows, x has 4 coordinates
    with pytest.raises(ValueError, match=r"^W:"):
        vae.linear_gaussian_log_marginal(x, W_bad, b, 0.5)
    with pytest.raises(ValueError, match=r"^W:"):
        vae.linear_gaussian_posterior(x, W_bad, b, 0.5)
    m, S = torch.zeros(3, 2, dtype=F64), torch.eye(2, dtype=F64)
    with pytest.raises(ValueError, match=r"^W:"):
        vae.linear_gaussian_elbo_terms(x, W_bad, b, 0.5, m, S)
    # a float32 W passes the shape checks and is refused against x's dtype
    with pytest.raises(TypeError, match=r"^W: dtype torch.float32 differs from x's torch.float64$"):
        vae.linear_gaussian_elbo_terms(x, torch.zeros(4, 2), b, 0.5, m, S)


@pytest.mark.parametrize("hidden, err", [(0, ValueError), (-3, ValueError), (True, TypeError), (2.0, TypeError)])
def test_vae_hidden_width_checked(hidden, err):
    with pytest.raises(err, match=r"^hidden:"):
        vae.VAE(3, 2, hidden=hidden)
    assert vae.VAE(3, 2, hidden=1).encoder[0].out_features == 1      # the smallest width is allowed


def test_vq_losses_dtype_error_names_z():
    z = torch.zeros(2, 3, dtype=F64)
    idx = torch.zeros(2, dtype=torch.long)
    with pytest.raises(TypeError, match=r"^codebook: dtype torch.float32 differs from z's torch.float64$"):
        vae.vq_losses(z, torch.zeros(4, 3), idx)


def test_vrnn_dtype_error_names_x():
    m = vae.VRNN(x_dim=1, z_dim=1, h_dim=2).double()
    x = torch.zeros(2, 3, 1, dtype=F64)
    with pytest.raises(TypeError, match=r"^z: dtype torch.float32 differs from x's torch.float64$"):
        m.log_factors(x, torch.zeros(2, 3, 1))


# ---- the VQ quantiser and losses on latents of any rank --------------------------------------------

def _nearest(z, codebook):
    """Brute force: the index of the nearest code for every latent vector, by a loop."""
    flat = z.reshape(-1, z.shape[-1])
    return torch.stack([((codebook - v) ** 2).sum(1).argmin() for v in flat]).reshape(z.shape[:-1])


@pytest.mark.parametrize("shape", [(5,), (7, 5), (2, 3, 5), (2, 5, 5), (3, 1, 2, 5)])
def test_vq_quantise_any_number_of_batch_axes(shape):
    z = torch.randn(*shape, generator=_g(1), dtype=F64)
    codebook = torch.randn(6, 5, generator=_g(2), dtype=F64)
    zq, idx = vae.vq_quantise(z, codebook)
    want = _nearest(z, codebook)
    assert idx.shape == shape[:-1] and idx.dtype == torch.long
    torch.testing.assert_close(idx, want, rtol=0, atol=0)
    torch.testing.assert_close(zq, codebook[want], rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(2, 3, 4), (4, 3, 1, 4)])
def test_vq_losses_on_latents_with_several_batch_axes(shape):
    z = torch.randn(*shape, generator=_g(3), dtype=F64)
    codebook = torch.randn(5, 4, generator=_g(4), dtype=F64)
    idx = torch.randint(0, 5, shape[:-1], generator=_g(5))
    code, commit = vae.vq_losses(z, codebook, idx, beta=0.5)
    sq = ((codebook[idx] - z) ** 2).sum() / z.numel()            # the mean over all entries
    torch.testing.assert_close(code, sq, rtol=1e-14, atol=0)
    torch.testing.assert_close(commit, 0.5 * sq, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match=r"^codebook: width 3 differs from z's 4$"):
        vae.vq_losses(z, codebook[:, :3], idx)


# ---- found by a second sample (seed 2) ---------------------------------------------------------------

def test_gaussian_log_prob_checks_every_dtype():
    x = torch.zeros(2, dtype=F64)
    with pytest.raises(TypeError, match=r"^mu: dtype torch.float32 differs from x's torch.float64$"):
        vae.gaussian_log_prob(x, torch.zeros(2), torch.zeros(2, dtype=F64))
    with pytest.raises(TypeError, match=r"^logvar: dtype torch.float32 differs from x's torch.float64$"):
        vae.gaussian_log_prob(x, torch.zeros(2, dtype=F64), torch.zeros(2))


def test_reparametrise_logvar_shape_named():
    with pytest.raises(ValueError, match=r"^logvar:"):
        vae.reparametrise(torch.zeros(3, 2, dtype=F64), torch.zeros(3, 3, dtype=F64))


def test_kl_monte_carlo_smallest_sample_count():
    # n = 2 is the fewest samples with a standard error; with q = p every sample's log ratio is 0
    q = torch.tensor([0.3, -0.1], dtype=F64)
    lv = torch.tensor([0.2, -0.5], dtype=F64)
    est, se = vae.kl_monte_carlo(q, lv, q, lv, n=2, generator=_g(0))
    torch.testing.assert_close(est, torch.zeros((), dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(se, torch.zeros((), dtype=F64), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match=r"^n: must be >= 2, got 1$"):
        vae.kl_monte_carlo(q, lv, q, lv, n=1, generator=_g(0))


def test_vae_samples_are_a_function_of_the_generator():
    m = vae.VAE(3, 2, hidden=4).double()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a = m.sample(5, generator=_g(7))
        torch.manual_seed(99)                        # the global random state must not matter
        torch.randn(10)
        b = m.sample(5, generator=_g(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and it is x_hat = mu(z) + sigma(z) eps with z, then eps, drawn from that one generator
    g = _g(7)
    z = torch.randn(5, 2, generator=g, dtype=F64)
    mu, logvar = m.decode(z)
    eps = torch.randn(mu.shape, generator=g, dtype=F64)
    torch.testing.assert_close(a, mu + torch.exp(0.5 * logvar) * eps, rtol=1e-14, atol=1e-15)


def test_vrnn_sizes_checked_and_named():
    for kw, name in (({"x_dim": 0}, "x_dim"), ({"z_dim": 0}, "z_dim"), ({"h_dim": 0}, "h_dim")):
        with pytest.raises(ValueError, match=rf"^{name}:"):
            vae.VRNN(**kw)
    m = vae.VRNN(x_dim=2, z_dim=1, h_dim=3).double()
    z = torch.zeros(2, 4, 1, dtype=F64)
    for x in (torch.zeros(2, 4, 3, dtype=F64), torch.zeros(2, 4, dtype=F64)):   # wrong x_dim, no bit axis
        with pytest.raises(ValueError, match=r"^x:"):
            m.log_factors(x, z)
