"""Golden outputs of the GAN section: the losses on fixed logits, the divergences, the optimal
discriminator, FID, the gradient penalty, the unrolled generator loss, AdaIN and a DCGAN
generator/discriminator pair on fixed weights. Inputs come from numpy's legacy RandomState (its
stream is frozen across numpy versions), so the files guard against drift of the computation
across torch versions and devices."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from impl import gan

pytestmark = pytest.mark.golden

F64 = torch.float64
DATA = Path(__file__).parent / "data"
TOL64 = dict(atol=1e-12, rtol=1e-10)


def _prob(rs, *shape):
    e = rs.exponential(size=shape)
    return e / e.sum(-1, keepdims=True)


def _set_weights(module: nn.Module, rs, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(scale * rs.standard_normal(tuple(p.shape))))
    return module


def gan_outputs(dtype=F64, device="cpu"):
    """Every golden output of the section, computed in ``dtype`` on ``device``."""
    rs = np.random.RandomState(2024)

    def t(a):
        return torch.as_tensor(a, dtype=dtype, device=device)
    real, fake = t(3 * rs.standard_normal(16)), t(3 * rs.standard_normal(12))
    p, q = t(_prob(rs, 3, 6)), t(_prob(rs, 3, 6))
    feats_r = t(rs.standard_normal((64, 8)) @ rs.standard_normal((8, 8)) / 3)
    feats_g = t(1.2 * rs.standard_normal((48, 8)) + 0.3)
    x, y = t(rs.standard_normal((6, 4))), t(rs.standard_normal((6, 4)))
    eps = t(rs.uniform(size=6))
    critic = _set_weights(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype), rs).to(device)
    feat = t(2 * rs.standard_normal((2, 3, 4, 4)) + 1)
    scale, bias = t(rs.uniform(0.5, 2.0, (2, 3))), t(rs.standard_normal((2, 3)))
    g_net = _set_weights(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype), rs).to(device)
    d_net = _set_weights(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype), rs).to(device)
    z, data = t(rs.standard_normal((5, 2))), t(rs.standard_normal((7, 3)))
    dcg = _set_weights(gan.DCGANGenerator(nz=4, features=4, channels=1, ups=2).to(dtype), rs, 0.2).to(device).eval()
    dcd = _set_weights(gan.DCGANDiscriminator(features=4, channels=1, downs=2).to(dtype), rs, 0.2).to(device).eval()
    zz = t(rs.standard_normal((3, 4)))
    image = dcg(zz)
    out = {
        "value_function": gan.value_function(real, fake),
        "discriminator_loss": gan.discriminator_loss(real, fake),
        "generator_loss_saturating": gan.generator_loss(fake, "saturating"),
        "generator_loss_non_saturating": gan.generator_loss(fake, "non-saturating"),
        "optimal_discriminator": gan.optimal_discriminator(p, q),
        "kl_divergence": gan.kl_divergence(p, q),
        "js_divergence": gan.js_divergence(p, q),
        "fid": gan.fid(feats_r, feats_g),
        "gradient_penalty": gan.gradient_penalty(lambda v: critic(v)[:, 0], x, y, weight=10.0, eps=eps),
        "unrolled_generator_loss": gan.unrolled_generator_loss(g_net, d_net, z, data, k=3, lr=0.5),
        "adain": gan.adain(feat, scale, bias),
        "dcgan_image": image,
        "dcgan_logits": dcd(image),
    }
    return {k: v.detach() for k, v in out.items()}


SHAPES = {"optimal_discriminator": (3, 6), "kl_divergence": (3,), "js_divergence": (3,), "adain": (2, 3, 4, 4),
          "dcgan_image": (3, 1, 16, 16), "dcgan_logits": (3,)}


def test_golden_gan_outputs(ndarrays_regression):
    out = gan_outputs()
    for k, v in out.items():
        assert v.dtype == F64, k
        assert tuple(v.shape) == SHAPES.get(k, ()), k
    # Spot checks against independent formulas before the values are stored.
    torch.testing.assert_close(out["discriminator_loss"], -out["value_function"], rtol=0, atol=0)
    assert float(out["fid"]) > 0 and (out["js_divergence"] <= np.log(2)).all()
    ndarrays_regression.check({k: v.numpy() for k, v in out.items()}, basename="gan_outputs",
                              default_tolerance=TOL64)


def test_golden_gan_outputs_float32_on_device(device):
    stored = np.load(DATA / "gan_outputs.npz", allow_pickle=False)
    out = gan_outputs(torch.float32, device)
    for k, v in out.items():
        assert v.dtype == torch.float32 and v.device.type == device.type, k
        ref = torch.from_numpy(stored[k]).to(torch.float32)
        # float32 round-off: ~1e-7 relative per operation. The deepest chains here are FID (two
        # 8x8 eigendecompositions of covariances with entries ~1, error ~1e-5 of its ~2 value),
        # the 3-step unrolled loss (second derivatives) and the DCGAN pair (4 layers, batchnorm
        # in eval mode); 2e-4 relative / 2e-4 absolute leaves a margin of ~10 over all of them.
        torch.testing.assert_close(v.cpu(), ref, rtol=2e-4, atol=2e-4, msg=lambda m, k=k: f"{k}: {m}")
