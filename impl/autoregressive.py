"""Autoregressive generative models: p(x) = prod_i p(x_i | x_<i).

Tabular model, FVSBN, NADE (incremental and naive hidden computations), MADE (masks for any
ordering), PixelCNN (type-A/B masked convolutions with R -> G -> B channel masking), gated
PixelCNN (vertical + horizontal stacks, no blind spot), PixelRNN's Row LSTM, WaveNet's dilated
causal stack.  Binary models take x: (B, D) in {0, 1}; image models take integer levels
x: (B, C, H, W) in {0, .., K-1}; WaveNet takes x: (B, T) in {0, .., K-1}.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import math

from impl._checks import (check_bool, check_choice, check_device, check_dtype, check_generator, check_index,
                          check_int, check_same, check_tensor)


def _check_device(x: torch.Tensor, name: str, module: nn.Module) -> None:
    """x on the module's device, checked before any value of x is read (else a RuntimeError inside a layer)."""
    p = next(module.parameters())
    if x.device != p.device:
        raise ValueError(f"{name}: on {x.device}, but the model is on {p.device}")


def _check_binary(x, name: str, D: int, module: nn.Module | None = None) -> torch.Tensor:
    check_tensor(x, name, shape=(None, D))
    if module is not None:
        _check_device(x, name, module)
    if ((x != 0) & (x != 1)).any():
        raise ValueError(f"{name}: entries must be 0 or 1")
    return x


def _check_order(order, D: int, device) -> torch.Tensor:
    if order is None:
        return torch.arange(D, device=device)
    check_tensor(order, "order", floating=False, shape=(D,))
    check_index(order, "order", D)  # integer: a float "permutation" passes the comparison below, then cannot index
    if not torch.equal(torch.sort(order).values.cpu(), torch.arange(D)):
        raise ValueError(f"order: expected a permutation of 0..{D - 1}")
    return order.to(device)


def all_binary(n: int, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """All 2^n binary vectors, (2^n, n), first coordinate most significant."""
    check_int(n, "n", min=1, max=24)
    check_dtype(dtype, floating=False)
    device = check_device(device)
    k = torch.arange(2 ** n, device=device)
    bits = 2 ** torch.arange(n - 1, -1, -1, device=device)
    return ((k[:, None] & bits) > 0).to(dtype)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    """sum_i log Bern(x_i; sigmoid(logits_i)), stable for large logits. (B, D) -> (B,).

    x must hold 0 or 1 (a value like 2 would give a "log-probability" of no distribution);
    ``validate=False`` skips that check (one host read) where the caller checked x already."""
    check_bool(validate, "validate")
    check_tensor(logits, "logits")
    check_tensor(x, "x", shape=tuple(logits.shape))
    check_same(logits, "logits", x=x)
    if validate and not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("x: entries must be 0 or 1")
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


# ----------------------------------------------------------------------- tabular, FVSBN

class TabularAR(nn.Module):
    """p(x_i = 1 | x_<i) is a free parameter for each of the 2^(i-1) values of x_<i (1-based i)."""

    def __init__(self, n: int):
        super().__init__()
        check_int(n, "n", min=1, max=20)
        self.n = n
        self.logits = nn.ParameterList([nn.Parameter(torch.randn(2 ** i)) for i in range(n)])

    def conditional_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n) -> (B, n): logit of p(x_i = 1 | x_<i)."""
        _check_binary(x, "x", self.n, self)
        out = []
        for i in range(self.n):  # one table per variable
            bits = 2 ** torch.arange(i - 1, -1, -1, device=x.device)
            idx = (x[:, :i].long() * bits).sum(-1)
            out.append(self.logits[i][idx])
        return torch.stack(out, -1).to(x.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_prob(self.conditional_logits(x), x, validate=False)  # checked there


class FVSBN(nn.Module):
    """Fully visible sigmoid belief network: f_i = sigmoid(alpha_0^(i) + alpha^(i) . x_<i).

    The free parameters are alpha_0: (n,) and the strictly lower triangle of alpha: n(n-1)/2.
    """

    def __init__(self, n: int):
        super().__init__()
        check_int(n, "n", min=1)
        self.n = n
        self.alpha0 = nn.Parameter(0.1 * torch.randn(n))
        self.alpha = nn.Parameter(0.5 * torch.randn(n * (n - 1) // 2))
        self.register_buffer("_rows", torch.tril_indices(n, n, offset=-1), persistent=False)

    def weight(self) -> torch.Tensor:
        """The (n, n) strictly lower-triangular matrix whose row i is alpha^(i)."""
        A = self.alpha.new_zeros(self.n, self.n)
        return A.index_put((self._rows[0], self._rows[1]), self.alpha)

    def conditional_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n) -> (B, n), all conditionals in one matrix product."""
        _check_binary(x, "x", self.n, self)
        return self.alpha0.to(x.dtype) + x @ self.weight().to(x.dtype).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_prob(self.conditional_logits(x), x, validate=False)  # checked there


# --------------------------------------------------------------------------------- NADE

class NADE(nn.Module):
    """h_i = sigmoid(b + W[:, <i] x_<i), p(x_i = 1 | x_<i) = sigmoid(c_i + V[i] . h_i), in the order ``order``.

    W: (H, D), b: (H,), V: (D, H), c: (D,). ``order[k]`` is the dimension generated k-th.
    """

    def __init__(self, D: int, H: int, order: torch.Tensor | None = None):
        super().__init__()
        check_int(D, "D", min=1)
        check_int(H, "H", min=1)
        self.D, self.H = D, H
        self.W = nn.Parameter(torch.randn(H, D) / D ** 0.5)
        self.b = nn.Parameter(torch.zeros(H))
        self.V = nn.Parameter(torch.randn(D, H) / H ** 0.5)
        self.c = nn.Parameter(torch.zeros(D))
        self.register_buffer("order", _check_order(order, D, "cpu"))  # with the parameters

    def hidden(self, x: torch.Tensor, method: str = "cumsum") -> torch.Tensor:
        """All h_k in generation order: (B, D) -> (B, D, H).

        ``cumsum``: the shared-weight recursion a_k = a_{k-1} + W[:, o_{k-1}] x_{o_{k-1}}, vectorised,
        O(B D H).  ``incremental``: the same recursion as a loop of rank-1 products (what FLOP
        counters see).  ``naive``: each a_k = b + W[:, <k] x_<k from scratch, O(B D^2 H).
        """
        _check_binary(x, "x", self.D, self)
        check_choice(method, "method", ("cumsum", "incremental", "naive"))
        xo, Wo = x[:, self.order], self.W[:, self.order].to(x.dtype)
        b = self.b.to(x.dtype)
        if method == "cumsum":
            contrib = xo[:, :, None] * Wo.T  # (B, D, H)
            a = b + torch.cumsum(contrib, 1) - contrib  # exclusive prefix sum
        elif method == "incremental":
            a_k, out = b.expand(x.shape[0], self.H), []
            for k in range(self.D):  # generation steps
                out.append(a_k)
                a_k = torch.addmm(a_k, xo[:, k:k + 1], Wo[:, k:k + 1].T)
            a = torch.stack(out, 1)
        else:
            out = [b + xo[:, :k] @ Wo[:, :k].T for k in range(self.D)]
            a = torch.stack(out, 1)
        return torch.sigmoid(a)

    def conditional_logits(self, x: torch.Tensor, method: str = "cumsum") -> torch.Tensor:
        """(B, D) -> (B, D): logit of p(x_d = 1 | x_<d in the order), teacher forced on x."""
        h = self.hidden(x, method)
        Vo, co = self.V[self.order].to(x.dtype), self.c[self.order].to(x.dtype)
        logits_o = co + torch.einsum("bkh,kh->bk", h, Vo)
        return torch.empty_like(logits_o).index_copy_(1, self.order, logits_o)

    def log_prob(self, x: torch.Tensor, method: str = "cumsum") -> torch.Tensor:
        return bernoulli_log_prob(self.conditional_logits(x, method), x, validate=False)  # checked in hidden

    @torch.no_grad()
    def sample(self, n: int, *, generator=None) -> torch.Tensor:
        """D sequential steps, each one rank-1 update of the shared pre-activation: (n, D)."""
        check_int(n, "n", min=1)
        W = self.W
        check_generator(generator, "generator", W.device)
        x = W.new_zeros(n, self.D)
        a = self.b.expand(n, self.H).clone()
        for d in self.order.tolist():
            p = torch.sigmoid(self.c[d] + torch.sigmoid(a) @ self.V[d])
            x[:, d] = torch.bernoulli(p, generator=generator)
            a += x[:, d:d + 1] * W[:, d]
        return x


class RNADE(nn.Module):
    """Real-valued NADE (Uria et al. 2013): NADE's shared hidden layer h_i = sigmoid(b + W[:, <i] x_<i)
    with a mixture of K Gaussians as each conditional,

        p(x_i | x_<i) = sum_k pi_ik N(x_i; mu_ik, s_ik^2),
        pi_i = softmax(V_pi[i] h_i + c_pi[i]), mu_i = V_mu[i] h_i + c_mu[i], log s_i = V_s[i] h_i + c_s[i].

    x: (B, D) real. W: (H, D); V_*: (D, K, H); c_*: (D, K).
    """

    def __init__(self, D: int, H: int, K: int = 2):
        super().__init__()
        check_int(D, "D", min=1)
        check_int(H, "H", min=1)
        check_int(K, "K", min=1)
        self.D, self.H, self.K = D, H, K
        self.W = nn.Parameter(torch.randn(H, D) / D ** 0.5)
        self.b = nn.Parameter(torch.zeros(H))
        self.V = nn.Parameter(torch.randn(3, D, K, H) / H ** 0.5)  # logits, means, log-stds
        self.c = nn.Parameter(torch.randn(3, D, K) * 0.5)

    def mixture(self, x: torch.Tensor):
        """All conditionals' mixture parameters, teacher forced on x: (log pi, mu, log s), each (B, D, K)."""
        check_tensor(x, "x", shape=(None, self.D))
        _check_device(x, "x", self)
        W, b = self.W.to(x.dtype), self.b.to(x.dtype)
        contrib = x[:, :, None] * W.T  # (B, D, H)
        h = torch.sigmoid(b + torch.cumsum(contrib, 1) - contrib)  # exclusive prefix sum, as in NADE
        out = torch.einsum("bdh,jdkh->jbdk", h, self.V.to(x.dtype)) + self.c.to(x.dtype)[:, None]
        return torch.log_softmax(out[0], -1), out[1], out[2]

    def conditional_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_i | x_<i) for every i: (B, D) -> (B, D)."""
        log_pi, mu, log_s = self.mixture(x)
        z = (x[:, :, None] - mu) * torch.exp(-log_s)
        comp = -0.5 * z ** 2 - log_s - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_pi + comp, -1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = sum_i log p(x_i | x_<i): (B, D) -> (B,)."""
        return self.conditional_log_prob(x).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, *, generator=None) -> torch.Tensor:
        """D sequential steps: pick a component, then draw from it; each step feeds x_i back. (n, D)."""
        check_int(n, "n", min=1)
        check_generator(generator, "generator", self.W.device)
        x = self.W.new_zeros(n, self.D)
        for i in range(self.D):  # the mixture of step i depends on the x_<i drawn so far
            log_pi, mu, log_s = (v[:, i] for v in self.mixture(x))
            k = torch.multinomial(log_pi.exp(), 1, generator=generator)
            eps = torch.randn(n, 1, generator=generator, device=x.device, dtype=x.dtype)
            x[:, i] = (mu.gather(1, k) + log_s.gather(1, k).exp() * eps)[:, 0]
        return x


class OrderlessNADE(nn.Module):
    """Order-agnostic deep NADE (Uria et al. 2014): one network reads the observed values x * m and
    the mask m and predicts p(x_d = 1 | x_m) for every unobserved d, for any subset m, so any
    ordering o gives a model p_o(x) = prod_k p(x_{o_k} | x_{o_<k}).

    m: (B, D) in {0, 1} (1 = observed); x: (B, D) binary. Hidden layers of width H with ReLU.
    """

    def __init__(self, D: int, H: int, layers: int = 2):
        super().__init__()
        check_int(D, "D", min=1)
        check_int(H, "H", min=1)
        check_int(layers, "layers", min=1)
        self.D = D
        mods: list[nn.Module] = [nn.Linear(2 * D, H), nn.ReLU()]
        for _ in range(layers - 1):
            mods += [nn.Linear(H, H), nn.ReLU()]
        self.net = nn.Sequential(*mods, nn.Linear(H, D))

    def conditional_logits(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """logit p(x_d = 1 | x_m) for every d (meaningful where m_d = 0): (B, D)."""
        _check_binary(x, "x", self.D, self)
        check_tensor(m, "m", shape=tuple(x.shape))
        check_same(x, "x", m=m)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("m: entries must be 0 or 1")
        p = self.net[0].weight
        return self.net(torch.cat([x * m, m], -1).to(p.dtype)).to(x.dtype)

    def log_prob(self, x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """log p_o(x) = sum_k log p(x_{o_k} | x_{o_<k}) for the ordering ``order``: (B, D) -> (B,).

        All D conditionals in one batched pass (one mask per step)."""
        _check_binary(x, "x", self.D, self)
        order = _check_order(order, self.D, x.device)
        B, D = x.shape
        rank = torch.empty_like(order).index_copy_(0, order, torch.arange(D, device=x.device))
        masks = (rank[None, :] < torch.arange(D, device=x.device)[:, None]).to(x.dtype)  # step k observes o_<k
        xs = x[:, None, :].expand(B, D, D).reshape(B * D, D)
        ms = masks[None].expand(B, D, D).reshape(B * D, D)
        p = self.net[0].weight
        logits = self.net(torch.cat([xs * ms, ms], -1).to(p.dtype)).to(x.dtype).view(B, D, D)
        lg = logits[:, torch.arange(D, device=x.device), order]  # step k predicts o_k: (B, D)
        target = x[:, order]
        return -F.binary_cross_entropy_with_logits(lg, target, reduction="none").sum(-1)

    def orderless_loss(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """The training loss for one mask per example: -D / (D - |m|) sum_{d not in m} log p(x_d | x_m),
        an unbiased estimate of -E_o log p_o(x) when |m| ~ U{0..D-1} and m is uniform given its size. (B,)."""
        lg = self.conditional_logits(x, m)
        if not bool((m.sum(-1) < self.D).all()):
            raise ValueError("m: at least one variable per example must be unobserved")
        nll = F.binary_cross_entropy_with_logits(lg, x, reduction="none") * (1 - m)
        return self.D / (self.D - m.sum(-1)) * nll.sum(-1)


# --------------------------------------------------------------------------------- MADE

class MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed 0/1 mask: (out, in)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        check_int(in_features, "in_features", min=1)
        check_int(out_features, "out_features", min=1)
        super().__init__(in_features, out_features)
        check_tensor(mask, "mask", shape=(out_features, in_features))
        if not bool(((mask == 0) | (mask == 1)).all()):  # a mask keeps or drops a weight (NaN fails too)
            raise ValueError("mask: entries must be 0 or 1")
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {tuple(x.shape)}")
        check_same(self.weight, "weight", x=x)
        return F.linear(x, self.weight * self.mask.to(self.weight.dtype), self.bias)


def made_masks(D: int, hidden: list[int], order: torch.Tensor | None = None) -> list[torch.Tensor]:
    """MADE's masks (Germain et al. 2015) for inputs generated in the order ``order``.

    Degrees: input d gets m(d) = its position (1..D) in the order; hidden unit k of each layer gets
    m(k) in 1..D-1 (assigned cyclically); a hidden weight is kept iff m(k) >= m(k') of its input,
    an output weight iff m_out(d) > m(k).  Returns one (out, in) 0/1 mask per layer.
    """
    check_int(D, "D", min=2)
    if not isinstance(hidden, (list, tuple)) or not hidden:
        raise TypeError("hidden: expected a non-empty list of layer widths")
    for h in hidden:
        check_int(h, "hidden", min=1)
    order = _check_order(order, D, None)
    m_in = torch.empty(D, dtype=torch.long)
    m_in[order.cpu()] = torch.arange(1, D + 1)
    masks, prev = [], m_in
    for h in hidden:
        m = torch.arange(h) % (D - 1) + 1
        masks.append((m[:, None] >= prev[None, :]).float())
        prev = m
    masks.append((m_in[:, None] > prev[None, :]).float())
    return masks


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: all D conditionals in one forward pass.

    x: (B, D) binary -> logits (B, D) with logit d a function of the inputs before d in ``order``.
    """

    def __init__(self, D: int, hidden: list[int], order: torch.Tensor | None = None):
        super().__init__()
        masks = made_masks(D, hidden, order)
        self.D = D
        self.register_buffer("order", _check_order(order, D, "cpu"))  # with the parameters
        sizes = [D] + list(hidden) + [D]
        layers: list[nn.Module] = []
        for i, mask in enumerate(masks):
            layers.append(MaskedLinear(sizes[i], sizes[i + 1], mask))
            if i < len(masks) - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", shape=(None, self.D))
        check_same(self.net[0].weight, "the model", x=x)  # else a RuntimeError inside a layer
        return self.net(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_binary(x, "x", self.D, self)
        return bernoulli_log_prob(self(x), x, validate=False)

    @torch.no_grad()
    def sample(self, n: int, *, generator=None) -> torch.Tensor:
        """D forward passes, one per dimension in the order: (n, D)."""
        check_int(n, "n", min=1)
        w = self.net[0].weight
        check_generator(generator, "generator", w.device)
        x = w.new_zeros(n, self.D)
        for d in self.order.tolist():
            x[:, d] = torch.bernoulli(torch.sigmoid(self(x)[:, d]), generator=generator)
        return x


# ----------------------------------------------------------------------------- PixelCNN

def pixelcnn_mask(in_channels: int, out_channels: int, kernel_size: tuple[int, int], mask_type: str,
                  colors: int = 1) -> torch.Tensor:
    """The (out, in, kh, kw) 0/1 mask of a masked convolution.

    Rows above the centre: kept. Centre row: kept left of the centre. Centre tap: channels are
    split into ``colors`` contiguous groups (R, G, B); type A keeps in-group < out-group (a colour
    never sees itself), type B keeps in-group <= out-group.
    """
    check_int(in_channels, "in_channels", min=1)
    check_int(out_channels, "out_channels", min=1)
    check_choice(mask_type, "mask_type", ("A", "B"))
    check_int(colors, "colors", min=1)
    if in_channels % colors or out_channels % colors:
        raise ValueError(f"colors: {colors} must divide in_channels {in_channels} and out_channels {out_channels}")
    if not isinstance(kernel_size, (tuple, list)) or len(kernel_size) != 2:
        raise TypeError(f"kernel_size: expected (height, width), got {kernel_size!r}")
    kh, kw = (check_int(k, "kernel_size", min=1) for k in kernel_size)
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel_size: must be odd, got {kernel_size}")
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    mask[:, :, :ch, :] = 1
    mask[:, :, ch, :cw] = 1
    g_in = torch.arange(in_channels) * colors // in_channels
    g_out = torch.arange(out_channels) * colors // out_channels
    allowed = g_out[:, None] > g_in[None, :] if mask_type == "A" else g_out[:, None] >= g_in[None, :]
    mask[:, :, ch, cw] = allowed.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is multiplied by ``pixelcnn_mask``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mask_type: str, colors: int = 1):
        if not isinstance(kernel_size, (tuple, list)):  # one size for both axes (checked by pixelcnn_mask)
            kernel_size = (kernel_size, kernel_size)
        mask = pixelcnn_mask(in_channels, out_channels, kernel_size, mask_type, colors)
        kernel_size = tuple(int(k) for k in kernel_size)
        super().__init__(in_channels, out_channels, kernel_size, padding=(kernel_size[0] // 2, kernel_size[1] // 2))
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} channels on axis 1, got shape {tuple(x.shape)}")
        check_same(self.weight, "weight", x=x)
        return F.conv2d(x, self.weight * self.mask.to(self.weight.dtype), self.bias, padding=self.padding)


def _check_levels(x: torch.Tensor, levels: int, validate: bool) -> None:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"x: expected integer levels, got dtype {x.dtype}")
    # the value check reads x on the host: once per call, and never inside a sampling loop
    if validate and not bool(((x >= 0) & (x < levels)).all()):
        raise ValueError(f"x: levels must lie in 0..{levels - 1}")


def _check_image(x: torch.Tensor, name: str) -> None:
    # an image of no pixel has no likelihood to factor, and the convolutions refuse it
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name}: expected at least one pixel (H, W >= 1), got shape {tuple(x.shape)}")


def _one_hot_levels(x: torch.Tensor, levels: int, channels: int, validate: bool = True,
                    module: nn.Module | None = None) -> torch.Tensor:
    """(B, C, H, W) integer levels -> (B, C * K, H, W) one-hot, grouped by colour channel."""
    check_tensor(x, "x", floating=False, shape=(None, channels, None, None))
    _check_image(x, "x")
    if module is not None:
        _check_device(x, "x", module)
    _check_levels(x, levels, validate)
    B, C, H, W = x.shape
    return F.one_hot(x.long(), levels).permute(0, 1, 4, 2, 3).reshape(B, C * levels, H, W)


class _ImageAR(nn.Module):
    """Shared likelihood and sequential sampling for image models with logits (B, C, K, H, W)."""

    channels: int
    levels: int

    def logits_from_onehot(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """x: (B, C, H, W) integer levels -> logits (B, C, K, H, W); one parallel pass.

        ``validate=False`` skips the range check of x (a host read): the sampler uses it, since
        the levels it feeds back come from its own draws."""
        p = next(self.parameters())
        return self.logits_from_onehot(_one_hot_levels(x, self.levels, self.channels, validate, self).to(p.dtype))

    def _check_onehot(self, h: torch.Tensor) -> None:
        check_tensor(h, "h", shape=(None, self.channels * self.levels, None, None))
        _check_image(h, "h")
        check_same(next(self.parameters()), "the model", h=h)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = sum over pixels and colours of log p(x_i | x_<i), one pass: (B,)."""
        logp = torch.log_softmax(self(x), dim=2)
        return logp.gather(2, x.long().unsqueeze(2)).squeeze(2).flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, height: int, width: int, *, generator=None) -> torch.Tensor:
        """Raster order, R then G then B within a pixel: H * W * C forward passes. (n, C, H, W) long."""
        check_int(n, "n", min=1)
        check_int(height, "height", min=1)
        check_int(width, "width", min=1)
        dev = next(self.parameters()).device
        check_generator(generator, "generator", dev)
        x = torch.zeros(n, self.channels, height, width, dtype=torch.long, device=dev)
        for i in range(height):
            for j in range(width):
                for c in range(self.channels):
                    probs = torch.softmax(self(x, validate=False)[:, c, :, i, j], dim=-1)
                    x[:, c, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return x


class PixelCNN(_ImageAR):
    """Plainly stacked masked convolutions: a type-A k0 x k0 layer, then (layers - 1) type-B k x k
    layers, ReLU between, and a 1 x 1 type-B output.  Stacked this way the receptive field has
    a blind spot to the upper right."""

    def __init__(self, channels: int = 1, levels: int = 2, hidden: int = 12, layers: int = 3,
                 first_kernel: int = 7, kernel: int = 3):
        super().__init__()
        check_int(channels, "channels", min=1)
        check_int(levels, "levels", min=2)
        check_int(layers, "layers", min=1)
        check_int(hidden, "hidden", min=channels)
        self.channels, self.levels = channels, levels
        mods: list[nn.Module] = [MaskedConv2d(channels * levels, hidden, first_kernel, "A", channels)]
        for _ in range(layers - 1):
            mods += [nn.ReLU(), MaskedConv2d(hidden, hidden, kernel, "B", channels)]
        mods += [nn.ReLU(), MaskedConv2d(hidden, channels * levels, 1, "B", channels)]
        self.net = nn.Sequential(*mods)

    def logits_from_onehot(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, C * K, H, W) float -> (B, C, K, H, W)."""
        self._check_onehot(h)
        out = self.net(h)
        B, _, H, W = out.shape
        return out.view(B, self.channels, self.levels, H, W)


def _gate(a: torch.Tensor) -> torch.Tensor:
    """tanh(a_1) * sigmoid(a_2), the gated activation (channels split in halves)."""
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedPixelCNN(_ImageAR):
    """Gated PixelCNN (van den Oord et al. 2016), single colour channel with K levels.

    Vertical stack: (k//2 + 1) x k convolutions over the rows at and above; shifted down one row
    before it feeds the horizontal stack, it sees only rows strictly above.  Horizontal stack:
    1 x (k//2 + 1) convolutions over the pixels to the left (the first layer excludes the pixel
    itself).  Together they cover the whole causal context, without the blind spot.
    """

    def __init__(self, levels: int = 2, hidden: int = 8, layers: int = 3, kernel: int = 3):
        super().__init__()
        check_int(levels, "levels", min=2)
        check_int(hidden, "hidden", min=1)
        check_int(layers, "layers", min=1)
        check_int(kernel, "kernel", min=3, odd=True)
        self.channels, self.levels, self.k = 1, levels, kernel
        r = kernel // 2
        ins = [levels] + [hidden] * (layers - 1)
        self.v_conv = nn.ModuleList(nn.Conv2d(c, 2 * hidden, (r + 1, kernel)) for c in ins)
        self.h_conv = nn.ModuleList(nn.Conv2d(c, 2 * hidden, (1, r + 1)) for c in ins)
        self.v_to_h = nn.ModuleList(nn.Conv2d(2 * hidden, 2 * hidden, 1) for _ in ins)
        self.h_out = nn.ModuleList(nn.Conv2d(hidden, hidden, 1) for _ in ins)
        self.out = nn.Conv2d(hidden, levels, 1)

    def logits_from_onehot(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, K, H, W) float -> (B, 1, K, H, W)."""
        self._check_onehot(h)
        r, (B, _, H, W) = self.k // 2, h.shape
        v, hs = h, h
        for layer in range(len(self.v_conv)):
            v_pre = self.v_conv[layer](F.pad(v, (r, r, r, 0)))  # rows i - r .. i
            v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :H]  # rows i - r - 1 .. i - 1
            h_in = F.pad(hs, (1, 0))[..., :W] if layer == 0 else hs  # first layer: strictly left
            h_pre = self.h_conv[layer](F.pad(h_in, (r, 0))) + self.v_to_h[layer](v_down)
            h_new = self.h_out[layer](_gate(h_pre))
            hs = h_new if layer == 0 else hs + h_new  # residual on the horizontal stack
            v = _gate(v_pre)
        return self.out(hs).view(B, 1, self.levels, H, W)


class RowLSTM(_ImageAR):
    """PixelRNN's Row LSTM, single colour channel with K levels.

    Input-to-state: a 1 x k type-A masked convolution along the row (pixels to the left);
    state-to-state: a 1-D convolution of width k over the previous row's hidden states.  Rows are
    processed one after another by an LSTM; all pixels of a row in parallel.
    """

    def __init__(self, levels: int = 2, hidden: int = 8, kernel: int = 3):
        super().__init__()
        check_int(levels, "levels", min=2)
        check_int(hidden, "hidden", min=1)
        check_int(kernel, "kernel", min=3, odd=True)
        self.channels, self.levels, self.hidden = 1, levels, hidden
        self.input_to_state = MaskedConv2d(levels, 4 * hidden, (1, kernel), "A")
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, kernel, padding=kernel // 2)
        self.out = nn.Conv2d(hidden, levels, 1)

    def logits_from_onehot(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, K, H, W) float -> (B, 1, K, H, W)."""
        self._check_onehot(h)
        B, _, H, W = h.shape
        pre = self.input_to_state(h)  # (B, 4h, H, W)
        state = h.new_zeros(B, self.hidden, W)
        cell = h.new_zeros(B, self.hidden, W)
        rows = []
        for i in range(H):  # the recurrence runs over rows
            gates = pre[:, :, i] + self.state_to_state(state)
            o, f, ig, g = gates.chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(ig) * torch.tanh(g)
            state = torch.sigmoid(o) * torch.tanh(cell)
            rows.append(state)
        hs = torch.stack(rows, 2)  # (B, h, H, W)
        return self.out(hs).view(B, 1, self.levels, H, W)


# ------------------------------------------------------------------------------ WaveNet

def wavenet_receptive_field(kernel_size: int, dilations: list[int]) -> int:
    """Receptive field of a stack of causal convolutions: 1 + (k - 1) * sum(dilations)."""
    check_int(kernel_size, "kernel_size", min=1)
    if not isinstance(dilations, (list, tuple)):
        raise TypeError("dilations: expected a list of ints")
    for d in dilations:
        check_int(d, "dilations", min=1)
    return 1 + (kernel_size - 1) * sum(dilations)


class CausalConv1d(nn.Conv1d):
    """Conv1d left-padded by (k - 1) d: output t sees inputs t - (k-1) d .. t. (B, C, T) -> (B, C', T)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        check_int(in_channels, "in_channels", min=1)
        check_int(out_channels, "out_channels", min=1)
        kernel_size = check_int(kernel_size, "kernel_size", min=1)
        dilation = check_int(dilation, "dilation", min=1)  # a negative one would make the pad crop
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=(2, 3))
        if x.shape[-2] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} channels on axis -2, got shape {tuple(x.shape)}")
        if x.shape[-1] == 0:  # the padded input would be shorter than the kernel
            raise ValueError(f"x: expected at least one time step, got shape {tuple(x.shape)}")
        check_same(self.weight, "weight", x=x)
        return super().forward(F.pad(x, (self.left, 0)))


class WaveNet(nn.Module):
    """Dilated causal convolution stack with gated residual blocks and skip connections.

    x: (B, T) integer levels in 0..K-1 -> logits (B, K, T); logit t depends on x_<t only (the
    input is shifted right by one step).  The receptive field is
    ``wavenet_receptive_field(kernel, [1] + dilations)``.
    """

    def __init__(self, levels: int = 4, residual: int = 8, dilations: list[int] = (1, 2, 4, 8), kernel: int = 2):
        super().__init__()
        check_int(levels, "levels", min=2)
        check_int(residual, "residual", min=1)
        check_int(kernel, "kernel", min=2)
        wavenet_receptive_field(kernel, dilations)  # validates the dilations
        if not dilations:  # no residual block: no skip connection to sum for the head
            raise ValueError("dilations: expected at least one dilated layer, got []")
        # Python ints: a 0-d tensor would reach Conv1d's dilation
        self.levels, self.kernel, self.dilations = levels, kernel, [int(d) for d in dilations]
        self.causal = CausalConv1d(levels, residual, kernel)
        self.filt = nn.ModuleList(CausalConv1d(residual, 2 * residual, kernel, d) for d in self.dilations)
        self.res = nn.ModuleList(nn.Conv1d(residual, residual, 1) for _ in self.dilations)
        self.skip = nn.ModuleList(nn.Conv1d(residual, residual, 1) for _ in self.dilations)
        self.head = nn.Sequential(nn.Tanh(), nn.Conv1d(residual, residual, 1), nn.Tanh(), nn.Conv1d(residual, levels, 1))

    @property
    def receptive_field(self) -> int:
        return wavenet_receptive_field(self.kernel, [1] + self.dilations)

    def logits_from_onehot(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, K, T) float one-hot (or any real input) -> (B, K, T)."""
        check_tensor(h, "h", shape=(None, self.levels, None))
        if h.shape[2] == 0:  # no step: nothing to predict, and the convolutions refuse it
            raise ValueError(f"h: expected at least one time step, got shape {tuple(h.shape)}")
        check_same(next(self.parameters()), "the model", h=h)
        z = self.causal(F.pad(h, (1, 0))[..., :-1])  # shift: output t sees inputs < t
        skip = 0
        for filt, res, sk in zip(self.filt, self.res, self.skip):
            g = _gate(filt(z))
            z = z + res(g)
            skip = skip + sk(g)
        return self.head(skip)

    def forward(self, x: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """x: (B, T) integer levels -> logits (B, K, T). ``validate=False`` skips the range check
        (a host read), as the sampler does for the levels it drew itself."""
        check_bool(validate, "validate")
        check_tensor(x, "x", floating=False, ndim=2)
        if x.shape[1] == 0:
            raise ValueError(f"x: expected at least one time step, got shape {tuple(x.shape)}")
        _check_device(x, "x", self)
        _check_levels(x, self.levels, validate)
        p = next(self.parameters())
        return self.logits_from_onehot(F.one_hot(x.long(), self.levels).transpose(1, 2).to(p.dtype))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B,)."""
        logp = torch.log_softmax(self(x), dim=1)
        return logp.gather(1, x.long().unsqueeze(1)).squeeze(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, length: int, *, generator=None) -> torch.Tensor:
        """Ancestral sampling, one step at a time: x_t ~ softmax(logits_t(x_<t)). (n, length) long."""
        check_int(n, "n", min=1)
        check_int(length, "length", min=1)
        dev = next(self.parameters()).device
        check_generator(generator, "generator", dev)
        x = torch.zeros(n, length, dtype=torch.long, device=dev)
        for t in range(length):
            probs = torch.softmax(self(x, validate=False)[:, :, t], dim=-1)
            x[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return x
