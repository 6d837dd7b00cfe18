"""Training losses against independent references (float64 loops, torch.distributions, torch.nn)."""
from __future__ import annotations

import logging
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trellis_impl.training.losses import (dssim, gaussian_opacity_regularizer, gaussian_volume_regularizer,
                                          kl_diagonal_gaussian, l1_loss, l2_loss, occupancy_bce, occupancy_dice,
                                          mesh_tsdf_loss, perceptual_loss, psnr, smooth_l1_loss, ssim)


def ssim_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM map [B, C, H, W] by explicit windowed sums over a zero-padded image."""
    size, sigma, r = 11, 1.5, 5
    g = np.array([math.exp(-(x - r) ** 2 / (2 * sigma ** 2)) for x in range(size)])
    w = np.outer(g / g.sum(), g / g.sum())
    pa, pb = (np.pad(x, ((0, 0), (0, 0), (r, r), (r, r))) for x in (a, b))
    out = np.zeros(a.shape)
    for i in range(a.shape[2]):
        for j in range(a.shape[3]):
            wa, wb = pa[:, :, i:i + size, j:j + size], pb[:, :, i:i + size, j:j + size]
            mu_a, mu_b = (w * wa).sum((2, 3)), (w * wb).sum((2, 3))
            var_a = (w * wa * wa).sum((2, 3)) - mu_a ** 2
            var_b = (w * wb * wb).sum((2, 3)) - mu_b ** 2
            cov = (w * wa * wb).sum((2, 3)) - mu_a * mu_b
            c1, c2 = 0.01 ** 2, 0.03 ** 2
            out[:, :, i, j] = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return out


def test_ssim_matches_direct_float64_windowed_sums():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 9, 13, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.rand(2, 3, 9, 13, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = ssim_reference(a.numpy(), b.numpy())
    assert abs(float(ssim(a, b)) - ref.mean()) < 1e-12
    np.testing.assert_allclose(ssim(a, b, size_average=False).numpy(), ref.mean((1, 2, 3)), rtol=0, atol=1e-12)
    assert abs(float(dssim(a, b)) - (1 - ref.mean())) < 1e-12
    # float32 input computes in float32
    assert abs(float(ssim(a.float(), b.float())) - ref.mean()) < 1e-5


def test_ssim_of_identical_images_is_one_and_is_differentiable():
    a = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    assert abs(float(ssim(a, a)) - 1.0) < 1e-12
    b = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ssim(x, a), (b,))
    with pytest.raises(ValueError, match="ssim"):
        ssim(a, a[:, :2])


def test_pixel_losses_match_torch():
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    assert torch.allclose(l1_loss(x, y), F.l1_loss(x, y))
    assert torch.allclose(l2_loss(x, y), F.mse_loss(x, y))
    assert torch.allclose(smooth_l1_loss(x, y, beta=0.3), F.smooth_l1_loss(x, y, beta=0.3))
    assert torch.allclose(psnr(x, y), -10 * torch.log10(F.mse_loss(x, y)))
    with pytest.raises(ValueError, match="beta"):
        smooth_l1_loss(x, y, beta=0.0)


def test_kl_matches_torch_distributions_mean_over_elements():
    mean, logvar = torch.randn(7, 8, dtype=torch.float64), torch.randn(7, 8, dtype=torch.float64)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ref = torch.distributions.kl_divergence(posterior, prior).mean()
    assert torch.allclose(kl_diagonal_gaussian(mean, logvar), ref, rtol=1e-12, atol=1e-14)


def test_occupancy_bce_and_dice_match_direct_formulas():
    logits = torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)
    occ = (torch.rand(2, 1, 4, 4, 4) > 0.6)
    p, y = torch.sigmoid(logits), occ.double()
    bce_ref = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert torch.allclose(occupancy_bce(logits, occ), bce_ref)
    dice_ref = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    assert torch.allclose(occupancy_dice(logits, occ), dice_ref)
    # a perfect, confident prediction has (almost) no Dice loss
    assert float(occupancy_dice((y * 2 - 1) * 50, occ)) < 1e-6


def test_gaussian_regularizers_match_direct_formulas():
    scaling = torch.rand(10, 3, dtype=torch.float64)
    opacity = torch.rand(10, 1, dtype=torch.float64)
    vol = sum(float(s[0] * s[1] * s[2]) for s in scaling) / 10
    assert abs(float(gaussian_volume_regularizer(scaling)) - vol) < 1e-14
    assert abs(float(gaussian_opacity_regularizer(opacity)) - float(((1 - opacity) ** 2).sum() / 10)) < 1e-14


def test_perceptual_loss_specs(monkeypatch, caplog, tmp_path):
    assert perceptual_loss(None) is None
    fn = perceptual_loss(lambda p, t: (p - t).abs().flatten(1).sum(1))
    p, t = torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    assert float(fn(p, t)) == 48.0  # per-item distances averaged
    # without the lpips package (simulated): the term is skipped with a warning, nothing downloaded
    monkeypatch.setitem(sys.modules, "lpips", None)
    with caplog.at_level(logging.WARNING, logger="trellis_impl"):
        assert perceptual_loss("lpips") is None
    assert "perceptual loss term is skipped" in caplog.text
    weights = tmp_path / "vgg16.pth"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="lpips"):
        perceptual_loss(weights)
    with pytest.raises(ValueError, match="not a file"):
        perceptual_loss(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="spec"):
        perceptual_loss(3)


def test_mesh_tsdf_loss_matches_a_direct_lookup():
    from trellis_impl.render.cameras import Camera, look_at_extrinsics
    size, res = 6, 8
    cam = Camera(look_at_extrinsics([0.0, -2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]), 7.0, 7.0, 3.0, 3.0, size, size)
    g = torch.Generator().manual_seed(0)
    points = (torch.rand(40, 3, generator=g, dtype=torch.float64) - 0.5) * 1.2
    sdf = (torch.randn(40, generator=g, dtype=torch.float64) * 0.2).requires_grad_(True)
    depth = 1.9 + 0.2 * torch.rand(size, size, generator=g, dtype=torch.float64)
    loss = mesh_tsdf_loss(points, sdf, res, depth[None], cam)
    terms, delta = [], 3.0 / res
    for p, s in zip(points.tolist(), sdf.detach().tolist()):
        q = cam.project(torch.tensor([p]))[0]
        # align_corners=True: grid -1..1 spans the first to the last pixel centre
        x = min(max(q[0] / size * (size - 1), 0.0), size - 1.0)
        y = min(max(q[1] / size * (size - 1), 0.0), size - 1.0)
        x0, y0 = min(int(x), size - 2), min(int(y), size - 2)
        fx, fy = x - x0, y - y0
        d = (depth[y0, x0] * (1 - fx) * (1 - fy) + depth[y0, x0 + 1] * fx * (1 - fy)
             + depth[y0 + 1, x0] * (1 - fx) * fy + depth[y0 + 1, x0 + 1] * fx * fy)
        pseudo = float(d) - float(q[2])
        if pseudo > -delta:
            terms.append((s - min(max(pseudo, -delta), delta)) ** 2)
    assert 0 < len(terms) < 40
    assert math.isclose(float(loss.detach()), sum(terms) / len(terms), rel_tol=1e-8)
    loss.backward()
    assert int((sdf.grad != 0).sum()) == len(terms)
