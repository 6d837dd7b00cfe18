"""Training losses of the TRELLIS VAEs, as the official trainers compute them.

Images are ``[B, 3, H, W]`` float in [0, 1] unless stated; every loss returns a 0-dim tensor
(mean reduction) unless stated, differentiable in its first argument(s).

Official weights (``configs/vae/*.json``, trainer defaults in brackets):

* SS VAE: ``dice`` on the occupancy logits, ``lambda_kl`` 1e-3.
* SLat Gaussian VAE: ``l1 + 0.2 * (1 - ssim) + 0.2 * lpips``, ``lambda_kl`` 1e-6,
  ``lambda_vol`` 1e4 on :func:`gaussian_volume_regularizer`, ``lambda_opacity`` 1e-3 on
  :func:`gaussian_opacity_regularizer`; the target is ``image * alpha + (1 - alpha) * bg`` with a
  random black or white ``bg`` per render.
* SLat radiance-field decoder: ``l1 + 0.2 * (1 - ssim) + 0.2 * lpips`` (no KL: the encoder is frozen).
* SLat mesh decoder: see ``trellis_impl.representations.mesh`` (regularisers) and
  :func:`smooth_l1_loss` (depth, beta ``1 / (2 * res)``); ``lambda_depth`` 10, ``lambda_tsdf`` 0.01,
  ``lambda_color`` 0.1, ``lambda_ssim`` 0.2, ``lambda_lpips`` 0.2.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from ..render.cameras import Camera

__all__ = ["l1_loss", "l2_loss", "smooth_l1_loss", "ssim", "dssim", "psnr", "kl_diagonal_gaussian",
           "occupancy_bce", "occupancy_dice", "gaussian_volume_regularizer", "gaussian_opacity_regularizer",
           "mesh_tsdf_loss", "perceptual_loss"]

_log = logging.getLogger("trellis_impl")

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_C1 = 0.01 ** 2
_SSIM_C2 = 0.03 ** 2

PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over all elements (any equal shapes)."""
    return (pred - target).abs().mean()


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over all elements (any equal shapes)."""
    return (pred - target).pow(2).mean()


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Huber-style loss, mean over all elements: ``0.5 d^2 / beta`` where ``d < beta``, else
    ``d - 0.5 beta`` (``d = |pred - target|``). The mesh trainer's depth loss uses
    ``beta = 1 / (2 * mesh resolution)`` on depths multiplied by the target mask."""
    if not beta > 0:
        raise ValueError(f"smooth_l1_loss: beta must be > 0, got {beta}")
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta).mean()


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[size, size] normalised 2D Gaussian, the outer product of the normalised 1D one."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = SSIM_WINDOW,
         size_average: bool = True) -> torch.Tensor:
    """Structural similarity with the official window (Gaussian, 11 px, sigma 1.5).

    Local statistics are depthwise ``conv2d`` with zero padding ``window_size // 2`` (so the image
    border sees zeros, as in the official code); C1 = 0.01^2, C2 = 0.03^2 (data range 1).

    Args:
        img1, img2: [B, C, H, W] float in [0, 1].
        size_average: True: mean of the SSIM map (0-dim); False: per item [B].

    Returns:
        SSIM, 1 for identical images.
    """
    if img1.dim() != 4 or img1.shape != img2.shape:
        raise ValueError(f"ssim: images must both be [B, C, H, W] of one shape, got "
                         f"{tuple(img1.shape)} and {tuple(img2.shape)}")
    channels = img1.shape[1]
    window = _gaussian_window(window_size, SSIM_SIGMA, img1.dtype, img1.device)
    window = window.expand(channels, 1, window_size, window_size).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=window_size // 2, groups=channels)

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = blur(img1 * img1) - mu1_sq
    sigma2_sq = blur(img2 * img2) - mu2_sq
    sigma12 = blur(img1 * img2) - mu12
    ssim_map = ((2 * mu12 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)) / \
        ((mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2))
    return ssim_map.mean() if size_average else ssim_map.mean(dim=(1, 2, 3))


def dssim(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """``1 - ssim(img1, img2)`` (0-dim), the term the trainers weight by ``lambda_ssim``."""
    return 1 - ssim(img1, img2)


def psnr(img1: torch.Tensor, img2: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over all elements (for logging)."""
    return 20 * torch.log10(max_val / torch.sqrt(F.mse_loss(img1, img2)))


def kl_diagonal_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per element, averaged over all elements:
    ``0.5 * mean(mean^2 + exp(logvar) - logvar - 1)`` (the official reduction: a mean over
    voxels/positions and channels, not a sum over channels).

    Args:
        mean, logvar: equal shapes, e.g. [N, C] sparse latents or [B, C, D, H, W] dense ones.
    """
    return 0.5 * torch.mean(mean.pow(2) + logvar.exp() - logvar - 1)


def occupancy_bce(logits: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, mean over all voxels.

    Args:
        logits: [B, 1, R, R, R] decoder output; occupancy: same shape, 0/1 (any dtype).
    """
    return F.binary_cross_entropy_with_logits(logits, occupancy.to(logits.dtype), reduction="mean")


def occupancy_dice(logits: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss over the whole batch (one global sum, as the official SS VAE trainer):
    ``1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)`` with ``p = sigmoid(logits)``.

    Args:
        logits: [B, 1, R, R, R] decoder output; occupancy: same shape, 0/1 (any dtype).
    """
    p = torch.sigmoid(logits)
    y = occupancy.to(logits.dtype)
    return 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)


def gaussian_volume_regularizer(scaling: torch.Tensor) -> torch.Tensor:
    """Mean volume proxy ``mean_i prod_k scaling[i, k]`` of [N, 3] activated scales (world
    units; every Gaussian of every item concatenated). Official weight ``lambda_vol`` 1e4."""
    return torch.prod(scaling, dim=1).mean()


def gaussian_opacity_regularizer(opacity: torch.Tensor) -> torch.Tensor:
    """``mean((opacity - 1)^2)`` of the activated opacities ([N] or [N, 1], every item
    concatenated): pushes Gaussians towards opaque. Official weight ``lambda_opacity`` 1e-3."""
    return (opacity - 1).pow(2).mean()


def mesh_tsdf_loss(tsdf_v: torch.Tensor, tsdf_s: torch.Tensor, res: int, depth: torch.Tensor,
                   camera: Camera) -> torch.Tensor:
    """The mesh trainer's TSDF regulariser for one mesh and one view (official ``_tsdf_reg_loss``).

    The touched grid vertices are projected into the target depth map; the pseudo-SDF
    ``target depth - vertex depth`` is truncated at ``delta = 3 / res``: vertices with pseudo-SDF
    <= -delta (behind the surface) are left out, the rest regress their SDF onto
    ``clamp(pseudo-SDF, -delta, delta)``. The depth lookup is bilinear with border padding and,
    as the official code, ``grid = uv / size * 2 - 1`` with ``align_corners=True`` (uv in pixels,
    so samples sit half a pixel off the pixel centres).

    Args:
        tsdf_v: [T, 3] world positions (``Mesh.tsdf_v`` of a training mesh; no gradient used).
        tsdf_s: [T] their SDF (``Mesh.tsdf_s``), the differentiable input.
        res: mesh resolution (``Mesh.res``).
        depth: [H, W] or [1, H, W] target camera depth (0 on background), from the same camera.
        camera: the view.

    Returns:
        0-dim mean squared error (NaN when no vertex passes the truncation, as the official code).
        The trainer averages it over the batch items and weights it by ``lambda_tsdf`` (0.01).
    """
    depth = depth.reshape(depth.shape[-2:])
    with torch.no_grad():
        extr = camera.extrinsics.to(device=tsdf_v.device, dtype=tsdf_v.dtype)
        cam = tsdf_v @ extr[:3, :3].T + extr[:3, 3]
        z = cam[:, 2]
        grid = torch.stack([(camera.fx * cam[:, 0] / z + camera.cx) / camera.width,
                            (camera.fy * cam[:, 1] / z + camera.cy) / camera.height], dim=-1) * 2 - 1
        target = F.grid_sample(depth[None, None].to(tsdf_v.dtype), grid[None, None], mode="bilinear",
                               padding_mode="border", align_corners=True).reshape(-1)
        pseudo_sdf = target - z
        delta = 3.0 / res
        kept = pseudo_sdf > -delta
    return torch.mean((tsdf_s[kept] - pseudo_sdf[kept].clamp(-delta, delta)) ** 2)


def perceptual_loss(spec: Union[None, str, os.PathLike, PerceptualFn]) -> Optional[PerceptualFn]:
    """A perceptual distance ``fn(pred, target) -> 0-dim`` for images [B, 3, H, W] in [0, 1], or None.

    ``spec``:

    * None: no perceptual term (returns None).
    * ``"lpips"``: LPIPS with the VGG16 backbone, as the official trainers (the ``lpips``
      package, its bundled linear-layer weights, torchvision's ImageNet VGG16 weights taken
      from the torch hub cache, ``torch.hub.get_dir()/checkpoints``). Nothing is downloaded:
      when ``lpips``/``torchvision`` is not installed or the VGG16 checkpoint is not in the
      cache, a warning is logged and None is returned, so the caller skips the term.
    * a path to a torchvision VGG16 state dict (``vgg16-397923af.pth``): LPIPS-VGG with that
      backbone; the ``lpips`` package must be installed (ValueError otherwise, or when the file
      does not exist).
    * a callable ``fn(pred, target)`` on [0, 1] images: used as is, its output averaged.

    The LPIPS network is frozen (eval mode, no parameter gradients), moved to the images'
    device and dtype on use; inputs are mapped to [-1, 1] and the per-item distances averaged
    (the official reduction). Gradients flow to both images.
    """
    if spec is None:
        return None
    if callable(spec):
        return lambda pred, target: spec(pred, target).mean()
    if isinstance(spec, (str, os.PathLike)):
        if str(spec) == "lpips":
            return _lpips_vgg(None)
        path = os.fspath(spec)
        if not os.path.isfile(path):
            raise ValueError(f"perceptual_loss: spec must be None, 'lpips', an existing VGG16 weights file "
                             f"or a callable; {path!r} is not a file")
        return _lpips_vgg(path)
    raise ValueError(f"perceptual_loss: spec must be None, 'lpips', a weights path or a callable, "
                     f"got {type(spec).__name__}")


def _lpips_vgg(backbone_path: Optional[str]) -> Optional[PerceptualFn]:
    """LPIPS-VGG with the backbone from ``backbone_path`` or the hub cache (None: unavailable)."""
    try:
        import lpips
        import torchvision
    except ImportError as err:
        if backbone_path is not None:
            raise ValueError(f"perceptual_loss: a VGG16 weights file needs the 'lpips' and 'torchvision' "
                             f"packages ({err})") from err
        _log.warning("[trellis] LPIPS unavailable (%s): the perceptual loss term is skipped", err)
        return None
    if backbone_path is None:
        url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
        backbone_path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        if not os.path.isfile(backbone_path):
            _log.warning("[trellis] LPIPS unavailable: the VGG16 weights %s are not in the torch hub cache "
                         "(nothing is downloaded); the perceptual loss term is skipped", backbone_path)
            return None
    model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    vgg_state = torch.load(backbone_path, map_location="cpu", weights_only=True)
    # lpips splits torchvision's vgg16.features into slices that keep the feature indices as names
    remapped = {}
    for slice_name, block in model.net.named_children():
        for index, _ in block.named_children():
            for param in ("weight", "bias"):
                key = f"features.{index}.{param}"
                if key in vgg_state:
                    remapped[f"{slice_name}.{index}.{param}"] = vgg_state[key]
    model.net.load_state_dict(remapped, strict=True)
    model.eval().requires_grad_(False)

    def lpips_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        model.to(device=pred.device, dtype=pred.dtype)
        return model(pred * 2 - 1, target * 2 - 1).mean()

    return lpips_distance
