"""Edge cases and bad inputs of impl/diffusion.py found by mutation testing
(report/mutation/diffusion.txt): argument checks that must name the right argument, boundary
values that are valid, the schedule following x's device, the null class of the conditional
networks, and the ELBO's terms in closed form for the oracle noise predictor. Expected values come
from the formulas (alpha_bar_t = prod (1 - beta_i), written out in the tests)."""

import math

import pytest
import torch
from torch.testing import assert_close

from impl import diffusion as D

f64 = torch.float64


def _randn(*shape, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _betas(T=6):
    return torch.linspace(0.05, 0.4, T, dtype=f64)


# --------------------------------------------------------------------------- schedules and checks


def test_linear_schedule_checks_by_name():
    with pytest.raises(ValueError, match=r"^T: must be >= 1"):
        D.linear_beta_schedule(0)
    # beta_start = 1 is outside (0, 1); it must be named, not reported as beta_end < beta_start
    with pytest.raises(ValueError, match=r"^beta_start: must be < 1"):
        D.linear_beta_schedule(10, 1.0, 0.5)
    # both ends are open: beta_1 = 0 adds no noise, beta_T = 1 leaves none of x
    with pytest.raises(ValueError, match=r"^beta_start: must be > 0"):
        D.linear_beta_schedule(10, 0.0, 0.02)
    with pytest.raises(ValueError, match=r"^beta_end: must be < 1"):
        D.linear_beta_schedule(10, 1e-4, 1.0)


def test_cosine_offset_s_must_be_positive():
    with pytest.raises(ValueError, match=r"^s: must be > 0\.0, got 0\.0$"):
        D.cosine_alpha_bar(torch.linspace(0, 1, 5, dtype=f64), s=0.0)
    with pytest.raises(ValueError, match=r"^s: must be > 0"):
        D.cosine_beta_schedule(10, s=-0.5)


def test_boolean_time_steps_are_refused():
    x0, betas = _randn(2, 3), _betas()
    with pytest.raises(TypeError, match=r"^t: expected an integer tensor of time steps, got dtype torch.bool$"):
        D.q_sample(x0, torch.ones(2, dtype=torch.bool), betas, _randn(2, 3, seed=1))


def test_time_steps_on_another_device_are_named():
    # t on the meta device, x on the CPU: refused before any value of t is read
    x0, t = _randn(2, 3), torch.tensor([1, 2], device="meta")
    with pytest.raises(ValueError, match=r"^t: on meta, but x is on cpu$"):
        D.q_sample(x0, t, _betas(), _randn(2, 3, seed=1))


def test_noise_dtype_mismatch_names_x():
    x0, t = _randn(2, 3), torch.tensor([1, 2])
    with pytest.raises(TypeError, match=r"^noise: dtype torch.float32 differs from x's torch.float64$"):
        D.q_sample(x0, t, _betas(), _randn(2, 3, dtype=torch.float32))


def test_q_sample_on_a_batch_of_scalars():
    # x0: (B,) is a batch of 1-D data points: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
    betas = _betas()
    x0, eps, t = _randn(5, seed=2), _randn(5, seed=3), torch.tensor([1, 2, 3, 5, 6])
    ab = torch.cumprod(1 - betas, 0)[t - 1]
    assert_close(D.q_sample(x0, t, betas, eps), ab.sqrt() * x0 + (1 - ab).sqrt() * eps)


def test_q_posterior_checks_x0_by_name():
    with pytest.raises(ValueError, match=r"^x0: expected 1 or 2"):
        D.q_posterior(torch.tensor(1.0, dtype=f64), torch.tensor(1.0, dtype=f64), torch.tensor([1]), _betas())


def test_mu_from_eps_dtype_mismatch_names_xt():
    with pytest.raises(TypeError, match=r"^eps: dtype torch.float32 differs from xt's torch.float64$"):
        D.mu_from_eps(_randn(2, 3), torch.tensor([1, 2]), _randn(2, 3, dtype=torch.float32), _betas())


def test_gaussian_kl_checks_var1_by_name():
    m = _randn(2, 3)
    with pytest.raises(TypeError, match=r"^var1: expected a torch.Tensor"):
        D.gaussian_kl(m, 1.0, m, torch.ones(2, 1, dtype=f64))


def test_reverse_step_z_dtype_mismatch_names_xt():
    betas = _betas()
    with pytest.raises(TypeError, match=r"^z: dtype torch.float32 differs from xt's torch.float64$"):
        D.reverse_step(lambda x, t: torch.zeros_like(x), _randn(2, 3), 2, betas, betas.sqrt(),
                       z=_randn(2, 3, dtype=torch.float32))


def test_gaussian_optimal_eps_checks_xt_by_name():
    with pytest.raises(ValueError, match=r"^xt: expected 2 dimensions"):
        D.gaussian_optimal_eps(_randn(3), torch.tensor([1, 1, 1]), _betas(), _randn(3), torch.eye(3, dtype=f64))


# --------------------------------------------------------------------------- the schedule follows x


def test_ddpm_loss_casts_the_schedule_to_x0s_device():
    # x0 on the meta device, the schedule on the CPU: the per-step products must be moved to x0's
    # device before they are indexed by t and multiplied (validate=False reads no values)
    x0 = torch.empty(4, 3, device="meta", dtype=f64)
    t = torch.full((4,), 3, device="meta", dtype=torch.long)
    loss = D.ddpm_loss(lambda x, tt: torch.zeros_like(x), x0, _betas(), t=t, noise=torch.empty_like(x0),
                       validate=False)
    assert loss.device.type == "meta" and loss.shape == ()


def test_gaussian_optimal_eps_on_device(device):
    # (on a CUDA device this also checks that the identity is built there)
    betas = _betas().to(device)
    xt, mean = _randn(3, 2, seed=4).to(device), _randn(2, seed=5).to(device)
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=f64, device=device)
    t = torch.tensor([1, 3, 6], device=device)
    ab = torch.cumprod(1 - betas, 0)[t - 1]
    want = torch.stack([(1 - a).sqrt() * torch.linalg.solve(a * cov + (1 - a) * torch.eye(2, dtype=f64, device=device),
                                                            x - a.sqrt() * mean) for a, x in zip(ab, xt)])
    assert_close(D.gaussian_optimal_eps(xt, t, betas, mean, cov), want)


# --------------------------------------------------------------------------- training


def test_train_ddpm_accepts_a_batch_of_one():
    torch.manual_seed(0)
    model = D.NoisePredictor(dim=2, hidden=8, time_dim=4, depth=1)
    data = _randn(4, 2, seed=6, dtype=torch.float32)
    res = D.train_ddpm(model, data, D.linear_beta_schedule(10), steps=2, batch=1,
                       generator=torch.Generator().manual_seed(0))
    assert res.losses.shape == (2,) and bool(torch.isfinite(res.losses).all())


class _Scale(torch.nn.Module):
    """eps_theta(x, t) = p x: one parameter, so that a thousand Adam steps take a fraction of a second."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return self.p * x


def test_train_ddpm_defaults_to_1000_steps_reported_every_100():
    seen = []
    res = D.train_ddpm(_Scale(), torch.zeros(2, 1), D.linear_beta_schedule(10), batch=1,
                       callback=lambda step, loss: seen.append(step), generator=torch.Generator().manual_seed(0))
    assert res.losses.shape == (1000,) and seen == list(range(100, 1001, 100))


def test_train_ddpm_reports_a_negative_p_uncond_first():
    # p_uncond is checked before `every`: a weakened p_uncond check would report `every` instead
    model = D.NoisePredictor(dim=2, hidden=8, time_dim=4, depth=1)
    with pytest.raises(ValueError, match=r"^p_uncond: must be >= 0"):
        D.train_ddpm(model, _randn(4, 2, dtype=torch.float32), D.linear_beta_schedule(10), steps=1,
                     p_uncond=-0.1, every=0)


# --------------------------------------------------------------------------- networks


def test_noise_predictor_checks_and_label_range():
    with pytest.raises(ValueError, match=r"^hidden: must be >= 1"):
        D.NoisePredictor(hidden=0)
    with pytest.raises(ValueError, match=r"^time_dim: must be >= 2"):
        D.NoisePredictor(time_dim=1)
    with pytest.raises(ValueError, match=r"^depth: must be >= 1"):
        D.NoisePredictor(depth=0)
    # labels 0..num_classes, num_classes being the null label: num_classes + 1 embeddings
    net = D.NoisePredictor(dim=2, hidden=8, time_dim=4, num_classes=3, depth=1)
    assert net.class_emb.num_embeddings == 4
    x, t = torch.zeros(2, 2), torch.tensor([1, 2])
    with pytest.raises(IndexError):
        net(x, t, torch.tensor([4, 4]))


def test_noise_predictor_wants_one_step_and_one_label_per_sample():
    # a (1,) label would broadcast silently over the batch; a (3,) t would fail inside torch.cat
    net = D.NoisePredictor(dim=2, hidden=8, time_dim=4, num_classes=3, depth=1)
    x, t = torch.zeros(2, 2), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"^t: expected shape \(2\)"):
        net(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"^y: expected shape \(2\)"):
        net(x, t, torch.tensor([1]))


def test_image_noise_predictor_with_its_default_width():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 4, 4)
    out = D.ImageNoisePredictor()(x, torch.tensor([5]))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


def test_image_noise_predictor_null_labels_follow_x():
    # the default null labels must be made on x's device (on a GPU, CPU labels fail the lookup).
    # The meta device stands in for a GPU without one; its embedding lookup accepts CPU indices,
    # so the labels' device is read where they enter the embedding.
    net = D.ImageNoisePredictor(channels=1, width=8, time_dim=8, num_classes=3).to("meta")
    labels = []
    net.class_emb.register_forward_pre_hook(lambda mod, args: labels.append(args[0]))
    x, t = torch.empty(2, 1, 4, 4, device="meta"), torch.tensor([1, 7], device="meta")
    assert net(x, t).shape == x.shape
    assert [y.device.type for y in labels] == ["meta"]


def test_image_noise_predictor_null_class_and_checks():
    with pytest.raises(ValueError, match=r"^num_classes: must be >= 0"):
        D.ImageNoisePredictor(num_classes=-1)
    torch.manual_seed(0)
    net = D.ImageNoisePredictor(channels=1, width=8, time_dim=8, num_classes=3)
    x, t = torch.randn(2, 1, 4, 4), torch.tensor([1, 7])
    # without labels the network is the unconditional one: the null label num_classes
    assert_close(net(x, t), net(x, t, torch.full((2,), 3)))
    with pytest.raises(ValueError, match=r"^y: expected shape \(2\)"):
        net(x, t, torch.zeros(3, dtype=torch.long))


def test_controlnet_with_its_own_control_channels():
    torch.manual_seed(0)
    base = D.ImageNoisePredictor(channels=1, width=8, time_dim=8)
    cn = D.ControlNet(base, control_channels=3)
    assert cn.control_channels == 3 and cn.hint.in_channels == 3
    x, t, control = torch.randn(2, 1, 4, 4), torch.tensor([1, 5]), torch.randn(2, 3, 4, 4)
    # zero-initialised branch: at initialisation the output is the base's
    assert_close(cn(x, t, control), base(x, t))


def test_autoencoder_checks_by_name():
    with pytest.raises(ValueError, match=r"^width: must be >= 1"):
        D.Autoencoder(width=0)
    ae = D.Autoencoder(channels=1, latent_channels=4, width=8, levels=2)
    with pytest.raises(ValueError, match=r"^z: expected 4 dimensions"):
        ae.decode(torch.zeros(4, 2, 3))
    # H = 4 equals the latent channel count: only the channel axis may be read
    with pytest.raises(ValueError, match=r"^z: expected 4 channels, got 3$"):
        ae.decode(torch.zeros(1, 3, 4, 4))
    assert ae.decode(torch.zeros(1, 4, 2, 3)).shape == (1, 1, 8, 12)


# --------------------------------------------------------------------------- ELBO


def test_elbo_terms_of_the_oracle_predictor_in_closed_form():
    # With eps_theta(x_t, t) = the true noise (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t), mu_theta is the
    # posterior mean: mu_theta(x_1, 1) = x0, and every denoising KL has equal means. The three terms
    # then do not depend on the noise drawn:
    #   recon   = -D/2 log(2 pi sigma_1^2),
    #   prior   = 1/2 sum_d (-log(1 - ab_T) + (1 - ab_T) + ab_T x0_d^2 - 1),
    #   denoise = D/2 sum_{t=2}^T (log(sigma_t^2 / bt_t) + bt_t / sigma_t^2 - 1),  bt_t the posterior variance.
    betas = _betas(6)
    sigmas = (0.5 * betas).sqrt()  # not the posterior's, so the KLs are not zero
    B, Dd = 3, 4
    x0 = _randn(B, Dd, seed=7)
    ab = torch.cumprod(1 - betas, 0)

    def oracle(xt, t):
        a = ab[t - 1][:, None]
        return (xt - a.sqrt() * x0) / (1 - a).sqrt()

    recon, prior, denoise = D.elbo_terms(oracle, x0, betas, sigmas, generator=torch.Generator().manual_seed(0))
    s2 = sigmas ** 2
    assert_close(recon, torch.full((B,), -0.5 * Dd * math.log(2 * math.pi * s2[0].item()), dtype=f64))
    aT = ab[-1]
    assert_close(prior, 0.5 * (-torch.log(1 - aT) + (1 - aT) + aT * x0 ** 2 - 1).sum(1))
    ab_prev = torch.cat([torch.ones(1, dtype=f64), ab[:-1]])
    bt = (1 - ab_prev) / (1 - ab) * betas
    per_t = 0.5 * Dd * (torch.log(s2 / bt) + bt / s2 - 1)
    assert_close(denoise, per_t[1:].sum().expand(B))


def test_image_noise_predictor_null_class_on_device(device):
    # (on a CUDA device this also checks that the default null labels are made there)
    torch.manual_seed(0)
    net = D.ImageNoisePredictor(channels=1, width=8, time_dim=8, num_classes=3).to(device)
    x, t = torch.randn(2, 1, 4, 4, device=device), torch.tensor([1, 7], device=device)
    assert_close(net(x, t), net(x, t, torch.full((2,), 3, device=device)))
