"""Strivec radiance field as decoded by TRELLIS's SLat radiance-field decoder.

A sparse set of equal-size leaf voxels; each holds ``rank`` components, each the outer product
of three 1D vectors (one per axis, ``dim`` samples across the voxel) with a density and a colour.
Same fields and meanings as the official ``Strivec`` (a DfsOctree with primitive 'trivec'); the
octree structure array, unused by the renderer and never filled by the decoder, is left out.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch

from ..backends.transfer import to_device
from .gaussians import TRELLIS_AABB

__all__ = ["Strivec", "strivec_from_decoder_output"]


def _log2_exact(resolution: int) -> int:
    """log2 of a positive power-of-two resolution; ValueError otherwise."""
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1 \
            or int(resolution) & (int(resolution) - 1):
        raise ValueError(f"resolution must be a power of 2, got {resolution}")
    return int(resolution).bit_length() - 1


class Strivec:
    """Tri-vector (CP-decomposed) radiance field on N leaf voxels of one octree level.

    Fields (on one device):

    * ``position`` [N, 3] float: voxel centres in box coordinates, [0, 1] spans the box.
    * ``depth`` [N, 1] uint8: octree level of each voxel, log2(resolution) for decoder output.
    * ``trivec`` [N, rank, 3, dim] float: per component, one vector per axis (x, y, z).
    * ``density`` [N, rank] float: per-component density (identity activation).
    * ``features_dc`` [N, rank, 1, 3] float: degree-0 SH colour per component.
    * ``features_ac`` [N, rank, (sh_degree+1)^2 - 1, 3] float: higher SH bands (zeros by default).

    Args:
        resolution: leaf grid resolution, a power of 2.
        aabb: (origin_x, origin_y, origin_z, size_x, size_y, size_z) of the box.
        sh_degree: spherical harmonics degree of the colours.
        density_shift: added to densities by the renderer before activation.
    """

    primitive = "trivec"

    def __init__(
        self,
        resolution: int,
        aabb: Sequence[float],
        position: torch.Tensor,
        depth: torch.Tensor,
        trivec: torch.Tensor,
        density: torch.Tensor,
        features_dc: torch.Tensor,
        features_ac: Optional[torch.Tensor] = None,
        sh_degree: int = 0,
        density_shift: float = 0.0,
    ):
        self.max_depth = _log2_exact(resolution)
        self.resolution = int(resolution)
        if len(aabb) != 6:
            raise ValueError(f"aabb must have 6 values (origin, size), got {len(aabb)}")
        if trivec.dim() != 4 or trivec.shape[2] != 3:
            raise ValueError(f"trivec must be [N, rank, 3, dim], got {tuple(trivec.shape)}")
        count, rank, _, dim = trivec.shape
        if features_ac is None:
            features_ac = features_dc.new_zeros(count, rank, (sh_degree + 1) ** 2 - 1, 3)
        expected = {
            "position": (position, (count, 3)),
            "depth": (depth, (count, 1)),
            "density": (density, (count, rank)),
            "features_dc": (features_dc, (count, rank, 1, 3)),
            "features_ac": (features_ac, (count, rank, (sh_degree + 1) ** 2 - 1, 3)),
        }
        for name, (value, shape) in expected.items():
            if tuple(value.shape) != shape:
                raise ValueError(f"Strivec {name} must have shape {list(shape)}, got {tuple(value.shape)}")
        for name, value in [("position", position), ("trivec", trivec), ("density", density),
                            ("features_dc", features_dc), ("features_ac", features_ac)]:
            if not value.is_floating_point():
                raise ValueError(f"Strivec {name} must be floating point, got {value.dtype}")
        if depth.dtype != torch.uint8:
            raise ValueError(f"Strivec depth must be uint8, got {depth.dtype}")
        devices = {value.device for value, _ in expected.values()} | {trivec.device}
        if len(devices) != 1:
            raise ValueError(f"Strivec fields are on several devices: {sorted(map(str, devices))}")

        self.aabb = to_device(aabb, position.device, torch.float32)
        self.sh_degree = sh_degree
        self.active_sh_degree = sh_degree
        self.rank = rank
        self.dim = dim
        self.density_shift = density_shift
        self.position = position
        self.depth = depth
        self.trivec = trivec
        self.density = density
        self.features_dc = features_dc
        self.features_ac = features_ac

    @property
    def device(self) -> torch.device:
        return self.position.device

    # Accessors under the names the official octree renderer reads.
    @property
    def get_xyz(self) -> torch.Tensor:
        """[N, 3] voxel centres in box coordinates."""
        return self.position

    @property
    def get_depth(self) -> torch.Tensor:
        """[N, 1] uint8 octree levels."""
        return self.depth

    @property
    def get_trivec(self) -> torch.Tensor:
        """[N, rank, 3, dim]."""
        return self.trivec

    @property
    def get_density(self) -> torch.Tensor:
        """[N, rank]; the trivec primitive has no density activation."""
        return self.density

    @property
    def get_features(self) -> torch.Tensor:
        """[N, rank, (sh_degree+1)^2, 3] SH coefficients."""
        if self.sh_degree == 0:
            return self.features_dc
        return torch.cat([self.features_dc, self.features_ac], dim=-2)


def strivec_from_decoder_output(
    coords_xyz: torch.Tensor,
    feats: torch.Tensor,
    resolution: int,
    rep_config: Mapping,
) -> Strivec:
    """SLatRadianceFieldDecoder.to_representation for one batch item.

    Output channels per voxel, in order: trivec (rank*3*dim, stored with +1 added), density
    (rank), features_dc (rank*3).

    Args:
        coords_xyz: [N, 3] integer voxel coordinates (batch column removed).
        feats: [N, rank * (3 * dim + 4)] raw output-layer features of those voxels.
        resolution: voxel grid resolution (power of 2).
        rep_config: the decoder's ``representation_config`` (rank, dim).
    Returns:
        Strivec in the TRELLIS box with ``position = (coord + 0.5) / resolution``,
        ``depth = log2(resolution)``, density_shift 0, on the device of ``feats``.
    """
    depth_level = _log2_exact(resolution)
    rank, dim = rep_config["rank"], rep_config["dim"]
    shapes = {"trivec": (rank, 3, dim), "density": (rank,), "features_dc": (rank, 1, 3)}
    channels = rank * 3 * dim + rank + rank * 3
    if coords_xyz.dim() != 2 or coords_xyz.shape[1] != 3:
        raise ValueError(f"coords_xyz must be [N, 3], got {tuple(coords_xyz.shape)}")
    if feats.dim() != 2 or feats.shape != (coords_xyz.shape[0], channels):
        raise ValueError(f"feats must be [{coords_xyz.shape[0]}, {channels}], got {tuple(feats.shape)}")

    fields = {}
    start = 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        fields[name] = feats[:, start:start + size].reshape(-1, *shape)
        start += size
    position = (coords_xyz.to(feats.device).float() + 0.5) / resolution
    depth = torch.full((position.shape[0], 1), depth_level, dtype=torch.uint8, device=feats.device)
    return Strivec(
        resolution=resolution,
        aabb=TRELLIS_AABB,
        position=position,
        depth=depth,
        trivec=fields["trivec"] + 1,
        density=fields["density"],
        features_dc=fields["features_dc"],
        sh_degree=0,
        density_shift=0.0,
    )
