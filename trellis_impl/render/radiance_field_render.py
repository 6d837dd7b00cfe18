"""Ray-marching renderer for TRELLIS's Strivec radiance field, in plain PyTorch.

The official renderer (``trellis/renderers/octree_renderer.py``) hands a DfsOctree with
primitive ``'trivec'`` to the CUDA rasteriser ``diffoctreerast.OctreeTrivecRasterizer`` with
the positions, depths, trivecs [N, rank, 3, dim], densities [N, rank] (identity activation on
the Python side), SH features (degree 0 for the decoder output), ``density_shift`` and the
aabb (origin + size). That kernel's source is not part of the reference tree, so this module
reproduces the primitive as follows.

What follows the official representation (facts from the Python side):

* Voxels: the active leaves at depth ``log2(resolution)``; voxel ``n`` covers the box cell
  ``floor(position[n] * res)``; box coordinates map to world as ``origin + size * p``.
* Within a voxel, each axis vector ``trivec[n, r, a, :]`` holds ``dim`` samples spanning the
  voxel edge to edge, linearly interpolated (``align_corners=True``, as the octree's own
  subdivision resamples trivecs with ``grid_sample(..., align_corners=True)``).
* The rank-R CP decomposition: ``f_r(u) = prod_a trivec[n, r, a](u_a)``;
  raw density ``sum_r density[n, r] * f_r(u) + density_shift``; SH colour coefficients
  ``sum_r features_dc[n, r] * f_r(u)``; colour ``max(SH_C0 * dc + 0.5, 0)`` (SH degree 0,
  the same convention as the Gaussian rasteriser).

Assumptions / approximations (NOT verified against the CUDA kernel):

* Density activation: ``softplus(raw)`` by default (TensoRF's ``softplus(x + density_shift)``,
  from which the ``density_shift`` name comes); ``'relu'``, ``'exp'`` and ``'identity'`` are
  selectable. Densities are per world unit of length.
* Integration: the CUDA kernel integrates each voxel segment it traverses; here every ray is
  sampled at the midpoints of fixed-length intervals (default half a voxel edge) between its
  entry into and exit from the aabb, with piecewise-constant density and colour per
  interval: ``alpha_k = 1 - exp(-sigma_k * len_k)``, front-to-back compositing. Intervals that
  straddle a voxel face take the value of the voxel containing their midpoint, so the
  optical length through a voxel is exact only up to about one step.
* Early termination: rays whose transmittance falls below ``1e-4`` stop being marched
  (checked between blocks of samples, so a few extra samples may be added past that point).
* ``depth`` is the weighted sum of camera depths ``sum_k w_k z_k`` (not divided by alpha),
  as in :func:`~trellis_impl.render.gaussian_raster.render_gaussians`.

The renderer is the "torch" backend of the ``radiance_field_render`` family (env var
``TRELLIS_RF_BACKEND``).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..backends.registry import family
from .cameras import Camera

__all__ = ["render_radiance_field", "RADIANCE_FIELD_RENDER", "SH_C0", "T_MIN"]

SH_C0 = 0.28209479177387814
T_MIN = 1e-4
MAX_DENSE_RES = 64
RAY_CHUNK = 4096
SAMPLE_BLOCK = 64

RADIANCE_FIELD_RENDER = family("radiance_field_render")

_ACTIVATIONS = {
    "softplus": F.softplus,
    "relu": F.relu,
    "exp": torch.exp,
    "identity": lambda x: x,
}


def _dense_index(strivec, res: int) -> torch.Tensor:
    """[res, res, res] long grid (x, y, z) holding each active voxel's row, -1 elsewhere."""
    if res > MAX_DENSE_RES:
        raise ValueError(f"dense occupancy index limited to {MAX_DENSE_RES}^3, got resolution {res}")
    dev = strivec.position.device
    grid = torch.full((res, res, res), -1, dtype=torch.long, device=dev)
    if strivec.position.shape[0] == 0:
        return grid
    if bool((strivec.depth.long() != int(round(math.log2(res)))).any()):
        raise ValueError("only leaf voxels at depth log2(resolution) are supported")
    cell = torch.floor(strivec.position.double() * res).long().clamp(0, res - 1)
    grid[cell[:, 0], cell[:, 1], cell[:, 2]] = torch.arange(cell.shape[0], device=dev)
    return grid


def _interp(vec: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """vec [M, rank, 3, dim], u [M, 3] in [0, 1] -> [M, rank, 3] linear interpolation."""
    dim = vec.shape[-1]
    f = (u.clamp(0.0, 1.0) * (dim - 1))
    i0 = f.floor().long().clamp(0, max(dim - 2, 0))
    w = (f - i0.to(f.dtype)).clamp(0.0, 1.0) if dim > 1 else torch.zeros_like(f)
    i1 = (i0 + 1).clamp(max=dim - 1)
    idx0 = i0[:, None, :, None].expand(-1, vec.shape[1], -1, 1)
    idx1 = i1[:, None, :, None].expand(-1, vec.shape[1], -1, 1)
    v0 = torch.gather(vec, 3, idx0)[..., 0]
    v1 = torch.gather(vec, 3, idx1)[..., 0]
    return v0 + (v1 - v0) * w[:, None, :]


def _render_torch(strivec, camera: Camera, background: torch.Tensor, step: Optional[float],
                  activation: str) -> Dict[str, torch.Tensor]:
    dev = strivec.position.device
    dtype = torch.float64 if strivec.position.dtype == torch.float64 else torch.float32
    res = strivec.resolution
    grid = _dense_index(strivec, res)
    act = _ACTIVATIONS[activation]
    origin = strivec.aabb[:3].to(dev, torch.float64)
    size = strivec.aabb[3:].to(dev, torch.float64)
    voxel = size / res
    step_len = float(voxel.min()) * 0.5 if step is None else float(step)
    if not step_len > 0.0 or not math.isfinite(step_len):
        raise ValueError(f"step must be a positive finite length, got {step}")

    H, W = camera.height, camera.width
    extr = camera.extrinsics.to(dev, torch.float64)
    rot = extr[:3, :3]
    eye = -rot.T @ extr[:3, 3]
    js, is_ = torch.meshgrid(torch.arange(H, dtype=torch.float64, device=dev) + 0.5,
                             torch.arange(W, dtype=torch.float64, device=dev) + 0.5, indexing="ij")
    d_cam = torch.stack([(is_ - camera.cx) / camera.fx, (js - camera.cy) / camera.fy,
                         torch.ones_like(is_)], -1).reshape(-1, 3)
    # Parameter t along d = R^T d_cam (camera z component 1): t is the camera depth.
    dirs = d_cam @ rot
    # Work in box coordinates p = (x - origin) / size: p(t) = o_b + t * d_b.
    o_b = (eye - origin) / size
    d_b = dirs / size
    with torch.no_grad():
        safe = torch.where(d_b.abs() < 1e-12, torch.full_like(d_b, 1e-12), d_b)
    t0 = (0.0 - o_b) / safe
    t1 = (1.0 - o_b) / safe
    tnear = torch.minimum(t0, t1).amax(-1).clamp_min(camera.near)
    tfar = torch.maximum(t0, t1).amin(-1)
    hit = tfar > tnear
    dlen = dirs.norm(dim=-1)           # world length per unit t
    dt = step_len / dlen               # t increment per sample

    n_rays = H * W
    color = torch.zeros(n_rays, 3, dtype=torch.float64, device=dev)
    depth = torch.zeros(n_rays, dtype=torch.float64, device=dev)
    trans = torch.ones(n_rays, dtype=torch.float64, device=dev)

    vec = strivec.trivec.to(dtype)
    dens = strivec.density.to(dtype)
    fdc = strivec.features_dc[:, :, 0, :].to(dtype)
    shift = float(strivec.density_shift)

    ray_ids = torch.nonzero(hit).flatten() if strivec.position.shape[0] > 0 else hit.new_zeros(0, dtype=torch.long)
    for c0 in range(0, ray_ids.numel(), RAY_CHUNK):
        rid = ray_ids[c0:c0 + RAY_CHUNK]
        n_steps = torch.ceil((tfar[rid] - tnear[rid]) / dt[rid]).long()
        total = int(n_steps.max()) if rid.numel() else 0
        T = torch.ones(rid.numel(), dtype=torch.float64, device=dev)
        C = torch.zeros(rid.numel(), 3, dtype=torch.float64, device=dev)
        D = torch.zeros(rid.numel(), dtype=torch.float64, device=dev)
        alive = torch.arange(rid.numel(), device=dev)
        for k0 in range(0, total, SAMPLE_BLOCK):
            alive = alive[(T[alive] > T_MIN) & (n_steps[alive] > k0)]
            if alive.numel() == 0:
                break
            r = rid[alive]
            k = torch.arange(k0, min(k0 + SAMPLE_BLOCK, total), dtype=torch.float64, device=dev)
            a = tnear[r, None] + k[None] * dt[r, None]                        # interval starts
            b = torch.minimum(a + dt[r, None], tfar[r, None])                 # interval ends
            valid = b > a
            tm = 0.5 * (a + b)
            seg = (b - a).clamp_min(0.0) * dlen[r, None]                       # world lengths
            p = o_b[None, None, :] + tm[..., None] * d_b[r, None, :]              # box coords
            cell = torch.floor(p * res).long()
            inside = valid & ((cell >= 0) & (cell < res)).all(-1)
            cellc = cell.clamp(0, res - 1)
            vid = torch.where(inside, grid[cellc[..., 0], cellc[..., 1], cellc[..., 2]],
                              torch.full_like(tm, -1, dtype=torch.long))
            occ = vid >= 0
            sigma = torch.zeros_like(tm)
            rgb = torch.zeros(*tm.shape, 3, dtype=torch.float64, device=dev)
            if bool(occ.any()):
                v = vid[occ]
                u = (p[occ] * res - cell[occ].to(torch.float64)).to(dtype)    # in-voxel coords
                f = _interp(vec[v], u).prod(dim=-1)                           # [M, rank]
                raw = (dens[v] * f).sum(-1) + shift
                sigma[occ] = act(raw).to(torch.float64)
                sh = (fdc[v] * f[..., None]).sum(1)
                rgb[occ] = (SH_C0 * sh + 0.5).clamp_min(0.0).to(torch.float64)
            alpha = 1.0 - torch.exp(-sigma * seg)
            Tb = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha], 1), 1)
            w = Tb[:, :-1] * alpha * T[alive, None]
            C[alive] += (w[..., None] * rgb).sum(1)
            D[alive] += (w * tm).sum(1)
            T[alive] = T[alive] * Tb[:, -1]
        color[rid] = C
        depth[rid] = D
        trans[rid] = T

    bg = background.to(dev, torch.float64)
    out_color = color + trans[:, None] * bg[None]
    return {
        "color": out_color.T.reshape(3, H, W).to(dtype),
        "alpha": (1.0 - trans).reshape(1, H, W).to(dtype),
        "depth": depth.reshape(1, H, W).to(dtype),
    }


RADIANCE_FIELD_RENDER.register("torch", _render_torch, lambda device, dtype: True)


def render_radiance_field(strivec, camera: Camera,
                          background: Union[Sequence[float], torch.Tensor] = (0.0, 0.0, 0.0),
                          step: Optional[float] = None, activation: str = "softplus",
                          backend: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Render a :class:`~trellis_impl.representations.radiance_field.Strivec` by ray marching.

    Args:
        strivec: the radiance field (leaf voxels at depth log2(resolution), resolution <= 64).
        camera: a :class:`~trellis_impl.render.cameras.Camera` (OpenCV convention); samples
            closer than ``camera.near`` (camera depth) are skipped.
        background: RGB in 0..1 composited behind the field.
        step: marching interval length in world units (default: half the smallest voxel edge).
        activation: density activation, 'softplus' (default, an assumption: see the module
            docstring), 'relu', 'exp' or 'identity'; applied to the raw density plus
            ``strivec.density_shift``.
        backend: 'torch' or None/'auto' (``TRELLIS_RF_BACKEND`` / automatic choice).

    Returns:
        dict with ``color`` [3, H, W] (background included), ``alpha`` [1, H, W]
        (1 - transmittance) and ``depth`` [1, H, W] (``sum_k w_k z_k``, camera depth, not divided
        by alpha), float32 (float64 if the field's positions are float64).
    """
    bg = torch.as_tensor(background, dtype=torch.float64).reshape(-1)
    if bg.numel() != 3 or not bool(torch.isfinite(bg).all()):
        raise ValueError(f"background must be 3 finite values, got {background!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if getattr(strivec, "primitive", None) != "trivec":
        raise ValueError("render_radiance_field expects a Strivec (primitive 'trivec')")
    impl = RADIANCE_FIELD_RENDER.resolve(strivec.position.device, strivec.position.dtype, backend)
    return impl.fn(strivec, camera, bg, step, activation)
