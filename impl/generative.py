"""Autoencoders: X -> Z -> X with g(f(x)) ~ x; under- and overcomplete, denoising, and the linear
autoencoder whose optimum spans the PCA subspace.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from impl._checks import check_float, check_generator, check_int, check_same, check_tensor


def is_undercomplete(x_dim: int, z_dim: int) -> bool:
    """|Z| < |X|: the code is narrower than the input (else the autoencoder is overcomplete)."""
    check_int(x_dim, "x_dim", min=1)
    check_int(z_dim, "z_dim", min=1)
    return z_dim < x_dim


class Autoencoder(nn.Module):
    """Encoder f: R^x_dim -> R^z_dim and decoder g: R^z_dim -> R^x_dim.

    ``hidden=None`` gives the linear autoencoder f(x) = E x + c, g(z) = D z + d (``bias=False``:
    the purely linear f(x) = E x, g(z) = D z); otherwise one tanh hidden layer of that width on
    each side.  x: (B, x_dim), z: (B, z_dim).
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: int | None = None, *, bias: bool = True):
        super().__init__()
        check_int(x_dim, "x_dim", min=1)
        check_int(z_dim, "z_dim", min=1)
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__}")
        self.x_dim, self.z_dim = x_dim, z_dim
        if hidden is None:
            self.f = nn.Linear(x_dim, z_dim, bias=bias)
            self.g = nn.Linear(z_dim, x_dim, bias=bias)
        elif not bias:
            raise ValueError("bias: only the linear autoencoder (hidden=None) can drop its biases")
        else:
            check_int(hidden, "hidden", min=1)
            self.f = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, z_dim))
            self.g = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", shape=(None, self.x_dim))
        return self.f(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, "z", shape=(None, self.z_dim))
        return self.g(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)): (B, x_dim) -> (B, x_dim)."""
        return self.decode(self.encode(x))


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |x - x_hat|^2. x, x_hat: (B, D) -> scalar."""
    check_tensor(x, "x", ndim=2)
    check_tensor(x_hat, "x_hat", shape=tuple(x.shape))
    check_same(x, "x", x_hat=x_hat)
    return ((x - x_hat) ** 2).sum(-1).mean()


def corrupt(x: torch.Tensor, noise_std: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + noise_std * eps: the input of a denoising autoencoder. x: (B, D) -> (B, D)."""
    check_tensor(x, "x")
    check_float(noise_std, "noise_std", min=0)
    check_generator(generator, "generator", x.device)
    return x + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def fit_autoencoder(model: Autoencoder, x: torch.Tensor, *, noise_std: float = 0.0, steps: int = 200,
                    generator: torch.Generator | None = None) -> float:
    """Full-batch L-BFGS on the (denoising, when noise_std > 0) reconstruction loss |x - g(f(x~))|^2.

    The corruption is drawn once (a fixed noisy copy of the data set), so the objective is
    deterministic and L-BFGS converges. Returns the final loss.
    """
    if not isinstance(model, Autoencoder):
        raise TypeError(f"model: expected an Autoencoder, got {type(model).__name__}")
    check_tensor(x, "x", shape=(None, model.x_dim))
    check_int(steps, "steps", min=1)
    check_float(noise_std, "noise_std", min=0)
    p = next(model.parameters())
    check_same(p, "model's parameters", x=x)
    x_in = corrupt(x, noise_std, generator=generator) if noise_std > 0 else x
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=steps, tolerance_grad=1e-12,
                            tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = reconstruction_loss(x, model(x_in))
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(reconstruction_loss(x, model(x_in)))
