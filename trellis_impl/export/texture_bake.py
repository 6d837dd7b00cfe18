"""Bake a base-colour texture for a UV-mapped mesh from multi-view renders.

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

The optimising mode of TRELLIS ('opt', :func:`bake_texture_optimised`) rasterises each view,
interpolates the vertex UVs to get every observed pixel's texture coordinate, and fits the
texture by Adam on L1(bilinearly sampled texture, observed colour) + ``lambda_tv`` * TV, one
random view per step, cosine-annealed learning rate 1e-2 -> 1e-5. Unlike TRELLIS (which
starts from black and runs 2500 steps) it starts by default from the fast bake, so far fewer
steps are needed; texels outside every UV triangle are filled with :func:`fill_texture`
(TRELLIS: ``cv2.inpaint``).

All work runs on the device of the inputs (the Gaussians' for :func:`bake_from_gaussians`).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..render.cameras import Camera, orbit_cameras
from ..render.mesh_raster import covered_pixels, interpolate, rasterize

__all__ = ["uv_rasterize", "bake_texture_fast", "bake_texture_optimised", "bake_from_gaussians", "fill_texture",
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
        Degenerate (zero-area) UV triangles cover nothing. Runs on (and returns on) uv's device.
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
    dev = uv.device
    faces = faces.to(dev)
    n_tex = size * size
    keys = torch.full((n_tex,), _NO_HIT, dtype=torch.int64, device=dev)
    px_all = uv[:, 0] * size
    py_all = uv[:, 1] * size
    if faces.shape[0] > 0:
        valid = torch.ones(faces.shape[0], dtype=torch.bool, device=dev)
        for tri, px, py, _ in covered_pixels(px_all[faces], py_all[faces], valid, size, size, PAIR_CHUNK):
            keys.scatter_reduce_(0, py * size + px, tri, "amin", include_self=True)
    hit = keys != _NO_HIT
    tid = torch.where(hit, keys, torch.full_like(keys, -1))
    bary = torch.zeros(n_tex, 3, dtype=torch.float64, device=dev)
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
        that received colour from at least one view), both on the device of ``vertices``
        (all the work runs there; views are moved there once).
    """
    tex, cov, _ = _bake_fast(vertices, faces, uv, views, texture_size, depth_tolerance, cos_power,
                             min_normal_cos, dilate_steps)
    return tex, cov


def _parse_views(views, device: torch.device) -> List[Tuple[Camera, torch.Tensor, Optional[torch.Tensor]]]:
    """Validate (camera, colour[, weight]) views; colours [3, H, W] float and flat weights
    [H*W] in 0..1 (or None) are moved to ``device``."""
    views = list(views)
    if len(views) == 0:
        raise ValueError("views: need at least one (camera, colour) view")
    out = []
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
        wmap = None
        if len(view) == 3 and view[2] is not None:
            wmap = torch.as_tensor(view[2]).float().reshape(-1)
            if wmap.numel() != cam.width * cam.height:
                raise ValueError(f"views[{k}]: weight map must have H*W = {cam.width * cam.height} values, "
                                 f"got {wmap.numel()}")
            _check_finite("view weight", wmap)
            wmap = wmap.clamp(0.0, 1.0).to(device)
        out.append((cam, col.to(device), wmap))
    return out


def _bake_fast(vertices, faces, uv, views, texture_size: int = 1024, depth_tolerance: float = 2e-3,
               cos_power: float = 2.0, min_normal_cos: float = 0.7, dilate_steps: int = 4,
               progress: Optional[Callable[[int, int], None]] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`bake_texture_fast`, also returning the [S, S] mask of UV-covered texels;
    ``progress(view, views)`` after each view (it may raise to interrupt).

    Everything runs on the device of ``vertices`` (views are moved there once); the per-view
    loop uses masks instead of boolean indexing so that it does not wait for the device.
    """
    vertices, faces, uv = _mesh_inputs(vertices, faces, uv)
    size = _check_texture_size(texture_size)
    dev = vertices.device
    faces, uv = faces.to(dev), uv.to(dev)
    parsed = _parse_views(views, dev)

    tid, bary = uv_rasterize(uv, faces, size)
    flat = tid.reshape(-1)
    texels = torch.nonzero(flat >= 0).squeeze(1)
    acc = torch.zeros(texels.numel(), 3, dtype=torch.float32, device=dev)
    wsum = torch.zeros(texels.numel(), dtype=torch.float32, device=dev)
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
        for view, (cam, col, wmap) in enumerate(parsed, 1):
            H, W = cam.height, cam.width
            vis_tid = rasterize(vertices, faces, cam)["triangle_id"].reshape(-1).to(dev)
            colf = col.reshape(3, -1).T.float()                       # [H*W, 3]
            centre = cam.position.float().to(dev)
            plane_dc = plane_d - fn32 @ centre                         # n . (p0 - C)
            proj = cam.project(points)
            u, vv, z = proj[:, 0], proj[:, 1], proj[:, 2].float()
            finite = torch.isfinite(u) & torch.isfinite(vv) & (z > cam.near)
            # points behind the camera: harmless pixel coordinates, rejected through ``finite``
            xf = torch.where(finite, u - 0.5, torch.zeros_like(u))      # pixel centres at i + 0.5
            yf = torch.where(finite, vv - 0.5, torch.zeros_like(vv))
            x0, y0 = torch.floor(xf), torch.floor(yf)
            ax, ay = (xf - x0).float(), (yf - y0).float()
            ray = points32 - centre[None]

            def surface_ok(xi, yi):
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
                ok = inb & (t >= 0) & good & ((s_hit - 1.0).abs() * z <= depth_tolerance)
                # only surfaces oriented like the texel's own (no colour from across creases)
                ok &= (n_t * normals32).sum(1).abs() >= min_normal_cos
                return ok, idx

            # 1) the nearest pixel must show the texel's surface
            ok_near, _ = surface_ok(x0 + (ax >= 0.5).double(), y0 + (ay >= 0.5).double())
            ok_near &= finite
            # 2) bilinear colour from the neighbours that show the same surface
            num = torch.zeros(points.shape[0], 3, dtype=torch.float32, device=dev)
            den = torch.zeros(points.shape[0], dtype=torch.float32, device=dev)
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                wb = (ax if dx else 1 - ax) * (ay if dy else 1 - ay)
                ok, idx = surface_ok(x0 + dx, y0 + dy)
                wk = torch.where(ok & ok_near, wb, torch.zeros_like(wb))
                if wmap is not None:
                    wk = wk * wmap[idx].float()
                num += colf[idx] * wk[:, None]
                den += wk
            seen = den > 1e-8
            cosv = ((normals32 * ray).sum(1) / ray.norm(dim=1).clamp_min(1e-30)).abs()
            wv = cosv.pow(cos_power) * seen
            sample = num / den.clamp_min(1e-30)[:, None]
            acc += sample * wv[:, None]
            wsum += wv
            if progress is not None:
                progress(view, len(parsed))
    texture = torch.zeros(size * size, 3, dtype=torch.float32, device=dev)
    coverage = torch.zeros(size * size, dtype=torch.bool, device=dev)
    got = wsum > 0
    texture[texels[got]] = (acc[got] / wsum[got][:, None]).clamp(0.0, 1.0)
    coverage[texels[got]] = True
    texture = texture.reshape(size, size, 3)
    coverage = coverage.reshape(size, size)
    texture = fill_texture(texture, coverage, dilate_steps).clamp(0.0, 1.0)
    return texture, coverage, tid >= 0


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or int(steps) < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def _tv_loss(tex: torch.Tensor) -> torch.Tensor:
    """Total variation of [..., S, S]: mean |t[i] - t[i+1]| over rows plus over columns."""
    return F.l1_loss(tex[..., :-1, :], tex[..., 1:, :]) + F.l1_loss(tex[..., :, :-1], tex[..., :, 1:])


def bake_texture_optimised(vertices, faces, uv, views: Sequence[Tuple[Camera, torch.Tensor]],
                           texture_size: int = 1024, steps: int = 2500, lambda_tv: float = 0.01,
                           init: str = "fast", seed: int = 0,
                           progress: Optional[Callable[[int, int], None]] = None
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fit the texture to the views by gradient descent (TRELLIS's 'opt' bake).

    Each view is rasterised once; the per-vertex UVs interpolated there give, for every pixel
    covered by the mesh (and with weight > 0.5 where a weight map is given; TRELLIS keeps
    the pixels of the observation with any channel > 0), the texture coordinate whose colour
    the view observed. The texture [S, S, 3] is then optimised with Adam (betas (0.5, 0.9)),
    learning rate cosine-annealed from 1e-2 to 1e-5 over ``steps``, one random view per step,
    loss = L1(texture sampled bilinearly at the pixels' UVs (as
    :func:`~trellis_impl.render.mesh_raster.texture`), observed colours)
    + ``lambda_tv`` * TV(texture).

    Args:
        vertices, faces, uv, views, texture_size: as :func:`bake_texture_fast`.
        steps: optimisation steps (TRELLIS: 2500; fewer suffice with ``init='fast'``).
        lambda_tv: weight of the total-variation term (TRELLIS: 0.01).
        init: 'fast' starts from :func:`bake_texture_fast` (with its defaults), 'zeros' from
            black as TRELLIS does.
        seed: seed of the view sequence (a private CPU ``torch.Generator``; deterministic;
            bit-identical on CPU, on CUDA up to grid_sample's atomic gradient accumulation).
        progress: optional ``callable(step, total)`` called after every step with
            ``step`` = 1..steps; it may raise to interrupt the bake.

    Returns:
        (texture [S, S, 3] float32 in 0..1, on the vertices' device; texels outside every UV
        triangle are filled with :func:`fill_texture`; coverage [S, S] bool: UV-covered
        texels in the bilinear footprint of some observed pixel, and with ``init='fast'``
        also those the fast bake saw (views coarser than the texture leave texels between
        the pixels' footprints, constrained only through the initialisation and TV)).
    """
    vertices, faces, uv = _mesh_inputs(vertices, faces, uv)
    size = _check_texture_size(texture_size)
    steps = _check_steps(steps)
    if init not in ("fast", "zeros"):
        raise ValueError(f"init must be 'fast' or 'zeros', got {init!r}")
    lambda_tv = float(lambda_tv)
    if not math.isfinite(lambda_tv) or lambda_tv < 0:
        raise ValueError(f"lambda_tv must be a finite number >= 0, got {lambda_tv!r}")
    dev = vertices.device
    faces, uv = faces.to(dev), uv.to(dev)
    parsed = _parse_views(views, dev)

    # per view: UV [P, 2] and colour [P, 3] of the observed pixels
    uv32 = uv.float()
    obs_uv, obs_col = [], []
    touched = torch.zeros(size * size, dtype=torch.bool, device=dev)
    with torch.no_grad():
        for cam, col, wmap in parsed:
            raster = rasterize(vertices, faces, cam)
            keep = raster["triangle_id"].reshape(-1) >= 0
            if wmap is not None:
                keep &= wmap > 0.5
            pix = torch.nonzero(keep).squeeze(1)
            puv = interpolate(uv32, raster).reshape(-1, 2)[pix]
            obs_uv.append(puv[None])                                   # [1, P, 2] for texture()
            obs_col.append(col.reshape(3, -1).T[pix][None])            # [1, P, 3]
            # texels with a non-zero bilinear weight (same footprint as grid_sample's)
            x = (puv[:, 0] * size - 0.5).clamp(0, size - 1)
            y = (puv[:, 1] * size - 0.5).clamp(0, size - 1)
            x0, y0 = x.floor().long(), y.floor().long()
            x1, y1 = (x0 + 1).clamp_max(size - 1), (y0 + 1).clamp_max(size - 1)
            for yy in (y0, y1):
                for xx in (x0, x1):
                    touched[yy * size + xx] = True

    if init == "fast":
        start, seen, in_uv = _bake_fast(vertices, faces, uv, [(c, col, w) for c, col, w in parsed], size)
        touched |= seen.reshape(-1)
    else:
        start = torch.zeros(size, size, 3, dtype=torch.float32, device=dev)
        tid, _ = uv_rasterize(uv, faces, size)
        in_uv = tid >= 0
    coverage = touched.reshape(size, size) & in_uv

    lr0, lr1 = 1e-2, 1e-5
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randint(len(parsed), (steps,), generator=gen).tolist()
    # the loop is launch-bound on a GPU: keep the texture as [1, 3, S, S] and the sample grids
    # in grid_sample's [-1, 1] form, so a step is one sample, two losses, backward, fused Adam
    # (the same maths as sampling through mesh_raster.texture and TV over [S, S, 3])
    grids = [(g.float() * 2.0 - 1.0)[:, None] for g in obs_uv]           # [1, 1, P, 2]
    targets = [c.float().permute(0, 2, 1)[:, :, None] for c in obs_col]  # [1, 3, 1, P]
    tex = torch.nn.Parameter(start.float().permute(2, 0, 1)[None].contiguous())
    optim = torch.optim.Adam([tex], betas=(0.5, 0.9), lr=lr0, fused=tex.is_cuda or None)
    with torch.enable_grad():
        for step, k in enumerate(order):
            lr = lr1 + 0.5 * (lr0 - lr1) * (1.0 + math.cos(math.pi * step / steps))
            for group in optim.param_groups:
                group["lr"] = lr
            optim.zero_grad(set_to_none=True)
            if grids[k].shape[2]:
                sample = F.grid_sample(tex, grids[k], mode="bilinear", padding_mode="border", align_corners=False)
                loss = F.l1_loss(sample, targets[k])
            else:
                loss = tex.sum() * 0
            if lambda_tv > 0:
                loss = loss + lambda_tv * _tv_loss(tex)
            loss.backward()
            optim.step()
            if progress is not None:
                progress(step + 1, steps)
    tex = tex[0].permute(1, 2, 0)
    out = tex.detach().clamp(0.0, 1.0)
    out = torch.where(in_uv[..., None], out, fill_texture(out, in_uv)).clamp(0.0, 1.0)
    return out.contiguous(), coverage


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
                        backend: Optional[str] = None, mode: str = "fast", steps: int = 2500,
                        lambda_tv: float = 0.01, seed: int = 0,
                        progress: Optional[Callable[[int, int], None]] = None
                        ) -> Tuple[np.ndarray, Dict[str, float]]:
    """Render ``gaussians`` from ``views`` orbit cameras and bake them into the mesh texture.

    ``mode`` 'fast' uses :func:`bake_texture_fast`, 'opt' :func:`bake_texture_optimised`
    (``steps``, ``lambda_tv``, ``seed`` apply to it; it starts from the fast bake). Rendering and
    baking run on the device of the Gaussians (the mesh is moved there). ``progress(done, total)``
    is called after every view rendered, then after every view projected ('fast', total = 2 views)
    or every optimisation step ('opt', total = views + steps); it may raise to interrupt.

    Returns (texture uint8 [S, S, 3], timings dict with ``render_s``, ``bake_s``, ``total_s``,
    ``mode``, ``steps`` and ``coverage`` = fraction of UV-covered texels seen by some view).
    """
    from ..render.gaussian_raster import gaussian_tensors, render_gaussians

    if mode not in ("fast", "opt"):
        raise ValueError(f"mode must be one of 'fast', 'opt', got {mode!r}")
    steps = _check_steps(steps)
    vertices, faces, uv = _mesh_inputs(vertices, faces, uv)
    size = _check_texture_size(texture_size)
    t0 = time.perf_counter()
    cams = bake_cameras(views, resolution, radius, fov_degrees)
    g = gaussian_tensors(gaussians)
    dev = g["xyz"].device
    # progress over the whole bake: the renders, then the projection (fast) or the steps (opt)
    total = len(cams) + (len(cams) if mode == "fast" else steps)
    report = (lambda done: progress(done, total)) if progress is not None else (lambda done: None)
    rendered = []
    with torch.no_grad():
        for index, cam in enumerate(cams, 1):
            out = render_gaussians(g, cam, (0.0, 0.0, 0.0), backend=backend)
            color = out["color"].detach().float()
            alpha = out["alpha"].detach().float()
            # un-premultiply the black background at soft silhouettes
            color = torch.where(alpha > 0.1, color / alpha.clamp_min(1e-3), color).clamp(0.0, 1.0)
            # alpha weights the pixels: where the Gaussians do not cover the mesh, no colour
            rendered.append((cam, color, alpha[0]))
            report(index)
    t1 = time.perf_counter()
    vertices, faces, uv = vertices.to(dev), faces.to(dev), uv.to(dev)
    if mode == "fast":
        tex, cov, in_uv = _bake_fast(vertices, faces, uv, rendered, size, 2e-3, 2.0, 0.7, 4,
                                     progress=lambda view, _: report(len(cams) + view))
    else:
        tex, cov = bake_texture_optimised(vertices, faces, uv, rendered, size, steps=steps, lambda_tv=lambda_tv,
                                          init="fast", seed=seed, progress=lambda step, _: report(len(cams) + step))
        in_uv = uv_rasterize(uv, faces, size)[0] >= 0
    tex = tex.cpu()
    t2 = time.perf_counter()
    timings = {"render_s": t1 - t0, "bake_s": t2 - t1, "total_s": t2 - t0, "mode": mode, "steps": steps,
               "coverage": float((cov & in_uv).sum()) / max(int(in_uv.sum()), 1)}
    return (tex.numpy() * 255.0 + 0.5).astype(np.uint8), timings
