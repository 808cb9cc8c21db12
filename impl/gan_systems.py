"""The GAN systems the notes only name, each in a small honest form of its defining mechanism, in the
notes' order: StyleGAN (mapping network, per-layer AdaIN and noise), progressive growing
("Hierarchical GAN", fade-in), 3D-GAN (voxels by 3-D transposed convolutions), PlatonicGAN
(differentiable projection of a voxel grid), HoloGAN (3-D features rotated by a pose, then
projected), GRAF (a radiance field conditioned on shape and appearance codes), GIRAFFE (composed
feature fields, 2-D upsampling), EG3D (tri-plane lookup), BicycleGAN (cVAE-GAN + cLR-GAN), vid2vid
(sequential generation through a flow warp) and StyleFlow (an attribute-conditioned flow in place of
the mapping network, built from impl/flows.py).

Conventions: images (B, C, H, W); voxel grids (B, C, D, H, W) with D the depth axis along which
projections run (index 0 is the front); 3-D points (..., 3) as (x, y, z) in [-1, 1]^3, where x runs
along W, y along H and z along D (F.grid_sample's order); rays as in impl/nerf.py.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from impl import flows, nerf
from impl._checks import (check_bool, check_choice, check_float, check_generator, check_int, check_same,
                          check_tensor)
from impl.gan import adain


def _check_batch(x: torch.Tensor, name: str, batch: int) -> None:
    if x.shape[0] != batch:
        raise ValueError(f"{name}: expected batch size {batch}, got shape {tuple(x.shape)}")


def _param(module: nn.Module) -> torch.Tensor:
    return next(module.parameters())


def _check_input(x, name: str, module: nn.Module, ndim, channels: int | None = None) -> torch.Tensor:
    """A floating tensor with the module's dtype and device, ``ndim`` dims, ``channels`` on axis 1."""
    check_tensor(x, name, ndim=ndim)
    p = _param(module)
    check_same(p, "the module's parameters", **{name: x})
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} entries on axis 1, got shape {tuple(x.shape)}")
    return x


def _log2_levels(resolution: int, name: str, base: int = 4) -> int:
    resolution = check_int(resolution, name, min=base)
    levels = round(math.log2(resolution // base))
    if base * 2 ** levels != resolution:
        raise ValueError(f"{name}: must be {base} * 2^k, got {resolution}")
    return levels


# ============================================================================ StyleGAN

class MappingNetwork(nn.Module):
    """StyleGAN's mapping network z -> w: the intermediate latent space W learned by fully connected
    layers (the notes' "learn W with FCs"). z is first normalised to unit mean square (pixel norm),
    as in StyleGAN. z: (B, z_dim) -> w: (B, w_dim)."""

    def __init__(self, z_dim: int = 16, w_dim: int = 16, depth: int = 4, hidden: int = 64):
        super().__init__()
        check_int(z_dim, "z_dim", min=1)
        check_int(w_dim, "w_dim", min=1)
        check_int(depth, "depth", min=1)
        check_int(hidden, "hidden", min=1)
        self.z_dim, self.w_dim = z_dim, w_dim
        dims = [z_dim] + [hidden] * (depth - 1) + [w_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for layer in self.layers:   # variance-preserving (He) init: w comes out at unit scale, as in StyleGAN
            nn.init.kaiming_normal_(layer.weight, a=0.2)
            nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, "z", self, 2, self.z_dim)
        h = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h, 0.2)
        return h


class SynthesisNetwork(nn.Module):
    """StyleGAN's synthesis network: a learned constant 4x4 input, then one level per resolution
    4, 8, ..., ``resolution``: [bilinear 2x upsampling], 3x3 conv, + per-channel-scaled noise,
    LeakyReLU, AdaIN whose scale and bias are an affine map of w; a 1x1 conv to the output.

    Every level has a noise input (B, 1, H_l, W_l) and per-channel noise scales (``noise_scales``,
    (levels, channels)). StyleGAN learns these scales from zero; here they start at ``noise_scale``
    on the levels from ``noise_from`` on (by default the finest level only) and at zero below, so
    that the untrained generator already shows what trained StyleGANs learn: noise entering at the
    high-resolution layers, changing only fine detail.

    w: (B, w_dim), or (B, levels, w_dim) for one style per level (style mixing) -> (B, out, R, R).
    """

    def __init__(self, w_dim: int = 16, channels: int = 16, resolution: int = 32, out_channels: int = 3,
                 noise_from: int | None = None, noise_scale: float = 0.2):
        super().__init__()
        check_int(w_dim, "w_dim", min=1)
        check_int(channels, "channels", min=1)
        check_int(out_channels, "out_channels", min=1)
        self.levels = _log2_levels(resolution, "resolution") + 1
        noise_from = self.levels - 1 if noise_from is None else check_int(noise_from, "noise_from", min=0,
                                                                           max=self.levels - 1)
        noise_scale = check_float(noise_scale, "noise_scale")
        self.w_dim, self.channels, self.resolution = w_dim, channels, resolution
        self.const = nn.Parameter(torch.randn(1, channels, 4, 4))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(self.levels))
        self.styles = nn.ModuleList(nn.Linear(w_dim, 2 * channels) for _ in range(self.levels))
        for s in self.styles:    # style scale starts near 1 and bias near 0, as in StyleGAN
            nn.init.normal_(s.weight, std=0.5 / math.sqrt(w_dim))
            nn.init.zeros_(s.bias)
            s.bias.data[:channels] = 1.0
        scales = torch.zeros(self.levels, channels)
        scales[noise_from:] = noise_scale
        self.noise_scales = nn.Parameter(scales)
        self.to_out = nn.Conv2d(channels, out_channels, 1)

    def noise_shapes(self, batch: int) -> list[tuple[int, int, int, int]]:
        """Shapes of the per-level noise inputs: (B, 1, 4 * 2^l, 4 * 2^l)."""
        return [(batch, 1, 4 * 2 ** level, 4 * 2 ** level) for level in range(self.levels)]

    def draw_noise(self, batch: int, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh standard-normal noise maps for every level, on the module's device and dtype."""
        batch = check_int(batch, "batch", min=1)
        p = _param(self)
        check_generator(generator, "generator", p.device)
        return [torch.randn(s, generator=generator, dtype=p.dtype, device=p.device)
                for s in self.noise_shapes(batch)]

    def forward(self, w: torch.Tensor, noise: list[torch.Tensor] | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        check_tensor(w, "w", ndim=(2, 3))
        check_same(_param(self), "the module's parameters", w=w)
        if w.shape[-1] != self.w_dim or (w.ndim == 3 and w.shape[1] != self.levels):
            raise ValueError(f"w: expected (B, {self.w_dim}) or (B, {self.levels}, {self.w_dim}), got {tuple(w.shape)}")
        batch = w.shape[0]
        if noise is None:
            noise = self.draw_noise(batch, generator=generator)
        if not isinstance(noise, (list, tuple)) or len(noise) != self.levels:
            raise ValueError(f"noise: expected a list of {self.levels} maps of shapes {self.noise_shapes(batch)}")
        for n, shape in zip(noise, self.noise_shapes(batch)):
            check_tensor(n, "noise", shape=shape)
            check_same(w, "w", noise=n)
        ws = w if w.ndim == 3 else w[:, None].expand(batch, self.levels, self.w_dim)
        x = self.const.expand(batch, -1, -1, -1)
        for level in range(self.levels):
            if level:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.convs[level](x) + self.noise_scales[level][None, :, None, None] * noise[level]
            x = F.leaky_relu(x, 0.2)
            style = self.styles[level](ws[:, level])
            x = adain(x, style[:, : self.channels], style[:, self.channels:])
        return self.to_out(x)


class StyleGAN(nn.Module):
    """Mapping network + synthesis network: z: (B, z_dim) -> image (B, out, R, R)."""

    def __init__(self, z_dim: int = 16, w_dim: int = 16, channels: int = 16, resolution: int = 32,
                 out_channels: int = 3, mapping_depth: int = 4, noise_from: int | None = None,
                 noise_scale: float = 0.2):
        super().__init__()
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_depth)
        self.synthesis = SynthesisNetwork(w_dim, channels, resolution, out_channels, noise_from, noise_scale)

    def forward(self, z: torch.Tensor, noise: list[torch.Tensor] | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return self.synthesis(self.mapping(z), noise, generator=generator)


def high_frequency_share(x: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Share of the spectral energy of each image at high spatial frequency: the part of
    sum |FFT(x)|^2 at frequencies with max(|f_h|, |f_w|) > cutoff (in cycles per pixel; 0.25 is half
    the Nyquist frequency, the detail a 2x coarser level cannot hold). x: (B, C, H, W) -> (B,)."""
    check_tensor(x, "x", ndim=4)
    cutoff = check_float(cutoff, "cutoff", min=0.0, max=0.5)
    power = torch.fft.fft2(x).abs().pow(2).sum(1)   # (B, H, W)
    fh = torch.fft.fftfreq(x.shape[2], dtype=x.dtype, device=x.device).abs()
    fw = torch.fft.fftfreq(x.shape[3], dtype=x.dtype, device=x.device).abs()
    high = torch.maximum(fh[:, None], fw[None, :]) > cutoff
    return (power * high).sum((1, 2)) / power.sum((1, 2))


# ============================================================================ progressive growing

def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """2x nearest-neighbour upsampling (each pixel becomes a 2x2 block). x: (B, C, H, W) -> (B, C, 2H, 2W)."""
    check_tensor(x, "x", ndim=4)
    return F.interpolate(x, scale_factor=2, mode="nearest")


def fade_in(low_rgb: torch.Tensor, high_rgb: torch.Tensor, alpha) -> torch.Tensor:
    """Progressive growing's fade-in of a new block: (1 - alpha) upsample(low_rgb) + alpha high_rgb.

    low_rgb: (B, C, H, W), the previous resolution's output; high_rgb: (B, C, 2H, 2W), the new
    block's output; alpha in [0, 1] rises from 0 to 1 during training. -> (B, C, 2H, 2W)."""
    check_tensor(low_rgb, "low_rgb", ndim=4)
    b, c, h, w = low_rgb.shape
    check_tensor(high_rgb, "high_rgb", shape=(b, c, 2 * h, 2 * w))
    check_same(low_rgb, "low_rgb", high_rgb=high_rgb)
    alpha = check_float(alpha, "alpha", min=0.0, max=1.0)
    return (1 - alpha) * upsample_nearest(low_rgb) + alpha * high_rgb


class ProgressiveGenerator(nn.Module):
    """Progressive growing (the notes' "Hierarchical GAN"): a 4x4 block from z, then one block per
    stage doubling the resolution, each with its own 1x1 to-RGB; at stage s the output is the fade-in
    of stage s - 1's RGB (upsampled) and the new block's RGB. z: (B, z_dim) -> (B, C, 4 * 2^s, 4 * 2^s)."""

    def __init__(self, z_dim: int = 16, channels: int = 16, stages: int = 3, out_channels: int = 3):
        super().__init__()
        check_int(z_dim, "z_dim", min=1)
        check_int(channels, "channels", min=1)
        self.stages = check_int(stages, "stages", min=1)
        check_int(out_channels, "out_channels", min=1)
        self.z_dim, self.channels = z_dim, channels
        self.initial = nn.Linear(z_dim, channels * 16)
        self.blocks = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(stages - 1))
        self.to_rgb = nn.ModuleList(nn.Conv2d(channels, out_channels, 1) for _ in range(stages))

    def forward(self, z: torch.Tensor, stage: int, alpha=1.0) -> torch.Tensor:
        _check_input(z, "z", self, 2, self.z_dim)
        stage = check_int(stage, "stage", min=0, max=self.stages - 1)
        alpha = check_float(alpha, "alpha", min=0.0, max=1.0)
        h = F.leaky_relu(self.initial(z), 0.2).view(z.shape[0], self.channels, 4, 4)
        if stage == 0:
            return self.to_rgb[0](h)
        for s in range(1, stage):
            h = F.leaky_relu(self.blocks[s - 1](upsample_nearest(h)), 0.2)
        new = F.leaky_relu(self.blocks[stage - 1](upsample_nearest(h)), 0.2)
        return fade_in(self.to_rgb[stage - 1](h), self.to_rgb[stage](new), alpha)


# ============================================================================ 3D-GAN

def transposed_conv3d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """3-D transposed convolution written out: insert stride - 1 zeros between the input voxels,
    pad by k - 1 - padding, and correlate with the spatially flipped kernel, in/out channels swapped.
    x: (B, C_in, D, H, W), weight: (C_in, C_out, k, k, k) (F.conv_transpose3d's layout)
    -> (B, C_out, (D - 1) stride - 2 padding + k, ...)."""
    check_tensor(x, "x", ndim=5)
    check_tensor(weight, "weight", ndim=5)
    check_same(x, "x", weight=weight)
    k = weight.shape[2]
    if weight.shape[0] != x.shape[1] or weight.shape[2:] != (k, k, k):
        raise ValueError(f"weight: expected shape ({x.shape[1]}, C_out, k, k, k), got {tuple(weight.shape)}")
    stride = check_int(stride, "stride", min=1)
    padding = check_int(padding, "padding", min=0, max=k - 1)
    b, c, d, h, w = x.shape
    if (min(d, h, w) - 1) * stride - 2 * padding + k < 1:
        raise ValueError(f"padding: {padding} leaves an empty output for input {tuple(x.shape)} and kernel {k}")
    up = x.new_zeros(b, c, (d - 1) * stride + 1, (h - 1) * stride + 1, (w - 1) * stride + 1)
    up[:, :, ::stride, ::stride, ::stride] = x
    up = F.pad(up, [k - 1 - padding] * 6)
    return F.conv3d(up, weight.flip(2, 3, 4).transpose(0, 1))


class VoxelGenerator(nn.Module):
    """3D-GAN's generator: voxels instead of pixels. z -> a 4^3 grid by a linear layer, then 3-D
    transposed convolutions (kernel 4, stride 2, padding 1) doubling the resolution, ReLU between,
    a sigmoid at the end: occupancies in [0, 1]. z: (B, z_dim) -> (B, 1, N, N, N), N = ``resolution``."""

    def __init__(self, z_dim: int = 16, channels: int = 16, resolution: int = 16):
        super().__init__()
        check_int(z_dim, "z_dim", min=1)
        check_int(channels, "channels", min=1)
        ups = _log2_levels(resolution, "resolution")
        self.z_dim, self.channels, self.resolution = z_dim, channels, resolution
        self.initial = nn.Linear(z_dim, channels * 64)
        chans = [max(channels // 2 ** i, 1) for i in range(ups)] + [1]
        self.ups = nn.ModuleList(nn.ConvTranspose3d(a, b, 4, 2, 1) for a, b in zip(chans[:-1], chans[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, "z", self, 2, self.z_dim)
        h = F.relu(self.initial(z)).view(z.shape[0], self.channels, 4, 4, 4)
        for i, up in enumerate(self.ups):
            h = up(h)
            h = F.relu(h) if i < len(self.ups) - 1 else torch.sigmoid(h)
        return h


# ============================================================================ PlatonicGAN

def _check_density(sigma: torch.Tensor, name: str = "sigma") -> None:
    check_tensor(sigma, name, ndim=5)
    if sigma.shape[1] != 1:
        raise ValueError(f"{name}: expected one density channel, shape (B, 1, D, H, W), got {tuple(sigma.shape)}")
    if bool((sigma < 0).any()):
        raise ValueError(f"{name}: densities must be non-negative")


def absorption_projection(sigma: torch.Tensor, length=2.0) -> torch.Tensor:
    """Absorption-only rendering along the depth axis: opacity 1 - exp(-sum_i sigma_i dl) per pixel,
    dl = length / D (the voxels sample the density at their centres: a midpoint rule).
    sigma: (B, 1, D, H, W) >= 0 -> (B, 1, H, W)."""
    _check_density(sigma)
    length = check_float(length, "length", min=0.0, min_open=True)
    dl = length / sigma.shape[2]
    return -torch.expm1(-sigma.sum(2) * dl)


def emission_absorption_projection(sigma: torch.Tensor, color: torch.Tensor, length=2.0) -> torch.Tensor:
    """Emission-absorption rendering along depth, front (index 0) to back: C = sum_i T_i alpha_i c_i
    with alpha_i = 1 - exp(-sigma_i dl) and T_i = exp(-sum_{j<i} sigma_j dl), impl/nerf.py's weights.
    sigma: (B, 1, D, H, W) >= 0, color: (B, C, D, H, W) -> (B, C, H, W)."""
    _check_density(sigma)
    check_tensor(color, "color", ndim=5)
    check_same(sigma, "sigma", color=color)
    if color.shape[0] != sigma.shape[0] or color.shape[2:] != sigma.shape[2:]:
        raise ValueError(f"color: expected shape ({sigma.shape[0]}, C, {', '.join(map(str, sigma.shape[2:]))}), "
                         f"got {tuple(color.shape)}")
    length = check_float(length, "length", min=0.0, min_open=True)
    d = sigma.shape[2]
    s = sigma[:, 0].permute(0, 2, 3, 1)                                      # (B, H, W, D)
    t = torch.linspace(0.0, length, d + 1, dtype=sigma.dtype, device=sigma.device).expand(*s.shape[:-1], d + 1)
    w = nerf.volume_rendering_weights(s, t)                                  # (B, H, W, D)
    return torch.einsum("bhwd,bcdhw->bchw", w, color)


def rotate_volume(volume: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Trilinear resampling of a grid at rotated points: out(p) = volume(R p) for the voxel centres p
    in [-1, 1]^3 (x along W, y along H, z along D), zero outside. The content turns by R^T.
    volume: (B, C, D, H, W), rotation: (B, 3, 3) -> (B, C, D, H, W)."""
    check_tensor(volume, "volume", ndim=5)
    check_tensor(rotation, "rotation", shape=(volume.shape[0], 3, 3))
    check_same(volume, "volume", rotation=rotation)
    theta = torch.cat([rotation, rotation.new_zeros(rotation.shape[0], 3, 1)], 2)
    grid = F.affine_grid(theta, list(volume.shape), align_corners=False)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angle`` about the depth (z) axis, in the (x, y) plane. angle: (B,) -> (B, 3, 3)."""
    check_tensor(angle, "angle", ndim=1)
    c, s = torch.cos(angle), torch.sin(angle)
    o, i = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([c, -s, o, s, c, o, o, o, i], -1).view(-1, 3, 3)


class PlatonicGAN(nn.Module):
    """PlatonicGAN's generator: a 2-D image in, a 3-D density grid out (an image encoder feeding a
    3D-GAN voxel generator), rendered back to 2-D differentiably (rotation by a pose, then
    absorption-only projection) for the 2-D discriminator.
    image: (B, C, N, N), rotation: (B, 3, 3) -> (rendered (B, 1, N, N), density (B, 1, N, N, N))."""

    def __init__(self, in_channels: int = 1, resolution: int = 16, z_dim: int = 16, channels: int = 8,
                 density_scale: float = 4.0):
        super().__init__()
        check_int(in_channels, "in_channels", min=1)
        self.in_channels, self.resolution = in_channels, resolution
        self.density_scale = check_float(density_scale, "density_scale", min=0.0, min_open=True)
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2),
                                     nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(channels * 16, z_dim))
        self.voxels = VoxelGenerator(z_dim, channels, resolution)

    def forward(self, image: torch.Tensor, rotation: torch.Tensor):
        _check_input(image, "image", self, 4, self.in_channels)
        n = self.resolution
        if image.shape[2:] != (n, n):
            raise ValueError(f"image: expected spatial size ({n}, {n}), got shape {tuple(image.shape)}")
        density = self.density_scale * self.voxels(self.encoder(image))
        return absorption_projection(rotate_volume(density, rotation)), density


# ============================================================================ HoloGAN

def depth_projection(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """HoloGAN's projection unit: the depth axis folded into the channels and mixed by a 1x1 conv
    (the same for every pixel), LeakyReLU. features: (B, C, D, H, W), weight: (P, C * D) -> (B, P, H, W)."""
    check_tensor(features, "features", ndim=5)
    b, c, d, h, w = features.shape
    check_tensor(weight, "weight", shape=(None, c * d))
    check_same(features, "features", weight=weight)
    if bias is not None:
        check_tensor(bias, "bias", shape=(weight.shape[0],))
        check_same(features, "features", bias=bias)
    y = F.conv2d(features.reshape(b, c * d, h, w), weight[:, :, None, None], bias)
    return F.leaky_relu(y, 0.2)


class HoloGAN(nn.Module):
    """HoloGAN: a learned 3-D feature template styled by z (per-channel AdaIN-like scale and bias),
    one 3-D conv, rotated by the pose (trilinear resampling), projected along depth (projection
    unit), then 2-D convolutions with 2x upsampling: a 3D GAN followed by a 2-D super-resolution
    network. z: (B, z_dim), rotation: (B, 3, 3) -> image (B, out, S 2^ups, S 2^ups)."""

    def __init__(self, z_dim: int = 16, channels: int = 8, size: int = 8, projected: int = 16,
                 out_channels: int = 3, ups: int = 2):
        super().__init__()
        for name, v in dict(z_dim=z_dim, channels=channels, size=size, projected=projected,
                            out_channels=out_channels).items():
            check_int(v, name, min=1)
        check_int(ups, "ups", min=0)
        self.z_dim, self.channels, self.size = z_dim, channels, size
        self.template = nn.Parameter(torch.randn(1, channels, size, size, size))
        self.style = nn.Linear(z_dim, 2 * channels)
        self.conv3d = nn.Conv3d(channels, channels, 3, padding=1)
        self.project_weight = nn.Parameter(torch.randn(projected, channels * size) / math.sqrt(channels * size))
        self.project_bias = nn.Parameter(torch.zeros(projected))
        layers = []
        for _ in range(ups):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(projected, projected, 3, padding=1), nn.LeakyReLU(0.2)]
        self.upsample = nn.Sequential(*layers, nn.Conv2d(projected, out_channels, 1))

    def features_3d(self, z: torch.Tensor) -> torch.Tensor:
        """Styled 3-D features in the canonical pose. z: (B, z_dim) -> (B, C, S, S, S)."""
        _check_input(z, "z", self, 2, self.z_dim)
        st = self.style(z)[:, :, None, None, None]
        x = self.template * (1 + st[:, : self.channels]) + st[:, self.channels:]
        return F.leaky_relu(self.conv3d(F.leaky_relu(x, 0.2)), 0.2)

    def render_features(self, z: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        """The rendered 2-D feature map: rotate the 3-D features by the pose, project along depth.
        -> (B, projected, S, S)."""
        return depth_projection(rotate_volume(self.features_3d(z), rotation), self.project_weight,
                                self.project_bias)

    def forward(self, z: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.render_features(z, rotation))


# ============================================================================ GRAF

def _expand_code(code: torch.Tensor, name: str, lead: tuple[int, ...], dim: int, ref: torch.Tensor) -> torch.Tensor:
    """A latent code (*p, Z) broadcast to (*lead, Z), aligned on the left: p is a prefix of lead
    with 1s allowed ((Z,): one code for all points; (R, Z) or (R, 1, Z): one per ray)."""
    check_tensor(code, name)
    check_same(ref, "x", **{name: code})
    p = tuple(code.shape[:-1])
    if code.ndim < 1 or code.shape[-1] != dim or len(p) > len(lead) or any(a not in (1, b) for a, b in zip(p, lead)):
        raise ValueError(f"{name}: expected shape (..., {dim}) with a leading prefix of {lead}, got {tuple(code.shape)}")
    return code.reshape(*p, *([1] * (len(lead) - len(p))), dim).expand(*lead, dim)


class GRAF(nn.Module):
    """GRAF's generator: a radiance field conditioned on a shape code and an appearance code.
    Density and a feature from an MLP on (gamma(x), z_shape); colour from one more layer on
    (feature, gamma(d), z_app), so the appearance code cannot reach the density.
    x, d: (..., 3); z_shape: (Zs,) or (..., Zs); z_app: (Za,) or (..., Za) -> (rgb (..., 3), sigma (...))."""

    def __init__(self, z_shape_dim: int = 8, z_app_dim: int = 8, n_freqs_pos: int = 4, n_freqs_dir: int = 2,
                 width: int = 64, depth: int = 3):
        super().__init__()
        for name, v in dict(z_shape_dim=z_shape_dim, z_app_dim=z_app_dim, width=width, depth=depth).items():
            check_int(v, name, min=1)
        self.n_freqs_pos = check_int(n_freqs_pos, "n_freqs_pos", min=0)
        self.n_freqs_dir = check_int(n_freqs_dir, "n_freqs_dir", min=0)
        self.z_shape_dim, self.z_app_dim = z_shape_dim, z_app_dim
        dims = [3 + 6 * n_freqs_pos + z_shape_dim] + [width] * depth
        self.trunk = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.sigma_head = nn.Linear(width, 1)
        self.color_hidden = nn.Linear(width + 3 + 6 * n_freqs_dir + z_app_dim, width // 2 or 1)
        self.color_out = nn.Linear(width // 2 or 1, 3)

    def density(self, x: torch.Tensor, z_shape: torch.Tensor):
        """x: (..., 3), z_shape -> (sigma (...) >= 0, feature (..., width))."""
        nerf._last3(x, "x")
        check_same(_param(self), "the module's parameters", x=x)
        zs = _expand_code(z_shape, "z_shape", tuple(x.shape[:-1]), self.z_shape_dim, x)
        h = torch.cat([nerf.positional_encoding(x, self.n_freqs_pos), zs], -1)
        for layer in self.trunk:
            h = F.relu(layer(h))
        return F.softplus(self.sigma_head(h)).squeeze(-1), h

    def forward(self, x: torch.Tensor, d: torch.Tensor, z_shape: torch.Tensor, z_app: torch.Tensor):
        check_tensor(d, "d", shape=tuple(x.shape))
        sigma, h = self.density(x, z_shape)
        za = _expand_code(z_app, "z_app", tuple(x.shape[:-1]), self.z_app_dim, x)
        c = F.relu(self.color_hidden(torch.cat([h, nerf.positional_encoding(d, self.n_freqs_dir), za], -1)))
        return torch.sigmoid(self.color_out(c)), sigma

    def render(self, z_shape: torch.Tensor, z_app: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
               t_near: float, t_far: float, n_samples: int, *, stratified: bool = False,
               generator: torch.Generator | None = None):
        """Volume-render the conditioned field with impl/nerf.py's renderer. Codes (Z,) for every ray
        or (R, Z) per ray; origins, dirs: (R, 3) -> (rgb (R, 3), weights (R, N), t (R, N))."""
        check_bool(stratified, "stratified")
        _check_input(origins, "origins", self, 2)
        if z_shape.ndim == 2:
            _check_batch(z_shape, "z_shape", origins.shape[0])
        if z_app.ndim == 2:
            _check_batch(z_app, "z_app", origins.shape[0])
        zs = z_shape if z_shape.ndim == 1 else z_shape[:, None]
        za = z_app if z_app.ndim == 1 else z_app[:, None]
        return nerf.render_field(lambda x, d: self(x, d, zs, za), origins, dirs, t_near, t_far, n_samples,
                                 generator=generator, stratified=stratified)


class VoxelRadianceField(nn.Module):
    """The alternative GRAF compares with: a dense N^3 grid of (density, rgb) looked up by trilinear
    interpolation (4 N^3 parameters). x, d: (..., 3) in [-1, 1]^3 -> (rgb (..., 3), sigma (...))."""

    def __init__(self, resolution: int = 16):
        super().__init__()
        n = check_int(resolution, "resolution", min=2)
        self.grid = nn.Parameter(torch.randn(1, 4, n, n, n) * 0.1)

    def forward(self, x: torch.Tensor, d: torch.Tensor | None = None):
        nerf._last3(x, "x")
        check_same(self.grid, "grid", x=x)
        v = F.grid_sample(self.grid, x.reshape(1, -1, 1, 1, 3), mode="bilinear", align_corners=True)
        v = v.reshape(4, *x.shape[:-1]).movedim(0, -1)
        return torch.sigmoid(v[..., 1:]), F.softplus(v[..., 0])


def parameter_count(module: nn.Module) -> int:
    """Number of learned scalars of a module (its memory in parameters)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected an nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters())


# ============================================================================ GIRAFFE

def composite_feature_fields(sigmas: torch.Tensor, features: torch.Tensor):
    """GIRAFFE's composition operator of K fields at the same points: the density is the sum
    sigma = sum_k sigma_k, the feature the density-weighted mean f = sum_k sigma_k f_k / sigma
    (0 where sigma = 0, where it does not matter for rendering).
    sigmas: (K, ...) >= 0, features: (K, ..., C) -> (sigma (...), feature (..., C))."""
    check_tensor(sigmas, "sigmas")
    check_tensor(features, "features", shape=tuple(sigmas.shape) + (None,))
    check_same(sigmas, "sigmas", features=features)
    if sigmas.ndim < 1:
        raise ValueError("sigmas: expected shape (K, ...)")
    if bool((sigmas < 0).any()):
        raise ValueError("sigmas: densities must be non-negative")
    total = sigmas.sum(0)
    weighted = (sigmas[..., None] * features).sum(0)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return total, torch.where(total[..., None] > 0, weighted / safe[..., None], torch.zeros_like(weighted))


class FeatureField(nn.Module):
    """GIRAFFE's object field: like GRAF's, with a feature vector in place of rgb.
    x, d: (..., 3); z_shape (..., Zs), z_app (..., Za) -> (sigma (...), feature (..., features))."""

    def __init__(self, z_shape_dim: int = 8, z_app_dim: int = 8, features: int = 16, n_freqs_pos: int = 4,
                 width: int = 64, depth: int = 3):
        super().__init__()
        self.graf = GRAF(z_shape_dim, z_app_dim, n_freqs_pos, 1, width, depth)
        self.graf.color_out = nn.Linear(self.graf.color_out.in_features, check_int(features, "features", min=1))
        self.features = features

    def forward(self, x, d, z_shape, z_app):
        check_tensor(d, "d", shape=tuple(x.shape))
        sigma, h = self.graf.density(x, z_shape)
        za = _expand_code(z_app, "z_app", tuple(x.shape[:-1]), self.graf.z_app_dim, x)
        pe = nerf.positional_encoding(d, self.graf.n_freqs_dir)
        return sigma, self.graf.color_out(F.relu(self.graf.color_hidden(torch.cat([h, pe, za], -1))))


class NeuralRenderer(nn.Module):
    """GIRAFFE's 2-D neural renderer: a feature map upsampled by 2x (nearest) + 3x3 conv per stage to
    RGB. features: (B, C, H, W) -> (B, 3, H 2^ups, W 2^ups)."""

    def __init__(self, features: int = 16, ups: int = 2, out_channels: int = 3):
        super().__init__()
        self.features = check_int(features, "features", min=1)
        check_int(ups, "ups", min=0)
        check_int(out_channels, "out_channels", min=1)
        layers = []
        for _ in range(ups):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(features, features, 3, padding=1),
                       nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Conv2d(features, out_channels, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "x", self, 4, self.features)
        return self.net(x)


class GIRAFFE(nn.Module):
    """GIRAFFE: K objects, each a feature field with its own codes and translation, composed by
    ``composite_feature_fields``, volume-rendered to a low-resolution feature map (impl/nerf.py's
    weights) and upsampled by the 2-D neural renderer ("GRAF + 2D conv. upscale").

    z_shape: (B, K, Zs), z_app: (B, K, Za), translation: (B, K, 3); rays origins, dirs: (H W, 3) of
    an H x W camera -> image (B, 3, H 2^ups, W 2^ups); ``render_features`` gives the (B, C, H, W) map."""

    def __init__(self, z_shape_dim: int = 8, z_app_dim: int = 8, features: int = 16, ups: int = 2,
                 width: int = 64):
        super().__init__()
        self.field = FeatureField(z_shape_dim, z_app_dim, features, width=width)
        self.renderer = NeuralRenderer(features, ups)
        self.features = features

    def render_features(self, z_shape, z_app, translation, origins, dirs, height: int, width: int,
                        t_near: float, t_far: float, n_samples: int):
        check_tensor(z_shape, "z_shape", ndim=3)
        b, k = z_shape.shape[:2]
        check_tensor(z_app, "z_app", shape=(b, k, None))
        check_tensor(translation, "translation", shape=(b, k, 3))
        height, width = check_int(height, "height", min=1), check_int(width, "width", min=1)
        check_tensor(origins, "origins", shape=(height * width, 3))
        check_tensor(dirs, "dirs", shape=(height * width, 3))
        check_same(origins, "origins", dirs=dirs, z_shape=z_shape, z_app=z_app, translation=translation)
        n = check_int(n_samples, "n_samples", min=1)
        t_near, t_far = check_float(t_near, "t_near"), check_float(t_far, "t_far")
        if not t_far > t_near:
            raise ValueError("t_far: must be greater than t_near")
        t = torch.linspace(t_near, t_far, n + 1, dtype=origins.dtype, device=origins.device)
        mid = 0.5 * (t[1:] + t[:-1])
        x = origins[:, None] + mid[:, None] * dirs[:, None]                        # (R, N, 3)
        x_obj = x[None, None] - translation[:, :, None, None]                        # (B, K, R, N, 3)
        d = dirs[:, None].expand_as(x).expand_as(x_obj)
        sigma, feat = self.field(x_obj, d, z_shape[:, :, None, None], z_app[:, :, None, None])
        sigma, feat = composite_feature_fields(sigma.movedim(1, 0), feat.movedim(1, 0))   # (B, R, N[, C])
        w = nerf.volume_rendering_weights(sigma, t.expand(*sigma.shape[:-1], n + 1))
        fmap = (w[..., None] * feat).sum(-2)                                        # (B, R, C)
        return fmap.transpose(1, 2).reshape(b, self.features, height, width)

    def forward(self, z_shape, z_app, translation, origins, dirs, height: int, width: int,
                t_near: float, t_far: float, n_samples: int) -> torch.Tensor:
        return self.renderer(self.render_features(z_shape, z_app, translation, origins, dirs, height, width,
                                                  t_near, t_far, n_samples))


# ============================================================================ EG3D

def triplane_features(planes: torch.Tensor, points: torch.Tensor, aggregate: str = "sum") -> torch.Tensor:
    """EG3D's tri-plane lookup: a point (x, y, z) is projected onto the xy, xz and yz planes, each plane
    is sampled bilinearly there (F.grid_sample, align_corners=False, zero outside), and the three
    features are aggregated (sum or mean). Plane p's width axis holds its first coordinate, its height
    axis the second. planes: (B, 3, C, H, W), points: (B, P, 3) in [-1, 1]^3 -> (B, P, C)."""
    check_tensor(planes, "planes", ndim=5)
    if planes.shape[1] != 3:
        raise ValueError(f"planes: expected 3 planes on axis 1 (xy, xz, yz), got shape {tuple(planes.shape)}")
    b, _, c, h, w = planes.shape
    check_tensor(points, "points", shape=(b, None, 3))
    check_same(planes, "planes", points=points)
    check_choice(aggregate, "aggregate", ("sum", "mean"))
    pairs = torch.stack([points[..., [0, 1]], points[..., [0, 2]], points[..., [1, 2]]], 1)   # (B, 3, P, 2)
    sampled = F.grid_sample(planes.reshape(b * 3, c, h, w), pairs.reshape(b * 3, 1, -1, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)      # (3B, C, 1, P)
    sampled = sampled.reshape(b, 3, c, -1)
    out = sampled.sum(1) if aggregate == "sum" else sampled.mean(1)
    return out.transpose(1, 2)


class EG3D(nn.Module):
    """EG3D: a StyleGAN synthesis network draws 3 C feature channels, read as three C-channel planes;
    each 3-D point's tri-plane feature is decoded by a small MLP into (rgb, sigma) and volume-rendered
    with impl/nerf.py. z: (B, z_dim); origins, dirs: (R, 3) -> (rgb (B, R, 3), weights (B, R, N))."""

    def __init__(self, z_dim: int = 16, plane_channels: int = 8, plane_resolution: int = 16, hidden: int = 32):
        super().__init__()
        self.c = check_int(plane_channels, "plane_channels", min=1)
        self.backbone = StyleGAN(z_dim, z_dim, 16, plane_resolution, 3 * plane_channels)
        self.decoder = nn.Sequential(nn.Linear(plane_channels, hidden), nn.Softplus(), nn.Linear(hidden, 4))

    def planes(self, z: torch.Tensor, noise=None, *, generator=None) -> torch.Tensor:
        """z: (B, z_dim) -> planes (B, 3, C, R, R)."""
        img = self.backbone(z, noise, generator=generator)
        return img.view(img.shape[0], 3, self.c, *img.shape[2:])

    def field(self, planes: torch.Tensor, x: torch.Tensor):
        """planes (B, 3, C, H, W), x: (B, ..., 3) -> (rgb (B, ..., 3), sigma (B, ...))."""
        f = triplane_features(planes, x.reshape(x.shape[0], -1, 3), "sum")
        out = self.decoder(f).reshape(*x.shape[:-1], 4)
        return torch.sigmoid(out[..., 1:]), F.softplus(out[..., 0])

    def forward(self, z, origins, dirs, t_near: float, t_far: float, n_samples: int, noise=None, *,
                generator=None):
        _check_input(z, "z", self, 2)
        planes = self.planes(z, noise, generator=generator)
        nerf._last3(origins, "origins")
        b, r = z.shape[0], origins.shape[0]
        check_tensor(dirs, "dirs", shape=(r, 3))
        rep_o = origins[:, None].expand(r, b, 3).reshape(r * b, 3)
        rep_d = dirs[:, None].expand(r, b, 3).reshape(r * b, 3)
        # Each ray appears b times (ray-major): one copy per scene, so R B rays share one call.
        rgb, w, _ = nerf.render_field(lambda x, d: self._split_field(planes, x, b), rep_o, rep_d, t_near, t_far,
                                      n_samples, stratified=False)
        return rgb.view(r, b, 3).transpose(0, 1), w.view(r, b, -1).transpose(0, 1)

    def _split_field(self, planes, x, b):
        """x: (R B, N, 3) ray-major -> (rgb (R B, N, 3), sigma (R B, N)), scene j on rows j, j + b, ..."""
        rb, n = x.shape[:2]
        xs = x.reshape(rb // b, b, n, 3).transpose(0, 1)                              # (B, R, N, 3)
        rgb, sigma = self.field(planes, xs)
        return rgb.transpose(0, 1).reshape(rb, n, 3), sigma.transpose(0, 1).reshape(rb, n)


# ============================================================================ BicycleGAN

class BicycleGenerator(nn.Module):
    """G(A, z): the latent z broadcast over the image and concatenated to the input A, then convs.
    A: (B, Ca, H, W), z: (B, Z) -> (B, Cb, H, W) in (-1, 1)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, z_dim: int = 2, hidden: int = 16):
        super().__init__()
        for name, v in dict(in_channels=in_channels, out_channels=out_channels, z_dim=z_dim, hidden=hidden).items():
            check_int(v, name, min=1)
        self.in_channels, self.z_dim = in_channels, z_dim
        self.net = nn.Sequential(nn.Conv2d(in_channels + z_dim, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(hidden, out_channels, 3, padding=1), nn.Tanh())

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _check_input(a, "a", self, 4, self.in_channels)
        _check_input(z, "z", self, 2, self.z_dim)
        _check_batch(z, "z", a.shape[0])
        zmap = z[:, :, None, None].expand(-1, -1, *a.shape[2:])
        return self.net(torch.cat([a, zmap], 1))


class BicycleEncoder(nn.Module):
    """E(B) -> (mu, logvar) of q(z | B). image: (B, C, H, W) -> ((B, Z), (B, Z))."""

    def __init__(self, in_channels: int = 1, z_dim: int = 2, hidden: int = 16):
        super().__init__()
        check_int(in_channels, "in_channels", min=1)
        self.in_channels, self.z_dim = in_channels, check_int(z_dim, "z_dim", min=1)
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(hidden, hidden, 3, 2, 1), nn.LeakyReLU(0.2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, image: torch.Tensor):
        _check_input(image, "image", self, 4, self.in_channels)
        out = self.net(image)
        return out[:, : self.z_dim], out[:, self.z_dim:]


class BicycleLosses(NamedTuple):
    """BicycleGAN's generator/encoder objective, term by term (each a scalar) and weighted total."""
    gan_vae: torch.Tensor   # non-saturating GAN loss of D_vae on G(A, z ~ E(B))
    image_l1: torch.Tensor  # ||B - G(A, E(B))||_1 (mean): cVAE reconstruction
    kl: torch.Tensor        # KL(q(z | B) || N(0, I)) (mean over the batch)
    gan_lr: torch.Tensor    # non-saturating GAN loss of D_lr on G(A, z ~ N(0, I))
    latent: torch.Tensor    # ||E(G(A, z)) - z||_1 (mean): cLR latent regression
    total: torch.Tensor


def bicyclegan_losses(generator: nn.Module, encoder: nn.Module, d_vae, d_lr, a: torch.Tensor, b: torch.Tensor,
                      z_random: torch.Tensor, eps: torch.Tensor, *, l1_weight: float = 10.0,
                      kl_weight: float = 0.01, latent_weight: float = 0.5) -> BicycleLosses:
    """BicycleGAN = cVAE-GAN + cLR-GAN.
    cVAE-GAN: z = mu + exp(logvar / 2) eps from E(B), B^ = G(A, z); GAN loss on B^, lambda_1 ||B - B^||_1
    and lambda_KL KL(q(z|B) || N(0, I)). cLR-GAN: B~ = G(A, z_random); GAN loss on B~ and
    lambda_latent ||mu(E(B~)) - z_random||_1. As in BicycleGAN, the latent regression trains only G
    (the encoder sees B~ through a frozen copy of its weights, so E cannot cheat).
    a: (B, Ca, H, W), b: (B, Cb, H, W), z_random, eps: (B, Z); d_vae, d_lr: image -> logits (B,)."""
    for name, m in dict(generator=generator, d_vae=d_vae, d_lr=d_lr).items():
        if not callable(m):
            raise TypeError(f"{name}: expected a callable module")
    if not isinstance(encoder, nn.Module):   # its weights are frozen for the latent term
        raise TypeError(f"encoder: expected an nn.Module, got {type(encoder).__name__}")
    check_tensor(a, "a", ndim=4)
    check_tensor(b, "b", ndim=4)
    check_tensor(z_random, "z_random", ndim=2)
    check_tensor(eps, "eps", shape=tuple(z_random.shape))
    check_same(a, "a", b=b, z_random=z_random, eps=eps)
    for name, x in dict(b=b, z_random=z_random, eps=eps).items():
        _check_batch(x, name, a.shape[0])
    l1_weight = check_float(l1_weight, "l1_weight", min=0.0)
    kl_weight = check_float(kl_weight, "kl_weight", min=0.0)
    latent_weight = check_float(latent_weight, "latent_weight", min=0.0)
    mu, logvar = encoder(b)
    b_hat = generator(a, mu + torch.exp(0.5 * logvar) * eps)
    gan_vae = F.softplus(-d_vae(b_hat)).mean()
    image_l1 = (b - b_hat).abs().mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
    b_tilde = generator(a, z_random)
    gan_lr = F.softplus(-d_lr(b_tilde)).mean()
    frozen = {k: v.detach() for k, v in encoder.named_parameters()}
    mu_tilde = torch.func.functional_call(encoder, frozen, (b_tilde,))[0]
    latent = (mu_tilde - z_random).abs().mean()
    total = gan_vae + l1_weight * image_l1 + kl_weight * kl + gan_lr + latent_weight * latent
    return BicycleLosses(gan_vae, image_l1, kl, gan_lr, latent, total)


def bicyclegan_discriminator_loss(d, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-E log D(real) - E log(1 - D(fake)) with D = sigmoid(logits); fake is detached."""
    if not callable(d):
        raise TypeError("d: expected a callable module")
    check_tensor(real, "real", ndim=4)
    check_tensor(fake, "fake", shape=(None,) + tuple(real.shape[1:]))
    return F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()


class BicycleTraining(NamedTuple):
    latent: torch.Tensor      # (steps,) latent regression error per step
    image_l1: torch.Tensor    # (steps,)


def train_bicyclegan(generator: nn.Module, encoder: nn.Module, d_vae: nn.Module, d_lr: nn.Module, sample_pairs, *,
                     steps: int = 300, batch: int = 32, lr: float = 2e-3, latent_weight: float = 0.5,
                     l1_weight: float = 10.0, kl_weight: float = 0.01,
                     generator_rng: torch.Generator | None = None) -> BicycleTraining:
    """Alternating Adam steps: both discriminators, then G and E on ``bicyclegan_losses``.
    sample_pairs(batch) -> (A, B). Returns the per-step latent regression error and L1 (no host sync
    in the loop: the histories stay on the device)."""
    if not callable(sample_pairs):
        raise TypeError("sample_pairs: expected a callable batch -> (A, B)")
    steps = check_int(steps, "steps", min=1)
    batch = check_int(batch, "batch", min=1)
    lr = check_float(lr, "lr", min=0.0, min_open=True)
    p = _param(generator)
    check_generator(generator_rng, "generator_rng", p.device)
    opt_g = torch.optim.Adam(list(generator.parameters()) + list(encoder.parameters()), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(d_vae.parameters()) + list(d_lr.parameters()), lr=lr, betas=(0.5, 0.999))
    hist_latent = torch.empty(steps, dtype=p.dtype, device=p.device)
    hist_l1 = torch.empty_like(hist_latent)
    z_dim = encoder.z_dim
    for step in range(steps):
        a, b = sample_pairs(batch)
        z = torch.randn(batch, z_dim, generator=generator_rng, dtype=p.dtype, device=p.device)
        eps = torch.randn(batch, z_dim, generator=generator_rng, dtype=p.dtype, device=p.device)
        with torch.no_grad():
            mu, logvar = encoder(b)
            fake_vae = generator(a, mu + torch.exp(0.5 * logvar) * eps)
            fake_lr = generator(a, z)
        opt_d.zero_grad()
        (bicyclegan_discriminator_loss(d_vae, b, fake_vae) + bicyclegan_discriminator_loss(d_lr, b, fake_lr)).backward()
        opt_d.step()
        opt_g.zero_grad()
        losses = bicyclegan_losses(generator, encoder, d_vae, d_lr, a, b, z, eps, l1_weight=l1_weight,
                                   kl_weight=kl_weight, latent_weight=latent_weight)
        losses.total.backward()
        opt_g.step()
        hist_latent[step] = losses.latent.detach()
        hist_l1[step] = losses.image_l1.detach()
    return BicycleTraining(hist_latent, hist_l1)


# ============================================================================ vid2vid

def warp(frame: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warping by an optical flow in pixels: out(p) = frame(p + flow(p)), bilinear, zero
    outside the frame. flow[:, 0] is the x (width) displacement, flow[:, 1] the y (height) one.
    frame: (B, C, H, W), flow: (B, 2, H, W) -> (B, C, H, W)."""
    check_tensor(frame, "frame", ndim=4)
    b, _, h, w = frame.shape
    check_tensor(flow, "flow", shape=(b, 2, h, w))
    check_same(frame, "frame", flow=flow)
    if h < 2 or w < 2:
        raise ValueError(f"frame: expected at least 2 x 2 pixels, got shape {tuple(frame.shape)}")
    ys = torch.arange(h, dtype=frame.dtype, device=frame.device)
    xs = torch.arange(w, dtype=frame.dtype, device=frame.device)
    gx = (xs[None, None, :] + flow[:, 0]) * (2 / (w - 1)) - 1
    gy = (ys[None, :, None] + flow[:, 1]) * (2 / (h - 1)) - 1
    return F.grid_sample(frame, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


class Vid2VidGenerator(nn.Module):
    """vid2vid's sequential generator: frame t = (1 - m_t) warp(x_{t-1}, w_t) + m_t h_t, where the flow
    w_t, the occlusion mask m_t in [0, 1] and the hallucinated image h_t come from the source maps
    (s_t, s_{t-1}) only, so frame t depends on frame t - 1 only through the warp.
    sources: (B, T, Cs, H, W) -> frames (B, T, C, H, W); frame 0 is h_0 (nothing to warp yet)."""

    def __init__(self, source_channels: int = 1, out_channels: int = 1, hidden: int = 16, max_flow: float = 2.0):
        super().__init__()
        check_int(source_channels, "source_channels", min=1)
        check_int(out_channels, "out_channels", min=1)
        check_int(hidden, "hidden", min=1)
        self.max_flow = check_float(max_flow, "max_flow", min=0.0)
        self.source_channels, self.out_channels = source_channels, out_channels
        self.net = nn.Sequential(nn.Conv2d(2 * source_channels, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(hidden, 3 + out_channels, 3, padding=1))

    def step_outputs(self, s_t: torch.Tensor, s_prev: torch.Tensor):
        """(flow (B, 2, H, W), mask (B, 1, H, W), hallucinated (B, C, H, W)) from two source maps."""
        out = self.net(torch.cat([s_t, s_prev], 1))
        return self.max_flow * torch.tanh(out[:, :2]), torch.sigmoid(out[:, 2:3]), torch.tanh(out[:, 3:])

    def step(self, s_t: torch.Tensor, s_prev: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        """One frame: s_t, s_prev: (B, Cs, H, W), x_prev: (B, C, H, W) -> x_t (B, C, H, W)."""
        _check_input(s_t, "s_t", self, 4, self.source_channels)
        check_tensor(s_prev, "s_prev", shape=tuple(s_t.shape))
        check_tensor(x_prev, "x_prev", shape=(s_t.shape[0], self.out_channels) + tuple(s_t.shape[2:]))
        check_same(s_t, "s_t", s_prev=s_prev, x_prev=x_prev)
        flow, mask, hallucinated = self.step_outputs(s_t, s_prev)
        return (1 - mask) * warp(x_prev, flow) + mask * hallucinated

    def forward(self, sources: torch.Tensor) -> torch.Tensor:
        _check_input(sources, "sources", self, 5)
        if sources.shape[2] != self.source_channels:
            raise ValueError(f"sources: expected {self.source_channels} channels on axis 2, got {tuple(sources.shape)}")
        frames = [self.step_outputs(sources[:, 0], sources[:, 0])[2]]
        for t in range(1, sources.shape[1]):
            frames.append(self.step(sources[:, t], sources[:, t - 1], frames[-1]))
        return torch.stack(frames, 1)


# ============================================================================ StyleFlow

class StyleFlow(nn.Module):
    """StyleFlow: StyleGAN with the mapping network z -> w replaced by a normalizing flow conditioned
    on attributes: w = f(z; a), z = f^{-1}(w; a), built from impl/flows.py's Glow steps (ActNorm,
    LU 1x1 conv, conditional affine coupling with the attributes as context). ActNorm starts as the
    identity instead of its data-dependent initialisation, so the map never changes on first use.
    z, w: (B, w_dim), attributes: (B, attr_dim); ``forward`` draws the image (B, out, R, R)."""

    def __init__(self, w_dim: int = 8, attr_dim: int = 2, steps: int = 4, hidden: int = 32,
                 synthesis: SynthesisNetwork | None = None):
        super().__init__()
        check_int(w_dim, "w_dim", min=2)
        check_int(attr_dim, "attr_dim", min=1)
        self.w_dim, self.attr_dim = w_dim, attr_dim
        self.flow = flows.Flow(w_dim, steps, hidden, cond_channels=attr_dim)
        for step in self.flow.steps:   # flows.ActNorm keeps its flag as a bool (older versions: a buffer)
            if isinstance(step.actnorm.initialized, torch.Tensor):
                step.actnorm.initialized.fill_(True)
            else:
                step.actnorm.initialized = True
        if synthesis is not None and not isinstance(synthesis, SynthesisNetwork):
            raise TypeError(f"synthesis: expected a SynthesisNetwork, got {type(synthesis).__name__}")
        if synthesis is not None and synthesis.w_dim != w_dim:
            raise ValueError(f"synthesis: expects w_dim {synthesis.w_dim}, the flow has {w_dim}")
        self.synthesis = synthesis

    def _check(self, v, name, attributes):
        _check_input(v, name, self, 2, self.w_dim)
        _check_input(attributes, "attributes", self, 2, self.attr_dim)
        _check_batch(attributes, "attributes", v.shape[0])

    def z_to_w(self, z: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """w = f(z; a): (B, w_dim)."""
        self._check(z, "z", attributes)
        return self.flow.inverse(z, attributes)

    def w_to_z(self, w: torch.Tensor, attributes: torch.Tensor):
        """(z = f^{-1}(w; a), log|det dz/dw| (B,))."""
        self._check(w, "w", attributes)
        return self.flow(w, attributes)

    def log_prob(self, w: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Exact log p(w | a) = log N(f^{-1}(w; a)) + log|det d f^{-1} / dw|. (B,)."""
        z, logdet = self.w_to_z(w, attributes)
        return flows.standard_normal_log_prob(z) + logdet

    def edit(self, w: torch.Tensor, attributes: torch.Tensor, new_attributes: torch.Tensor) -> torch.Tensor:
        """Attribute editing: w' = f(f^{-1}(w; a); a'), the same z under new attributes."""
        z, _ = self.w_to_z(w, attributes)
        return self.z_to_w(z, new_attributes)

    def forward(self, z: torch.Tensor, attributes: torch.Tensor, noise=None, *, generator=None) -> torch.Tensor:
        if self.synthesis is None:
            raise ValueError("synthesis: this StyleFlow has no synthesis network; use z_to_w")
        return self.synthesis(self.z_to_w(z, attributes), noise, generator=generator)
