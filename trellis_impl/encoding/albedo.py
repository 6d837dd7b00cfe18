"""Unlit base-colour ("albedo") renders of a :class:`~trellis_impl.encoding.assets.TexturedMesh`
with the repo's mesh rasteriser (nvdiffrast on CUDA when installed, else PyTorch).

The official dataset renders are Blender Cycles images of the lit scene (three lights, 128
samples, a 1-pixel box filter, Filmic view transform, PNG with straight alpha on a transparent
background); those cannot be reproduced without Blender. These renders show each surface's base
colour instead, with the same cameras, the same transparent background and, with
``supersample`` s, the same box filter approximated by s x s samples per pixel.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..render.cameras import Camera
from ..render.mesh_raster import interpolate, rasterize_views, texture
from .assets import TexturedMesh

__all__ = ["render_albedo", "to_rgba8"]


def _scaled(camera: Camera, factor: int) -> Camera:
    return Camera(camera.extrinsics, camera.fx * factor, camera.fy * factor, camera.cx * factor, camera.cy * factor,
                  camera.width * factor, camera.height * factor, camera.near, camera.far)


@torch.no_grad()
def render_albedo(mesh: TexturedMesh, cameras: Sequence[Camera], supersample: int = 1,
                  device=None) -> torch.Tensor:
    """RGBA renders of the mesh's base colour: float32 [B, H, W, 4] on ``device`` (default: CPU),
    colour in [0, 1] with straight (not premultiplied) alpha, background (0, 0, 0, 0). The
    vertices are taken as they are (world units; normalise first for the official framing).
    ``supersample`` s renders s x s samples per pixel and box-filters them (premultiplied)."""
    if not (isinstance(supersample, int) and supersample >= 1):
        raise ValueError(f"supersample must be an int >= 1, got {supersample!r}")
    device = torch.device("cpu") if device is None else torch.device(device)
    cameras = [_scaled(c, supersample) for c in cameras] if supersample > 1 else list(cameras)
    raster = rasterize_views(mesh.vertices.to(device=device, dtype=torch.float32), mesh.faces.to(device), cameras)
    faces = raster["faces"]
    corners = torch.arange(3 * faces.shape[0], device=device).reshape(-1, 3)  # per-corner attributes
    colors = mesh.corner_colors.to(device).reshape(-1, 3)
    uv = None if mesh.corner_uv is None else mesh.corner_uv.to(device).reshape(-1, 2)
    face_texture = mesh.face_texture.to(device)
    textures = [t.to(device) for t in mesh.textures]
    views = []
    for b in range(len(cameras)):
        view = {"triangle_id": raster["triangle_id"][b], "barycentrics": raster["barycentrics"][b], "faces": faces}
        triangle = view["triangle_id"]
        rgb = interpolate(colors, view, corners).float()
        if textures:
            pixel_texture = torch.where(triangle >= 0, face_texture[triangle.clamp_min(0)], -1)
            pixel_uv = interpolate(uv, view, corners).float()
            for index, image in enumerate(textures):
                hit = pixel_texture == index
                if bool(hit.any()):
                    sampled = texture(image, pixel_uv[hit][:, None])[:, 0]  # [P, 3]
                    rgb[hit] = rgb[hit] * sampled
        alpha = (triangle >= 0).float()[..., None]
        views.append(torch.cat([rgb * alpha, alpha], -1))
    premultiplied = torch.stack(views)
    if supersample > 1:
        premultiplied = F.avg_pool2d(premultiplied.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
    alpha = premultiplied[..., 3:]
    rgb = torch.where(alpha > 0, premultiplied[..., :3] / alpha.clamp_min(1e-12), torch.zeros_like(alpha))
    return torch.cat([rgb.clamp(0.0, 1.0), alpha], -1)


def to_rgba8(rgba: torch.Tensor) -> np.ndarray:
    """float [B, H, W, 4] in [0, 1] -> uint8 [B, H, W, 4] (rounded), as an 8-bit RGBA PNG stores it."""
    return (rgba.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
