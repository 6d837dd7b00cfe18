"""Edit regions: which voxels of the structure grid an edit may change.

A region is a bool grid [R, R, R] (R = 64 for the released models) indexed by TRELLIS voxel
indices (x, y, z); voxel i spans [-0.5 + i / R, -0.5 + (i + 1) / R] of the unit cube
[-0.5, 0.5]^3 in which every asset is normalised (before the GLB's placement).

Regions are stated in the exported GLB's axes by default (``frame='gltf'``: Y up, front +Z):
glTF (X, Y, Z) = TRELLIS (x, z, -y), i.e. TRELLIS (x, y, z) = glTF (X, -Z, Y). ``frame='trellis'``
takes TRELLIS coordinates (Z up) as they are.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..frames import convert

__all__ = ["edit_region", "box_region", "mesh_region", "points_region", "dilate_region", "fill_inside", "latent_region",
           "coords_in_region", "check_region", "FRAMES"]

FRAMES = ("gltf", "trellis")


def _to_trellis(points: torch.Tensor, frame: str) -> torch.Tensor:
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    return convert(points, frame, "trellis")


def _check_resolution(resolution: int) -> None:
    if not (isinstance(resolution, int) and resolution > 0):
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")


def check_region(region: torch.Tensor, resolution: Optional[int] = None, what: str = "region") -> torch.Tensor:
    """A bool [R, R, R] grid with at least one voxel (ValueError otherwise); returned as bool."""
    if not isinstance(region, torch.Tensor) or region.dim() != 3 or len(set(region.shape)) != 1:
        shape = list(region.shape) if isinstance(region, torch.Tensor) else type(region).__name__
        raise ValueError(f"{what} must be a bool grid [R, R, R], got {shape}")
    if resolution is not None and region.shape[0] != resolution:
        raise ValueError(f"{what} has resolution {region.shape[0]}, the structure grid is {resolution}^3")
    region = region.bool()
    if not region.any():
        raise ValueError(f"{what} is empty: it selects no voxel of the {region.shape[0]}^3 grid")
    return region


def box_region(boxes, resolution: int = 64, frame: str = "gltf", dilate: int = 0) -> torch.Tensor:
    """The voxels that one or more axis-aligned boxes cover (a voxel is in if the box overlaps it).

    Args:
        boxes: one box or several: ``[min_xyz, max_xyz]`` / ``[xmin, ymin, zmin, xmax, ymax, zmax]``,
            or an array [K, 2, 3] / [K, 6], in normalised coordinates of ``frame``.
        resolution: the grid (64 for the released models).
        frame: 'gltf' (the exported GLB's axes, Y up) or 'trellis' (Z up).
        dilate: soft border, in voxels (``dilate_region``).
    Returns bool [R, R, R] (TRELLIS x, y, z). ValueError for NaN, min > max, a box entirely
    outside [-0.5, 0.5]^3, or an empty result.
    """
    _check_resolution(resolution)
    b = torch.as_tensor(boxes, dtype=torch.float64)
    if b.dim() == 1 or (b.dim() == 2 and b.shape == (2, 3)):
        b = b.reshape(1, -1)
    if b.dim() == 3:
        b = b.reshape(b.shape[0], -1)
    if b.dim() != 2 or b.shape[1] != 6 or b.shape[0] == 0:
        raise ValueError(f"boxes must be [min_xyz, max_xyz] or [K, 2, 3] / [K, 6], got shape {list(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError("boxes contain NaN or infinite values")
    low, high = b[:, :3], b[:, 3:]
    bad = (low > high).any(1)
    if bad.any():
        k = int(bad.nonzero()[0])
        raise ValueError(f"box {k}: min {low[k].tolist()} > max {high[k].tolist()} on some axis")
    # Corners to TRELLIS, then re-sort per axis (the glTF -> TRELLIS map flips one axis).
    a, c = _to_trellis(low, frame), _to_trellis(high, frame)
    low, high = torch.minimum(a, c), torch.maximum(a, c)
    outside = ((high < -0.5) | (low > 0.5)).any(1)
    if outside.any():
        k = int(outside.nonzero()[0])
        raise ValueError(f"box {k} lies entirely outside the unit cube [-0.5, 0.5]^3 (in TRELLIS axes "
                         f"{low[k].tolist()} .. {high[k].tolist()})")
    region = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    for lo_k, hi_k in zip(low, high):
        first = [min(max(math.floor((float(v) + 0.5) * resolution), 0), resolution - 1) for v in lo_k]
        last = [min(max(math.ceil((float(v) + 0.5) * resolution) - 1, 0), resolution - 1) for v in hi_k]
        last = [max(f, e) for f, e in zip(first, last)]  # a flat box still covers its voxel layer
        region[first[0]:last[0] + 1, first[1]:last[1] + 1, first[2]:last[2] + 1] = True
    return check_region(dilate_region(region, dilate), what="box region")


def fill_inside(surface: torch.Tensor) -> torch.Tensor:
    """Surface voxels plus everything they enclose: every voxel not reachable from the grid's
    border through empty voxels (6-connected flood fill)."""
    occupied = surface.bool()
    empty = ~occupied
    outside = torch.zeros_like(occupied)
    for axis in range(3):  # seeds: empty border voxels
        for end in (0, -1):
            index = [slice(None)] * 3
            index[axis] = end
            outside[tuple(index)] = empty[tuple(index)]
    kernel = torch.zeros(1, 1, 3, 3, 3)
    kernel[0, 0, 1, 1, :] = kernel[0, 0, 1, :, 1] = kernel[0, 0, :, 1, 1] = 1
    grid_empty = empty[None, None].float()
    while True:
        grown = (F.conv3d(outside[None, None].float(), kernel, padding=1) > 0) & (grid_empty > 0)
        grown = grown[0, 0]
        if torch.equal(grown, outside):
            return ~outside
        outside = grown


def mesh_region(vertices, faces, resolution: int = 64, frame: str = "gltf", normalize: bool = False,
                dilate: int = 0) -> torch.Tensor:
    """The voxelised inside of a closed mesh: its surface voxels on the grid (``voxelize_mesh``,
    open3d's rule) plus the voxels they enclose (``fill_inside``).

    vertices [V, 3] in normalised coordinates of ``frame`` (the asset's unit cube; vertices outside
    are clipped); ``normalize=True`` fits the mesh into the unit cube first (as for variants).
    """
    from ..pipelines.voxelize import voxelize_mesh
    _check_resolution(resolution)
    v = torch.as_tensor(vertices, dtype=torch.float64)
    if v.dim() != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise ValueError(f"vertices must be [V, 3], got {list(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("vertices contain NaN or infinite values")
    v = _to_trellis(v, frame)
    if not normalize and (((v.max(0).values < -0.5) | (v.min(0).values > 0.5)).any()):
        raise ValueError("the mesh lies entirely outside the unit cube [-0.5, 0.5]^3")
    idx = voxelize_mesh(v, torch.as_tensor(faces).long(), resolution=resolution, normalize=normalize)
    surface = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    surface[idx[:, 0].long(), idx[:, 1].long(), idx[:, 2].long()] = True
    return check_region(dilate_region(fill_inside(surface), dilate), what="mesh region")


def points_region(points, resolution: int = 64, frame: str = "gltf", fill: bool = True,
                  dilate: int = 0) -> torch.Tensor:
    """The voxels holding the points (in the unit cube of ``frame``; points outside are dropped),
    with ``fill`` the inside they enclose as well (for a dense sampling of a closed surface)."""
    _check_resolution(resolution)
    p = torch.as_tensor(points, dtype=torch.float64)
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {list(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError("points contain NaN or infinite values")
    p = _to_trellis(p, frame)
    p = p[((p >= -0.5) & (p <= 0.5)).all(1)]
    if p.shape[0] == 0:
        raise ValueError("no point lies inside the unit cube [-0.5, 0.5]^3")
    idx = ((p + 0.5) * resolution).floor().long().clamp(0, resolution - 1)
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    if fill:
        grid = fill_inside(grid)
    return check_region(dilate_region(grid, dilate), what="point region")


def edit_region(resolution: int, boxes=None, mesh=None, border: int = 0, frame: str = "gltf") -> torch.Tensor:
    """The region of an edit as the command line and the nodes state it: the union of ``boxes``
    (``box_region``) and the inside of ``mesh`` = (vertices, faces) (``mesh_region``), in ``frame``
    (default the exported GLB's axes), grown by ``border`` voxels. bool [R, R, R]."""
    parts = []
    if boxes is not None and len(boxes):
        parts.append(box_region(boxes, resolution=resolution, frame=frame, dilate=border))
    if mesh is not None:
        parts.append(mesh_region(*mesh, resolution=resolution, frame=frame, dilate=border))
    if not parts:
        raise ValueError("region: give at least one box (xmin ymin zmin xmax ymax zmax) or a closed mesh")
    region = parts[0]
    for part in parts[1:]:
        region = region | part
    return region


def dilate_region(region: torch.Tensor, k: int) -> torch.Tensor:
    """Grow the region by ``k`` voxels (every voxel within Chebyshev distance k of it)."""
    if not (isinstance(k, int) and k >= 0):
        raise ValueError(f"dilate must be an int >= 0, got {k!r}")
    if k == 0:
        return region.bool()
    grown = F.max_pool3d(region[None, None].float(), kernel_size=2 * k + 1, stride=1, padding=k)
    return grown[0, 0] > 0


def latent_region(region: torch.Tensor, latent_resolution: int = 16) -> torch.Tensor:
    """The structure-latent cells [r, r, r] touched by the region (a cell is in if any of its
    (R / r)^3 voxels is)."""
    region = check_region(region)
    res = region.shape[0]
    if latent_resolution <= 0 or res % latent_resolution:
        raise ValueError(f"latent resolution {latent_resolution} does not divide the grid {res}")
    f = res // latent_resolution
    return region.reshape(latent_resolution, f, latent_resolution, f, latent_resolution, f).any(5).any(3).any(1)


def coords_in_region(coords: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """bool [N]: which voxels of ``coords`` ([N, 4] (batch, x, y, z) or [N, 3]) lie in the region."""
    if coords.dim() != 2 or coords.shape[1] not in (3, 4):
        raise ValueError(f"coords must be [N, 4] (batch, x, y, z) or [N, 3], got {list(coords.shape)}")
    xyz = coords[:, -3:].long().to(region.device)
    res = region.shape[0]
    if xyz.numel() and (int(xyz.min()) < 0 or int(xyz.max()) >= res):
        raise ValueError(f"coords outside the region's grid [0, {res})")
    return region.bool()[xyz[:, 0], xyz[:, 1], xyz[:, 2]]

