"""Turntable videos of TRELLIS assets as ComfyUI IMAGE batches ([N, H, W, 3] float32 in 0..1).

Cameras come from :func:`~trellis_impl.render.cameras.orbit_cameras` (TRELLIS's video
settings by default: radius 2, fov 40 degrees, yaw 2 pi k / N, a fixed pitch). Gaussians are
drawn with :func:`~trellis_impl.render.gaussian_raster.render_gaussians`; mesh normals with
:func:`trellis_impl.render.mesh_raster.render_mesh`, shown as ``(n + 1) / 2`` over the
background with anti-aliased silhouettes, as TRELLIS's ``MeshRenderer`` normal maps.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch

from .cameras import orbit_cameras
from .gaussian_raster import render_gaussians
from .mesh_raster import render_mesh as _render_mesh

__all__ = ["turntable", "TURNTABLE_MODES", "MAX_SIZE"]

TURNTABLE_MODES = ("gaussian", "mesh_normals", "side_by_side")
MAX_SIZE = 4096


def _mesh_normal_image(render_mesh, mesh, camera, bg: torch.Tensor) -> torch.Tensor:
    out = render_mesh(mesh, camera, antialias=True)
    mask = out["mask"].to(torch.float32)                     # [1, H, W] coverage
    # (n + 1) / 2 premultiplied by coverage: the normals are 0 off the surface, so both terms
    # are anti-aliased images and silhouettes blend with the background by coverage
    shaded = (out["normal"].to(torch.float32) + mask) * 0.5  # [3, H, W]
    img = shaded + bg.to(shaded.device).view(3, 1, 1) * (1.0 - mask)
    return img.clamp(0.0, 1.0).permute(1, 2, 0)


def turntable(gaussians: Optional[Any] = None, mesh: Optional[Any] = None, frames: int = 36,
              size: int = 512, pitch: float = 0.25, radius: float = 2.0, fov_degrees: float = 40.0,
              mode: str = "gaussian", background: Sequence[float] = (1.0, 1.0, 1.0),
              progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Render ``frames`` views orbiting the asset.

    Args:
        gaussians: a ``Gaussians`` (or tensor mapping accepted by ``render_gaussians``); needed
            by modes 'gaussian' and 'side_by_side'.
        mesh: a ``Mesh`` or (vertices, faces); needed by 'mesh_normals' and 'side_by_side'.
        frames: number of views (>= 1), yaw ``2 pi k / frames``.
        size: square image size in pixels, 1..MAX_SIZE.
        pitch: camera elevation in radians; radius: orbit radius (> 0); fov_degrees: in (0, 180).
        mode: 'gaussian', 'mesh_normals' or 'side_by_side' (Gaussians left, normals right).
        background: RGB in 0..1.
        progress: ``progress(frame, frames)`` after each frame; it may raise to stop (a UI's Cancel).

    Returns:
        float32 tensor [frames, size, size, 3] ([frames, size, 2 * size, 3] for side_by_side)
        in 0..1, on the device of the rendered data (ComfyUI IMAGE layout).
    """
    if mode not in TURNTABLE_MODES:
        raise ValueError(f"mode must be one of {TURNTABLE_MODES}, got {mode!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in [1, {MAX_SIZE}], got {size!r}")
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be positive and finite, got {radius!r}")
    if not math.isfinite(pitch):
        raise ValueError(f"pitch must be finite, got {pitch!r}")
    if not 0.0 < fov_degrees < 180.0:
        raise ValueError(f"fov_degrees must be in (0, 180), got {fov_degrees!r}")
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(-1)
    if bg.numel() != 3 or not bool(torch.isfinite(bg).all()):
        raise ValueError(f"background must be 3 finite values, got {background!r}")
    need_gs = mode in ("gaussian", "side_by_side")
    need_mesh = mode in ("mesh_normals", "side_by_side")
    if need_gs and gaussians is None:
        raise ValueError(f"mode {mode!r} needs gaussians")
    if need_mesh and mesh is None:
        raise ValueError(f"mode {mode!r} needs a mesh")
    render_mesh = _render_mesh if need_mesh else None

    cams = orbit_cameras(frames, pitch=pitch, radius=radius, fov_degrees=fov_degrees,
                         width=size, height=size)
    out = []
    for index, cam in enumerate(cams):
        parts = []
        if need_gs:
            img = render_gaussians(gaussians, cam, background=bg.tolist())["color"]
            parts.append(img.to(torch.float32).clamp(0.0, 1.0).permute(1, 2, 0))
        if need_mesh:
            parts.append(_mesh_normal_image(render_mesh, mesh, cam, bg))
        if len(parts) == 2:
            parts[1] = parts[1].to(parts[0].device)
        out.append(torch.cat(parts, dim=1))
        if progress is not None:
            progress(index + 1, frames)
    return torch.stack(out).contiguous()
