"""Reference 3D Gaussian splatting rasteriser in plain PyTorch (CPU and GPU).

Follows the maths of the 3DGS CUDA rasteriser that TRELLIS uses:

1. Centres go to camera space (OpenCV: x right, y down, z forward); Gaussians with camera
   depth outside (near, far) are culled.
2. The world covariance ``R S S^T R^T`` (R from the (w, x, y, z) quaternion, S = diag(scale))
   is projected with the EWA Jacobian of the perspective map, with x/z and y/z clamped to
   1.3 times the half field of view as in 3DGS, then dilated by a 0.3 px^2 low-pass on the
   diagonal.
3. Colours are ``max(0.5 + SH_C0 * dc, 0)`` (SH degree 0, as TRELLIS's Gaussians).
4. Per pixel (centre of pixel (i, j) at (i + 0.5, j + 0.5)), Gaussians are composited front
   to back by camera depth: ``alpha = min(0.99, opacity * exp(-0.5 d^T conic d))``, Gaussians
   with alpha < 1/255 are skipped, and a pixel stops before the Gaussian that would bring its
   transmittance below 1e-4.

Implementation: Gaussians are binned into 8x8-pixel tiles by a conservative screen extent
(the ellipse where ``opacity * exp(power) >= 1/255``, so no contribution that passes the
alpha test is lost, unlike 3DGS's 3-sigma box), sorted by (tile, depth), and all tiles are
composited together, a chunk of each tile's Gaussians per step with a cumulative product
(``_composite_tiles``), so memory stays at about 2^22 elements per intermediate besides the
O(Gaussian-tile pairs) lists, and Python loops once per chunk, not once per tile.

The rasteriser is the "torch" backend of the ``gaussian_raster`` family
(env var ``TRELLIS_GS_BACKEND``); accelerated backends (gsplat) register there too.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch

from ..backends.registry import family, importable
from ..backends.transfer import to_device
from .cameras import Camera

__all__ = ["render_gaussians", "render_gaussians_batch", "pad_gaussians", "GAUSSIAN_RASTER", "SH_C0", "gaussian_tensors",
           "quaternion_wxyz_to_matrix"]

SH_C0 = 0.28209479177387814
LOW_PASS = 0.3          # px^2 added to the 2D covariance diagonal (3DGS)
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
TILE = 8  # px; against 16, fewer pixels per listed Gaussian (scripts/gaussian_raster_cpu_bench.py)
CHUNK = 256
# Elements of one [tiles, tile pixels, Gaussians] intermediate of the tile compositor.
_COMPOSITE_ELEMENTS = 1 << 22

GAUSSIAN_RASTER = family("gaussian_raster")


def quaternion_wxyz_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """[N, 4] (w, x, y, z) quaternions (normalised here) -> [N, 3, 3] rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def gaussian_tensors(gaussians: Union[Any, Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Activated, validated tensors of a ``Gaussians`` object or a mapping.

    A mapping has ``xyz`` [N, 3] (world units), ``scaling`` [N, 3] (standard deviations, world
    units), ``rotation`` [N, 4] (w, x, y, z), ``opacity`` [N] or [N, 1] in [0, 1], and either
    ``colors`` [N, 3] (linear 0..1) or ``features`` [N, 1, 3] (SH DC coefficients).

    Returns dict xyz, scaling, rotation, opacity [N], colors [N, 3]. Raises ValueError naming
    the field on a bad shape or a non-finite value.
    """
    fields = _gaussian_fields(gaussians)
    _check_finite([fields])
    return _activated_colors(fields)


def _gaussian_fields(gaussians: Union[Any, Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The fields of :func:`gaussian_tensors` with their shapes checked (no host wait)."""
    if hasattr(gaussians, "get_xyz"):
        if gaussians._xyz is None:
            raise ValueError("Gaussians field _xyz is not set")
        src = {"xyz": gaussians.get_xyz, "scaling": gaussians.get_scaling, "rotation": gaussians.get_rotation,
               "opacity": gaussians.get_opacity, "features": gaussians.get_features}
    elif isinstance(gaussians, Mapping):
        src = dict(gaussians)
    else:
        raise TypeError(f"expected a Gaussians object or a mapping of tensors, got {type(gaussians).__name__}")
    if "colors" not in src and "features" not in src:
        raise ValueError("Gaussian tensors need 'colors' [N, 3] or 'features' [N, 1, 3]")
    for key in ("xyz", "scaling", "rotation", "opacity"):
        if key not in src or src[key] is None:
            raise ValueError(f"Gaussian field {key!r} is missing")
    out = {}
    shapes = {"xyz": (3,), "scaling": (3,), "rotation": (4,)}
    n = None
    for key, value in src.items():
        if key not in ("xyz", "scaling", "rotation", "opacity", "colors", "features"):
            continue
        value = torch.as_tensor(value)
        if key == "opacity":
            if not (value.dim() == 1 or (value.dim() == 2 and value.shape[1] == 1)):
                raise ValueError(f"Gaussian field 'opacity' must have shape [N] or [N, 1], got {tuple(value.shape)}")
            value = value.reshape(-1)
        elif key == "features":
            if value.dim() != 3 or value.shape[2] != 3:
                raise ValueError(f"Gaussian field 'features' must have shape [N, K, 3], got {tuple(value.shape)}")
            if value.shape[1] != 1:
                raise NotImplementedError("the torch Gaussian rasteriser supports SH degree 0 only "
                                          f"(got {value.shape[1]} coefficients)")
        elif key == "colors":
            if value.dim() != 2 or value.shape[1] != 3:
                raise ValueError(f"Gaussian field 'colors' must have shape [N, 3], got {tuple(value.shape)}")
        elif value.dim() != 2 or tuple(value.shape[1:]) != shapes[key]:
            raise ValueError(f"Gaussian field {key!r} must have shape [N, {shapes[key][0]}], got {tuple(value.shape)}")
        if n is None:
            n = value.shape[0]
        elif value.shape[0] != n:
            raise ValueError(f"Gaussian field {key!r} has {value.shape[0]} rows, expected {n}")
        out[key] = value
    return out


def _check_finite(fields: Sequence[Dict[str, torch.Tensor]]) -> None:
    """Raise ValueError naming the first non-finite field (and its item, given several), with one
    host wait for all of them: a training step renders every object of its batch."""
    named = [(item, key, value) for item, f in enumerate(fields) for key, value in f.items()]
    device = named[0][2].device
    flags = torch.stack([torch.isfinite(value.detach()).all().to(device) for _, _, value in named])
    if not bool(flags.all()):
        item, key, _ = named[flags.tolist().index(False)]
        where = f" of item {item}" if len(fields) > 1 else ""
        raise ValueError(f"Gaussian field {key!r}{where} has non-finite values (NaN/inf)")


def _activated_colors(out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``features`` (SH DC) replaced by ``colors``, as the rasterisers take them."""
    if "colors" not in out:
        out["colors"] = (0.5 + SH_C0 * out.pop("features")[:, 0, :]).clamp_min(0.0)
    else:
        out.pop("features", None)
    return out


def _project(g: Dict[str, torch.Tensor], camera: Camera, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    """Screen-space quantities of every Gaussian (and a validity mask)."""
    dev = g["xyz"].device
    extr = camera.extrinsics.to(device=dev, dtype=dtype)
    rot_w, t = extr[:3, :3], extr[:3, 3]
    xyz = g["xyz"].to(dtype)
    p = xyz @ rot_w.T + t
    z = p[:, 2]
    valid = (z > camera.near) & (z < camera.far)
    zs = torch.where(valid, z, torch.ones_like(z))
    lim_x = 1.3 * 0.5 * camera.width / camera.fx
    lim_y = 1.3 * 0.5 * camera.height / camera.fy
    tx = (p[:, 0] / zs).clamp(-lim_x, lim_x) * zs
    ty = (p[:, 1] / zs).clamp(-lim_y, lim_y) * zs
    zero = torch.zeros_like(zs)
    jac = torch.stack([camera.fx / zs, zero, -camera.fx * tx / zs ** 2,
                       zero, camera.fy / zs, -camera.fy * ty / zs ** 2], dim=-1).reshape(-1, 2, 3)
    m = quaternion_wxyz_to_matrix(g["rotation"].to(dtype)) * g["scaling"].to(dtype)[:, None, :]
    jw = jac @ rot_w  # [N, 2, 3]
    jm = jw @ m
    cov = jm @ jm.transpose(1, 2)
    a = cov[:, 0, 0] + LOW_PASS
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + LOW_PASS
    det = a * c - b * b
    valid = valid & (det > 0)  # not in place: torch.where keeps the old mask for its backward
    det = torch.where(valid, det, torch.ones_like(det))
    opacity = g["opacity"].to(dtype)
    valid = valid & (opacity >= ALPHA_MIN)
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.1))
    # extent where opacity * exp(-0.5 q) >= 1/255, q <= d^2 / lambda_max along any direction
    q_max = 2.0 * torch.log((opacity / ALPHA_MIN).clamp_min(1.0))
    radius = torch.sqrt(q_max * lam) + 1.0
    u = camera.fx * p[:, 0] / zs + camera.cx
    v = camera.fy * p[:, 1] / zs + camera.cy
    return {"u": u, "v": v, "z": z, "conic": torch.stack([c / det, -b / det, a / det], dim=-1),
            "opacity": opacity, "colors": g["colors"].to(dtype), "radius": radius, "valid": valid}


def _composite_tiles(s: Dict[str, torch.Tensor], pair_g: torch.Tensor, tile_counts: torch.Tensor, tile: int,
                     ntx: int, chunk: int, color: torch.Tensor, depth: torch.Tensor, trans: torch.Tensor) -> None:
    """Front-to-back compositing of every tile at once, into ``color`` [H, W, 3], ``depth`` and
    ``trans`` [H, W].

    ``pair_g`` lists each tile's Gaussians (by tile id, front to back within a tile) and
    ``tile_counts`` [tiles] how many. All tiles with Gaussians advance together through their lists,
    at most ``chunk`` Gaussians per step ([tiles, tile pixels, step] at a time, the step shrunk
    while many tiles are at work so that stays near 2^22 elements); a tile leaves once its list ends
    or all its pixels are saturated. The result equals compositing each tile alone (up to rounding).

    Cost: the exponent ``log(opacity) - 0.5 d^T conic d`` is a quadratic in the pixel's position, so
    it is one batched matrix product of the pixels' ``[x^2, y^2, xy, x, y, 1]`` (relative to the
    tile's centre, which keeps the expansion's rounding near float32's) with six coefficients per
    (tile, Gaussian); and since a pixel's cut-off at ``T_MIN`` keeps a prefix of its list, each
    Gaussian's weight is ``alpha / (1 - alpha)`` times the transmittance after it, one cumulative
    product per step."""
    height, width = trans.shape
    dev, dtype = trans.device, trans.dtype
    active = torch.nonzero(tile_counts).squeeze(1)
    if active.numel() == 0:
        return
    counts = tile_counts[active]
    starts = (torch.cumsum(tile_counts, 0) - tile_counts)[active]
    local = torch.arange(tile, device=dev)
    px = (active % ntx)[:, None, None] * tile + local[None, None, :]            # [T, 1, tile]
    py = (active // ntx)[:, None, None] * tile + local[None, :, None]           # [T, tile, 1]
    px, py = px.expand(-1, tile, tile).reshape(active.numel(), -1), py.expand(-1, tile, tile).reshape(active.numel(), -1)
    inside = (px < width) & (py < height)                                         # edge tiles are cut
    centre = 0.5 * tile
    ly, lx = torch.meshgrid(local.to(dtype) + 0.5 - centre, local.to(dtype) + 0.5 - centre, indexing="ij")
    lx, ly = lx.reshape(-1), ly.reshape(-1)
    features = torch.stack([lx * lx, ly * ly, lx * ly, lx, ly, torch.ones_like(lx)], dim=-1)  # [P, 6]
    origin_x = ((active % ntx) * tile).to(dtype) + centre                         # tile centres [T]
    origin_y = ((active // ntx) * tile).to(dtype) + centre
    pixels = tile * tile
    t_pix = torch.ones(active.numel(), pixels, dtype=dtype, device=dev)
    done = ~inside
    acc = torch.zeros(active.numel(), pixels, 4, dtype=dtype, device=dev)         # colour, depth
    conic_a, conic_b, conic_c = s["conic"].unbind(-1)
    log_opacity = torch.log(s["opacity"].clamp_min(ALPHA_MIN))
    values = torch.cat([s["colors"], s["z"][:, None]], dim=-1)                    # [N, 4]
    c0, longest = 0, int(counts.max())
    while c0 < longest:
        sel = torch.nonzero((counts > c0) & ~done.all(1)).squeeze(1)
        if sel.numel() == 0:
            break
        # the fewer tiles still at work, the more of their Gaussians per step
        step = max(1, min(chunk, _COMPOSITE_ELEMENTS // (sel.numel() * pixels)))
        slot = c0 + torch.arange(step, device=dev)[None, :]                      # [t, step]
        c0 += step
        listed = slot < counts[sel][:, None]
        gi = pair_g[(starts[sel][:, None] + slot).clamp(max=pair_g.numel() - 1)]
        a, b, c = conic_a[gi], conic_b[gi], conic_c[gi]
        u, v = s["u"][gi] - origin_x[sel][:, None], s["v"][gi] - origin_y[sel][:, None]
        constant = log_opacity[gi] - 0.5 * (a * u * u + c * v * v) - b * u * v
        constant = torch.where(listed, constant, torch.full_like(constant, -1e4))  # unlisted: alpha 0
        coefficients = torch.stack([-0.5 * a, -0.5 * c, -b, a * u + b * v, c * v + b * u, constant], dim=1)
        alpha = torch.matmul(features, coefficients).exp().clamp_max(ALPHA_MAX)  # [t, P, step]
        alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
        t_sel, done_sel = t_pix[sel], done[sel]
        t_after = t_sel[..., None] * torch.cumprod(1.0 - alpha, dim=-1)          # transmittance after each
        kept = (t_after >= T_MIN) & ~done_sel[..., None]                          # a prefix of each list
        weight = torch.where(kept, alpha / (1.0 - alpha) * t_after, torch.zeros_like(alpha))
        acc[sel] = acc[sel] + torch.bmm(weight, values[gi])
        last = kept.sum(-1, keepdim=True)
        t_last = t_after.gather(-1, (last - 1).clamp_min(0))[..., 0]
        t_pix[sel] = torch.where(last[..., 0] > 0, t_last, t_sel)
        done[sel] = done_sel | (t_after[..., -1] < T_MIN)
    rows, cols_ = py[inside], px[inside]
    color[rows, cols_] = acc[inside][:, :3]
    depth[rows, cols_] = acc[inside][:, 3]
    trans[rows, cols_] = t_pix[inside]


def _render_torch(g: Dict[str, torch.Tensor], camera: Camera, background: torch.Tensor, clamp: bool = True,
                  tile: int = TILE, chunk: int = CHUNK) -> Dict[str, torch.Tensor]:
    dev = g["xyz"].device
    dtype = g["xyz"].dtype if g["xyz"].dtype == torch.float64 else torch.float32
    width, height = camera.width, camera.height
    ntx, nty = (width + tile - 1) // tile, (height + tile - 1) // tile
    color = torch.zeros(height, width, 3, dtype=dtype, device=dev)
    depth = torch.zeros(height, width, dtype=dtype, device=dev)
    trans = torch.ones(height, width, dtype=dtype, device=dev)

    if g["xyz"].shape[0] > 0:
        s = _project(g, camera, dtype)
        x0 = torch.floor((s["u"] - s["radius"] - 0.5) / tile)
        x1 = torch.floor((s["u"] + s["radius"] - 0.5) / tile)
        y0 = torch.floor((s["v"] - s["radius"] - 0.5) / tile)
        y1 = torch.floor((s["v"] + s["radius"] - 0.5) / tile)
        valid = s["valid"] & (x1 >= 0) & (x0 <= ntx - 1) & (y1 >= 0) & (y0 <= nty - 1)
        keep = torch.nonzero(valid).squeeze(1)
        keep = keep[torch.argsort(s["z"][keep], stable=True)]  # front to back
        x0 = x0[keep].clamp(0, ntx - 1).long()
        x1 = x1[keep].clamp(0, ntx - 1).long()
        y0 = y0[keep].clamp(0, nty - 1).long()
        y1 = y1[keep].clamp(0, nty - 1).long()
        w = x1 - x0 + 1
        counts = w * (y1 - y0 + 1)
        total = int(counts.sum())
        if total > 0:
            local_g = torch.repeat_interleave(torch.arange(keep.numel(), device=dev), counts)
            offsets = torch.cumsum(counts, 0) - counts
            local = torch.arange(total, device=dev) - offsets[local_g]
            tile_id = (y0[local_g] + local // w[local_g]) * ntx + x0[local_g] + local % w[local_g]
            tile_id, order = torch.sort(tile_id, stable=True)
            pair_g = keep[local_g[order]]
            tile_counts = torch.bincount(tile_id, minlength=ntx * nty)
            _composite_tiles(s, pair_g, tile_counts, tile, ntx, chunk, color, depth, trans)

    bg = background.to(device=dev, dtype=dtype)
    color = color + trans[..., None] * bg
    if clamp:
        color = color.clamp(0.0, 1.0)
    return {"color": color.permute(2, 0, 1).contiguous(), "alpha": (1.0 - trans)[None], "depth": depth[None]}


def pad_gaussians(gs: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Several items' :func:`gaussian_tensors` (on one device, of one dtype) as one batch
    [B, N, ...], N the largest count; the rows added to shorter items are transparent (opacity 0,
    scale 0, at the origin), so they change no pixel, and gradients reach the items' own rows
    through the concatenation."""
    n = max(g["xyz"].shape[0] for g in gs)
    fill = {"xyz": (0.0, 0.0, 0.0), "rotation": (1.0, 0.0, 0.0, 0.0), "scaling": (0.0, 0.0, 0.0),
            "opacity": 0.0, "colors": (0.0, 0.0, 0.0)}
    out = {}
    for key, value in fill.items():
        row = to_device(value, gs[0][key].device, gs[0][key].dtype)
        out[key] = torch.stack([torch.cat([g[key], row.expand(n - g[key].shape[0], *g[key].shape[1:])])
                                if g[key].shape[0] < n else g[key] for g in gs])
    return out


def _render_torch_batch(gs: Sequence[Dict[str, torch.Tensor]], cameras: Sequence[Camera],
                        backgrounds: Sequence[torch.Tensor], clamp: bool = True) -> Dict[str, torch.Tensor]:
    outs = [_render_torch(g, camera, bg, clamp) for g, camera, bg in zip(gs, cameras, backgrounds)]
    return {key: torch.stack([o[key] for o in outs]) for key in outs[0]}


def _render_gsplat(gs: Sequence[Dict[str, torch.Tensor]], cameras: Sequence[Camera],
                   backgrounds: Sequence[torch.Tensor], clamp: bool = True) -> Dict[str, torch.Tensor]:
    """The gsplat package's CUDA rasteriser with the same conventions (classic mode, 0.3 px
    low-pass, OpenCV camera, depth = sum w z), float32. Items whose cameras share size and clip
    planes go in one call (:func:`pad_gaussians`), each with its own camera."""
    from gsplat import rasterization
    planes = {(c.width, c.height, c.near, c.far) for c in cameras}
    if len(planes) > 1:  # one call per camera set
        outs = [_render_gsplat([g], [c], [bg], clamp) for g, c, bg in zip(gs, cameras, backgrounds)]
        return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}
    dev = gs[0]["xyz"].device
    f32 = dict(dtype=torch.float32, device=dev)
    batch = pad_gaussians([{k: v.to(**f32) for k, v in g.items()} for g in gs])
    camera = cameras[0]
    # the cameras and backgrounds are host tensors: stacked there, each copied once without a wait
    host = dict(dtype=torch.float32, device="cpu")
    extrinsics = to_device(torch.stack([torch.as_tensor(c.extrinsics, **host) for c in cameras]), dev)  # [B, 4, 4]
    intrinsics = to_device(torch.stack([torch.as_tensor(c.intrinsics, **host) for c in cameras]), dev)  # [B, 3, 3]
    rgbd, alpha, _ = rasterization(
        batch["xyz"], batch["rotation"], batch["scaling"], batch["opacity"], batch["colors"],
        extrinsics[:, None], intrinsics[:, None], camera.width, camera.height,
        near_plane=camera.near, far_plane=camera.far, eps2d=LOW_PASS, packed=False, render_mode="RGB+D",
        rasterize_mode="classic")
    alpha, depth = alpha[:, 0, ..., 0], rgbd[:, 0, ..., 3]                                 # [B, H, W]
    bg = to_device(torch.stack([torch.as_tensor(b, **host) for b in backgrounds]), dev)    # [B, 3]
    color = rgbd[:, 0, ..., :3] + (1.0 - alpha)[..., None] * bg[:, None, None]
    if clamp:
        color = color.clamp(0.0, 1.0)
    return {"color": color.permute(0, 3, 1, 2).contiguous(), "alpha": alpha[:, None], "depth": depth[:, None]}


def _gsplat_available(device: torch.device, dtype: torch.dtype) -> bool:
    """gsplat imports and its CUDA extension loads (it JIT-builds on first use and needs nvcc)."""
    if device.type != "cuda" or not importable("gsplat"):
        return False
    try:
        from gsplat.cuda._backend import _C
    except Exception as err:  # a failed build raises here on some versions
        _C, reason = None, err
    else:
        reason = "its CUDA extension did not build"
    if _C is None:
        logging.getLogger(__name__).warning("gsplat is installed but %s; using the PyTorch Gaussian rasteriser",
                                            reason)
        return False
    return True


GAUSSIAN_RASTER.register("torch", _render_torch_batch, lambda device, dtype: True)
GAUSSIAN_RASTER.register("gsplat", _render_gsplat, _gsplat_available)


def render_gaussians(gaussians_or_tensors: Union[Any, Mapping[str, torch.Tensor]], camera: Camera,
                     background: Union[Sequence[float], torch.Tensor] = (0.0, 0.0, 0.0),
                     backend: Optional[str] = None, clamp: bool = True) -> Dict[str, torch.Tensor]:
    """Render 3D Gaussians seen by ``camera``.

    Args:
        gaussians_or_tensors: a ``trellis_impl.representations.gaussians.Gaussians`` or a
            mapping of tensors (see :func:`gaussian_tensors`). Computation happens on the
            device of the data, in float32 (float64 if the centres are float64).
        camera: a :class:`~trellis_impl.render.cameras.Camera`.
        background: RGB in 0..1, composited behind the Gaussians.
        backend: 'torch' (the reference), 'gsplat' (CUDA, when installed; the automatic
            choice there) or None/'auto' to use ``set_backend`` / ``TRELLIS_GS_BACKEND`` /
            automatic choice.
        clamp: clamp ``color`` to 0..1 (default). Training passes False: the official
            rasteriser does not clamp its output, so over-bright pixels keep their gradient.
            Both backends are differentiable w.r.t. every Gaussian tensor.

    Returns:
        dict with ``color`` [3, H, W] in 0..1 (background included; unclamped with ``clamp=False``), ``alpha`` [1, H, W]
        (1 - final transmittance) and ``depth`` [1, H, W] (alpha-weighted camera depth
        ``sum_i w_i z_i``, not divided by alpha; world units).
    """
    out = render_gaussians_batch([gaussians_or_tensors], [camera], [background], backend, clamp)
    return {key: value[0] for key, value in out.items()}


def _checked_background(background, name: str) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=torch.float64).reshape(-1)
    if bg.numel() != 3 or not bool(torch.isfinite(bg).all()):
        raise ValueError(f"{name} must be 3 finite values, got {background!r}")
    return bg


def render_gaussians_batch(items: Sequence[Union[Any, Mapping[str, torch.Tensor]]], cameras: Sequence[Camera],
                           backgrounds: Sequence[Union[Sequence[float], torch.Tensor]],
                           backend: Optional[str] = None, clamp: bool = True) -> Dict[str, torch.Tensor]:
    """:func:`render_gaussians` of item i seen by ``cameras[i]`` on ``backgrounds[i]``, for B
    items at once (a training step renders every decoded object): the outputs of the B single
    renders stacked, ``color`` [B, 3, H, W], ``alpha`` and ``depth`` [B, 1, H, W]. gsplat renders
    them in one call (items padded with transparent Gaussians, :func:`pad_gaussians`); the
    PyTorch reference renders them one by one. Items may repeat (several views of one object).
    All cameras must have one size; items must be on one device."""
    items, cameras, backgrounds = list(items), list(cameras), list(backgrounds)
    if not items or len(cameras) != len(items) or len(backgrounds) != len(items):
        raise ValueError(f"render_gaussians_batch needs one camera and one background per item, got {len(items)} "
                         f"items, {len(cameras)} cameras, {len(backgrounds)} backgrounds")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) > 1:
        raise ValueError(f"render_gaussians_batch: cameras of one size only, got {sorted(sizes)}")
    checked = {}  # an item given several times (several views of it) is checked once
    for item in items:
        if id(item) not in checked:
            checked[id(item)] = _gaussian_fields(item)
    devices = {f["xyz"].device for f in checked.values()}
    if len(devices) > 1:
        raise ValueError(f"render_gaussians_batch: items on several devices {sorted(map(str, devices))}")
    _check_finite(list(checked.values()))
    checked = {key: _activated_colors(f) for key, f in checked.items()}
    gs = [checked[id(item)] for item in items]
    bgs = [_checked_background(bg, f"backgrounds[{i}]" if len(items) > 1 else "background")
           for i, bg in enumerate(backgrounds)]
    impl = GAUSSIAN_RASTER.resolve(gs[0]["xyz"].device, gs[0]["xyz"].dtype, backend)
    return impl.fn(gs, cameras, bgs, clamp)
