"""Normalizing flows: change of variables, coupling layers, squeeze, ActNorm, invertible 1x1
convolutions (full and LU), conditional coupling, SRFlow's affine injector, a small multi-scale
Glow-style flow and C-Flow's conditional composition of two flows.

Convention. The notes write the generative map ``x = f(z)``. Every layer here is written in the
*normalising* direction ``y = layer(x)`` (data towards latent), as the notes write each layer
(``y = s * x + b`` for ActNorm, ``y^A = h(x^A, beta(x^B))`` for coupling, ``h^{n+1} = ...`` for
the injector), so a flow's ``f^{-1}`` is the composition of the layers' ``forward`` and ``f`` the
composition of their ``inverse`` in reverse order. Each ``forward`` returns ``(y, logdet)`` with
``logdet = log|det dy/dx|`` per sample, shape (B,).

Tensors are either vectors ``(B, C)`` or images ``(B, C, H, W)``; the channel axis is 1 and
per-channel parameters are shared over the spatial positions (so log-determinants carry the
factor ``H * W``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from impl._checks import (check_bool, check_device, check_dtype, check_float, check_generator, check_int,
                          check_same, check_same_shape, check_tensor, check_trainable)

LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- change of variables

def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over all but the batch axis. z: (B, ...) -> (B,)."""
    check_tensor(z, "z")
    if z.ndim < 1:
        raise ValueError("z: expected a batch axis, got a 0-d tensor")
    zf = z.reshape(z.shape[0], math.prod(z.shape[1:]))  # not -1: ambiguous for an empty batch
    return -0.5 * (zf.pow(2) + LOG_2PI).sum(dim=1)


def _jacobian_logabsdet(fn, x: torch.Tensor, name: str) -> torch.Tensor:
    """log|det d fn(x_b) / d x_b| for each row of x: (B, D), with fn: (D,) -> (D,)."""
    jac = torch.func.vmap(torch.func.jacrev(fn))(x)
    if jac.shape != (*x.shape, x.shape[1]):  # fn is not a map (D,) -> (D,): no determinant
        raise ValueError(f"{name}: expected a map (D,) -> (D,) with D = {x.shape[1]}, got a Jacobian of shape "
                         f"{tuple(jac.shape[1:])} per sample")
    return torch.linalg.slogdet(jac).logabsdet


def _log_pz(log_pz, z: torch.Tensor) -> torch.Tensor:
    """log_pz(z), checked to be one log-density per sample (B,), so that it cannot broadcast."""
    lp = log_pz(z)
    if not isinstance(lp, torch.Tensor) or lp.shape != (z.shape[0],):
        got = tuple(lp.shape) if isinstance(lp, torch.Tensor) else type(lp).__name__
        raise ValueError(f"log_pz: expected one log-density per sample, shape ({z.shape[0]},), got {got}")
    return lp


def log_density_inverse_form(f_inv, x: torch.Tensor, log_pz) -> torch.Tensor:
    """log p_x(x) = log p_z(f^{-1}(x)) + log|det d f^{-1}(x) / dx| (first form of the notes).

    f_inv: (D,) -> (D,) (one sample, torch.func-traceable); x: (B, D); log_pz: (B, D) -> (B,).
    The Jacobian is formed in full (O(D^3) determinant): the general case, for reference.
    """
    check_tensor(x, "x", ndim=2)
    if not callable(f_inv):
        raise TypeError("f_inv: expected a callable")
    if not callable(log_pz):
        raise TypeError("log_pz: expected a callable")
    z = torch.func.vmap(f_inv)(x)
    return _log_pz(log_pz, z) + _jacobian_logabsdet(f_inv, x, "f_inv")


def log_density_forward_form(f, z: torch.Tensor, log_pz) -> torch.Tensor:
    """log p_x(f(z)) = log p_z(z) - log|det d f(z) / dz| (second form of the notes).

    f: (D,) -> (D,); z: (B, D); log_pz: (B, D) -> (B,). Returns the density at x = f(z), (B,).
    """
    check_tensor(z, "z", ndim=2)
    if not callable(f):
        raise TypeError("f: expected a callable")
    if not callable(log_pz):
        raise TypeError("log_pz: expected a callable")
    return _log_pz(log_pz, z) - _jacobian_logabsdet(f, z, "f")


# --------------------------------------------------------------------------------------- helpers

def _spatial(x: torch.Tensor) -> int:
    """Number of positions sharing per-channel parameters: H * W for images, 1 for vectors."""
    return math.prod(x.shape[2:])


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (C,) parameter to broadcast against x: (B, C, *spatial)."""
    return v.view(1, -1, *([1] * (x.ndim - 2)))


def _check_params(module: nn.Module, module_name: str, x: torch.Tensor, name: str) -> None:
    """x in the dtype and on the device of ``module``'s parameters (beta may be any model, or have none)."""
    p = next(module.parameters(), None)
    if p is not None:
        check_same(p, module_name, **{name: x})


def _check_features(x, name: str, channels: int | None = None) -> torch.Tensor:
    check_tensor(x, name, ndim=(2, 4))
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels on axis 1, got shape {tuple(x.shape)}")
    return x


# --------------------------------------------------------------------------------------- squeeze

def squeeze(x: torch.Tensor) -> torch.Tensor:
    """Squeeze: each 2x2 spatial block becomes 4 channels. x: (B, C, H, W) -> (B, 4C, H/2, W/2).

    A pure reshape (a permutation of the entries): invertible, log|det| = 0.
    """
    check_tensor(x, "x", ndim=4, floating=False)
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"x: height and width must be even, got shape {tuple(x.shape)}")
    x = x.view(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``squeeze``. y: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    check_tensor(y, "y", ndim=4, floating=False)
    b, c4, h, w = y.shape
    if c4 % 4:
        raise ValueError(f"y: channels must be a multiple of 4, got shape {tuple(y.shape)}")
    c = c4 // 4
    y = y.view(b, c, 2, 2, h, w)
    return y.permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


# --------------------------------------------------------------------------------------- ActNorm

class ActNorm(nn.Module):
    """ActNorm: y = s * x + b per channel, with data-dependent initialisation: on the first
    forward call s and b are set so that the first minibatch comes out with zero mean and unit
    variance per channel. log|det| = (H * W) * sum_i log|s_i|.

    ``initialized`` is a Python bool, so a forward after the first reads no tensor (no host
    synchronisation); it is saved in the state_dict as the module's extra state (a 0-d bool tensor)
    and restored by ``load_state_dict``.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        check_int(channels, "channels", min=1)
        self.eps = check_float(eps, "eps", min=0.0, min_open=True)
        self.log_scale = nn.Parameter(torch.zeros(channels))   # s = exp(log_scale) > 0
        self.bias = nn.Parameter(torch.zeros(channels))
        self.initialized = False

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set s = 1 / std, b = -mean / std per channel from the minibatch x: (B, C, *spatial)."""
        _check_features(x, "x", self.log_scale.numel())
        check_same(self.log_scale, "log_scale", x=x)
        if x.shape[0] * _spatial(x) == 0:  # no sample: the mean and std are undefined (NaN parameters)
            raise ValueError(f"x: ActNorm's data-dependent initialisation needs at least one sample, "
                             f"got shape {tuple(x.shape)}")
        dims = [0] + list(range(2, x.ndim))
        mean = x.mean(dim=dims)
        std = x.std(dim=dims, unbiased=False)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.bias.copy_(-mean / (std + self.eps))
        self.initialized = True

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(self.initialized)

    def set_extra_state(self, state) -> None:
        self.initialized = bool(state)

    def forward(self, x: torch.Tensor):
        """x: (B, C) or (B, C, H, W) -> (y, logdet (B,))."""
        _check_features(x, "x", self.log_scale.numel())
        check_same(self.log_scale, "log_scale", x=x)
        if not self.initialized:
            self.initialize(x)
        y = _per_channel(self.scale, x) * x + _per_channel(self.bias, x)
        logdet = (_spatial(x) * self.log_scale.sum()).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x = (y - b) / s. y: (B, C) or (B, C, H, W)."""
        _check_features(y, "y", self.log_scale.numel())
        check_same(self.log_scale, "log_scale", y=y)
        return (y - _per_channel(self.bias, y)) / _per_channel(self.scale, y)


# ---------------------------------------------------------------------- invertible 1x1 convolution

def random_rotation(channels: int, *, generator: torch.Generator | None = None,
                    dtype=torch.float32, device=None) -> torch.Tensor:
    """A random orthogonal C x C matrix with det = +1 (QR of a Gaussian, column signs fixed so
    the distribution is Haar, then the first column flipped if the determinant is -1). Drawn in
    float64 on ``device`` (a ``generator`` must live there), then cast to ``dtype``."""
    channels = check_int(channels, "channels", min=1)
    device = check_device(device) or torch.device("cpu")
    check_dtype(dtype)
    check_generator(generator, "generator", device)
    a = torch.randn(channels, channels, generator=generator, dtype=torch.float64, device=device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    # det(q) = +-1; multiplying the first column by it gives det +1 without reading it on the host.
    flip = torch.ones(channels, dtype=q.dtype, device=device)
    flip[0] = torch.linalg.det(q).sign()
    return (q * flip).to(dtype=dtype)


def conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Invertible 1x1 convolution: y_{:,i,j} = W x_{:,i,j}. x: (B, C, *spatial), weight: (C, C)."""
    _check_features(x, "x")
    check_tensor(weight, "weight", shape=(x.shape[1], x.shape[1]))
    check_same(x, "x", weight=weight)
    return torch.einsum("oc,bc...->bo...", weight, x)


def conv1x1_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same map with PyTorch's fused conv2d (images only). x: (B, C, H, W), weight: (C, C)."""
    check_tensor(x, "x", ndim=4)
    check_tensor(weight, "weight", shape=(x.shape[1], x.shape[1]))
    check_same(x, "x", weight=weight)
    return F.conv2d(x, weight[:, :, None, None])


def _inverse(weight: torch.Tensor) -> torch.Tensor:
    """W^{-1}, or a ValueError naming the layer's weight where W is singular (linalg's own error)."""
    try:
        return torch.linalg.inv(weight)
    except torch.linalg.LinAlgError as e:
        raise ValueError("weight: is singular, so the layer cannot be inverted") from e


class Invertible1x1Conv(nn.Module):
    """Invertible 1x1 convolution with a full matrix W (a learned generalisation of a channel
    permutation). Initialised as a random rotation (orthogonal, det W = 1).
    log|det| = (H * W) * log|det W|, an O(C^3) determinant."""

    def __init__(self, channels: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(random_rotation(channels, generator=generator))

    def forward(self, x: torch.Tensor):
        """x: (B, C) or (B, C, H, W) -> (y, logdet (B,))."""
        _check_features(x, "x", self.weight.shape[0])
        check_same(self.weight, "weight", x=x)  # named as the argument, not as conv1x1's weight
        y = conv1x1(x, self.weight)
        logdet = (_spatial(x) * torch.linalg.slogdet(self.weight).logabsdet).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        _check_features(y, "y", self.weight.shape[0])
        check_same(self.weight, "weight", y=y)
        return conv1x1(y, _inverse(self.weight))


class Invertible1x1ConvLU(nn.Module):
    """Invertible 1x1 convolution with W = P L (U + diag(s)): P a fixed random permutation,
    L unit lower triangular, U strictly upper triangular, s a vector.
    log|det W| = sum_i log|s_i| (O(C)); the layer's log|det| = (H * W) * sum_i log|s_i|."""

    def __init__(self, channels: int, *, generator: torch.Generator | None = None):
        super().__init__()
        check_int(channels, "channels", min=1)
        # Start from the LU factors of a random rotation (as Glow does), P fixed from there on.
        w0 = random_rotation(channels, generator=generator, dtype=torch.float64)
        p, lower, upper = torch.linalg.lu(w0)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_abs_s = nn.Parameter(s.abs().log().float())

    @property
    def s(self) -> torch.Tensor:
        return self.sign_s * self.log_abs_s.exp()

    def factors(self):
        """(P, L, U, s): the fixed permutation, unit lower triangular L, strictly upper U, s."""
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        return self.perm, self.lower * self.lower_mask + eye, self.upper * self.lower_mask.T, self.s

    def weight(self) -> torch.Tensor:
        """W = P L (U + diag(s)), (C, C)."""
        p, lower, upper, s = self.factors()
        return p @ lower @ (upper + torch.diag(s))

    def forward(self, x: torch.Tensor):
        """x: (B, C) or (B, C, H, W) -> (y, logdet (B,))."""
        _check_features(x, "x", self.lower.shape[0])
        check_same(self.lower, "weight", x=x)
        y = conv1x1(x, self.weight())
        logdet = (_spatial(x) * self.log_abs_s.sum()).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        _check_features(y, "y", self.lower.shape[0])
        check_same(self.lower, "weight", y=y)
        return conv1x1(y, _inverse(self.weight()))


# -------------------------------------------------------------------------------------- coupling

def _beta_net(in_channels: int, out_channels: int, hidden: int, image: bool) -> nn.Module:
    """beta: any model; a small MLP (vectors) or 3x3 conv net (images). Zero-initialised last
    layer so that every coupling starts as the identity (as in Glow)."""
    if image:
        layers = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out_channels, 3, padding=1)]
    else:
        layers = [nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                  nn.Linear(hidden, out_channels)]
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def affine_h(xa: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The elementwise coupling function h(x^A, beta) = x^A * exp(s) + t with beta = (s, t).
    xa, s, t: the same shape (elementwise: no broadcasting)."""
    check_tensor(xa, "xa")
    check_tensor(s, "s")
    check_tensor(t, "t")
    check_same(xa, "xa", s=s, t=t)
    check_same_shape(xa, "xa", s=s, t=t)
    return xa * s.exp() + t


def affine_h_inverse(ya: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """h^{-1}(y^A, beta) = (y^A - t) * exp(-s). ya, s, t: the same shape."""
    check_tensor(ya, "ya")
    check_tensor(s, "s")
    check_tensor(t, "t")
    check_same(ya, "ya", s=s, t=t)
    check_same_shape(ya, "ya", s=s, t=t)
    return (ya - t) * (-s).exp()


class AffineCoupling(nn.Module):
    """Coupling layer y^A = h(x^A, beta(x^B)) = x^A * exp(s) + t, y^B = x^B with (s, t) = beta(x^B)
    (or beta(x^B, w) for conditional coupling, w: (B, cond_channels[, H, W])).
    x^A = first ``channels // 2`` channels. The Jacobian is block triangular, so
    log|det| = sum s. ``additive=True`` gives the additive (volume-preserving) coupling h = x^A + t.
    """

    def __init__(self, channels: int, *, hidden: int = 64, image: bool = False,
                 cond_channels: int = 0, additive: bool = False, max_log_scale: float = 3.0):
        check_bool(image, "image")
        check_bool(additive, "additive")
        super().__init__()
        check_int(channels, "channels", min=2)
        check_int(hidden, "hidden", min=1)
        check_int(cond_channels, "cond_channels", min=0)
        self.channels, self.cond_channels, self.additive = channels, cond_channels, bool(additive)
        self.max_log_scale = check_float(max_log_scale, "max_log_scale", min=0.0, min_open=True)
        self.ca = channels // 2
        self.cb = channels - self.ca
        out = self.ca if additive else 2 * self.ca
        self.beta = _beta_net(self.cb + cond_channels, out, hidden, image)

    def beta_st(self, xb: torch.Tensor, cond: torch.Tensor | None = None):
        """beta(x^B[, w]) = (s, t), each (B, C_A, *spatial); s = 0 for additive coupling."""
        _check_features(xb, "xb", self.cb)
        self._check_net(xb, "xb")
        if self.cond_channels:
            if cond is None:
                raise ValueError("cond: this coupling is conditional and needs cond")
            check_tensor(cond, "cond", ndim=xb.ndim)  # before its shape is read
            check_same(xb, "x", cond=cond)
            if cond.shape[0] != xb.shape[0] or cond.shape[1] != self.cond_channels \
                    or cond.shape[2:] != xb.shape[2:]:
                raise ValueError(f"cond: expected shape ({xb.shape[0]}, {self.cond_channels}, "
                                 f"{', '.join(map(str, xb.shape[2:]))}), got {tuple(cond.shape)}")
            xb = torch.cat([xb, cond], dim=1)
        elif cond is not None:
            raise ValueError("cond: this coupling is unconditional (cond_channels=0)")
        out = self.beta(xb)
        if self.additive:
            return torch.zeros_like(out), out
        raw_s, t = out[:, : self.ca], out[:, self.ca:]
        # Bounded log-scale (soft clamp): keeps exp(s) finite for any input.
        s = self.max_log_scale * torch.tanh(raw_s / self.max_log_scale)
        return s, t

    def _check_net(self, x: torch.Tensor, name: str) -> None:
        """x on beta's device and in its dtype (else a RuntimeError inside a layer), named as the argument."""
        _check_params(self.beta, "beta", x, name)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        _check_features(x, "x", self.channels)
        self._check_net(x, "x")
        xa, xb = x[:, : self.ca], x[:, self.ca:]
        s, t = self.beta_st(xb, cond)
        ya = affine_h(xa, s, t)
        logdet = s.flatten(1).sum(dim=1)  # flatten, not reshape(B, -1): that is ambiguous for B = 0
        return torch.cat([ya, xb], dim=1), logdet

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        _check_features(y, "y", self.channels)
        self._check_net(y, "y")
        ya, yb = y[:, : self.ca], y[:, self.ca:]
        s, t = self.beta_st(yb, cond)
        return torch.cat([affine_h_inverse(ya, s, t), yb], dim=1)


class Reverse(nn.Module):
    """Reverse the channel order (a fixed permutation, log|det| = 0) so that alternate couplings
    transform the other half."""

    def forward(self, x: torch.Tensor, cond=None):
        _check_features(x, "x")
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor, cond=None) -> torch.Tensor:
        _check_features(y, "y")
        return y.flip(1)


# ---------------------------------------------------------------------------- SRFlow's injector

class AffineInjector(nn.Module):
    """SRFlow's affine injector: h^{n+1} = exp(beta_s(u)) * h^n + beta_b(u), with u the low-res
    conditioning features (B, Cu, H, W) and h: (B, C, H, W). Inverse h^n = exp(-beta_s(u)) *
    (h^{n+1} - beta_b(u)); log|det| = sum_{i,j,k} beta_s(u)_{ijk}."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 32):
        super().__init__()
        check_int(channels, "channels", min=1)
        check_int(cond_channels, "cond_channels", min=1)
        check_int(hidden, "hidden", min=1)
        self.channels, self.cond_channels = channels, cond_channels
        self.beta = _beta_net(cond_channels, 2 * channels, hidden, image=True)

    def _sb(self, h: torch.Tensor, u: torch.Tensor, name: str):
        check_tensor(h, name, ndim=4)
        check_tensor(u, "u", ndim=4)
        check_same(h, name, u=u)
        _check_params(self.beta, "beta", h, name)  # else a RuntimeError inside the conv
        if h.shape[1] != self.channels:
            raise ValueError(f"{name}: expected {self.channels} channels, got shape {tuple(h.shape)}")
        if u.shape[1] != self.cond_channels or u.shape[0] != h.shape[0] or u.shape[2:] != h.shape[2:]:
            raise ValueError(f"u: expected shape ({h.shape[0]}, {self.cond_channels}, {h.shape[2]}, "
                             f"{h.shape[3]}), got {tuple(u.shape)}")
        out = self.beta(u)
        return 3.0 * torch.tanh(out[:, : self.channels] / 3.0), out[:, self.channels:]

    def forward(self, h: torch.Tensor, u: torch.Tensor):
        """h^n: (B, C, H, W), u: (B, Cu, H, W) -> (h^{n+1}, logdet (B,))."""
        s, b = self._sb(h, u, "h")
        return s.exp() * h + b, s.flatten(1).sum(dim=1)

    def inverse(self, h_next: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        s, b = self._sb(h_next, u, "h_next")
        return (-s).exp() * (h_next - b)


# ------------------------------------------------------------------------------------- stacking

def _layers(layers) -> list:
    """The layers as a list, each a callable with an ``inverse`` method."""
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError(f"layers: expected a sequence of layers, got {type(layers).__name__}") from None
    if not all(callable(layer) and hasattr(layer, "inverse") for layer in layers):
        raise TypeError("layers: expected invertible layers (callables with an inverse method)")
    return layers


def flow_forward(layers, x: torch.Tensor, cond: torch.Tensor | None = None):
    """f^{-1} = f_K^{-1} o ... (layers applied in order): returns (z, logdet (B,)), where each
    layer's log-determinant is evaluated at the intermediate point it receives.

    layers: sequence of modules with forward(x[, cond]) -> (y, logdet); x: (B, C[, H, W]).
    """
    _check_features(x, "x")
    layers = _layers(layers)
    total = x.new_zeros(x.shape[0])
    for k, layer in enumerate(layers):
        out = layer(x, cond) if cond is not None else layer(x)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"layers: layer {k} returned {type(out).__name__}, expected (y, logdet)")
        x, ld = out
        total = total + ld
    return x, total


def flow_inverse(layers, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """f = the layers' inverses in reverse order. z: (B, C[, H, W])."""
    _check_features(z, "z")
    for layer in reversed(_layers(layers)):
        z = layer.inverse(z, cond) if cond is not None else layer.inverse(z)
    return z


def flow_log_prob(layers, x: torch.Tensor, log_pz=standard_normal_log_prob,
                  cond: torch.Tensor | None = None) -> torch.Tensor:
    """Exact log p_x(x) = log p_z(f^{-1}(x)) + sum_k log|det J_k| at intermediate points. (B,)."""
    if not callable(log_pz):
        raise TypeError("log_pz: expected a callable")
    z, logdet = flow_forward(layers, x, cond)
    return _log_pz(log_pz, z) + logdet


class FlowStep(nn.Module):
    """One Glow step: ActNorm -> invertible 1x1 conv (LU) -> affine coupling (optionally
    conditional)."""

    def __init__(self, channels: int, *, hidden: int = 64, image: bool = False, cond_channels: int = 0,
                 generator: torch.Generator | None = None):
        check_bool(image, "image")
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.conv = Invertible1x1ConvLU(channels, generator=generator)
        self.coupling = AffineCoupling(channels, hidden=hidden, image=image, cond_channels=cond_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        x, l1 = self.actnorm(x)
        x, l2 = self.conv(x)
        x, l3 = self.coupling(x, cond)
        return x, l1 + l2 + l3

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = self.coupling.inverse(y, cond)
        return self.actnorm.inverse(self.conv.inverse(y))


class SRFlowStep(nn.Module):
    """SRFlow's flow step: ActNorm -> invertible 1x1 conv -> affine injector -> conditional affine
    coupling, both conditioned on the low-res features u: (B, Cu, H, W). h: (B, C, H, W)."""

    def __init__(self, channels: int, cond_channels: int, *, hidden: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.conv = Invertible1x1ConvLU(channels, generator=generator)
        self.injector = AffineInjector(channels, cond_channels, hidden)
        self.coupling = AffineCoupling(channels, hidden=hidden, image=True, cond_channels=cond_channels)

    def forward(self, h: torch.Tensor, u: torch.Tensor):
        h, l1 = self.actnorm(h)
        h, l2 = self.conv(h)
        h, l3 = self.injector(h, u)
        h, l4 = self.coupling(h, u)
        return h, l1 + l2 + l3 + l4

    def inverse(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        h = self.injector.inverse(self.coupling.inverse(h, u), u)
        return self.actnorm.inverse(self.conv.inverse(h))


class Flow(nn.Module):
    """A stack of Glow steps on vectors (B, C): the 2-D toy flow. Exact log-likelihood, sampling."""

    def __init__(self, channels: int = 2, steps: int = 6, hidden: int = 64, cond_channels: int = 0,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_int(steps, "steps", min=1)
        self.channels = channels
        self.steps = nn.ModuleList(FlowStep(channels, hidden=hidden, cond_channels=cond_channels,
                                            generator=generator) for _ in range(steps))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        """f^{-1}: x (B, C) -> (z, logdet (B,))."""
        return flow_forward(self.steps, x, cond)

    def inverse(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """f: z (B, C) -> x."""
        return flow_inverse(self.steps, z, cond)

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return flow_log_prob(self.steps, x, cond=cond)

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None, *, generator: torch.Generator | None = None):
        """Sample z ~ N(0, I) on the model's device (``generator`` must live there) and return
        x = f(z), (n, C)."""
        n = check_int(n, "n", min=1)
        p = next(self.parameters())
        check_generator(generator, "generator", p.device)
        z = torch.randn(n, self.channels, generator=generator, dtype=p.dtype, device=p.device)
        return self.inverse(z, cond)


class Glow(nn.Module):
    """Multi-scale Glow: for each of ``levels`` levels, squeeze, ``steps`` flow steps, then
    (except at the last level) split off half the channels as latent (factored out, N(0, I)).

    x: (B, C, H, W) with H, W divisible by 2**levels. ``forward`` returns the list of latents
    and the total log-determinant; ``log_prob`` is exact.
    """

    def __init__(self, channels: int = 1, levels: int = 2, steps: int = 2, hidden: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_int(channels, "channels", min=1)
        check_int(levels, "levels", min=1)
        check_int(steps, "steps", min=1)
        self.channels, self.levels = channels, levels
        self.blocks = nn.ModuleList()
        c = channels
        for level in range(levels):
            c *= 4
            self.blocks.append(nn.ModuleList(FlowStep(c, hidden=hidden, image=True, generator=generator)
                                             for _ in range(steps)))
            if level < levels - 1:
                c //= 2

    def forward(self, x: torch.Tensor):
        check_tensor(x, "x", ndim=4)
        if x.shape[1] != self.channels or x.shape[2] % 2 ** self.levels or x.shape[3] % 2 ** self.levels:
            raise ValueError(f"x: expected ({self.channels} channels, H and W divisible by "
                             f"{2 ** self.levels}), got shape {tuple(x.shape)}")
        if min(x.shape[2:]) == 0:  # divisible, but no pixel for the couplings' 3x3 convolutions
            raise ValueError(f"x: expected a positive height and width, got shape {tuple(x.shape)}")
        zs, total = [], x.new_zeros(x.shape[0])
        h = x
        for level, block in enumerate(self.blocks):
            h = squeeze(h)
            h, ld = flow_forward(block, h)
            total = total + ld
            if level < self.levels - 1:
                half = h.shape[1] // 2
                zs.append(h[:, :half])
                h = h[:, half:]
        zs.append(h)
        return zs, total

    def inverse(self, zs: list[torch.Tensor]) -> torch.Tensor:
        if not isinstance(zs, (list, tuple)) or len(zs) != self.levels:
            raise ValueError(f"zs: expected a list of {self.levels} latents")
        # the shapes ``forward`` produces, from the last (coarsest) latent: one batch, one dtype and device
        p = next(self.parameters())
        for k, z in enumerate(zs):
            check_tensor(z, f"zs[{k}]", ndim=4)
            check_same(p, "the model", **{f"zs[{k}]": z})
        if min(zs[-1].shape[2:]) == 0:
            raise ValueError(f"zs[{self.levels - 1}]: expected a positive height and width, got {tuple(zs[-1].shape)}")
        scale = 2 ** self.levels
        shapes = self.latent_shapes(zs[-1].shape[2] * scale, zs[-1].shape[3] * scale)
        for k, (z, shape) in enumerate(zip(zs, shapes)):
            if tuple(z.shape) != (zs[0].shape[0], *shape):
                raise ValueError(f"zs[{k}]: expected shape {(zs[0].shape[0], *shape)}, got {tuple(z.shape)}")
        h = zs[-1]
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                h = torch.cat([zs[level], h], dim=1)
            h = unsqueeze(flow_inverse(self.blocks[level], h))
        return h

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        zs, logdet = self(x)
        return sum(standard_normal_log_prob(z) for z in zs) + logdet

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(C, H, W) of each level's latent for images of ``height`` x ``width``."""
        height, width = self._image_size(height, width)
        c, h, w, shapes = self.channels, height, width, []
        for level in range(self.levels):
            c, h, w = c * 4, h // 2, w // 2
            if level < self.levels - 1:
                shapes.append((c // 2, h, w))
                c //= 2
        shapes.append((c, h, w))
        return shapes

    @torch.no_grad()
    def sample(self, n: int, height: int, width: int, *, generator: torch.Generator | None = None):
        """Sample latents for every level from N(0, I) on the model's device (``generator`` must
        live there) and return x = f(z), (n, C, height, width)."""
        n = check_int(n, "n", min=1)
        height, width = self._image_size(height, width)
        p = next(self.parameters())
        check_generator(generator, "generator", p.device)
        zs = [torch.randn(n, *s, generator=generator, dtype=p.dtype, device=p.device)
              for s in self.latent_shapes(height, width)]
        return self.inverse(zs)

    def _image_size(self, height, width) -> tuple[int, int]:
        out = []
        for name, v in (("height", height), ("width", width)):
            v = check_int(v, name, min=1)
            if v % 2 ** self.levels:
                raise ValueError(f"{name}: must be divisible by {2 ** self.levels}, got {v}")
            out.append(v)
        return out[0], out[1]


# ------------------------------------------------------------------------------------------ C-Flow

class CFlow(nn.Module):
    """C-Flow: a flow g_theta for domain A and a flow f_phi for domain B conditioned on A's latent.
    z_A = g^{-1}(x_A); z_B = f^{-1}(x_B | z_A); x_B = f(z_B | z_A). Conditioning on x_A and on
    z_A = g^{-1}(x_A) is the same thing since g is a bijection. Vectors (B, C)."""

    def __init__(self, channels_a: int, channels_b: int, steps: int = 4, hidden: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.g = Flow(channels_a, steps, hidden, generator=generator)
        self.f = Flow(channels_b, steps, hidden, cond_channels=channels_a, generator=generator)

    def _check(self, a: torch.Tensor, a_name: str, b: torch.Tensor | None = None, b_name: str = "") -> None:
        """Vectors of domain A (and B) with one batch, named as the arguments (not the inner flows' x, y, cond)."""
        check_tensor(a, a_name, ndim=2)
        _check_features(a, a_name, self.g.channels)
        if b is not None:
            check_tensor(b, b_name, ndim=2)
            _check_features(b, b_name, self.f.channels)
            check_same(a, a_name, **{b_name: b})
            if b.shape[0] != a.shape[0]:
                raise ValueError(f"{b_name}: batch of {b.shape[0]} differs from {a_name}'s {a.shape[0]}")

    def encode_a(self, x_a: torch.Tensor) -> torch.Tensor:
        """z_A = g^{-1}(x_A)."""
        self._check(x_a, "x_a")
        return self.g(x_a)[0]

    def encode_b(self, x_b: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
        """z_B = f^{-1}(x_B | x_A) (conditioned through z_A = g^{-1}(x_A))."""
        self._check(x_a, "x_a", x_b, "x_b")
        return self.f(x_b, self.encode_a(x_a))[0]

    def decode_b(self, z_b: torch.Tensor, z_a: torch.Tensor) -> torch.Tensor:
        """x_B = f(z_B | z_A)."""
        self._check(z_a, "z_a", z_b, "z_b")
        return self.f.inverse(z_b, z_a)

    def log_prob(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        """Joint exact log p(x_A, x_B) = log p(x_A) + log p(x_B | x_A). (B,)."""
        self._check(x_a, "x_a", x_b, "x_b")
        z_a, ld_a = self.g(x_a)
        z_b, ld_b = self.f(x_b, z_a)
        return standard_normal_log_prob(z_a) + ld_a + standard_normal_log_prob(z_b) + ld_b

    def transfer(self, x_b1: torch.Tensor, x_a1: torch.Tensor, x_a2: torch.Tensor) -> torch.Tensor:
        """The notes' three steps: z_B^1 = f^{-1}(x_B^1 | x_A^1), z_A^2 = g^{-1}(x_A^2),
        x_B^2 = f(z_B^1 | z_A^2)."""
        self._check(x_a1, "x_a1", x_b1, "x_b1")
        self._check(x_a2, "x_a2")
        check_same(x_a1, "x_a1", x_a2=x_a2)
        if x_a2.shape[0] != x_a1.shape[0]:  # z_B^1 is decoded under z_A^2: one pair per sample
            raise ValueError(f"x_a2: batch of {x_a2.shape[0]} differs from x_a1's {x_a1.shape[0]}")
        z_b1 = self.encode_b(x_b1, x_a1)
        z_a2 = self.encode_a(x_a2)
        return self.decode_b(z_b1, z_a2)


class TrainResult(NamedTuple):
    """What a trainer returns: the trained ``model`` and ``losses``, the loss per step (steps,)."""
    model: nn.Module
    losses: torch.Tensor


def train_flow(model: nn.Module, data: torch.Tensor, *, steps: int = 500, batch: int = 256,
               lr: float = 1e-3, generator: torch.Generator | None = None) -> TrainResult:
    """Maximum likelihood training (Adam on the mean negative log-likelihood). data: (N, ...).

    Minibatch indices are drawn on data's device (``generator`` must live there). The losses stay
    on the device as detached tensors, stacked once at the end: no host synchronisation per step.
    Returns TrainResult(model, losses (steps,))."""
    p = check_trainable(model, "model", what="an nn.Module with a log_prob method")
    check_tensor(data, "data")
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data: expected a batch of at least one sample, got shape {tuple(data.shape)}")
    check_same(p, "the model", data=data)  # else named as an inner layer's x
    steps = check_int(steps, "steps", min=1)
    batch = check_int(batch, "batch", min=1)
    check_float(lr, "lr", min=0.0, min_open=True)
    check_generator(generator, "generator", data.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, data.shape[0], (min(batch, data.shape[0]),), generator=generator, device=data.device)
        loss = -model.log_prob(data[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return TrainResult(model, torch.stack(losses))
