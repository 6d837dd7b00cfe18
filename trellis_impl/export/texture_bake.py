"""Bake a base-colour texture for a UV-mapped mesh from multi-view renders ("fast" mode).

TRELLIS's ``to_glb`` renders the Gaussians from many views and bakes those images into the
texture of the simplified, UV-unwrapped mesh (``postprocessing_utils.bake_texture``). Its
"fast" mode projects every view into the texture and averages; this module does the same in
the other direction (texel -> view), which needs no GPU rasteriser:

1. :func:`uv_rasterize` rasterises the mesh in UV space: each texel centre
   ((j + 0.5) / S, (i + 0.5) / S) (glTF convention: u along columns, v along rows downwards,
   origin top-left) gets the index of the triangle covering it and its barycentrics.
2. Each covered texel's 3D point is the barycentric blend of the triangle's vertices.
3. For each view, the points are projected with the camera; a point is visible where the
   mesh's own depth buffer (:func:`~trellis_impl.render.mesh_raster.rasterize`) agrees with
   its camera depth: the ray from the camera to the point is intersected with the plane of
   the triangle that the mesh rasteriser sees at the nearest pixel, and the hit must be the
   point itself within ``depth_tolerance`` (exact on sloped surfaces, unlike comparing with
   the depth at the pixel centre). The view colour is sampled bilinearly using only the
   neighbouring pixels whose surface passes the same test (no bleeding of background or
   occluders across silhouettes, nor across creases sharper than ``acos(min_normal_cos)``),
   weighted by ``|cos|^2`` of the angle between the face
   normal and the direction to the camera (``abs``: robust to inconsistent winding; back
   sides of closed meshes are rejected by the depth test anyway).
4. Weighted average over views; texels seen by no view (including unused texture space)
   are filled by a few 3x3 dilation steps and then push-pull, so seams never show black.

The optimising mode of TRELLIS ('opt': gradient descent on the texture with a TV loss) is
not implemented here.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..render.cameras import Camera, orbit_cameras
from ..render.mesh_raster import covered_pixels, rasterize

__all__ = ["uv_rasterize", "bake_texture_fast", "bake_from_gaussians", "fill_texture",
           "MIN_TEXTURE_SIZE", "MAX_TEXTURE_SIZE"]

MIN_TEXTURE_SIZE = 512
MAX_TEXTURE_SIZE = 4096
PAIR_CHUNK = 1 << 21
_NO_HIT = torch.iinfo(torch.int64).max


# ----------------------------------------------------------------------------- validation
def _check_finite(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t.reshape(t.shape[0], -1))).any(1) if t.dim() > 0 and t.shape[0] else None
        idx = torch.nonzero(bad).squeeze(1)[:10].tolist() if bad is not None else []
        raise ValueError(f"{name} contains non-finite (NaN/inf) values (first rows: {idx})")


def _mesh_inputs(vertices, faces, uv) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    vertices = torch.as_tensor(np.asarray(vertices) if not isinstance(vertices, torch.Tensor) else vertices)
    faces = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces)
    uv = torch.as_tensor(np.asarray(uv) if not isinstance(uv, torch.Tensor) else uv)
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape [V, 3], got {tuple(vertices.shape)}")
    if vertices.shape[0] == 0:
        raise ValueError("vertices: empty mesh (no vertices)")
    if faces.numel() == 0:
        raise ValueError("faces: empty mesh (no faces)")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3], got {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"faces must be integer indices, got {faces.dtype}")
    if uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must have shape [V, 2], got {tuple(uv.shape)}")
    if uv.shape[0] != vertices.shape[0]:
        raise ValueError(f"uv has {uv.shape[0]} rows but vertices has {vertices.shape[0]}: "
                         "uv must give one coordinate per vertex")
    vertices = vertices.to(torch.float64) if vertices.dtype == torch.float64 else vertices.float()
    uv = uv.to(torch.float64)
    _check_finite("vertices", vertices)
    _check_finite("uv", uv)
    faces = faces.long()
    if int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]:
        raise ValueError(f"faces indices must be in [0, {vertices.shape[0]}), got range "
                         f"[{int(faces.min())}, {int(faces.max())}]")
    return vertices, faces, uv


def _check_texture_size(texture_size) -> int:
    if isinstance(texture_size, bool) or int(texture_size) != texture_size:
        raise ValueError(f"texture_size must be an integer, got {texture_size!r}")
    texture_size = int(texture_size)
    if not MIN_TEXTURE_SIZE <= texture_size <= MAX_TEXTURE_SIZE:
        raise ValueError(f"texture_size must be in [{MIN_TEXTURE_SIZE}, {MAX_TEXTURE_SIZE}], got {texture_size}")
    return texture_size


# ----------------------------------------------------------------------------- UV raster
def uv_rasterize(uv: torch.Tensor, faces: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rasterise triangles in UV space.

    Args:
        uv: [V, 2] texture coordinates in [0, 1] (glTF: u along columns, v along rows down).
        faces: [F, 3] vertex indices.
        size: texture side S (texel (row i, column j) has its centre at
            ((j + 0.5) / S, (i + 0.5) / S)).

    Returns:
        (triangle_id [S, S] int64, -1 where no triangle covers the texel centre;
         barycentrics [S, S, 3] float32 weights of the triangle's vertices, 0 where empty).
        Each texel belongs to at most one triangle (the lowest index on shared edges).
        Degenerate (zero-area) UV triangles cover nothing.
    """
    if isinstance(size, bool) or int(size) != size or int(size) <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    size = int(size)
    uv = torch.as_tensor(uv).to(torch.float64)
    faces = torch.as_tensor(faces)
    if uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must have shape [V, 2], got {tuple(uv.shape)}")
    _check_finite("uv", uv)
    if faces.numel() == 0:
        faces = faces.reshape(0, 3)
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        raise ValueError(f"faces must be integer indices of shape [F, 3], got {tuple(faces.shape)} {faces.dtype}")
    faces = faces.long()
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= uv.shape[0]):
        raise ValueError(f"faces indices must be in [0, {uv.shape[0]})")
    n_tex = size * size
    keys = torch.full((n_tex,), _NO_HIT, dtype=torch.int64)
    px_all = uv[:, 0] * size
    py_all = uv[:, 1] * size
    if faces.shape[0] > 0:
        valid = torch.ones(faces.shape[0], dtype=torch.bool)
        for tri, px, py, _ in covered_pixels(px_all[faces], py_all[faces], valid, size, size, PAIR_CHUNK):
            keys.scatter_reduce_(0, py * size + px, tri, "amin", include_self=True)
    hit = keys != _NO_HIT
    tid = torch.where(hit, keys, torch.full_like(keys, -1))
    bary = torch.zeros(n_tex, 3, dtype=torch.float64)
    pix = torch.nonzero(hit).squeeze(1)
    if pix.numel() > 0:
        f = faces[tid[pix]]
        ex = px_all[f] - ((pix % size).double() + 0.5)[:, None]
        ey = py_all[f] - ((pix // size).double() + 0.5)[:, None]
        b = torch.stack([ex[:, 1] * ey[:, 2] - ex[:, 2] * ey[:, 1],
                         ex[:, 2] * ey[:, 0] - ex[:, 0] * ey[:, 2],
                         ex[:, 0] * ey[:, 1] - ex[:, 1] * ey[:, 0]], dim=1)
        bary[pix] = (b / b.sum(1, keepdim=True)).clamp_min(0.0)
    bary = bary / bary.sum(-1, keepdim=True).clamp_min(1e-30)
    return tid.reshape(size, size), bary.reshape(size, size, 3).float()


# ----------------------------------------------------------------------------- hole filling
def _box3(x: torch.Tensor) -> torch.Tensor:
    """3x3 sum of [C, H, W] with zero padding."""
    return F.avg_pool2d(x[None], 3, stride=1, padding=1, count_include_pad=True)[0] * 9.0


def fill_texture(texture: torch.Tensor, mask: torch.Tensor, dilate_steps: int = 4) -> torch.Tensor:
    """Fill texels outside ``mask`` of ``texture`` [S, S, C]: ``dilate_steps`` rounds of 3x3
    averaging of known texels (smooth seams), then push-pull for everything still empty."""
    tex = texture.permute(2, 0, 1).float() * mask[None].float()
    w = mask[None].float()
    if not bool(mask.any()):
        return torch.zeros_like(texture, dtype=torch.float32)
    for _ in range(dilate_steps):
        s, n = _box3(tex * 1.0), _box3(w)
        new = (w == 0) & (n > 0)
        tex = torch.where(new, s / n.clamp_min(1e-12), tex)
        w = torch.where(new, torch.ones_like(w), w)
    if bool((w == 0).any()):
        tex = _push_pull(tex * w, w)
    return tex.permute(1, 2, 0).contiguous()


def _push_pull(cw: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Push-pull hole filling: cw [C, H, W] premultiplied colour, w [1, H, W] weight."""
    h, wd = w.shape[-2:]
    if h == 1 and wd == 1:
        return cw / w.clamp_min(1e-12)
    ph, pw = h % 2, wd % 2
    cw_p = F.pad(cw, (0, pw, 0, ph))
    w_p = F.pad(w, (0, pw, 0, ph))
    cw_c = F.avg_pool2d(cw_p[None], 2)[0]
    w_c = F.avg_pool2d(w_p[None], 2)[0]
    coarse = _push_pull(cw_c, w_c)                      # [C, h/2, w/2], fully filled
    up = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :wd]
    known = w > 0
    return torch.where(known, cw / w.clamp_min(1e-12), up)


# ----------------------------------------------------------------------------- baking
def _view_color(color) -> torch.Tensor:
    color = torch.as_tensor(np.asarray(color) if not isinstance(color, torch.Tensor) else color)
    if color.dim() != 3 or color.shape[0] != 3:
        raise ValueError(f"view colour must have shape [3, H, W], got {tuple(color.shape)}")
    if not color.is_floating_point():
        color = color.float() / 255.0
    _check_finite("view colour", color.float())
    return color.float()


def bake_texture_fast(vertices, faces, uv, views: Sequence[Tuple[Camera, torch.Tensor]],
                      texture_size: int = 1024, depth_tolerance: float = 2e-3,
                      cos_power: float = 2.0, min_normal_cos: float = 0.7,
                      dilate_steps: int = 4) -> Tuple[torch.Tensor, torch.Tensor]:
    """Project multi-view colour images into the mesh's texture and blend them.

    Args:
        vertices: [V, 3] world positions; faces: [F, 3]; uv: [V, 2] (glTF convention).
        views: (camera, colour [3, H, W] in 0..1, or uint8 0..255) pairs, or triples with a
            per-pixel weight [H, W] in 0..1 (e.g. a rendered alpha) as third item; the
            camera's width/height must match the image.
        texture_size: S, in [512, 4096].
        depth_tolerance: world-units slack of the visibility test (a fraction of a voxel).
        min_normal_cos: a pixel's colour is used for a texel only where the surface seen there
            has a normal within ``acos(min_normal_cos)`` of the texel's face normal (keeps
            colours from bleeding across sharp creases).
        cos_power: view weight is ``|cos(normal, to-camera)| ** cos_power``.
        dilate_steps: 3x3 dilation rounds before push-pull filling.

    Returns:
        (texture [S, S, 3] float32 in 0..1, filled everywhere; coverage [S, S] bool: texels
        that received colour from at least one view).
    """
    tex, cov, _ = _bake_fast(vertices, faces, uv, views, texture_size, depth_tolerance, cos_power,
                             min_normal_cos, dilate_steps)
    return tex, cov


def _bake_fast(vertices, faces, uv, views, texture_size: int = 1024, depth_tolerance: float = 2e-3,
               cos_power: float = 2.0, min_normal_cos: float = 0.7,
               dilate_steps: int = 4) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`bake_texture_fast`, also returning the [S, S] mask of UV-covered texels."""
    vertices, faces, uv = _mesh_inputs(vertices, faces, uv)
    size = _check_texture_size(texture_size)
    views = list(views)
    if len(views) == 0:
        raise ValueError("views: need at least one (camera, colour) view")
    colors, weights = [], []
    for k, view in enumerate(views):
        if not isinstance(view, (tuple, list)) or len(view) not in (2, 3):
            raise ValueError(f"views[{k}]: expected (camera, colour) or (camera, colour, weight)")
        cam, col = view[0], view[1]
        if not isinstance(cam, Camera):
            raise ValueError(f"views[{k}]: first item must be a Camera, got {type(cam).__name__}")
        col = _view_color(col)
        if col.shape[1] != cam.height or col.shape[2] != cam.width:
            raise ValueError(f"views[{k}]: colour is {col.shape[2]}x{col.shape[1]} but the camera is "
                             f"{cam.width}x{cam.height}")
        colors.append(col)
        wmap = None
        if len(view) == 3 and view[2] is not None:
            wmap = torch.as_tensor(view[2]).float().reshape(-1)
            if wmap.numel() != cam.width * cam.height:
                raise ValueError(f"views[{k}]: weight map must have H*W = {cam.width * cam.height} values, "
                                 f"got {wmap.numel()}")
            _check_finite("view weight", wmap)
            wmap = wmap.clamp(0.0, 1.0)
        weights.append(wmap)

    tid, bary = uv_rasterize(uv, faces, size)
    flat = tid.reshape(-1)
    texels = torch.nonzero(flat >= 0).squeeze(1)
    acc = torch.zeros(texels.numel(), 3, dtype=torch.float32)
    wsum = torch.zeros(texels.numel(), dtype=torch.float32)
    if texels.numel() > 0:
        v = vertices.double()
        tri = flat[texels]
        fv = v[faces[tri]]                                           # [T, 3, 3]
        b = bary.reshape(-1, 3)[texels].double()
        points = (fv * b[:, :, None]).sum(1)                          # [T, 3]
        fn_all = torch.linalg.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
        fn_all = fn_all / fn_all.norm(dim=1, keepdim=True).clamp_min(1e-30)
        normals = fn_all[tri]
        # per-view work in float32 (the visibility tolerance is ~1e-3 relative)
        fn32 = fn_all.float()
        plane_d = (fn_all * v[faces[:, 0]]).sum(1).float()           # plane: n . x = d
        normals32 = normals.float()
        points32 = points.float()
        n_all = torch.arange(points.shape[0])
        for cam, col, wmap in zip((view[0] for view in views), colors, weights):
            H, W = cam.height, cam.width
            vis_tid = rasterize(vertices, faces, cam)["triangle_id"].reshape(-1)
            colf = col.reshape(3, -1).T.float()                       # [H*W, 3]
            centre = cam.position.float()
            plane_dc = plane_d - fn32 @ centre                         # n . (p0 - C)
            proj = cam.project(points)
            u, vv, z = proj[:, 0], proj[:, 1], proj[:, 2].float()
            xf, yf = u - 0.5, vv - 0.5                                # pixel centres at i + 0.5
            x0, y0 = torch.floor(xf), torch.floor(yf)
            ax, ay = (xf - x0).float(), (yf - y0).float()

            def surface_ok(xi, yi, ray, nrm, zz):
                """Does the surface seen at pixel (xi, yi) pass through the points? -> (ok, idx)"""
                inb = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
                idx = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long()
                t = vis_tid[idx]
                tc = t.clamp_min(0)
                # where does the ray to the point (s = 1 at the point) meet the plane of the
                # surface seen at this pixel? visible when that is the point itself
                n_t = fn32[tc]
                nd = (n_t * ray).sum(1)
                good = nd.abs() > 1e-12
                s_hit = plane_dc[tc] / torch.where(good, nd, torch.ones_like(nd))
                ok = inb & (t >= 0) & good & ((s_hit - 1.0).abs() * zz <= depth_tolerance)
                # only surfaces oriented like the texel's own (no colour from across creases)
                ok &= (n_t * nrm).sum(1).abs() >= min_normal_cos
                return ok, idx

            finite = torch.isfinite(u) & torch.isfinite(vv) & (z > cam.near)
            cand = n_all[finite]
            ray = points32[cand] - centre[None]
            # 1) the nearest pixel must show the texel's surface
            ok_near, _ = surface_ok(x0[cand] + (ax[cand] >= 0.5).double(), y0[cand] + (ay[cand] >= 0.5).double(),
                                    ray, normals32[cand], z[cand])
            sub = cand[ok_near]
            if sub.numel() == 0:
                continue
            ray, nrm, zs = ray[ok_near], normals32[sub], z[sub]
            # 2) bilinear colour from the neighbours that show the same surface
            num = torch.zeros(sub.numel(), 3, dtype=torch.float32)
            den = torch.zeros(sub.numel(), dtype=torch.float32)
            axs, ays, x0s, y0s = ax[sub], ay[sub], x0[sub], y0[sub]
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                wb = (axs if dx else 1 - axs) * (ays if dy else 1 - ays)
                ok, idx = surface_ok(x0s + dx, y0s + dy, ray, nrm, zs)
                wk = torch.where(ok, wb, torch.zeros_like(wb))
                if wmap is not None:
                    wk = wk * wmap[idx].float()
                num += colf[idx] * wk[:, None]
                den += wk
            seen = den > 1e-8
            cosv = ((nrm * ray).sum(1) / ray.norm(dim=1).clamp_min(1e-30)).abs()
            wv = cosv.pow(cos_power) * seen
            sample = num / den.clamp_min(1e-30)[:, None]
            acc.index_add_(0, sub, sample * wv[:, None])
            wsum.index_add_(0, sub, wv)
    texture = torch.zeros(size * size, 3, dtype=torch.float32)
    coverage = torch.zeros(size * size, dtype=torch.bool)
    got = wsum > 0
    texture[texels[got]] = (acc[got] / wsum[got][:, None]).clamp(0.0, 1.0)
    coverage[texels[got]] = True
    texture = texture.reshape(size, size, 3)
    coverage = coverage.reshape(size, size)
    texture = fill_texture(texture, coverage, dilate_steps).clamp(0.0, 1.0)
    return texture, coverage, tid >= 0


def bake_cameras(views: int = 16, resolution: int = 512, radius: float = 2.0,
                 fov_degrees: float = 40.0) -> List[Camera]:
    """Two orbit rings (pitch +30 and -20 degrees, yaws staggered) with ``views`` cameras."""
    if int(views) != views or views < 1:
        raise ValueError(f"views must be a positive integer, got {views!r}")
    n_up = (int(views) + 1) // 2
    n_down = int(views) - n_up
    cams = orbit_cameras(n_up, pitch=math.radians(30.0), radius=radius, fov_degrees=fov_degrees,
                         width=resolution, height=resolution)
    if n_down:
        cams += orbit_cameras(n_down, pitch=math.radians(-20.0), radius=radius, fov_degrees=fov_degrees,
                              width=resolution, height=resolution, yaw_offset=math.pi / max(n_down, 1))
    return cams


def bake_from_gaussians(vertices, faces, uv, gaussians, texture_size: int = 1024, views: int = 16,
                        resolution: int = 512, radius: float = 2.0, fov_degrees: float = 40.0,
                        backend: Optional[str] = None) -> Tuple[np.ndarray, Dict[str, float]]:
    """Render ``gaussians`` from ``views`` orbit cameras and bake them into the mesh texture.

    Returns (texture uint8 [S, S, 3], timings dict with ``render_s``, ``bake_s``, ``total_s``
    and ``coverage`` = fraction of UV-covered texels seen by some view).
    """
    from ..render.gaussian_raster import render_gaussians

    vertices, faces, uv = _mesh_inputs(vertices, faces, uv)
    _check_texture_size(texture_size)
    t0 = time.perf_counter()
    cams = bake_cameras(views, resolution, radius, fov_degrees)
    rendered = []
    with torch.no_grad():
        for cam in cams:
            out = render_gaussians(gaussians, cam, (0.0, 0.0, 0.0), backend=backend)
            color = out["color"].detach().float().cpu()
            alpha = out["alpha"].detach().float().cpu()
            # un-premultiply the black background at soft silhouettes
            color = torch.where(alpha > 0.1, color / alpha.clamp_min(1e-3), color).clamp(0.0, 1.0)
            # alpha weights the pixels: where the Gaussians do not cover the mesh, no colour
            rendered.append((cam, color, alpha[0]))
    t1 = time.perf_counter()
    tex, cov, in_uv = _bake_fast(vertices.cpu(), faces.cpu(), uv.cpu(), rendered, texture_size, 2e-3, 2.0, 0.7, 4)
    t2 = time.perf_counter()
    timings = {"render_s": t1 - t0, "bake_s": t2 - t1, "total_s": t2 - t0,
               "coverage": float((cov & in_uv).sum()) / max(int(in_uv.sum()), 1)}
    return (tex.numpy() * 255.0 + 0.5).astype(np.uint8), timings
