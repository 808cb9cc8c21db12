"""Edge cases and bad inputs of impl/splatting.py, found by mutation testing.

Each test here kills mutants that survived ``python -m spec.mutation impl/splatting.py``: an input
check dropped or naming the wrong argument, a truncation test off at its boundary, density control
that forgets the gradients of earlier views, densifies on the wrong steps or keeps its statistic in
the wrong dtype. Expected values are computed by hand from the definitions (alpha = o exp(-q / 2),
w_i = T_i alpha_i) or are counts that follow from 3DGS' clone / split rules.
"""

import math

import pytest
import torch

from impl import splatting as gs

F64 = torch.float64


def _raises(exc, name, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ``exc`` whose message starts with the argument's name."""
    with pytest.raises(exc, match=rf"^{name}\b"):
        fn(*args, **kwargs)


def _k(f=8.0, c=4.0, dtype=F64):
    return torch.tensor([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=dtype)


def _iso(n, centres, log_scale=math.log(0.05), opacity_logit=0.0, sh=0.0):
    return dict(means=torch.as_tensor(centres, dtype=F64).reshape(n, 3).clone(),
                log_scales=torch.full((n, 3), log_scale, dtype=F64),
                quats=torch.tensor([[1.0, 0, 0, 0]] * n, dtype=F64),
                opacity_logits=torch.full((n,), opacity_logit, dtype=F64),
                sh=torch.full((n, 1, 3), sh, dtype=F64))


# --------------------------------------------------------------------------- input checks


def test_intrinsics_checked_by_name_everywhere():
    """A wrong-shaped or non-tensor intrinsics matrix is refused, named, by every function taking one."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.5, 0.0, 3.0]], dtype=F64)
    covs = torch.eye(3, dtype=F64).expand(2, 3, 3)
    view = torch.eye(4, dtype=F64)
    for bad in (torch.eye(2, dtype=F64), torch.eye(4, dtype=F64), torch.ones(3, dtype=F64)):
        _raises(ValueError, "intrinsics", gs.project_gaussians, means, covs, view, bad)
        _raises(ValueError, "intrinsics", gs.perspective_jacobian, means, bad)
        _raises(ValueError, "intrinsics", gs.render_gaussians, _iso(2, [[0, 0, 2.0]] * 2), view, bad, 4, 4)
    _raises(TypeError, "intrinsics", gs.project_gaussians, means, covs, view, [[8.0, 0, 4]] * 3)
    _raises(TypeError, "intrinsics", gs.perspective_jacobian, means, _k().float())


def test_transmittance_refuses_alphas_outside_the_unit_interval():
    """alpha < 0 would make T_i grow above 1 (a Gaussian that adds light behind it); alpha > 1 makes it negative."""
    for fn in (gs.transmittance_weights, lambda a: gs.composite(a, torch.ones(*a.shape, 3, dtype=F64))):
        _raises(ValueError, "alphas", fn, torch.tensor([0.5, -0.1], dtype=F64))
        _raises(ValueError, "alphas", fn, torch.tensor([0.5, 1.1], dtype=F64))
    w, t = gs.transmittance_weights(torch.tensor([0.5, -0.5], dtype=F64), validate=False)  # unchecked: the formula
    torch.testing.assert_close(w, torch.tensor([0.5, -0.25], dtype=F64))
    torch.testing.assert_close(t, torch.tensor(0.75, dtype=F64))


def test_raster_messages_name_the_arguments():
    means2d, covs2d = torch.tensor([[2.0, 2.0]], dtype=F64), torch.eye(2, dtype=F64)[None]
    depths, colors, opac = torch.ones(1, dtype=F64), torch.ones(1, 3, dtype=F64), torch.full((1,), 0.5, dtype=F64)
    for fn in (gs.rasterize_reference, gs.rasterize_tiles):
        with pytest.raises(TypeError, match=r"^background: dtype torch\.float32 differs from means2d's torch\.float64$"):
            fn(means2d, covs2d, depths, colors, opac, 4, 4, background=torch.zeros(3))
    for bad in (0, -3):
        _raises(ValueError, "chunk_elements", gs.rasterize_tiles, means2d, covs2d, depths, colors, opac, 4, 4,
                chunk_elements=bad)
    _raises(TypeError, "chunk_elements", gs.rasterize_tiles, means2d, covs2d, depths, colors, opac, 4, 4,
            chunk_elements=2.0)
    with pytest.raises(TypeError, match=r"^params: expected a dict, got list$"):
        gs.check_gaussians([1, 2])
    with pytest.raises(TypeError, match=r"^params: expected a dict, got NoneType$"):
        gs.render_gaussians(None, torch.eye(4, dtype=F64), _k(), 4, 4)


def test_init_from_image_sh_degree_range():
    """SH degrees 0..3 (16 coefficients) are what ``sh_basis`` evaluates; degree 4 is refused up front."""
    img = torch.full((4, 4, 3), 0.5, dtype=F64)
    for deg in range(4):
        assert gs.init_gaussians_from_image(img, 4, _k(c=2.0), sh_degree=deg)["sh"].shape == (4, (deg + 1) ** 2, 3)
    for bad in (4, -1):
        _raises(ValueError, "sh_degree", gs.init_gaussians_from_image, img, 4, _k(c=2.0), sh_degree=bad)


def test_fit_background_checked_by_name():
    img = torch.full((1, 4, 4, 3), 0.5, dtype=F64)
    p, view = _iso(1, [0.0, 0.0, 2.0]), torch.eye(4, dtype=F64)[None]
    _raises(ValueError, "background", gs.fit_gaussians, p, img, view, _k(c=2.0), steps=1,
            background=torch.zeros(2, dtype=F64))
    _raises(TypeError, "background", gs.fit_gaussians, p, img, view, _k(c=2.0), steps=1, background=[0.0] * 3)
    with pytest.raises(TypeError, match=r"^background: dtype torch\.float32 differs from images's torch\.float64$"):
        gs.fit_gaussians(p, img, view, _k(c=2.0), steps=1, background=torch.zeros(3))


# --------------------------------------------------------------------------- truncation boundary


@pytest.mark.parametrize("tile_size", [16, 2])
def test_truncation_keeps_the_pixels_exactly_on_the_k_sigma_ellipse(tile_size):
    """truncate = k zeroes alpha *beyond* Mahalanobis distance k: a pixel at distance exactly k keeps its alpha,
    in both rasterisers. Sigma' = I, mean on pixel (0, 0)'s centre (0.5, 0.5), k = 1: pixels (0, 1) and (1, 0)
    lie at q = 1 exactly (integer arithmetic), alpha = o e^{-1/2}; pixel (1, 1) at q = 2 is cut."""
    o, c = 0.8, torch.tensor([1.0, 0.5, 0.25], dtype=F64)
    args = (torch.tensor([[0.5, 0.5]], dtype=F64), torch.eye(2, dtype=F64)[None], torch.ones(1, dtype=F64), c[None],
            torch.tensor([o], dtype=F64), 3, 3)
    want = torch.zeros(3, 3, 3, dtype=F64)
    want[0, 0] = o * c
    want[0, 1] = want[1, 0] = o * math.exp(-0.5) * c
    torch.testing.assert_close(gs.rasterize_reference(*args, truncate=1.0), want)
    torch.testing.assert_close(gs.rasterize_tiles(*args, truncate=1.0, tile_size=tile_size), want)


def test_small_chunks_give_the_same_image():
    """chunk_elements bounds memory only: one tile at a time gives the default image."""
    g = torch.Generator().manual_seed(3)
    n = 6
    means2d = torch.rand(n, 2, generator=g, dtype=F64) * 20
    a = torch.randn(n, 2, 2, generator=g, dtype=F64)
    covs2d = a @ a.transpose(-1, -2) + 0.5 * torch.eye(2, dtype=F64)
    depths, colors = torch.rand(n, generator=g, dtype=F64) + 1, torch.rand(n, 3, generator=g, dtype=F64)
    opac = torch.rand(n, generator=g, dtype=F64)
    ref = gs.rasterize_reference(means2d, covs2d, depths, colors, opac, 20, 18, truncate=3.0)
    for chunk in (1, 1 << 22):
        img = gs.rasterize_tiles(means2d, covs2d, depths, colors, opac, 20, 18, tile_size=4, chunk_elements=chunk)
        torch.testing.assert_close(img, ref)


# --------------------------------------------------------------------------- density control inside the fit


def _two_view_scene():
    """Two cameras 10 apart along x, each seeing only the Gaussian straight in front of it (A at x = 0.1 in
    view 0, B at x = 10.05 in view 1; each is ~ 0.6 px wide and ~ 40 px outside the other's 8 x 8 image)."""
    view0 = torch.eye(4, dtype=F64)
    view1 = torch.eye(4, dtype=F64)
    view1[0, 3] = -10.0  # camera centre at x = +10
    p = _iso(2, [[0.1, 0.05, 2.0], [10.05, -0.1, 2.0]])
    images = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    return p, images, torch.stack([view0, view1]), _k()


def _pixel_gradients(p, images, views, k, i):
    """(N, 2): d(mean squared error of view i) / d(projected means, in pixels), the fit's loss rendered by hand."""
    pr = {key: v.detach().clone().requires_grad_(True) for key, v in p.items()}
    covs = gs.covariance_3d(torch.exp(pr["log_scales"]), pr["quats"])
    uv, cov2d, z = gs.project_gaussians(pr["means"], covs, views[i], k, eps2d=gs.EPS2D)
    uv.retain_grad()
    col = gs.sh_to_color(pr["sh"], pr["means"] - (-views[i][:3, :3].T @ views[i][:3, 3]))
    img = gs.rasterize_tiles(uv, cov2d, z, col, torch.sigmoid(pr["opacity_logits"]), 8, 8)
    ((img - images[i]) ** 2).mean().backward()
    return uv.grad


def test_density_control_averages_the_gradient_over_all_views_since_the_last_step():
    """Each Gaussian is visible (has a view-space gradient) in one view only. With densify_every = 2 the
    statistic at step 2 holds both views, so both pass a tiny threshold and are split (scale 0.05 >
    percent_dense * extent = 0.01): 2 -> 4 Gaussians. A statistic that kept only the last view's gradient
    would split B alone (3); densifying after step 1 instead of step 2 would see A alone (3)."""
    p, images, views, k = _two_view_scene()
    for i in range(2):  # the premise: Gaussian i has a non-zero gradient in view i only
        g = _pixel_gradients(p, images, views, k, i).norm(dim=-1)
        assert g[i] > 1e-6 and g[1 - i] == 0
    kw = dict(grad_threshold=1e-12, generator=torch.Generator().manual_seed(1))
    assert gs.fit_gaussians(p, images, views, k, steps=3, densify_every=2, **kw).params["means"].shape[0] == 4
    # densify_until = 2 stops before step 2's density control (step + 1 < densify_until): nothing changes
    assert gs.fit_gaussians(p, images, views, k, steps=3, densify_every=2, densify_until=2,
                            **kw).params["means"].shape[0] == 2
    # with one step there is no density-control step at all
    assert gs.fit_gaussians(p, images, views, k, steps=2, densify_every=2, **kw).params["means"].shape[0] == 2


def test_default_gradient_threshold_is_3dgs_in_ndc_units():
    """grad_threshold defaults to 3DGS' 2e-4 on the gradient in NDC units (pixel gradient times half the
    image size): switching density control on (densify_every > 0) does not densify a Gaussian that no
    view moves (here B, outside view 0), while a threshold of 0 densifies every one (0 >= 0): 2 -> 4.
    A statistic left in pixel units (W / 2 = 4 times smaller here) misses a threshold between the two."""
    p, images, views, k = _two_view_scene()
    kw = dict(steps=2, densify_every=1, generator=torch.Generator().manual_seed(1))
    assert gs.fit_gaussians(p, images[:1], views[:1], k, **kw).params["means"].shape[0] <= 3
    assert gs.fit_gaussians(p, images[:1], views[:1], k, grad_threshold=0.0, **kw).params["means"].shape[0] == 4
    # the statistic's unit: A's gradient in view 0, measured the fit's way, against thresholds on both sides
    ndc = (_pixel_gradients(p, images, views, k, 0)[0] * 4.0).norm().item()  # the images are 8 x 8
    one = dict(steps=1, densify_every=1, densify_until=2, generator=torch.Generator().manual_seed(1))
    n_below = gs.fit_gaussians(p, images[:1], views[:1], k, grad_threshold=0.5 * ndc, **one).params["means"].shape[0]
    n_above = gs.fit_gaussians(p, images[:1], views[:1], k, grad_threshold=2.0 * ndc, **one).params["means"].shape[0]
    assert (n_below, n_above) == (3, 2)


def test_density_statistic_keeps_the_fits_dtype_after_each_reset():
    """A float64 fit compares its gradient statistic with the threshold in float64, also after the reset that
    follows each density-control step. Colours of ~3e21 (extreme but valid SH coefficients) on a black target
    give view-space gradients of ~1e42, beyond float32's range (3.4e38): in float64 they stay below a
    threshold of 1e300 and nothing is ever densified; a float32 statistic would turn them into inf >= inf."""
    p, images, views, k = _two_view_scene()
    p["sh"] = torch.full_like(p["sh"], 1e22)
    fit = gs.fit_gaussians(p, torch.zeros_like(images), views, k, steps=5, densify_every=2, grad_threshold=1e300,
                           generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(fit.losses).all() and fit.losses[0] > 1e38
    assert fit.params["means"].shape[0] == 2


# --------------------------------------------------------------------------- more input checks (mutation sample, seed 2)


def test_shapes_checked_by_name_in_the_building_blocks():
    """A (3, 3) or (5, 5) viewmat, a scalar alpha, covs2d for the wrong number of splats: refused, named."""
    pts = torch.tensor([[0.0, 0.0, 2.0]], dtype=F64)
    for bad in (torch.eye(3, dtype=F64), torch.eye(5, dtype=F64)):
        _raises(ValueError, "viewmat", gs.world_to_camera, pts, bad)
    _raises(TypeError, "viewmat", gs.world_to_camera, pts, torch.eye(4))
    for fn in (gs.transmittance_weights, lambda a: gs.composite(a, torch.ones(3, dtype=F64))):
        _raises(ValueError, "alphas", fn, torch.tensor(0.5, dtype=F64))
    means2d, cov = torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=F64), torch.eye(2, dtype=F64).expand(2, 2, 2)
    depths, colors, opac = torch.ones(2, dtype=F64), torch.ones(2, 3, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    for bad in (cov[:1], torch.eye(3, dtype=F64).expand(2, 3, 3), cov[0]):
        _raises(ValueError, "covs2d", gs.gaussian_alpha, torch.zeros(4, 2, dtype=F64), means2d, bad, opac)
        for fn in (gs.rasterize_reference, gs.rasterize_tiles):
            _raises(ValueError, "covs2d", fn, means2d, bad, depths, colors, opac, 4, 4)


def test_fit_checks_its_threshold_and_names_the_reference_dtype():
    """A negative gradient threshold is refused even with density control off (densify_every = 0, the default),
    and a camera in another dtype than the images is named against them."""
    img = torch.full((1, 4, 4, 3), 0.5, dtype=F64)
    p, view = _iso(1, [0.0, 0.0, 2.0]), torch.eye(4, dtype=F64)[None]
    for every in (0, 1):
        _raises(ValueError, "grad_threshold", gs.fit_gaussians, p, img, view, _k(c=2.0), steps=1, densify_every=every,
                grad_threshold=-1e-3)
    with pytest.raises(TypeError, match=r"^viewmats: dtype torch\.float32 differs from images's torch\.float64$"):
        gs.fit_gaussians(p, img, view.float(), _k(c=2.0), steps=1)


# --------------------------------------------------------------------------- mutation sample, seed 3


def test_raster_and_tile_inputs_named():
    """colors of the wrong shape or type name colors in both rasterisers; a negative near plane names near in
    tile_assignment too (it is public, not only reached through rasterize_tiles' own check)."""
    means2d, covs2d = torch.tensor([[2.0, 2.0]], dtype=F64), torch.eye(2, dtype=F64)[None]
    depths, opac = torch.ones(1, dtype=F64), torch.full((1,), 0.5, dtype=F64)
    for fn in (gs.rasterize_reference, gs.rasterize_tiles):
        for bad in (torch.ones(2, 3, dtype=F64), torch.ones(1, dtype=F64)):
            _raises(ValueError, "colors", fn, means2d, covs2d, depths, bad, opac, 4, 4)
        _raises(TypeError, "colors", fn, means2d, covs2d, depths, [[1.0, 1.0, 1.0]], opac, 4, 4)
    for bad in (-0.5, float("nan")):
        _raises(ValueError, "near", gs.tile_assignment, means2d, covs2d, depths, 4, 4, near=bad)


def test_composite_names_a_scalar_alpha_before_judging_colors():
    """A 0-d alphas with one Gaussian's colours (1, C) is the alphas' fault: the error names alphas, not colors
    (whose expected shape alphas.shape + (C,) is meaningless for a scalar)."""
    _raises(ValueError, "alphas", gs.composite, torch.tensor(0.5, dtype=F64), torch.ones(1, 3, dtype=F64))


def test_render_reference_without_truncation_is_the_notes_alpha():
    """reference=True with truncate=None composites the untruncated alpha = o exp(-q / 2) (only the reference
    rasteriser has that mode). One Gaussian on the optical axis at z = 2, scale 0.25, f = 8, eps2d = 0: its splat
    is N((4, 4), (8 * 0.25 / 2)^2 I = I); opacity sigmoid(0) = 1/2, colour 0 * Y_00 + 0.5 = 1/2, black background."""
    p = _iso(1, [[0.0, 0.0, 2.0]], log_scale=math.log(0.25))
    centres = torch.arange(8, dtype=F64) + 0.5
    q = (centres[:, None] - 4) ** 2 + (centres[None, :] - 4) ** 2  # (row, col)
    want = (0.25 * torch.exp(-0.5 * q))[..., None].expand(8, 8, 3)
    kw = dict(eps2d=0.0, reference=True)
    img = gs.render_gaussians(p, torch.eye(4, dtype=F64), _k(), 8, 8, truncate=None, **kw)
    torch.testing.assert_close(img, want, rtol=1e-12, atol=0)
    # the premise: the corner pixel (q = 24.5) lies beyond the default 3-sigma cut, so the two modes differ there
    assert gs.render_gaussians(p, torch.eye(4, dtype=F64), _k(), 8, 8, **kw)[0, 0].abs().max() == 0


def test_look_at_refuses_a_target_one_ulp_from_a_distant_eye():
    """eye == target is judged relative to eye's magnitude: at |eye| = 1e6 a target one ulp away (2^-33 ~ 1.2e-10,
    below eps * 1e6 = 2.2e-10) is rounding noise and refused; 1e-3 away it gives a camera looking along +z."""
    eye = torch.tensor([1e6, 0.0, 0.0], dtype=F64)
    _raises(ValueError, "target", gs.world_to_camera_look_at, eye, eye + torch.tensor([2.0**-33, 0.0, 0.0], dtype=F64))
    view = gs.world_to_camera_look_at(eye, eye + torch.tensor([0.0, 0.0, 1e-3], dtype=F64))
    torch.testing.assert_close(view[2, :3], torch.tensor([0.0, 0.0, 1.0], dtype=F64))


def test_fit_channel_mismatch_message_counts_channels():
    """The message gives the images' channel count (3), not another axis (the height, 4 here)."""
    img = torch.full((1, 4, 5, 3), 0.5, dtype=F64)
    p = _iso(1, [0.0, 0.0, 2.0])
    p["sh"] = p["sh"][..., :1]
    with pytest.raises(ValueError, match=r"^params\['sh'\]: 1 colour channels, images have 3$"):
        gs.fit_gaussians(p, img, torch.eye(4, dtype=F64)[None], _k(c=2.0), steps=1)
